//! The Open Inference Protocol (KServe v2) over gRPC (docs/http-api.md, "KServe v2 over gRPC"):
//! the `inference.GRPCInferenceService` of proto/grpc_predict_v2.proto, served by a node on
//! `--grpc-port`. It is the REST form's twin: a `ModelInfer` is turned into the same inference
//! request (`http::v2`), takes the same path through the node (admission, queue, batching,
//! metrics) and answers the same tensors, with the values in `raw_output_contents`. Errors are
//! gRPC status codes mapped from the error table (`code_of`); the message starts with the
//! table's name (`unknown_model: …`), which the `stowage-error-code` metadata also carries.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;
use crate::http::v2::{self, InferRequest, InputTensor, RequestedOutput};

/// The messages and service generated from proto/grpc_predict_v2.proto.
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;

/// The gRPC status code of an error of the table. Exhaustive: a new code must say its own.
pub fn code_of(code: Code) -> tonic::Code {
    match code {
        Code::MalformedRequest | Code::InvalidInput => tonic::Code::InvalidArgument,
        Code::NotFound | Code::MethodNotAllowed | Code::AsyncDisabled => tonic::Code::Unimplemented,
        Code::UnknownModel | Code::UnknownJob => tonic::Code::NotFound,
        Code::BodyTooLarge | Code::QueueFull => tonic::Code::ResourceExhausted,
        Code::BodyTimeout | Code::UpstreamTimeout => tonic::Code::DeadlineExceeded,
        Code::QueueTimeout
        | Code::NotReady
        | Code::ModelFailed
        | Code::ShuttingDown
        | Code::NodeUnavailable
        | Code::NodeStarting
        | Code::ColdPoolFull
        | Code::JobStoreFailed => tonic::Code::Unavailable,
        Code::InferenceFailed => tonic::Code::Internal,
        Code::Unauthorized => tonic::Code::Unauthenticated,
        Code::ReloadRefused => tonic::Code::FailedPrecondition,
        Code::ClientClosedRequest => tonic::Code::Cancelled,
    }
}

/// The gRPC status of an error: its code, `name: message`, and the name (and the seconds to wait,
/// where waiting helps) in metadata.
pub fn status(e: &ApiError) -> Status {
    let mut s = Status::new(code_of(e.code), format!("{}: {}", e.code.name(), e.message));
    if let Ok(v) = e.code.name().parse() {
        s.metadata_mut().insert("stowage-error-code", v);
    }
    if let Some(secs) = e.code.retry_after() {
        if let Ok(v) = secs.to_string().parse() {
            s.metadata_mut().insert("retry-after", v);
        }
    }
    s
}

/// A node's gRPC service: the same state as its REST handlers.
pub struct NodeService {
    state: Arc<AppState>,
}

impl NodeService {
    /// The service, ready to serve with tonic, its messages bounded by `--max-body-bytes`.
    pub fn server(state: Arc<AppState>) -> GrpcInferenceServiceServer<Self> {
        let limit = state.config.max_body_bytes;
        GrpcInferenceServiceServer::new(Self { state }).max_decoding_message_size(limit)
    }
}

/// Runs `call` in the request's span (its trace from the `traceparent` metadata, which `call`
/// gets) and ends the span with the HTTP status of its outcome, as the REST middleware does.
pub(crate) async fn traced<T, F>(
    method: &str,
    metadata: &tonic::metadata::MetadataMap,
    call: impl FnOnce(crate::trace::RequestTrace) -> F,
) -> Result<Response<T>, Status>
where
    F: std::future::Future<Output = Result<T, Status>>,
{
    let path = format!("/inference.GRPCInferenceService/{method}");
    let (span, trace) = crate::trace::request_span("POST", &path, |k| metadata.get(k).and_then(|v| v.to_str().ok()));
    let started = Instant::now();
    let result = call(trace).instrument(span.clone()).await;
    crate::trace::finish(&span, started, result.as_ref().map_or_else(http_status, |_| 200));
    result.map(Response::new)
}

/// `ServerLive`, on a node and the gateway: live while it answers.
pub(crate) async fn server_live(r: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
    traced("ServerLive", r.metadata(), |_| async { Ok(pb::ServerLiveResponse { live: true }) }).await
}

