//! The OpenAPI 3.1 document of a node's and of the gateway's HTTP API, served at
//! `GET /openapi.json` (docs/http-api.md, "OpenAPI"), generated with utoipa from the types
//! below: each body the routes take or answer, and each route with its parameters and the
//! statuses of the error table it may answer. The handlers build some bodies as JSON values;
//! the tests hold them to these types (every route's real answers are validated against the
//! document's schemas) and the document to docs/http-api.md (the same routes and statuses).

use std::collections::BTreeMap;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// An error (`/predictions`, `/models`, `/async`, health): a sentence and the table's code.
#[derive(Serialize, ToSchema)]
pub struct Error {
    /// What went wrong, in a sentence.
    pub error: String,
    /// The error table's code (`unknown_model`, `queue_full`, …).
    pub code: String,
}

/// An error on the KServe v2 routes, as the protocol writes it: a sentence alone.
#[derive(Serialize, ToSchema)]
pub struct V2Error {
    pub error: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ping {
    /// `Healthy`.
    pub status: String,
}

/// Models by state.
#[derive(Serialize, ToSchema)]
pub struct ModelCounts {
    pub loading: u64,
    pub ready: u64,
    pub failed: u64,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    pub models: ModelCounts,
}

/// `POST /predictions/{model}`: texts (`inputs`, optional `text_pair`), or token ids.
#[derive(Serialize, ToSchema)]
pub struct PredictRequest {
    /// One text or several.
    #[schema(value_type = Option<Object>)]
    pub inputs: Option<serde_json::Value>,
    /// The second text of each pair, in the same form as `inputs`.
    #[schema(value_type = Option<Object>)]
    pub text_pair: Option<serde_json::Value>,
    /// Cut texts longer than the model's length (default true); false: 422 instead.
    pub truncate: Option<bool>,
    /// Pre-tokenized input: one row of ids per input.
    pub input_ids: Option<Vec<Vec<i64>>>,
    pub attention_mask: Option<Vec<Vec<i64>>>,
    pub token_type_ids: Option<Vec<Vec<i64>>>,
    /// Asynchronous requests only: where to POST the ended job.
    pub callback_url: Option<String>,
}

/// A classifier's answer for one input.
#[derive(Serialize, ToSchema)]
pub struct ClassPrediction {
    pub label: String,
    pub score: f64,
    /// Every label's probability.
    pub scores: BTreeMap<String, f64>,
}

/// An embedding model's answer for one input: mean-pooled, L2-normalized.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingPrediction {
    pub embedding: Vec<f32>,
}

#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Prediction {
    Class(ClassPrediction),
    Embedding(EmbeddingPrediction),
}

#[derive(Serialize, ToSchema)]
pub struct Predictions {
    pub model: String,
    /// The engine that ran it: `tract` or `ort`.
    pub backend: String,
    /// One per input, in order.
    pub predictions: Vec<Prediction>,
}

/// A model of the node, as `/models` describes it.
#[derive(Serialize, ToSchema)]
pub struct ModelInfo {
    pub id: String,
    /// `loading`, `ready`, `failed` or `cold`.
    pub state: String,
    pub backend: String,
    pub memory_bytes: Option<u64>,
    pub weights_bytes: Option<u64>,
    pub fetched_bytes: Option<u64>,
    pub cached_bytes: Option<u64>,
    pub fetch_seconds: Option<f64>,
    pub load_seconds: Option<f64>,
    pub warmup_seconds: Option<f64>,
    pub concurrency: u64,
    pub batch_inputs: u64,
    pub queued: u64,
    /// The model's inputs and output (when ready).
    #[schema(value_type = Option<Object>)]
    pub signature: Option<serde_json::Value>,
    /// Why `auto` chose its engine, and the timings it compared.
    pub engine_choice: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub engine_timings: Option<serde_json::Value>,
    pub labels: Option<Vec<String>>,
    pub max_length: Option<u64>,
    /// Why it failed to load.
    pub error: Option<String>,
    /// `hot` or `cold` (loaded on demand in the cold pool).
    pub residency: String,
    /// Cold models: whether it is loaded now.
    pub resident: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
}

/// An accepted asynchronous request.
#[derive(Serialize, ToSchema)]
pub struct JobAccepted {
    /// `{model}.{hex}`.
    pub id: String,
    pub status: String,
    pub status_url: String,
}

#[derive(Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    pub model: String,
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    pub attempts: u64,
    /// RFC 3339.
    pub submitted_at: String,
    pub finished_at: Option<String>,
    /// What the synchronous route would have answered.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// `GET /v2`.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Live {
    pub live: bool,
}

