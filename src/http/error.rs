//! API errors: one table maps each stable `code` to its HTTP status; every error answers
//! `{"error": "human sentence", "code": "snake_case_code"}` (docs/http-api.md). The node's errors
//! become codes here, and only here.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use stowage_node::PredictError;

/// Every error code the HTTP API can answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    MalformedRequest,
    NoSuchRoute,
    MethodNotAllowed,
    UnknownModel,
    BodyTooLarge,
    BodyTimeout,
    InvalidInput,
    QueueFull,
    QueueTimeout,
    NotReady,
    ModelFailed,
    ShuttingDown,
    InferenceFailed,
    /// The gateway cannot reach the model's node.
    NodeUnavailable,
    /// The model's node took longer than the gateway waits.
    UpstreamTimeout,
    /// An admin call without the bearer token, or with a wrong one.
    Unauthorized,
    /// A reload whose plan and catalog cannot be served (unreadable, inconsistent, no such node).
    ReloadRefused,
    /// A cold model that cannot be loaded now: the cold pool is held by models in use.
    ColdPoolFull,
}

impl Code {
    /// The one table: code → (status, name, Retry-After seconds).
    pub fn meta(self) -> (StatusCode, &'static str, Option<u32>) {
        match self {
            Code::MalformedRequest => (StatusCode::BAD_REQUEST, "malformed_request", None),
            Code::NoSuchRoute => (StatusCode::NOT_FOUND, "not_found", None),
            Code::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Code::UnknownModel => (StatusCode::NOT_FOUND, "unknown_model", None),
            Code::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", None),
            Code::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout", None),
            Code::InvalidInput => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", None),
            Code::QueueFull => (StatusCode::TOO_MANY_REQUESTS, "queue_full", Some(1)),
            Code::QueueTimeout => (StatusCode::SERVICE_UNAVAILABLE, "queue_timeout", Some(1)),
            Code::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready", Some(5)),
            Code::ModelFailed => (StatusCode::SERVICE_UNAVAILABLE, "model_failed", Some(60)),
            Code::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down", Some(5)),
            Code::InferenceFailed => (StatusCode::INTERNAL_SERVER_ERROR, "inference_failed", None),
            Code::NodeUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "node_unavailable", Some(1)),
            Code::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", None),
            Code::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            Code::ReloadRefused => (StatusCode::CONFLICT, "reload_refused", None),
            Code::ColdPoolFull => (StatusCode::SERVICE_UNAVAILABLE, "cold_pool_full", Some(1)),
        }
    }
}

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
        let code = match &e {
            PredictError::ShuttingDown => Code::ShuttingDown,
            PredictError::UnknownModel(_) => Code::UnknownModel,
            PredictError::NotReady(_) => Code::NotReady,
            PredictError::ModelFailed { .. } => Code::ModelFailed,
            PredictError::Invalid(_) => Code::InvalidInput,
            PredictError::QueueFull(_) => Code::QueueFull,
            PredictError::PoolFull(_) => Code::ColdPoolFull,
            PredictError::QueueTimeout { .. } => Code::QueueTimeout,
            PredictError::Inference(_) => Code::InferenceFailed,
        };
        ApiError::new(code, e.to_string())
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

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.meta().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, name, retry) = self.code.meta();
        let mut r = HttpResponse::build(status);
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