/// `ServerReady`, as the caller's `/ready` says.
pub(crate) async fn server_ready(
    r: Request<pb::ServerReadyRequest>,
    ready: bool,
) -> Result<Response<pb::ServerReadyResponse>, Status> {
    traced("ServerReady", r.metadata(), |_| async move { Ok(pb::ServerReadyResponse { ready }) }).await
}

/// `ServerMetadata`, on a node and the gateway.
pub(crate) async fn server_metadata(
    r: Request<pb::ServerMetadataRequest>,
) -> Result<Response<pb::ServerMetadataResponse>, Status> {
    let meta = pb::ServerMetadataResponse {
        name: "stowage".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: Vec::new(),
    };
    traced("ServerMetadata", r.metadata(), |_| async { Ok(meta) }).await
}

/// A node's call: its error, the table's, as a gRPC status.
async fn node_call<T>(call: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, Status> {
    call.await.map_err(|e| status(&e))
}

fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::MalformedRequest, msg)
}

/// A parameter's value as the REST form's JSON has it.
fn parameter(p: &pb::InferParameter) -> Value {
    match &p.parameter_choice {
        Some(ParameterChoice::BoolParam(b)) => Value::from(*b),
        Some(ParameterChoice::Int64Param(i)) => Value::from(*i),
        Some(ParameterChoice::StringParam(s)) => Value::from(s.as_str()),
        Some(ParameterChoice::DoubleParam(d)) => Value::from(*d),
        Some(ParameterChoice::Uint64Param(u)) => Value::from(*u),
        None => Value::Null,
    }
}

fn parameters(map: &std::collections::HashMap<String, pb::InferParameter>) -> serde_json::Map<String, Value> {
    map.iter().map(|(k, v)| (k.clone(), parameter(v))).collect()
}

/// A `ModelInfer` request as the REST form's inference request and its binary part: the inputs'
/// values from `raw_input_contents` (as the binary extension's, each input's `binary_data_size`
/// its raw length) or from their typed `contents`.
pub(crate) fn infer_request(req: pb::ModelInferRequest) -> Result<(InferRequest, Vec<u8>), ApiError> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(malformed(format!(
            "{} inputs but {} raw_input_contents: give every input's values there, or none",
            req.inputs.len(),
            req.raw_input_contents.len()
        )));
    }
    let mut binary = Vec::new();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, t) in req.inputs.into_iter().enumerate() {
        let mut params = parameters(&t.parameters);
        let data = if raw {
            let bytes = &req.raw_input_contents[i];
            params.insert("binary_data_size".into(), Value::from(bytes.len()));
            binary.extend_from_slice(bytes);
            None
        } else {
            let c = t.contents.unwrap_or_default();
            match t.datatype.as_str() {
                "BYTES" => {
                    let texts = c
                        .bytes_contents
                        .into_iter()
                        .map(|b| std::str::from_utf8(&b).map(Value::from))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|_| malformed(format!("input {:?}: not UTF-8", t.name)))?;
                    Some(Value::Array(texts))
                }
                "INT64" => Some(Value::Array(c.int64_contents.into_iter().map(Value::from).collect())),
                // Any other datatype: `to_request` names the ones it takes.
                _ => Some(Value::Array(Vec::new())),
            }
        };
        inputs.push(InputTensor { name: t.name, shape: t.shape, datatype: t.datatype, parameters: params, data });
    }
    let outputs = (!req.outputs.is_empty()).then(|| {
        req.outputs
            .iter()
            .map(|o| RequestedOutput { name: o.name.clone(), parameters: parameters(&o.parameters) })
            .collect()
    });
    let id = (!req.id.is_empty()).then_some(req.id);
    Ok((InferRequest { id, parameters: parameters(&req.parameters), inputs, outputs }, binary))
}

#[tonic::async_trait]
impl GrpcInferenceService for NodeService {
    async fn server_live(&self, r: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        server_live(r).await
    }

    async fn server_ready(
        &self,
        r: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let ready = self.state.node.readiness();
        server_ready(r, ready.is_ready() && !ready.leaving).await
    }