#[derive(Serialize, ToSchema)]
pub struct V2Ready {
    pub ready: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ModelReady {
    pub name: String,
    pub ready: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    /// `BYTES`, `INT64` or `FP32`.
    pub datatype: String,
    /// -1: any size.
    pub shape: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelMetadataParameters {
    pub labels: Vec<String>,
    pub max_length: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    /// `tract_onnx` or `ort_onnx`.
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
    pub parameters: ModelMetadataParameters,
}

/// An input tensor of an inference request.
#[derive(Serialize, ToSchema)]
pub struct InferInput {
    /// `text`, `text_pair`, `input_ids`, `attention_mask` or `token_type_ids`.
    pub name: String,
    pub shape: Vec<i64>,
    /// `BYTES` (texts) or `INT64` (token ids).
    pub datatype: String,
    /// `binary_data_size`: the values are that many bytes of the binary part.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// The values, flat or nested (unless binary).
    #[schema(value_type = Option<Vec<Object>>)]
    pub data: Option<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
    /// `binary_data`: this output in the binary extension.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
}

/// `POST /v2/models/{model}/infer` (JSON; with `Inference-Header-Content-Length`, this JSON
/// followed by the binary tensors).
#[derive(Serialize, ToSchema)]
pub struct InferRequest {
    pub id: Option<String>,
    /// `truncate`, `binary_data_output`, `callback_url` (asynchronous requests).
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    pub inputs: Vec<InferInput>,
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Serialize, ToSchema)]
pub struct InferOutput {
    /// `probabilities`, `logits` or `embedding`.
    pub name: String,
    /// `FP32`.
    pub datatype: String,
    pub shape: Vec<i64>,
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// The values, flat (unless binary).
    pub data: Option<Vec<f32>>,
}

#[derive(Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// The gateway's `/ready`: how many models and nodes it routes to.
#[derive(Serialize, ToSchema)]
pub struct GatewayReady {
    pub status: String,
    pub routes: GatewayRoutes,
}

#[derive(Serialize, ToSchema)]
pub struct GatewayRoutes {
    pub models: u64,
    pub nodes: u64,
}

/// A model the gateway routes, with its (first) node.
#[derive(Serialize, ToSchema)]
pub struct Route {
    pub id: String,
    pub node: String,
    pub url: String,
    /// A model with replicas: each of its nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Vec<ReplicaNode>>,
}

/// One node of a model with replicas.
#[derive(Serialize, ToSchema)]
pub struct ReplicaNode {
    pub node: String,
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct RouteList {
    pub models: Vec<Route>,
}

/// The routes' operations: stubs that carry the document (the handlers are in `http::*`).
#[allow(dead_code)]
mod ops {
    use super::*;

    #[utoipa::path(get, path = "/predictions/{model_id}", tag = "predictions",
        params(("model_id" = String, Path, description = "The model's id"),
               ("text" = Option<String>, Query, description = "The text (also seq_0)"),
               ("text_pair" = Option<String>, Query, description = "Its pair (also seq_1)")),
        responses((status = 200, description = "One prediction", body = Predictions),
                  (status = 400, description = "malformed_request", body = Error),
                  (status = 404, description = "unknown_model", body = Error),
                  (status = 422, description = "invalid_input", body = Error),
                  (status = 429, description = "queue_full (Retry-After)", body = Error),
                  (status = 499, description = "client_closed_request", body = Error),
                  (status = 500, description = "inference_failed", body = Error),
                  (status = 503, description = "not_ready, model_failed, shutting_down, queue_timeout, cold_pool_full (Retry-After); node_unavailable, node_starting (gateway)", body = Error),
                  (status = 504, description = "upstream_timeout (gateway)", body = Error)))]
    fn predict_get() {}

