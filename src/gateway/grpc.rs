//! KServe v2 over gRPC at the gateway (`--grpc-port`; docs/http-api.md, "The gateway"): the
//! model calls (`ModelInfer`, `ModelReady`, `ModelMetadata`) go to the model's node, by the
//! request's model name, over one HTTP/2 connection per node (a tonic channel, multiplexed and
//! reconnected as needed); the node's answer, or its error status, comes back as it is. A
//! `ModelInfer` passes through as its bytes, both ways (`Passthrough`, the `Raw` codec): only its
//! model name (field 1) is read to route it, nothing is decoded or encoded again. Health and
//! server metadata are the gateway's.
//! A call that reached no node answers `UNAVAILABLE` (`node_unavailable`) or `DEADLINE_EXCEEDED`
//! (`upstream_timeout`); a model no node has, `NOT_FOUND` (`unknown_model`). Calls are not
//! retried — a call that failed may have run — except where the transport failed: a model with
//! replicas (sent to the one with the fewest calls in flight) has the call sent to another, and a
//! node that scales to zero has no replica now, so the call is held until the node is ready
//! (`wake.rs`) and sent again, or answers `UNAVAILABLE` (`node_starting`) after the hold timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use stowage_node::metrics as m;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::proxy::{count, next_replica, note_failure};
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
    /// The service, its messages bounded by `--max-body-bytes`: `ModelInfer` passed through as
    /// bytes, the other methods decoded.
    pub fn server(state: Arc<GatewayState>) -> Passthrough {
        let limit = state.max_body_bytes;
        let service = Arc::new(Self { state, channels: Mutex::default() });
        let decoded = GrpcInferenceServiceServer::from_arc(service.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(MAX_ANSWER_BYTES);
        Passthrough { decoded, service, limit }
    }

    /// A client of `channel` with the gateway's message limits.
    fn client_of(&self, channel: Channel) -> GrpcInferenceServiceClient<Channel> {
        GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_BYTES)
            .max_encoding_message_size(self.state.max_body_bytes)
    }

    /// A `ModelInfer` as its bytes: routed by the model name read from them, forwarded as they
    /// came, the node's answer back as its bytes.
    async fn model_infer_raw(&self, r: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let model_of = |msg: &Bytes| {
            ModelName::decode(msg.clone())
                .map(|m| m.model_name)
                .map_err(|e| status(&ApiError::new(Code::MalformedRequest, format!("not a ModelInferRequest: {e}"))))
        };
        let limit = self.state.max_body_bytes;
        self.model_call("ModelInfer", r, model_of, |channel, req| async move {
            let mut grpc = tonic::client::Grpc::new(channel)
                .max_decoding_message_size(MAX_ANSWER_BYTES)
                .max_encoding_message_size(limit);
            grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
            grpc.unary(req, tonic::codegen::http::uri::PathAndQuery::from_static(MODEL_INFER), Raw).await
        })
        .await
    }

    /// One model call, `method`, end to end: its model (`model_of` its message), in its span,
    /// forwarded by `send` (`forward`), counted.
    async fn model_call<Req, Res, F>(
        &self,
        method: &str,
        r: Request<Req>,
        model_of: impl FnOnce(&Req) -> Result<String, Status>,
        send: impl Fn(Channel, Request<Req>) -> F,
    ) -> Result<Response<Res>, Status>
    where
        Req: Clone,
        F: std::future::Future<Output = Result<Response<Res>, Status>>,
    {
        let (metadata, _, msg) = r.into_parts();
        let model = match model_of(&msg) {
            Ok(model) => model,
            Err(s) => return counted(Err(s)),
        };
        let call = |trace| self.forward(&model, metadata.clone(), msg, trace, send);
        counted(traced(method, &metadata, call).await)
    }

    /// The channel to the gRPC address of `up`, a node of `model`.
    fn client(&self, up: &Upstream, model: &str) -> Result<Channel, Status> {
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
        Ok(channel)
    }

    /// Forwards one model call: `send` makes it on the node's channel with the caller's metadata
    /// and the gateway's span as the node's parent; the node's answer or status comes back.
    async fn forward<Req, Res, F>(
        &self,
        model: &str,
        metadata: tonic::metadata::MetadataMap,
        msg: Req,
        trace: crate::trace::RequestTrace,
        send: impl Fn(Channel, Request<Req>) -> F,
    ) -> Result<Res, Status>
    where
        Req: Clone,
        F: std::future::Future<Output = Result<Response<Res>, Status>>,
    {
        let routes = self.state.routes.get();
        let Some(replicas) = routes.models.get(model) else {
            return Err(status(&ApiError::new(Code::UnknownModel, format!("no model {model:?} behind this gateway"))));
        };
        // The model's node, or of its replicas the one with the fewest calls in flight.
        let Some((mut k, mut up)) = replicas.pick(&[]) else {
            return Err(status(&ApiError::new(Code::UnknownModel, format!("no node for model {model:?}"))));
        };
        let mut tried = Vec::new();
        let mut tries = 0;
        let result = loop {
            let channel = self.client(&up, model)?;
            // A node that scales to zero and has no replica now: the call waits for it to start.
            self.state.waker.ready(&up).await.map_err(|e| status(&e))?;
            let inflight = up.sending();
            let mut req = Request::from_parts(metadata.clone(), Default::default(), msg.clone());
            if let Ok(v) = trace.traceparent().parse() {
                req.metadata_mut().insert(crate::trace::TRACEPARENT, v);
            }
            let started = Instant::now();
            let result = send(channel, req).await;
            drop(inflight);
            metrics::histogram!(m::GATEWAY_UPSTREAM_DURATION, "node" => up.node.clone())
                .record(started.elapsed().as_secs_f64());
            let transport =
                matches!(&result, Err(s) if table_code(s).is_none() && s.code() == tonic::Code::Unavailable);
            // The transport could not reach one of the model's replicas: another takes the call
            // (a model call has no effect beyond its answer).
            if transport && replicas.nodes.len() > tried.len() + 1 {
                let detail = result.as_ref().err().map(|s| s.message().to_string()).unwrap_or_default();
                (k, up) = next_replica(replicas, &mut tried, k, &up, model, &detail);
                continue;
            }
            // The transport could not reach a node that scales to zero: it has gone to zero
            // replicas. Held until it is back, then sent again.
            if transport && tries < 2 && self.state.waker.gone(&up) {
                tries += 1;
                continue;
            }
            break result;
        };
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
        let model_of = |m: &pb::ModelReadyRequest| Ok(m.name.clone());
        self.model_call("ModelReady", r, model_of, |c, r| async move { self.client_of(c).model_ready(r).await }).await
    }

    async fn model_metadata(
        &self,
        r: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let model_of = |m: &pb::ModelMetadataRequest| Ok(m.name.clone());
        self.model_call("ModelMetadata", r, model_of, |c, r| async move { self.client_of(c).model_metadata(r).await })
            .await
    }

    /// Only reached where this service is mounted without `Passthrough`, which takes `ModelInfer`
    /// as bytes (`model_infer_raw`).
    async fn model_infer(&self, r: Request<pb::ModelInferRequest>) -> Result<Response<pb::ModelInferResponse>, Status> {
        let model_of = |m: &pb::ModelInferRequest| Ok(m.model_name.clone());
        self.model_call("ModelInfer", r, model_of, |c, r| async move { self.client_of(c).model_infer(r).await }).await
    }
}

