//! W3C Trace Context for requests (docs/http-api.md, "Tracing"): every request the node's or the
//! gateway's serving port takes runs in a tracing span `request` whose `trace_id` is the one of
//! the client's `traceparent` header (a new one without it, or where it is malformed), with a
//! `span_id` of its own and the client's span as `parent_span_id`. Everything logged while the
//! request runs carries them (JSON logs: `span.trace_id`, `span.span_id`), the gateway passes its
//! own span to the node as the node's parent (`traceparent`), and each request ends with one
//! `request` event at debug level (status and milliseconds) under the target `stowage::access`
//! (the access log: `RUST_LOG=info,stowage::access=debug`).
//!
//! With `--otlp-endpoint` the spans also go to an OpenTelemetry collector (OTLP over HTTP,
//! protobuf): the `request` span is then OpenTelemetry's, its ids the ones exported, and the
//! node's steps in it (`queue`, `tokenize`, `inference`; target `stowage::step`, which the logs
//! leave out unless `RUST_LOG` names it) become its children. Without it no layer wants those
//! steps' spans and they cost nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request header that carries a trace (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// One request's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTrace {
    pub trace_id: u128,
    /// This request's span here.
    pub span_id: u64,
    /// The caller's span, from its `traceparent`.
    pub parent_span_id: Option<u64>,
    /// The caller's trace flags (sampled: 01); 01 for a trace started here.
    pub flags: u8,
}

/// A `traceparent` header's trace id, parent span id and flags; None where it is not a valid
/// one (W3C Trace Context level 1: version 00 is exactly 55 characters; a later version may be
/// longer and is read as 00; ids of all zeros and version ff are invalid; hex is lower case).
pub fn parse(header: &str) -> Option<(u128, u64, u8)> {
    let h = header.trim();
    let b = h.as_bytes();
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if b.len() < 55 || (b.len() > 55 && (b[55] != b'-' || &h[..2] == "00")) {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (version, trace, span, flags) = (&h[..2], &h[3..35], &h[36..52], &h[53..55]);
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) || version == "ff" {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|&t| t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|&s| s != 0)?;
    Some((trace_id, span_id, u8::from_str_radix(flags, 16).ok()?))
}

impl RequestTrace {
    /// This hop's span in the trace of the caller's `traceparent`, or the first span of a new
    /// trace.
    pub fn of(traceparent: Option<&str>) -> Self {
        let span_id = rand::random::<u64>().max(1);
        match traceparent.and_then(parse) {
            Some((trace_id, parent, flags)) => Self { trace_id, span_id, parent_span_id: Some(parent), flags },
            None => Self { trace_id: rand::random::<u128>().max(1), span_id, parent_span_id: None, flags: 1 },
        }
    }

    /// The `traceparent` a call made for this request sends: this span as the callee's parent.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Whether spans go to an OpenTelemetry collector (`--otlp-endpoint`).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The OTLP path of trace exports, added to an endpoint given without it (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read).
const TRACES_PATH: &str = "/v1/traces";

/// Spans exported to an OpenTelemetry collector; dropping it sends what is left (at exit).
pub struct Exporter(SdkTracerProvider);

impl Exporter {
    /// An exporter of spans to the collector at `endpoint` (`http://host:4318`, or its full
    /// traces URL), batched off the serving threads, as service `service` unless
    /// `OTEL_SERVICE_NAME` names one, and the layer that feeds it: Stowage's spans (the
    /// `request` span and its steps) and the warnings and errors logged in them.
    pub fn start<S>(endpoint: &str, service: &str) -> anyhow::Result<(Self, impl tracing_subscriber::Layer<S>)>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer;
        let url = traces_url(endpoint)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint}: {e}"))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service.to_string());
        }
        let provider =
            SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("stowage"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(
                tracing_subscriber::filter::filter_fn(|meta| {
                    meta.target().starts_with("stowage") && (meta.is_span() || *meta.level() <= tracing::Level::WARN)
                })
                // At info at most. Below it, the `log` records of every library and ONNX Runtime's
                // own logger would be turned on and read on every request: a debug hint cost a
                // mini model 2 ms a request.
                .with_max_level_hint(tracing::level_filters::LevelFilter::INFO),
            );
        EXPORTING.store(true, Ordering::Relaxed);
        Ok((Self(provider), layer))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("otlp: could not send the last spans: {e}");
        }
    }
}

