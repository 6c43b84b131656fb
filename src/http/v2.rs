//! The Open Inference Protocol (KServe v2) over REST, so that Triton and KServe clients speak to a
//! node as they do to any inference server (docs/http-api.md): server and model health and
//! metadata, and `POST /v2/models/{id}/infer` with a BYTES input `text` (and `text_pair`) or the
//! INT64 tensors `input_ids`, `attention_mask`, `token_type_ids`; outputs as FP32 tensors
//! (`probabilities` and `logits`, or `embedding`), in JSON or in the binary tensor extension that
//! `tritonclient` uses by default. Requests take the same path as `/predictions`: admission,
//! queue, batching, metrics. Errors answer `{"error": "sentence"}` with the status of the error
//! table.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use stowage_engine::OutputKind;
use stowage_node::jobs::Protocol;
use stowage_node::{Answer, Caller, Prediction, Request};

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;
use crate::http::{body, caller, jobs};

/// The header that says how many bytes of the body are JSON, the rest being binary tensors.
const HEADER_LENGTH: &str = "inference-header-content-length";

fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::MalformedRequest, msg)
}

pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"name": "stowage", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}))
}

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let r = state.node.readiness();
    if r.is_ready() {
        HttpResponse::Ok().json(json!({"ready": true}))
    } else {
        let why = if r.leaving { "the node is shutting down" } else { "not every model is loaded yet" };
        ApiError::new(if r.leaving { Code::ShuttingDown } else { Code::NotReady }, why).v2_response()
    }
}

pub async fn model_ready(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    match state.node.acquire(&id).await {
        Ok(_) => HttpResponse::Ok().json(json!({"name": id.as_str(), "ready": true})),
        Err(e) => ApiError::from(e).v2_response(),
    }
}

/// A tensor of a model's metadata: name, datatype, shape (-1 for a dimension of any size).
pub(crate) struct TensorMeta {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// A model's platform, inputs and outputs, as both protocols describe them.
pub(crate) fn tensors(
    model: &stowage_node::lifecycle::load::LoadedModel,
) -> (String, Vec<TensorMeta>, Vec<TensorMeta>) {
    let tensor = |name, datatype, shape: &[i64]| TensorMeta { name, datatype, shape: shape.to_vec() };
    let mut inputs = vec![
        tensor("text", "BYTES", &[-1]),
        tensor("text_pair", "BYTES", &[-1]),
        tensor("input_ids", "INT64", &[-1, -1]),
        tensor("attention_mask", "INT64", &[-1, -1]),
    ];
    if model.signature.has_token_type_ids() {
        inputs.push(tensor("token_type_ids", "INT64", &[-1, -1]));
    }
    let width = |w: Option<usize>| w.map_or(-1, |w| w as i64);
    let outputs = match model.signature.kind {
        OutputKind::Logits => {
            let labels = model.labels.len() as i64;
            vec![tensor("probabilities", "FP32", &[-1, labels]), tensor("logits", "FP32", &[-1, labels])]
        }
        OutputKind::LastHiddenState => vec![tensor("embedding", "FP32", &[-1, width(model.signature.output_width)])],
    };
    (format!("{}_onnx", model.model.backend()), inputs, outputs)
}

pub async fn model_metadata(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let model = match state.node.acquire(&id).await {
        Ok(target) => target.model,
        Err(e) => return ApiError::from(e).v2_response(),
    };
    let (platform, inputs, outputs) = tensors(&model);
    let json = |t: &[TensorMeta]| -> Vec<Value> {
        t.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect()
    };
    HttpResponse::Ok().json(json!({
        "name": id.as_str(),
        "versions": ["1"],
        "platform": platform,
        "inputs": json(&inputs),
        "outputs": json(&outputs),
        "parameters": {"labels": model.labels, "max_length": model.text.max_length},
    }))
}

/// An inference request, as REST's JSON gives it (gRPC's is converted to it: `crate::grpc`).
#[derive(Deserialize)]
pub(crate) struct InferRequest {
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
    pub inputs: Vec<InputTensor>,
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
pub(crate) struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// `binary_data_size`: its values are that many bytes of the binary part.
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
    pub data: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: serde_json::Map<String, Value>,
}

/// An input tensor's values, from its JSON `data` or its share of the binary part.
enum Values {
    Bytes(Vec<String>),
    Int64(Vec<i64>),
}

fn input_values(t: &InputTensor, binary: &mut &[u8]) -> Result<Values, ApiError> {
    // Dimensions are counts, and their product must be one: no negative dimension, no overflow.
    let count =
        t.shape.iter().try_fold(1i64, |n, &d| if d < 0 { None } else { n.checked_mul(d) }).ok_or_else(|| {
            malformed(format!(
                "input {:?}: shape {:?} is not a size (dimensions of 0 or more, fewer than 2^63 values)",
                t.name, t.shape
            ))
        })?;
    let size = t.parameters.get("binary_data_size").and_then(Value::as_u64);
    let values = match (t.datatype.as_str(), size) {
        ("BYTES", Some(n)) => {
            let mut raw = take(binary, n as usize, &t.name)?;
            let mut out = Vec::new();
            while !raw.is_empty() {
                let len = u32::from_le_bytes(take(&mut raw, 4, &t.name)?.try_into().unwrap_or_default()) as usize;
                let bytes = take(&mut raw, len, &t.name)?;
                out.push(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| malformed(format!("input {:?}: not UTF-8", t.name)))?,
                );
            }
            Values::Bytes(out)
        }
        ("INT64", Some(n)) => {
            let raw = take(binary, n as usize, &t.name)?;
            Values::Int64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default())).collect())
        }
        ("BYTES", None) => {
            let mut out = Vec::new();
            flatten(t.data.as_ref().ok_or_else(|| malformed(format!("input {:?} has no data", t.name)))?, &mut |v| {
                v.as_str().map(|s| out.push(s.to_string())).ok_or(())
            })
            .map_err(|_| malformed(format!("input {:?}: BYTES data must be strings", t.name)))?;
            Values::Bytes(out)
        }
        ("INT64", None) => {
            let mut out = Vec::new();
            flatten(t.data.as_ref().ok_or_else(|| malformed(format!("input {:?} has no data", t.name)))?, &mut |v| {
                v.as_i64().map(|i| out.push(i)).ok_or(())
            })
            .map_err(|_| malformed(format!("input {:?}: INT64 data must be integers", t.name)))?;
            Values::Int64(out)
        }
        (other, _) => {
            return Err(malformed(format!(
                "input {:?} has datatype {other}; text inputs are BYTES, token inputs INT64",
                t.name
            )))
        }
    };
    let len = match &values {
        Values::Bytes(v) => v.len(),
        Values::Int64(v) => v.len(),
    };
    if len as i64 != count {
        return Err(malformed(format!("input {:?}: shape {:?} holds {count} values, the data {len}", t.name, t.shape)));
    }
    Ok(values)
}

