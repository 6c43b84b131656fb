//! KServe v2 over gRPC at the gateway (`--grpc-port`; docs/http-api.md, "The gateway"): the
//! model calls (`ModelInfer`, `ModelReady`, `ModelMetadata`) go to the model's node, by the
//! request's model name, over one HTTP/2 connection per node (a tonic channel, multiplexed and
//! reconnected as needed); the node's answer, or its error status, comes back as it is. The
//! messages are decoded only to find the model: their `bytes` fields (the tensors' raw contents)
//! are slices of the received buffer, not copies. Health and server metadata are the gateway's.
//! A call that reached no node answers `UNAVAILABLE` (`node_unavailable`) or `DEADLINE_EXCEEDED`
//! (`upstream_timeout`); a model no node has, `NOT_FOUND` (`unknown_model`). Calls are not
//! retried: a call that failed may have run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_node::metrics as m;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::proxy::{count, note_failure};
use super::routes::Upstream;
use super::GatewayState;
use crate::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::grpc::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use crate::grpc::{http_status, pb, status, table_code, traced};
use crate::http::error::{ApiError, Code};

/// Largest answer taken from a node (as the REST proxy's).
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Longest a connection to a node may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's gRPC service.
pub struct GatewayService {
    state: Arc<GatewayState>,
    /// One channel per node gRPC address.
    channels: Mutex<HashMap<String, Channel>>,
}

impl GatewayService {
    /// The service, its messages bounded by `--max-body-bytes`.
    pub fn server(state: Arc<GatewayState>) -> GrpcInferenceServiceServer<Self> {
        let limit = state.max_body_bytes;
        GrpcInferenceServiceServer::new(Self { state, channels: Mutex::default() })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(MAX_ANSWER_BYTES)
    }

    /// The node of `model` and a client of its gRPC address.
    fn client(&self, model: &str) -> Result<(Arc<Upstream>, GrpcInferenceServiceClient<Channel>), Status> {
        let Some(up) = self.state.routes.get().models.get(model).cloned() else {
            return Err(status(&ApiError::new(Code::UnknownModel, format!("no model {model:?} behind this gateway"))));
        };
        let Some(address) = up.grpc.clone() else {
            let e = ApiError::new(
                Code::NodeUnavailable,
                format!("{} of model {model:?} has no gRPC address in the gateway's routes", up.shown()),
            );
            return Err(status(&e));
        };
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&address) {
                Some(c) => c.clone(),
                None => {
                    let endpoint = Endpoint::from_shared(address.clone()).map_err(|e| {
                        let msg = format!("{} of model {model:?} has an invalid gRPC address", up.shown());
                        note_failure(&up.node, "connect", &e.to_string(), &ApiError::new(Code::NodeUnavailable, &msg));
                        status(&ApiError::new(Code::NodeUnavailable, msg))
                    })?;
                    let channel = endpoint
                        .connect_timeout(CONNECT_TIMEOUT)
                        .timeout(self.state.upstream_timeout)
                        .tcp_nodelay(true)
                        .connect_lazy();
                    channels.insert(address, channel.clone());
                    channel
                }
            }
        };
        let client = GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_BYTES)
            .max_encoding_message_size(self.state.max_body_bytes);
        Ok((up, client))
    }

    /// Forwards one model call: `send` makes it on the node's client with the caller's metadata
    /// and the gateway's span as the node's parent; the node's answer or status comes back.
    async fn forward<Req, Res, F>(
        &self,
        model: &str,
        metadata: tonic::metadata::MetadataMap,
        msg: Req,
        trace: crate::trace::RequestTrace,
        send: impl FnOnce(GrpcInferenceServiceClient<Channel>, Request<Req>) -> F,
    ) -> Result<Res, Status>
    where
        F: std::future::Future<Output = Result<Response<Res>, Status>>,
    {
        let (up, client) = self.client(model)?;
        let mut req = Request::from_parts(metadata, Default::default(), msg);
        if let Ok(v) = trace.traceparent().parse() {
            req.metadata_mut().insert(crate::trace::TRACEPARENT, v);
        }
        let started = Instant::now();
        let result = send(client, req).await;
        metrics::histogram!(m::GATEWAY_UPSTREAM_DURATION, "node" => up.node.clone())
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(r) => Ok(r.into_inner()),
            // The node's own answer (it names its code): as it is.
            Err(s) if table_code(&s).is_some() => Err(s),
            // The transport's: the node did not answer.
            Err(s) => {
                let (kind, e) = match s.code() {
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => (
                        "timeout",
                        ApiError::new(
                            Code::UpstreamTimeout,
                            format!(
                                "{} of model {model:?} did not answer within {} ms",
                                up.shown(),
                                self.state.upstream_timeout.as_millis()
                            ),
                        ),
                    ),
                    _ => (
                        "connect",
                        ApiError::new(
                            Code::NodeUnavailable,
                            format!("{} of model {model:?} cannot be reached", up.shown()),
                        ),
                    ),
                };
                note_failure(&up.node, kind, s.message(), &e);
                Err(status(&e))
            }
        }
    }
}

/// Counts a call the gateway answered, under the HTTP status REST would have had.
fn counted<T>(result: Result<Response<T>, Status>) -> Result<Response<T>, Status> {
    count(result.as_ref().map_or_else(http_status, |_| 200));
    result
}

#[tonic::async_trait]
impl GrpcInferenceService for GatewayService {
    async fn server_live(&self, r: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        crate::grpc::server_live(r).await
    }

    async fn server_ready(
        &self,
        r: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        crate::grpc::server_ready(r, super::routed(&self.state).is_ok()).await
    }

    async fn server_metadata(
        &self,
        r: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        crate::grpc::server_metadata(r).await
    }

    async fn model_ready(&self, r: Request<pb::ModelReadyRequest>) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let (metadata, _, msg) = r.into_parts();
        let model = msg.name.clone();
        let call = |trace| {
            self.forward(&model, metadata.clone(), msg, trace, |mut c, r| async move { c.model_ready(r).await })
        };
        counted(traced("ModelReady", &metadata, call).await)
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let (metadata, _, msg) = r.into_parts();
        let model = msg.name.clone();
        let call = |trace| {
            self.forward(&model, metadata.clone(), msg, trace, |mut c, r| async move { c.model_metadata(r).await })
        };
        counted(traced("ModelMetadata", &metadata, call).await)
    }

    async fn model_infer(&self, r: Request<pb::ModelInferRequest>) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (metadata, _, msg) = r.into_parts();
        let model = msg.model_name.clone();
        let call = |trace| {
            self.forward(&model, metadata.clone(), msg, trace, |mut c, r| async move { c.model_infer(r).await })
        };
        counted(traced("ModelInfer", &metadata, call).await)
    }
}