/// The URL spans are posted to: `endpoint`, plus `/v1/traces` unless it ends so.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim().trim_end_matches('/');
    let Some(rest) = e.strip_prefix("http://") else {
        anyhow::bail!(
            "--otlp-endpoint {endpoint}: expected http://HOST:PORT (OTLP over HTTP; send to a collector on \
             the node or in the cluster, which may forward over TLS)"
        );
    };
    if rest.is_empty() || rest.starts_with('/') {
        anyhow::bail!("--otlp-endpoint {endpoint}: no host");
    }
    Ok(if e.ends_with(TRACES_PATH) { e.to_string() } else { format!("{e}{TRACES_PATH}") })
}

/// The trace headers of a request (HTTP's, or gRPC metadata), for OpenTelemetry's propagator.
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// With spans exported: makes `span` the child of the caller's span (its `traceparent`) and
/// returns the ids OpenTelemetry gave it; None when they are not exported.
fn exported<'a>(span: &tracing::Span, header: impl Fn(&str) -> Option<&'a str>) -> Option<RequestTrace> {
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let carrier = Carrier { traceparent: header(TRACEPARENT), tracestate: header("tracestate") };
    let parent = TraceContextPropagator::new().extract(&carrier);
    let caller = parent.span().span_context().clone();
    span.set_parent(parent).ok()?;
    let cx = span.context();
    let own = cx.span().span_context().clone();
    own.is_valid().then(|| RequestTrace {
        trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(own.span_id().to_bytes()),
        parent_span_id: caller.is_valid().then(|| u64::from_be_bytes(caller.span_id().to_bytes())),
        flags: own.trace_flags().to_u8(),
    })
}

/// One request's `request` span and its place in its trace, from its headers (`header` reads
/// one by its lower-case name): HTTP's, or a gRPC call's metadata.
pub fn request_span<'a>(
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<&'a str> + Copy,
) -> (tracing::Span, RequestTrace) {
    let span = tracing::info_span!(
        "request",
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
        method = %method,
        path = %path,
        otel.kind = "server",
        http.response.status_code = tracing::field::Empty,
    );
    let trace = exported(&span, header).unwrap_or_else(|| RequestTrace::of(header(TRACEPARENT)));
    span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    span.record("span_id", tracing::field::display(format_args!("{:016x}", trace.span_id)));
    if let Some(p) = trace.parent_span_id {
        span.record("parent_span_id", tracing::field::display(format_args!("{p:016x}")));
    }
    (span, trace)
}

/// Ends a request's span: its status (HTTP's, or the HTTP status of a gRPC call's error code)
/// and, at debug level, the access log's line.
pub fn finish(span: &tracing::Span, started: Instant, status: u16) {
    span.record("http.response.status_code", i64::from(status));
    span.in_scope(|| {
        let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        tracing::debug!(target: "stowage::access", status, ms, "request")
    });
}

/// Middleware (`actix_web::middleware::from_fn`): runs the request in its `request` span, keeps
/// its `RequestTrace` in the request's extensions (the gateway's proxy reads it) and logs its end
/// at debug level.
pub async fn traced(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let headers = req.headers();
    let (span, trace) =
        request_span(req.method().as_str(), req.path(), |name| headers.get(name).and_then(|v| v.to_str().ok()));
    req.extensions_mut().insert(trace);
    let started = Instant::now();
    let res = next.call(req).instrument(span.clone()).await;
    finish(&span, started, res.as_ref().map_or(500, |r| r.status().as_u16()));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otlp_endpoint_gets_the_traces_path_once() {
        for (given, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            ("http://127.0.0.1:4318/v1/traces", "http://127.0.0.1:4318/v1/traces"),
            ("http://gw/otel", "http://gw/otel/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap(), url);
        }
        for bad in ["https://collector:4318", "collector:4318", "http://", "http:///v1/traces"] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_valid_traceparent_is_read_and_an_invalid_one_starts_a_new_trace() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(h), Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1)));
        // A later version may carry more fields after a dash.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let t = RequestTrace::of(Some(h));
        assert_eq!(
            (t.trace_id, t.parent_span_id, t.flags),
            (0x4bf92f3577b34da6a3ce929d0e0e4736, Some(0xf067aa0ba902b7), 1)
        );
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        // What it sends on names this span as the parent, in the same trace.
        assert_eq!(parse(&t.traceparent()), Some((t.trace_id, t.span_id, 1)));
        let fresh = RequestTrace::of(Some("garbage"));
        assert_eq!(fresh.parent_span_id, None);
        assert_ne!(fresh.trace_id, 0);
        assert_ne!(fresh.trace_id, RequestTrace::of(None).trace_id);
    }
}
