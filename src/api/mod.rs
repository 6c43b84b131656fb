//! The HTTP API of a node (DESIGN.md): one file per resource.

pub mod health;
pub mod metrics;
pub mod models;
pub mod predictions;

use std::sync::Arc;

use actix_web::web;

use crate::server::AppState;

/// Mounts every route; used by the server and by in-process tests.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .route("/predictions/{model_id}", web::get().to(predictions::get))
            .route("/predictions/{model_id}", web::post().to(predictions::post))
            .route("/ping", web::get().to(health::ping))
            .route("/ready", web::get().to(health::ready))
            .route("/models", web::get().to(models::list))
            .route("/models/{model_id}", web::get().to(models::one))
            .route("/metrics", web::get().to(metrics::render));
    }
}