    async fn model_ready(&self, r: Request<pb::ModelReadyRequest>) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let call = node_call(async {
            match self.state.node.acquire(&r.get_ref().name).await {
                Ok(_) => Ok(pb::ModelReadyResponse { ready: true }),
                Err(e) => {
                    let e = ApiError::from(e);
                    match e.code {
                        Code::UnknownModel => Err(e),
                        _ => Ok(pb::ModelReadyResponse { ready: false }),
                    }
                }
            }
        });
        traced("ModelReady", r.metadata(), |_| call).await
    }

    async fn server_metadata(
        &self,
        r: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        server_metadata(r).await
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let call = node_call(async {
            let name = r.get_ref().name.clone();
            let model = self.state.node.acquire(&name).await?.model;
            let (platform, inputs, outputs) = v2::tensors(&model);
            let meta = |t: Vec<v2::TensorMeta>| {
                t.into_iter()
                    .map(|t| pb::model_metadata_response::TensorMetadata {
                        name: t.name.into(),
                        datatype: t.datatype.into(),
                        shape: t.shape,
                    })
                    .collect()
            };
            Ok(pb::ModelMetadataResponse {
                name,
                versions: vec!["1".into()],
                platform,
                inputs: meta(inputs),
                outputs: meta(outputs),
            })
        });
        traced("ModelMetadata", r.metadata(), |_| call).await
    }

    async fn model_infer(&self, r: Request<pb::ModelInferRequest>) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = Instant::now();
        let (metadata, _, req) = r.into_parts();
        let id = req.model_name.clone();
        let state = &self.state;
        let call = node_call(async {
            let target = state.node.acquire(&id).await?;
            let (req, binary) = infer_request(req)?;
            let request = v2::to_request(&req, &binary)?;
            let answer = state.node.predict(&target, request, stowage_node::Caller::default()).await?;
            let outputs = v2::output_tensors(&id, &req, &answer, target.model.signature.kind)?;
            let (outputs, raw) = outputs
                .into_iter()
                .map(|t| {
                    let tensor = pb::model_infer_response::InferOutputTensor {
                        name: t.name.into(),
                        datatype: "FP32".into(),
                        shape: t.shape.iter().map(|&d| d as i64).collect(),
                        ..Default::default()
                    };
                    (tensor, t.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into())
                })
                .unzip();
            Ok(pb::ModelInferResponse {
                model_name: id.clone(),
                model_version: "1".into(),
                id: req.id.clone().unwrap_or_default(),
                parameters: Default::default(),
                outputs,
                raw_output_contents: raw,
            })
        });
        let result = traced("ModelInfer", &metadata, |_| call).await;
        let status = match &result {
            Ok(_) => 200,
            Err(s) => http_status(s),
        };
        if status == 500 {
            if let Err(s) = &result {
                tracing::error!(model = id.as_str(), error = %s.message(), "inference failed");
            }
        }
        state.node.record(&id, status, started.elapsed().as_secs_f64());
        result
    }
}

/// The error table's code behind a status, where Stowage made it (`stowage-error-code`).
pub(crate) fn table_code(s: &Status) -> Option<Code> {
    let name = s.metadata().get("stowage-error-code")?.to_str().ok()?;
    Code::ALL.iter().copied().find(|c| c.name() == name)
}

/// The HTTP status REST would have answered for a status (metrics and spans count gRPC calls so):
/// its table code's, else the usual one of its gRPC code.
pub(crate) fn http_status(s: &Status) -> u16 {
    if let Some(code) = table_code(s) {
        return code.status();
    }
    match s.code() {
        tonic::Code::Ok => 200,
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => 400,
        tonic::Code::Unauthenticated => 401,
        tonic::Code::PermissionDenied => 403,
        tonic::Code::NotFound => 404,
        tonic::Code::AlreadyExists | tonic::Code::Aborted => 409,
        tonic::Code::FailedPrecondition => 412,
        tonic::Code::ResourceExhausted => 429,
        tonic::Code::Cancelled => 499,
        tonic::Code::Unimplemented => 501,
        tonic::Code::Unavailable => 503,
        tonic::Code::DeadlineExceeded => 504,
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::DataLoss => 500,
    }
}
