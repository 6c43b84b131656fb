//! Forwarding one request to the node of its model: method, path, query, headers (less the
//! hop-by-hop ones) and body go as they came, the node's answer comes back as it is. A model with
//! replicas sends each request to the replica with the fewest requests in flight from this
//! gateway. A request whose connection could not even be opened (it was never sent) goes to
//! another replica, else is tried once more; one that was sent is never repeated. A request for a
//! node that scales to zero and has no replica is held until the node is ready (`wake.rs`).
//! Errors are the nodes' JSON errors: 404 `unknown_model`, 503 `node_unavailable` or
//! `node_starting`, 504 `upstream_timeout` (`{"error"}` alone on KServe v2 routes).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::HeaderName;
use actix_web::HttpMessage;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use awc::error::SendRequestError;
use stowage_node::metrics as m;

use super::routes::{Replicas, Upstream};
use super::GatewayState;
use crate::http::body;
use crate::http::error::{ApiError, Code};

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and `host`.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

/// An error as the route's protocol writes it.
fn error(req: &HttpRequest, e: ApiError) -> HttpResponse {
    if req.path().starts_with("/v2/") {
        e.v2_response()
    } else {
        e.error_response()
    }
}

/// An error the gateway answers itself, counted under its status.
fn answered(req: &HttpRequest, e: ApiError) -> HttpResponse {
    let response = error(req, e);
    count(response.status().as_u16());
    response
}

pub async fn no_such_route(req: HttpRequest) -> HttpResponse {
    let msg = format!(
        "no route {} {}; the gateway serves /predictions/{{model_id}}, /async/predictions/{{model_id}}, /async/results/{{job_id}}, /v2/models/{{model_id}}[/ready|/infer], /v2, /v2/health/…, /ping, /ready, /models and /metrics",
        req.method(),
        req.path()
    );
    ApiError::new(Code::NotFound, msg).error_response()
}

pub async fn forward(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<GatewayState>,
    client: web::Data<awc::Client>,
) -> HttpResponse {
    // An asynchronous job's id starts with its model's: `{model}.{hex}`.
    let job = req.match_info().get("job_id");
    let model = match job {
        Some(j) => j.split_once('.').map_or("", |(m, _)| m),
        None => req.match_info().get("model_id").unwrap_or_default(),
    }
    .to_string();
    let routes = state.routes.get();
    let Some(replicas) = routes.models.get(&model) else {
        let e = match job {
            Some(j) => ApiError::new(Code::UnknownJob, format!("no job {j:?} behind this gateway")),
            None => ApiError::new(Code::UnknownModel, format!("no model {model:?} behind this gateway")),
        };
        return answered(&req, e);
    };
    // The body is read whole (bounded in size and time), so that a request whose connection to
    // the node could not be opened can be sent again.
    let body = match body::read(&req, &mut payload, state.max_body_bytes, state.body_timeout).await {
        Ok(body) => body,
        Err(e) => return error(&req, e),
    };
    let path = req.uri().path_and_query().map_or(req.path(), |p| p.as_str());
    // The model's node, or of its replicas the one with the fewest requests in flight.
    let Some((mut k, mut up)) = replicas.pick(&[]) else {
        return error(&req, ApiError::new(Code::UnknownModel, format!("no node for model {model:?}")));
    };
    let mut tried = Vec::new();
    // A node that scales to zero and has no replica now: the request waits for it to start.
    if let Err(e) = state.waker.ready(&up).await {
        return answered(&req, e);
    }
    let mut inflight = up.sending();
    let mut started = Instant::now();
    let mut tries = 0;
    let result = loop {
        let url = format!("{}{path}", up.base);
        let mut fwd = client.request(req.method().clone(), &url).timeout(state.upstream_timeout);
        for (name, value) in req.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
            fwd = fwd.append_header((name.clone(), value.clone()));
        }
        // The node's parent is the gateway's span, in the client's trace (`crate::trace`).
        if let Some(trace) = req.extensions().get::<crate::trace::RequestTrace>() {
            fwd = fwd.insert_header((crate::trace::TRACEPARENT, trace.traceparent()));
        }
        if let Some(peer) = req.peer_addr() {
            fwd = fwd.insert_header(("x-forwarded-for", peer.ip().to_string()));
        }
        match fwd.send_body(body.clone()).await {
            // Never sent, and the model has another replica: that one takes it.
            Err(SendRequestError::Connect(e)) if replicas.nodes.len() > tried.len() + 1 => {
                (k, up) = next_replica(replicas, &mut tried, k, &up, &model, &e.to_string());
                if let Err(e) = state.waker.ready(&up).await {
                    return answered(&req, e);
                }
                inflight = up.sending();
                started = Instant::now();
            }
            // Never sent, to a node that scales to zero: it has no replica now. Held until it
            // is ready, then sent.
            Err(SendRequestError::Connect(_)) if tries < 3 && state.waker.gone(&up) => {
                if let Err(e) = state.waker.ready(&up).await {
                    return answered(&req, e);
                }
                started = Instant::now();
                tries += 1;
            }
            // Never sent: the connection could not be opened. Once more, on a fresh connection.
            Err(SendRequestError::Connect(_)) if tries == 0 => tries += 1,
            other => break other,
        }
    };
    // What went wrong is said by node id only (a plan's; "its node" for a route map, whose nodes
    // are addresses): addresses and the transport's own words stay in the gateway's log.
    let response = match result {
        Ok(mut answer) => match answer.body().limit(64 << 20).await {
            Ok(bytes) => {
                let mut r = HttpResponse::build(answer.status());
                for (name, value) in answer.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
                    r.append_header((name.clone(), value.clone()));
                }
                r.body(bytes)
            }
            Err(e) => upstream_failed(
                &req,
                &up.node,
                "body",
                &e.to_string(),
                ApiError::new(Code::NodeUnavailable, format!("{} of model {model:?} broke off its answer", up.shown())),
            ),
        },
        Err(SendRequestError::Timeout) => upstream_failed(
            &req,
            &up.node,
            "timeout",
            "no answer in time",
            ApiError::new(
                Code::UpstreamTimeout,
                format!(
                    "{} of model {model:?} did not answer within {} ms",
                    up.shown(),
                    state.upstream_timeout.as_millis()
                ),
            ),
        ),
        Err(SendRequestError::Connect(e)) => upstream_failed(
            &req,
            &up.node,
            "connect",
            &e.to_string(),
            ApiError::new(Code::NodeUnavailable, format!("{} of model {model:?} cannot be reached", up.shown())),
        ),
        Err(e) => upstream_failed(
            &req,
            &up.node,
            "send",
            &e.to_string(),
            ApiError::new(Code::NodeUnavailable, format!("{} of model {model:?} failed to answer", up.shown())),
        ),
    };
    drop(inflight);
    metrics::histogram!(m::GATEWAY_UPSTREAM_DURATION, "node" => up.node.clone())
        .record(started.elapsed().as_secs_f64());
    count(response.status().as_u16());
    response
}