/// The next `n` bytes of `buf`.
fn take<'a>(buf: &mut &'a [u8], n: usize, name: &str) -> Result<&'a [u8], ApiError> {
    if buf.len() < n {
        return Err(malformed(format!("input {name:?}: the binary data is shorter than its binary_data_size")));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Calls `f` on every leaf of a (possibly nested) JSON array.
fn flatten(v: &Value, f: &mut impl FnMut(&Value) -> Result<(), ()>) -> Result<(), ()> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, f)),
        leaf => f(leaf),
    }
}

/// An inference request → the node's request (checked against the protocol, not yet the model).
pub(crate) fn to_request(req: &InferRequest, binary: &[u8]) -> Result<Request, ApiError> {
    let mut binary = binary;
    let mut texts = None;
    let mut pairs = None;
    let mut tokens: [Option<(Vec<i64>, Vec<i64>)>; 3] = [None, None, None];
    for t in &req.inputs {
        let values = input_values(t, &mut binary)?;
        let wrong = || {
            malformed(format!(
                "input {:?} must be {}",
                t.name,
                if t.name.starts_with("text") { "BYTES" } else { "INT64" }
            ))
        };
        match (t.name.as_str(), values) {
            ("text", Values::Bytes(v)) => texts = Some(v),
            ("text_pair", Values::Bytes(v)) => pairs = Some(v),
            (name @ ("input_ids" | "attention_mask" | "token_type_ids"), Values::Int64(v)) => {
                if t.shape.len() != 2 {
                    return Err(malformed(format!("input {name:?} must have shape [batch, sequence]")));
                }
                let i = ["input_ids", "attention_mask", "token_type_ids"].iter().position(|n| *n == name).unwrap_or(0);
                tokens[i] = Some((t.shape.clone(), v));
            }
            ("text" | "text_pair" | "input_ids" | "attention_mask" | "token_type_ids", _) => return Err(wrong()),
            (other, _) => {
                return Err(malformed(format!(
                "unknown input {other:?}: give \"text\" (and \"text_pair\"), or \"input_ids\" and \"attention_mask\""
            )))
            }
        }
    }
    let rows = |(shape, data): (Vec<i64>, Vec<i64>)| -> Vec<Vec<i64>> {
        let width = shape[1].max(1) as usize;
        data.chunks(width).map(<[i64]>::to_vec).collect()
    };
    let [ids, mask, types] = tokens;
    match (texts, ids) {
        (Some(_), Some(_)) => Err(malformed("give either \"text\" or \"input_ids\", not both")),
        (Some(texts), None) => {
            let truncate = req.parameters.get("truncate").and_then(Value::as_bool).unwrap_or(true);
            Ok(Request::Texts { texts, pairs, truncate })
        }
        (None, Some(ids)) => {
            let mask = mask.ok_or_else(|| malformed("\"input_ids\" needs \"attention_mask\""))?;
            Ok(Request::Tokens { input_ids: rows(ids), attention_mask: rows(mask), token_type_ids: types.map(rows) })
        }
        (None, None) => Err(malformed("the request needs an input \"text\" (BYTES) or \"input_ids\" (INT64)")),
    }
}