    #[utoipa::path(post, path = "/predictions/{model_id}", tag = "predictions",
        params(("model_id" = String, Path, description = "The model's id")),
        request_body = PredictRequest,
        responses((status = 200, description = "One prediction per input", body = Predictions),
                  (status = 400, description = "malformed_request", body = Error),
                  (status = 404, description = "unknown_model", body = Error),
                  (status = 408, description = "body_timeout", body = Error),
                  (status = 413, description = "body_too_large", body = Error),
                  (status = 422, description = "invalid_input", body = Error),
                  (status = 429, description = "queue_full (Retry-After)", body = Error),
                  (status = 499, description = "client_closed_request", body = Error),
                  (status = 500, description = "inference_failed", body = Error),
                  (status = 503, description = "not_ready, model_failed, shutting_down, queue_timeout, cold_pool_full (Retry-After); node_unavailable, node_starting (gateway)", body = Error),
                  (status = 504, description = "upstream_timeout (gateway)", body = Error)))]
    fn predict_post() {}

    #[utoipa::path(post, path = "/async/predictions/{model_id}", tag = "async",
        params(("model_id" = String, Path, description = "The model's id"),
               ("Idempotency-Key" = Option<String>, Header, description = "A resubmission with this key gets the first job")),
        request_body = PredictRequest,
        responses((status = 202, description = "Queued durably (Location: its status URL)", body = JobAccepted),
                  (status = 400, description = "malformed_request", body = Error),
                  (status = 404, description = "unknown_model", body = Error),
                  (status = 408, description = "body_timeout", body = Error),
                  (status = 413, description = "body_too_large", body = Error),
                  (status = 501, description = "async_disabled", body = Error),
                  (status = 503, description = "job_store_failed, shutting_down (Retry-After)", body = Error)))]
    fn async_submit() {}

    #[utoipa::path(get, path = "/async/results/{job_id}", tag = "async",
        params(("job_id" = String, Path, description = "The job's id")),
        responses((status = 200, description = "The job", body = Job),
                  (status = 404, description = "unknown_job", body = Error),
                  (status = 501, description = "async_disabled", body = Error)))]
    fn async_result() {}

    #[utoipa::path(get, path = "/ping", tag = "health",
        responses((status = 200, description = "Alive", body = Ping)))]
    fn ping() {}

    #[utoipa::path(head, path = "/ping", tag = "health", responses((status = 200, description = "Alive")))]
    fn ping_head() {}

    #[utoipa::path(get, path = "/ready", tag = "health",
        responses((status = 200, description = "Every model loaded and warm", body = Ready),
                  (status = 503, description = "not_ready, shutting_down (Retry-After)", body = Error)))]
    fn ready() {}

    #[utoipa::path(head, path = "/ready", tag = "health",
        responses((status = 200, description = "Every model loaded and warm"),
                  (status = 503, description = "not_ready, shutting_down (Retry-After)")))]
    fn ready_head() {}

    #[utoipa::path(get, path = "/models", tag = "models",
        responses((status = 200, description = "Every model of the node", body = ModelList)))]
    fn models() {}

    #[utoipa::path(get, path = "/models/{model_id}", tag = "models",
        params(("model_id" = String, Path, description = "The model's id")),
        responses((status = 200, description = "The model", body = ModelInfo),
                  (status = 404, description = "unknown_model", body = Error)))]
    fn model() {}

    #[utoipa::path(get, path = "/metrics", tag = "health",
        responses((status = 200, description = "Prometheus text (docs/metrics.md)", body = String, content_type = "text/plain")))]
    fn metrics() {}

    #[utoipa::path(get, path = "/openapi.json", tag = "health",
        responses((status = 200, description = "This document", body = Object)))]
    fn openapi() {}

    #[utoipa::path(get, path = "/v2", tag = "kserve-v2",
        responses((status = 200, description = "Server metadata", body = ServerMetadata)))]
    fn v2_server() {}

    #[utoipa::path(get, path = "/v2/health/live", tag = "kserve-v2",
        responses((status = 200, description = "Live", body = Live)))]
    fn v2_live() {}

    #[utoipa::path(get, path = "/v2/health/ready", tag = "kserve-v2",
        responses((status = 200, description = "Ready", body = V2Ready),
                  (status = 503, description = "Not ready", body = V2Error)))]
    fn v2_ready() {}

    #[utoipa::path(get, path = "/v2/models/{model_id}", tag = "kserve-v2",
        params(("model_id" = String, Path, description = "The model's id")),
        responses((status = 200, description = "Model metadata", body = ModelMetadata),
                  (status = 404, description = "unknown_model", body = V2Error),
                  (status = 503, description = "not_ready, model_failed, cold_pool_full; node_unavailable, node_starting (gateway)", body = V2Error),
                  (status = 504, description = "upstream_timeout (gateway)", body = V2Error)))]
    fn v2_model() {}

    #[utoipa::path(get, path = "/v2/models/{model_id}/ready", tag = "kserve-v2",
        params(("model_id" = String, Path, description = "The model's id")),
        responses((status = 200, description = "Ready", body = ModelReady),
                  (status = 404, description = "unknown_model", body = V2Error),
                  (status = 503, description = "not_ready, model_failed, cold_pool_full; node_unavailable, node_starting (gateway)", body = V2Error),
                  (status = 504, description = "upstream_timeout (gateway)", body = V2Error)))]
    fn v2_model_ready() {}

    #[utoipa::path(post, path = "/v2/models/{model_id}/infer", tag = "kserve-v2",
        params(("model_id" = String, Path, description = "The model's id"),
               ("Inference-Header-Content-Length" = Option<u64>, Header, description = "Bytes of JSON before the binary tensors"),
               ("Prefer" = Option<String>, Header, description = "respond-async: queue it (202)")),
        request_body = InferRequest,
        responses((status = 200, description = "Output tensors (JSON, or JSON and binary tensors as application/octet-stream)", body = InferResponse),
                  (status = 202, description = "Queued (Prefer: respond-async)", body = JobAccepted),
                  (status = 400, description = "malformed_request", body = V2Error),
                  (status = 404, description = "unknown_model", body = V2Error),
                  (status = 408, description = "body_timeout", body = V2Error),
                  (status = 413, description = "body_too_large", body = V2Error),
                  (status = 422, description = "invalid_input", body = V2Error),
                  (status = 429, description = "queue_full (Retry-After)", body = V2Error),
                  (status = 499, description = "client_closed_request", body = V2Error),
                  (status = 500, description = "inference_failed", body = V2Error),
                  (status = 501, description = "async_disabled", body = V2Error),
                  (status = 503, description = "not_ready, model_failed, shutting_down, queue_timeout, cold_pool_full, job_store_failed (Retry-After); node_unavailable, node_starting (gateway)", body = V2Error),
                  (status = 504, description = "upstream_timeout (gateway)", body = V2Error)))]
    fn v2_infer() {}

    #[utoipa::path(get, path = "/ready", tag = "health",
        responses((status = 200, description = "The gateway has routes", body = GatewayReady),
                  (status = 503, description = "not_ready: no routes, or shutting down", body = Error)))]
    fn gateway_ready() {}

    #[utoipa::path(head, path = "/ready", tag = "health",
        responses((status = 200, description = "The gateway has routes"),
                  (status = 503, description = "not_ready: no routes, or shutting down")))]
    fn gateway_ready_head() {}

    #[utoipa::path(get, path = "/models", tag = "models",
        responses((status = 200, description = "Every model the gateway routes, with its node", body = RouteList)))]
    fn gateway_models() {}

    /// A node's API.
    #[derive(OpenApi)]
    #[openapi(
        info(title = "Stowage node", description = "One node's models (docs/http-api.md)"),
        paths(
            predict_get,
            predict_post,
            async_submit,
            async_result,
            ping,
            ping_head,
            ready,
            ready_head,
            models,
            model,
            metrics,
            openapi,
            v2_server,
            v2_live,
            v2_ready,
            v2_model,
            v2_model_ready,
            v2_infer
        ),
        components(schemas(
            Error,
            V2Error,
            Ping,
            Ready,
            ModelCounts,
            PredictRequest,
            Predictions,
            Prediction,
            ClassPrediction,
            EmbeddingPrediction,
            ModelList,
            ModelInfo,
            JobAccepted,
            Job,
            ServerMetadata,
            Live,
            V2Ready,
            ModelReady,
            ModelMetadata,
            TensorMetadata,
            ModelMetadataParameters,
            InferRequest,
            InferInput,
            RequestedOutput,
            InferResponse,
            InferOutput
        ))
    )]
    pub struct NodeApi;

    /// The gateway's API: the nodes' model routes, forwarded, and its own.
    #[derive(OpenApi)]
    #[openapi(
        info(
            title = "Stowage gateway",
            description = "Every model of a plan at one address (docs/http-api.md, \"The gateway\")"
        ),
        paths(
            predict_get,
            predict_post,
            async_submit,
            async_result,
            ping,
            ping_head,
            gateway_ready,
            gateway_ready_head,
            gateway_models,
            metrics,
            openapi,
            v2_server,
            v2_live,
            v2_ready,
            v2_model,
            v2_model_ready,
            v2_infer
        ),
        components(schemas(
            Error,
            V2Error,
            Ping,
            GatewayReady,
            GatewayRoutes,
            RouteList,
            Route,
            ReplicaNode,
            PredictRequest,
            Predictions,
            Prediction,
            ClassPrediction,
            EmbeddingPrediction,
            JobAccepted,
            Job,
            ServerMetadata,
            Live,
            V2Ready,
            ModelReady,
            ModelMetadata,
            TensorMetadata,
            ModelMetadataParameters,
            InferRequest,
            InferInput,
            RequestedOutput,
            InferResponse,
            InferOutput
        ))
    )]
    pub struct GatewayApi;
}

/// The node's document, made once.
static NODE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| document(ops::NodeApi::openapi()));
static GATEWAY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| document(ops::GatewayApi::openapi()));

fn document(mut api: utoipa::openapi::OpenApi) -> String {
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    api.to_pretty_json().expect("the document serializes")
}

/// `GET /openapi.json` on a node.
pub async fn node() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(NODE.as_str())
}

/// `GET /openapi.json` on the gateway.
pub async fn gateway() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(GATEWAY.as_str())
}
