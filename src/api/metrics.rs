//! `/metrics` in the Prometheus text format.

use actix_web::{web, HttpResponse};

use crate::metrics as m;
use crate::server::AppState;

pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    state.registry.publish_counts();
    let (busy, backlog) = state.inference.load();
    metrics::gauge!(m::INFERENCE_BUSY).set(busy as f64);
    metrics::gauge!(m::INFERENCE_BACKLOG).set(backlog as f64);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}