/// The path of `ModelInfer`.
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The model name of a `ModelInferRequest` (its field 1); prost skips the other fields.
#[derive(Clone, PartialEq, prost::Message)]
struct ModelName {
    #[prost(string, tag = "1")]
    model_name: String,
}

/// A message as its bytes, undecoded: what the gateway passes on.
#[derive(Debug, Default, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The gateway's gRPC service: `ModelInfer` as bytes (`GatewayService::model_infer_raw`), every
/// other method through the generated, decoding server.
#[derive(Clone)]
pub struct Passthrough {
    decoded: GrpcInferenceServiceServer<GatewayService>,
    service: Arc<GatewayService>,
    limit: usize,
}

impl tonic::server::NamedService for Passthrough {
    const NAME: &'static str = "inference.GRPCInferenceService";
}

/// `ModelInfer` of the passthrough, as tonic's server calls it.
struct RawInfer(Arc<GatewayService>);

impl tonic::server::UnaryService<Bytes> for RawInfer {
    type Response = Bytes;
    type Future = tonic::codegen::BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.model_infer_raw(request).await })
    }
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Passthrough
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() != MODEL_INFER {
            return self.decoded.call(req);
        }
        let (service, limit) = (self.service.clone(), self.limit);
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(Raw).apply_max_message_size_config(Some(limit), Some(MAX_ANSWER_BYTES));
            Ok(grpc.unary(RawInfer(service), req).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_infer_is_routed_by_the_name_read_from_its_bytes() {
        let req = pb::ModelInferRequest {
            model_name: "tiny-0001".into(),
            id: "r-1".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from_static(b"\x04\0\0\0fine")],
            ..Default::default()
        };
        let bytes = Bytes::from(req.encode_to_vec());
        assert_eq!(ModelName::decode(bytes.clone()).unwrap().model_name, "tiny-0001");
        // A message that is not one is refused, not routed.
        assert!(ModelName::decode(&b"\x0a\xff"[..]).is_err());
    }
}