/// Seconds between two warnings about one node's failures: a node that is down fails every
/// request sent to it, and the counter (`stowage_gateway_upstream_errors_total`) has them all.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn upstream_failed(req: &HttpRequest, node: &str, kind: &'static str, detail: &str, e: ApiError) -> HttpResponse {
    note_failure(node, kind, detail, &e);
    error(req, e)
}

/// Counts a node's failure to answer and warns of it (at most every `WARN_EVERY` per node).
/// Replica `k` of `model`, `up`, could not be reached (`detail`): the failure is noted, the node
/// passed over for a while, `k` added to `tried`, and the next untried replica picked (there must
/// be one).
pub(crate) fn next_replica(
    replicas: &Replicas,
    tried: &mut Vec<usize>,
    k: usize,
    up: &Upstream,
    model: &str,
    detail: &str,
) -> (usize, Arc<Upstream>) {
    let msg = format!("{} of model {model:?} cannot be reached: trying another replica", up.shown());
    note_failure(&up.node, "connect", detail, &ApiError::new(Code::NodeUnavailable, msg));
    up.unreachable();
    tried.push(k);
    replicas.pick(tried).expect("an untried replica is left")
}

pub(crate) fn note_failure(node: &str, kind: &'static str, detail: &str, e: &ApiError) {
    metrics::counter!(m::GATEWAY_UPSTREAM_ERRORS, "node" => node.to_string(), "kind" => kind).increment(1);
    static LAST: LazyLock<Mutex<HashMap<String, (Instant, u64)>>> = LazyLock::new(Default::default);
    let unsaid = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(node) {
            Some((at, quiet)) if at.elapsed() < WARN_EVERY => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                let n = *quiet;
                (*at, *quiet) = (Instant::now(), 0);
                Some(n)
            }
            None => {
                last.insert(node.to_string(), (Instant::now(), 0));
                Some(0)
            }
        }
    };
    if let Some(unsaid) = unsaid {
        tracing::warn!(node, kind, error = %e, detail, more_since_last_warning = unsaid, "upstream failed");
    }
}

pub(crate) fn count(status: u16) {
    metrics::counter!(m::GATEWAY_REQUESTS, "code" => status.to_string()).increment(1);
}
