//! Prometheus metrics (docs/metrics.md is the list): each described once, here, with its unit and
//! help; the recorder is installed once per process.

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "stowage_requests_total";
pub const REQUEST_DURATION: &str = "stowage_request_duration_seconds";
pub const INFERENCE_DURATION: &str = "stowage_inference_duration_seconds";
pub const QUEUE_WAIT: &str = "stowage_queue_wait_seconds";
pub const INFLIGHT: &str = "stowage_inflight_requests";
pub const REJECTED: &str = "stowage_rejected_total";
pub const LOAD_DURATION: &str = "stowage_model_load_duration_seconds";
pub const MODEL_MEMORY: &str = "stowage_model_memory_bytes";
pub const MODELS: &str = "stowage_models";
pub const FETCHED_BYTES: &str = "stowage_fetched_bytes_total";
pub const STARTUP: &str = "stowage_startup_seconds";
pub const BATCHES: &str = "stowage_batches_total";
pub const BATCHED_ROWS: &str = "stowage_batched_inputs_total";
pub const INFERENCE_BUSY: &str = "stowage_inference_threads_busy";
pub const INFERENCE_BACKLOG: &str = "stowage_inference_backlog";
pub const TOKENIZATION_DURATION: &str = "stowage_tokenization_duration_seconds";
pub const BATCH_WAIT: &str = "stowage_batch_wait_seconds";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (tests build many apps).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
            // Tokenization takes tens of microseconds; a batch wait is often none at all.
            let fine = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
            let waits =
                [1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let handle = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TOKENIZATION_DURATION.into()), &fine))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_WAIT.into()), &waits))
                .expect("static buckets are valid")
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle());
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS, Unit::Count, "Prediction requests answered, by model and HTTP status code");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Request received to response written, per model");
    describe_histogram!(INFERENCE_DURATION, Unit::Seconds, "Engine time per request (tokenization excluded)");
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Time a request waited for a free slot of its model");
    describe_gauge!(INFLIGHT, Unit::Count, "Requests admitted and not yet answered, per model");
    describe_counter!(
        REJECTED,
        Unit::Count,
        "Requests rejected before inference (queue_full, queue_timeout, not_ready, too_large)"
    );
    describe_histogram!(LOAD_DURATION, Unit::Seconds, "Model start-up time per phase (fetch, load, warmup)");
    describe_gauge!(MODEL_MEMORY, Unit::Bytes, "Resident memory the model added when it loaded");
    describe_gauge!(MODELS, Unit::Count, "Models by state (loading, ready, failed)");
    describe_counter!(FETCHED_BYTES, Unit::Bytes, "Model file bytes brought to local disk, by source (s3, cache)");
    describe_gauge!(STARTUP, Unit::Seconds, "Time from the start of loading until every model was ready or failed");
    describe_counter!(BATCHES, Unit::Count, "Engine calls, per model (one call may answer several requests)");
    describe_counter!(
        BATCHED_ROWS,
        Unit::Count,
        "Inputs run by those calls: divided by the calls, the mean batch size"
    );
    describe_gauge!(INFERENCE_BUSY, Unit::Count, "Inference threads running a request now (of --inference-threads)");
    describe_gauge!(INFERENCE_BACKLOG, Unit::Count, "Engine calls waiting for a free inference thread (node-wide)");
    describe_histogram!(
        TOKENIZATION_DURATION,
        Unit::Seconds,
        "Tokenization (or the checks of given token ids) per request, on an inference thread"
    );
    describe_histogram!(
        BATCH_WAIT,
        Unit::Seconds,
        "Admitted until the request's engine call took it up: waiting for the model's engine and an inference thread"
    );
}

/// One model's request-path metrics, registered once when the node starts: the request path
/// then records without building label sets or looking them up.
pub struct ModelMetrics {
    /// `stowage_requests_total{code="200"}`; other codes are rare and are looked up when they happen.
    pub ok: Counter,
    pub request_duration: Histogram,
    /// Labelled with the engine that runs the model: registered at start-up when the catalog
    /// names the engine, else when the model loads and its engine is chosen (`auto`).
    pub inference_duration: OnceLock<Histogram>,
    pub queue_wait: Histogram,
    pub inflight: Gauge,
    pub tokenization: Histogram,
    pub batch_wait: Histogram,
    pub batches: Counter,
    pub batched_inputs: Counter,
}

impl ModelMetrics {
    pub fn new(model: &str, backend: Option<&str>) -> Self {
        install();
        let m = model.to_string();
        let handles = Self {
            ok: metrics::counter!(REQUESTS, "model" => m.clone(), "code" => "200"),
            request_duration: metrics::histogram!(REQUEST_DURATION, "model" => m.clone()),
            inference_duration: OnceLock::new(),
            queue_wait: metrics::histogram!(QUEUE_WAIT, "model" => m.clone()),
            inflight: metrics::gauge!(INFLIGHT, "model" => m.clone()),
            tokenization: metrics::histogram!(TOKENIZATION_DURATION, "model" => m.clone()),
            batch_wait: metrics::histogram!(BATCH_WAIT, "model" => m.clone()),
            batches: metrics::counter!(BATCHES, "model" => m.clone()),
            batched_inputs: metrics::counter!(BATCHED_ROWS, "model" => m),
        };
        if let Some(backend) = backend {
            handles.engine_known(model, backend);
        }
        handles
    }

    /// Registers the inference histogram with the engine that runs the model (once).
    pub fn engine_known(&self, model: &str, backend: &str) {
        self.inference_duration.get_or_init(
            || metrics::histogram!(INFERENCE_DURATION, "model" => model.to_string(), "backend" => backend.to_string()),
        );
    }
}

/// Counts a request turned away before inference, in `stowage_rejected_total`.
pub fn rejected(model: &str, reason: &'static str) {
    metrics::counter!(REJECTED, "model" => model.to_string(), "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_in_the_documented_list() {
        let names: Vec<&str> = include_str!("metrics.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split('"').nth(1))
            .collect();
        assert!(names.len() >= 17, "found only {names:?}");
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
        for name in names {
            assert!(doc.contains(&format!("| `{name}` |")), "docs/metrics.md does not list {name}");
        }
    }
}