pub async fn infer(
    state: web::Data<AppState>,
    id: web::Path<String>,
    http: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    if wants_async(&http) {
        let response = submit_async(&state, &id, &http, &mut payload).await.unwrap_or_else(|e| e.v2_response());
        state.node.record(&id, response.status().as_u16(), started.elapsed().as_secs_f64());
        return response;
    }
    let result = async {
        let body = body::read_for_model(&state, &id, &http, &mut payload).await?;
        let target = state.node.acquire(&id).await?;
        let json_len = match http.headers().get(HEADER_LENGTH) {
            Some(v) => {
                v.to_str().ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n <= body.len()).ok_or_else(|| {
                    malformed(format!("{HEADER_LENGTH} must be the length of the JSON part of the body"))
                })?
            }
            None => body.len(),
        };
        let (head, binary) = body.split_at(json_len);
        let req: InferRequest =
            serde_json::from_slice(head).map_err(|e| malformed(format!("invalid inference request: {e}")))?;
        let answer = state.node.predict(&target, to_request(&req, binary)?, caller(&http)).await?;
        Ok::<_, ApiError>((req, answer, target.model.signature.kind))
    }
    .await;
    let response = match result {
        Ok((req, answer, kind)) => render(&id, &req, &answer, kind),
        Err(e) => {
            if e.code == Code::InferenceFailed {
                tracing::error!(model = id.as_str(), error = %e, "inference failed");
            }
            e.v2_response()
        }
    };
    state.node.record(&id, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Whether the client asks for an asynchronous answer: `Prefer: respond-async` (RFC 7240).
fn wants_async(http: &HttpRequest) -> bool {
    http.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split([',', ';']).any(|p| p.trim().eq_ignore_ascii_case("respond-async")))
}

/// Checks an inference request as `infer` would and queues it (`http::jobs`). JSON only: a job's
/// result is a JSON document, and its request is kept as one. A callback may be named in the
/// request's `parameters.callback_url`.
async fn submit_async(
    state: &AppState,
    id: &str,
    http: &HttpRequest,
    payload: &mut web::Payload,
) -> Result<HttpResponse, ApiError> {
    let queue = jobs::enabled(state)?;
    let body = body::read_for_model(state, id, http, payload).await?;
    let binary = || malformed("asynchronous inference requests are JSON only: binary tensor data is not supported");
    if http.headers().contains_key(HEADER_LENGTH) {
        return Err(binary());
    }
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| malformed(format!("invalid inference request: {e}")))?;
    let flag = |p: &serde_json::Map<String, Value>, k: &str| p.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag(&req.parameters, "binary_data_output")
        || req.outputs.iter().flatten().any(|o| flag(&o.parameters, "binary_data"))
    {
        return Err(binary());
    }
    to_request(&req, &[])?;
    let callback = match req.parameters.get("callback_url") {
        None => None,
        Some(Value::String(url)) => Some(url.clone()),
        Some(_) => return Err(malformed("parameters.callback_url must be a string (an http:// URL)")),
    };
    jobs::accept(state, queue, id, Protocol::V2, body.to_vec(), callback, http).await
}

/// An asynchronous job's run (`http::jobs`): the JSON `infer` would answer.
pub(crate) async fn run_job(state: &AppState, id: &str, body: &[u8]) -> Result<Value, ApiError> {
    let req: InferRequest =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid inference request: {e}")))?;
    let target = state.node.acquire(id).await?;
    let answer = state.node.predict(&target, to_request(&req, &[])?, Caller::default()).await?;
    Ok(outputs(id, &req, &answer, target.model.signature.kind)?.0)
}

