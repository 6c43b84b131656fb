//! `GET|POST /predictions/{model_id}`: admission, then the model's batcher: tokenization and
//! inference on the node's inference threads (never on the async workers), batched with other
//! requests waiting for the same model, then softmax labels or pooled embeddings.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backend::{Inputs, Output, OutputKind};
use crate::batch::{self, Finish};
use crate::error::{ApiError, Code};
use crate::inference::Lost;
use crate::metrics as m;
use crate::registry::{LoadedModel, State};
use crate::server::AppState;

/// What to predict on, after parsing.
enum Request {
    Texts { texts: Vec<String>, pairs: Option<Vec<String>>, truncate: bool },
    Tokens { input_ids: Vec<Vec<i64>>, attention_mask: Vec<Vec<i64>>, token_type_ids: Option<Vec<Vec<i64>>> },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    inputs: Option<OneOrMany>,
    text_pair: Option<OneOrMany>,
    input_ids: Option<Vec<Vec<i64>>>,
    attention_mask: Option<Vec<Vec<i64>>>,
    token_type_ids: Option<Vec<Vec<i64>>>,
    truncate: Option<bool>,
}

fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::MalformedRequest, msg)
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::InvalidInput, msg)
}

fn parse_body(bytes: &[u8]) -> Result<Request, ApiError> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| malformed(format!("invalid JSON body: {e}")))?;
    match (body.inputs, body.input_ids) {
        (Some(_), Some(_)) => Err(malformed("give either \"inputs\" or \"input_ids\", not both")),
        (Some(_), None) if body.attention_mask.is_some() || body.token_type_ids.is_some() => {
            Err(malformed("\"attention_mask\" and \"token_type_ids\" go with \"input_ids\", not with texts"))
        }
        (None, Some(_)) if body.text_pair.is_some() || body.truncate.is_some() => {
            Err(malformed("\"text_pair\" and \"truncate\" go with texts (\"inputs\"), not with \"input_ids\""))
        }
        (Some(inputs), None) => Ok(Request::Texts {
            texts: inputs.into_vec(),
            pairs: body.text_pair.map(OneOrMany::into_vec),
            truncate: body.truncate.unwrap_or(true),
        }),
        (None, Some(input_ids)) => {
            let attention_mask =
                body.attention_mask.ok_or_else(|| malformed("\"input_ids\" needs \"attention_mask\""))?;
            Ok(Request::Tokens { input_ids, attention_mask, token_type_ids: body.token_type_ids })
        }
        (None, None) => Err(malformed("the body needs \"inputs\" (text or list of texts) or \"input_ids\"")),
    }
}

/// Checks pre-tokenized input against the model: shapes, vocabulary, mask values, length.
fn tokens_to_inputs(
    model: &LoadedModel,
    ids: Vec<Vec<i64>>,
    mask: Vec<Vec<i64>>,
    types: Option<Vec<Vec<i64>>>,
) -> Result<Inputs, ApiError> {
    if ids.is_empty() || ids.iter().any(|r| r.is_empty()) {
        return Err(invalid("\"input_ids\" must hold at least one non-empty row"));
    }
    let seq = ids[0].len();
    let rect = |rows: &Vec<Vec<i64>>| rows.len() == ids.len() && rows.iter().all(|r| r.len() == seq);
    if !rect(&ids) || !rect(&mask) || types.as_ref().is_some_and(|t| !rect(t)) {
        return Err(invalid(
            "\"input_ids\", \"attention_mask\" and \"token_type_ids\" must be rectangular and of one shape",
        ));
    }
    if seq > model.max_length {
        return Err(invalid(format!("{seq} tokens, the model takes at most {}", model.max_length)));
    }
    let vocab = model.vocab_size as i64;
    if let Some(bad) = ids.iter().flatten().find(|&&t| t < 0 || t >= vocab) {
        return Err(invalid(format!("token id {bad} is outside the vocabulary (0..{vocab})")));
    }
    if mask.iter().flatten().any(|&v| v != 0 && v != 1) {
        return Err(invalid("\"attention_mask\" values must be 0 or 1"));
    }
    if types.iter().flatten().flatten().any(|&v| v != 0 && v != 1) {
        return Err(invalid("\"token_type_ids\" values must be 0 or 1"));
    }
    let batch = ids.len();
    Ok(Inputs {
        batch,
        seq,
        input_ids: ids.into_iter().flatten().collect(),
        attention_mask: mask.into_iter().flatten().collect(),
        token_type_ids: types.map_or_else(|| vec![0; batch * seq], |t| t.into_iter().flatten().collect()),
    })
}

