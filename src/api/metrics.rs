//! `/metrics` in the Prometheus text format.

use actix_web::{web, HttpResponse};

use crate::server::AppState;

pub async fn render(state: web::Data<AppState>) -> HttpResponse {
    state.registry.publish_counts();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}
