//! `/metrics` in the Prometheus text format (docs/metrics.md lists them).

use actix_web::{web, HttpResponse};

use crate::http::state::AppState;

pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    state.node.publish_gauges();
    if let Some(jobs) = &state.jobs {
        jobs.publish_gauges();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(stowage_node::metrics::render(&state.metrics))
}
