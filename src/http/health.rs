//! Liveness (`/ping`) and readiness (`/ready`).

use actix_web::{web, HttpResponse};

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;

pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "Healthy"}))
}

/// 200 only when enough models are loaded and warmed up (all by default) and the node is not
/// leaving (from SIGTERM on).
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let r = state.node.readiness();
    if r.leaving {
        return Err(ApiError::new(Code::ShuttingDown, "the node is shutting down"));
    }
    if r.is_ready() {
        let models = serde_json::json!({"loading": r.loading, "ready": r.ready, "failed": r.failed});
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready", "models": models})))
    } else {
        let all = r.loading + r.ready + r.failed;
        Err(ApiError::new(
            Code::NotReady,
            format!(
                "{} of {all} models ready ({} loading, {} failed; {} needed)",
                r.ready, r.loading, r.failed, r.needed
            ),
        ))
    }
}
