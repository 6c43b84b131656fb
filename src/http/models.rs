//! `/models` and `/models/{id}`: each assigned model with its state, backend, memory, load time.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use stowage_node::lifecycle::registry::{Entry, State};
use stowage_node::Node;

use crate::http::error::ApiError;
use crate::http::state::AppState;

fn describe(node: &Node, e: &Entry) -> Value {
    let state = e.state();
    let info = e.info();
    let mut v = json!({
        "id": e.spec.id,
        "state": state.name(),
        "backend": match &state {
            State::Ready(m) => m.model.backend().to_string(),
            _ => e.spec.engine.to_string(),
        },
        "memory_bytes": info.memory_bytes,
        "weights_bytes": info.weights_bytes,
        "fetched_bytes": info.fetched_bytes,
        "cached_bytes": info.cached_bytes,
        "fetch_seconds": info.fetch_seconds,
        "load_seconds": info.load_seconds,
        "warmup_seconds": info.warmup_seconds,
        "concurrency": e.batcher.calls(),
        "batch_inputs": e.batcher.rows(),
        "queued": e.admission.waiting() + e.batcher.pending(),
        "queue_size": node.queue_limit(e),
    });
    match state {
        State::Ready(m) => {
            v["signature"] = json!(m.signature);
            if let Some(reason) = &m.engine_reason {
                v["engine_choice"] = json!(reason);
            }
            if let Some(verdict) = &m.engine_verdict {
                v["engine_timings"] = json!(verdict);
            }
            v["labels"] = json!(m.labels);
            v["max_length"] = json!(m.text.max_length);
        }
        State::Failed(reason) => v["error"] = json!(reason),
        State::Loading | State::Cold => {}
    }
    v["residency"] = json!(if e.cold.is_some() { "cold" } else { "hot" });
    if e.cold.is_some() {
        v["resident"] = json!(matches!(e.state(), State::Ready(_)));
    }
    v
}

pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let models: Vec<Value> = state.node.registry.entries().iter().map(|e| describe(&state.node, e)).collect();
    HttpResponse::Ok().json(json!({"models": models}))
}

pub async fn one(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let e = state.node.registry.get(&id).ok_or_else(|| stowage_node::PredictError::UnknownModel(id.to_string()))?;
    Ok(HttpResponse::Ok().json(describe(&state.node, &e)))
}
