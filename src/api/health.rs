//! Liveness (`/ping`) and readiness (`/ready`).

use actix_web::{web, HttpResponse};

use crate::error::{ApiError, Code};
use crate::server::AppState;

pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "Healthy"}))
}

/// 200 only when enough models are loaded and warmed up (all by default) and the node is not
/// leaving (from SIGTERM on).
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let reg = &state.registry;
    let (loading, ready, failed) = reg.counts();
    let body = serde_json::json!({"models": {"loading": loading, "ready": ready, "failed": failed}});
    if reg.leaving() {
        return Err(ApiError::new(Code::ShuttingDown, "the node is shutting down"));
    }
    let needed = (state.config.ready_fraction * reg.len() as f64).ceil() as usize;
    if ready >= needed {
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "models": body["models"]})))
    } else {
        Err(ApiError::new(
            Code::NotReady,
            format!("{ready} of {} models ready ({loading} loading, {failed} failed; {needed} needed)", reg.len()),
        ))
    }
}