/// The answer as output tensors, in JSON or, for outputs asked for so, in the binary extension.
fn render(id: &str, req: &InferRequest, answer: &Answer, kind: OutputKind) -> HttpResponse {
    let (body, raw) = match outputs(id, req, answer, kind) {
        Ok(r) => r,
        Err(e) => return e.v2_response(),
    };
    if raw.is_empty() {
        return HttpResponse::Ok().json(body);
    }
    let head = body.to_string();
    let len = head.len();
    let mut bytes = head.into_bytes();
    bytes.extend(raw);
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((HEADER_LENGTH, len.to_string()))
        .body(bytes)
}

/// An output tensor of an answer: FP32 values of shape [rows, width].
pub(crate) struct OutTensor {
    pub name: &'static str,
    pub data: Vec<f32>,
    pub shape: [usize; 2],
    /// Asked for in the binary extension (REST).
    pub binary: bool,
}

/// The answer's output tensors that the request asks for (all, unless it names some), in the
/// order it names them; an output the model does not have is an error.
pub(crate) fn output_tensors(
    id: &str,
    req: &InferRequest,
    answer: &Answer,
    kind: OutputKind,
) -> Result<Vec<OutTensor>, ApiError> {
    let n = answer.predictions.len();
    let mut tensors: Vec<(&'static str, Vec<f32>, usize)> = Vec::new();
    match kind {
        OutputKind::Logits => {
            let (mut p, mut l, mut width) = (Vec::new(), Vec::new(), 0);
            for pred in &answer.predictions {
                if let Prediction::Class { probabilities, logits, .. } = pred {
                    width = probabilities.len();
                    p.extend(probabilities.iter().map(|&v| v as f32));
                    l.extend_from_slice(logits);
                }
            }
            tensors.push(("probabilities", p, width));
            tensors.push(("logits", l, width));
        }
        OutputKind::LastHiddenState => {
            let (mut e, mut width) = (Vec::new(), 0);
            for pred in &answer.predictions {
                if let Prediction::Embedding { embedding } = pred {
                    width = embedding.len();
                    e.extend_from_slice(embedding);
                }
            }
            tensors.push(("embedding", e, width));
        }
    }
    if let Some(o) = req.outputs.iter().flatten().find(|o| !tensors.iter().any(|t| t.0 == o.name)) {
        let names: Vec<&str> = tensors.iter().map(|t| t.0).collect();
        let msg = format!("model {id:?} has no output {:?} (it has {})", o.name, names.join(", "));
        return Err(ApiError::new(Code::InvalidInput, msg));
    }
    let all_binary = req.parameters.get("binary_data_output").and_then(Value::as_bool).unwrap_or(false);
    let wanted: Vec<(&str, bool)> = match &req.outputs {
        Some(outputs) => outputs
            .iter()
            .map(|o| (o.name.as_str(), o.parameters.get("binary_data").and_then(Value::as_bool).unwrap_or(all_binary)))
            .collect(),
        None => tensors.iter().map(|t| (t.0, all_binary)).collect(),
    };
    let mut out = Vec::with_capacity(wanted.len());
    for (name, binary) in wanted {
        if let Some(i) = tensors.iter().position(|t| t.0 == name) {
            let (name, data, width) = tensors.swap_remove(i);
            out.push(OutTensor { name, data, shape: [n, width], binary });
        }
    }
    Ok(out)
}

/// The response's JSON and the binary tensors that follow it (none unless asked for).
fn outputs(id: &str, req: &InferRequest, answer: &Answer, kind: OutputKind) -> Result<(Value, Vec<u8>), ApiError> {
    let mut raw = Vec::new();
    let outputs: Vec<Value> = output_tensors(id, req, answer, kind)?
        .into_iter()
        .map(|t| {
            if t.binary {
                let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                let size = bytes.len();
                raw.extend(bytes);
                json!({"name": t.name, "datatype": "FP32", "shape": t.shape, "parameters": {"binary_data_size": size}})
            } else {
                json!({"name": t.name, "datatype": "FP32", "shape": t.shape, "data": t.data})
            }
        })
        .collect();
    let mut body = json!({"model_name": id, "model_version": "1", "outputs": outputs});
    if let Some(rid) = &req.id {
        body["id"] = json!(rid);
    }
    Ok((body, raw))
}