/// Text or checked token ids → the model's inputs (runs on an inference thread).
fn tokenize(model: &LoadedModel, req: Request) -> Result<Inputs, ApiError> {
    match req {
        Request::Texts { texts, pairs, truncate } => {
            let (x, cut) = model.encode_checked(&texts, pairs.as_deref()).map_err(invalid)?;
            if cut && !truncate {
                return Err(invalid(format!(
                    "an input is longer than {} tokens and \"truncate\" is false",
                    model.max_length
                )));
            }
            Ok(x)
        }
        Request::Tokens { input_ids, attention_mask, token_type_ids } => {
            tokens_to_inputs(model, input_ids, attention_mask, token_type_ids)
        }
    }
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = row.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// Per input: `{label, score, scores}` or `{embedding}`. An answer that would hold NaN or an
/// infinity (JSON has neither: serde_json would write `null`) is an error: the model is broken
/// for this input (fp16 overflow on a GPU, say), and the client must not read nulls as scores.
pub fn postprocess(model: &LoadedModel, x: &Inputs, out: &Output) -> Result<Vec<Value>, String> {
    let finite = |v: &[f64], input: usize| {
        if v.iter().all(|a| a.is_finite()) {
            Ok(())
        } else {
            Err(format!("the model's output for input {input} is not finite (NaN or infinity)"))
        }
    };
    match model.signature.kind {
        OutputKind::Logits => {
            let width = out.shape[1];
            out.data
                .chunks(width.max(1))
                .enumerate()
                .map(|(input, row)| {
                    let p = softmax(row);
                    finite(&p, input)?;
                    let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
                    let name = |i: usize| model.labels.get(i).cloned().unwrap_or_else(|| format!("LABEL_{i}"));
                    let scores: serde_json::Map<String, Value> =
                        p.iter().enumerate().map(|(i, s)| (name(i), json!(s))).collect();
                    Ok(json!({"label": name(best), "score": p[best], "scores": scores}))
                })
                .collect()
        }
        OutputKind::LastHiddenState => {
            let (seq, hidden) = (out.shape[1], out.shape[2]);
            (0..x.batch)
                .map(|b| {
                    // Mean over attended positions, then L2 normalization.
                    let mut v = vec![0f64; hidden];
                    let mut n: f64 = 0.0;
                    for s in 0..seq {
                        if x.attention_mask[b * x.seq + s] == 0 {
                            continue;
                        }
                        n += 1.0;
                        let row = &out.data[(b * seq + s) * hidden..(b * seq + s + 1) * hidden];
                        for (acc, &h) in v.iter_mut().zip(row) {
                            *acc += h as f64;
                        }
                    }
                    finite(&v, b)?;
                    let norm = v.iter().map(|a| (a / n.max(1.0)).powi(2)).sum::<f64>().sqrt().max(1e-12);
                    Ok(json!({"embedding": v.iter().map(|a| (a / n.max(1.0) / norm) as f32).collect::<Vec<f32>>()}))
                })
                .collect()
        }
    }
}

pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let started = Instant::now();
    let text = q.get("text").or_else(|| q.get("seq_0")).cloned();
    let pair = q.get("text_pair").or_else(|| q.get("seq_1")).cloned();
    let req = match text {
        Some(t) => Ok(Request::Texts { texts: vec![t], pairs: pair.map(|p| vec![p]), truncate: true }),
        None => Err(malformed("give the text as ?text=… (or ?seq_0=…)")),
    };
    finish(&state, &id, started, serve(&state, &id, req).await)
}

