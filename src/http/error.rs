//! API errors as HTTP: every error answers `{"error": "human sentence", "code": "snake_case_code"}`
//! (docs/http-api.md) with the status and Retry-After of the one table of codes
//! (`stowage_node::error`), which also says each domain error's code.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
pub use stowage_node::error::{Code, ErrorCode};
use stowage_node::PredictError;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<PredictError> for ApiError {
    fn from(e: PredictError) -> Self {
        ApiError::new(e.error_code(), e.to_string())
    }
}

impl ApiError {
    /// The error as the Open Inference Protocol (KServe v2) writes it: `{"error": "sentence"}`,
    /// with the status and Retry-After of the table.
    pub fn v2_response(&self) -> HttpResponse {
        let body = serde_json::json!({"error": self.message}).to_string();
        self.error_response().set_body(body).map_into_boxed_body()
    }
}

/// The HTTP status of a code of the table.
pub fn status(code: Code) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        status(self.code)
    }

    fn error_response(&self) -> HttpResponse {
        let (name, retry) = (self.code.name(), self.code.retry_after());
        let mut r = HttpResponse::build(status(self.code));
        if self.code == Code::BodyTimeout {
            // The rest of the body may never come: the connection cannot serve another request.
            r.force_close();
        }
        if let Some(s) = retry {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if self.code == Code::Unauthorized {
            r.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"stowage-admin\""));
        }
        r.json(serde_json::json!({"error": self.message, "code": name}))
    }
}