pub async fn post(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let limit = state.config.max_body_bytes;
    let result = async {
        let declared =
            req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        let too_large = || {
            rejected(label(&state, &id), "too_large");
            ApiError::new(Code::BodyTooLarge, format!("the body is over the {limit}-byte limit"))
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| malformed(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        serve(&state, &id, parse_body(&body)).await
    }
    .await;
    finish(&state, &id, started, result)
}

/// Counts a request turned away before inference, in `stowage_rejected_total`.
fn rejected(model: String, reason: &'static str) {
    metrics::counter!(m::REJECTED, "model" => model, "reason" => reason).increment(1);
}

/// The answer to a request that waited longer than `limit` for model `id` (counted as rejected).
fn timed_out(id: &str, limit: Duration) -> ApiError {
    rejected(id.to_string(), "queue_timeout");
    let ms = limit.as_millis();
    ApiError::new(Code::QueueTimeout, format!("model {id:?} did not take the request within {ms} ms; retry later"))
}

/// Metric label for a model id: the id if the node has it, else one bounded bucket.
fn label(state: &AppState, id: &str) -> String {
    if state.registry.get(id).is_some() {
        id.to_string()
    } else {
        "_unknown".to_string()
    }
}

fn finish(state: &AppState, id: &str, started: Instant, result: Result<Value, ApiError>) -> HttpResponse {
    let response = match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => {
            if e.code == Code::InferenceFailed {
                // The only error that is the node's fault: the client sees the sentence, the
                // operator must too.
                tracing::error!(model = id, error = %e, "inference failed");
            }
            actix_web::ResponseError::error_response(&e)
        }
    };
    let code = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(target: "stowage::access", model = id, status = code, ms = (seconds * 1e6).round() / 1e3, "prediction");
    match state.registry.get(id) {
        Some(entry) => {
            if code == 200 {
                entry.metrics.ok.increment(1);
            } else {
                metrics::counter!(m::REQUESTS, "model" => id.to_string(), "code" => code.to_string()).increment(1);
            }
            entry.metrics.request_duration.record(seconds);
        }
        None => {
            metrics::counter!(m::REQUESTS, "model" => "_unknown", "code" => code.to_string()).increment(1);
            metrics::histogram!(m::REQUEST_DURATION, "model" => "_unknown").record(seconds);
        }
    }
    response
}

/// Counts an admitted request in `stowage_inflight_requests` until dropped: also when the client
/// goes away and actix drops the handler mid-wait.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Checks the node and the model first (so an unknown model is a 404 whatever the request), then
/// the request, then admits, tokenizes and runs it.
async fn serve(state: &AppState, id: &str, req: Result<Request, ApiError>) -> Result<Value, ApiError> {
    let reg = &state.registry;
    if reg.shutting_down() {
        return Err(ApiError::new(Code::ShuttingDown, "the node is shutting down"));
    }
    let entry =
        reg.get(id).ok_or_else(|| ApiError::new(Code::UnknownModel, format!("no model {id:?} on this node")))?;
    let model: Arc<LoadedModel> = match entry.state() {
        State::Ready(m) => m,
        State::Loading => {
            rejected(id.to_string(), "not_ready");
            return Err(ApiError::new(Code::NotReady, format!("model {id:?} is still loading")));
        }
        State::Failed(why) => {
            return Err(ApiError::new(Code::ModelFailed, format!("model {id:?} failed to load: {why}")))
        }
    };
    let req = req?;
    if let Request::Texts { texts, .. } = &req {
        if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid("every input text must be non-empty"));
        }
    }
    let rows = match &req {
        Request::Texts { texts, .. } => texts.len(),
        Request::Tokens { input_ids, .. } => input_ids.len(),
    };
    if rows > state.config.max_batch {
        return Err(invalid(format!("{rows} inputs in one request, at most {}", state.config.max_batch)));
    }
    if let Request::Texts { texts, pairs: Some(p), .. } = &req {
        if p.len() != texts.len() {
            return Err(invalid("\"text_pair\" must have one entry per input"));
        }
    }

    let arrived = Instant::now();
    let limit = state.config.queue_timeout;
    let entered = match limit {
        None => Some(entry.admission.enter().await),
        Some(t) => tokio::time::timeout(t, entry.admission.enter()).await.ok(),
    };
    let Some(entered) = entered else {
        return Err(timed_out(id, limit.unwrap_or_default()));
    };
    let Some((_permit, waited)) = entered else {
        rejected(id.to_string(), "queue_full");
        return Err(ApiError::new(Code::QueueFull, format!("model {id:?} has a full queue; retry later")));
    };
    let admitted = Instant::now();
    entry.metrics.queue_wait.record(waited.as_secs_f64());
    let _inflight = InFlight::enter(&entry.metrics.inflight);
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<(Vec<Value>, f64), ApiError>>();
    let prepare = {
        let (model, entry) = (model.clone(), entry.clone());
        move || -> Option<(Inputs, Finish)> {
            entry.metrics.batch_wait.record(admitted.elapsed().as_secs_f64());
            if let Some(t) = limit.filter(|&t| arrived.elapsed() > t) {
                // Its client may be long gone: answer, and cost the batch nothing.
                let _ = tx.send(Err(timed_out(&entry.spec.id, t)));
                return None;
            }
            let t = Instant::now();
            let x = tokenize(&model, req);
            entry.metrics.tokenization.record(t.elapsed().as_secs_f64());
            let x = match x {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            let finish: Finish = Box::new(move |out, secs| {
                let answer = out
                    .map_err(|e| e.to_string())
                    .and_then(|(x, out)| postprocess(&model, &x, &out))
                    .map(|predictions| (predictions, secs))
                    .map_err(|e| ApiError::new(Code::InferenceFailed, e));
                let _ = tx.send(answer);
            });
            Some((x, finish))
        }
    };
    let submitted = entry.batcher.submit(&state.inference, &model, batch::Request { rows, prepare: Box::new(prepare) });
    let result = match submitted {
        Ok(()) => rx.await.map_err(|_| Lost),
        Err(e) => Err(e),
    };
    let (predictions, secs) = result.map_err(|e| ApiError::new(Code::InferenceFailed, e.to_string()))??;
    entry.metrics.inference_duration.record(secs);
    Ok(json!({"model": id, "backend": entry.spec.engine.to_string(), "predictions": predictions}))
}
