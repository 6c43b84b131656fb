//! `GET|POST /predictions/{model_id}`: read and parse the request, hand it to the node
//! (`stowage_node::Node::predict`: admission, the model's batcher, tokenization, the engine and
//! postprocessing on an inference thread), render the answer or the error, record the request.

use std::collections::HashMap;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use stowage_core::Engine;
use stowage_node::{Answer, Caller, Prediction, Request};

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;
use crate::http::{body, caller};

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

/// A POST body → the request (400 for what is not one).
pub(crate) fn parse_body(bytes: &[u8]) -> Result<Request, ApiError> {
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

pub async fn get(
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<HashMap<String, String>>,
    http: HttpRequest,
) -> HttpResponse {
    let started = Instant::now();
    let text = q.get("text").or_else(|| q.get("seq_0")).cloned();
    let pair = q.get("text_pair").or_else(|| q.get("seq_1")).cloned();
    let req = match text {
        Some(t) => Ok(Request::Texts { texts: vec![t], pairs: pair.map(|p| vec![p]), truncate: true }),
        None => Err(malformed("give the text as ?text=… (or ?seq_0=…)")),
    };
    finish(&state, &id, started, predict(&state, &id, req, caller(&http)).await)
}

pub async fn post(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let result = async {
        let body = body::read_for_model(&state, &id, &req, &mut payload).await?;
        predict(&state, &id, parse_body(&body), caller(&req)).await
    }
    .await;
    finish(&state, &id, started, result)
}

/// A prediction's JSON body, written straight from the node's answer.
#[derive(Serialize)]
struct Answered<'a> {
    model: &'a str,
    backend: Engine,
    predictions: &'a [Prediction],
}

/// Checks the node and the model first (so an unknown model is a 404 whatever the request), then
/// the request, then hands it to the node.
async fn predict(
    state: &AppState,
    id: &str,
    req: Result<Request, ApiError>,
    caller: Caller,
) -> Result<Answer, ApiError> {
    let target = state.node.acquire(id).await?;
    Ok(state.node.predict(&target, req?, caller).await?)
}

/// An asynchronous job's run (`http::jobs`): the answer's JSON body, as `post` would give it.
pub(crate) async fn run_job(state: &AppState, id: &str, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let answer = predict(state, id, parse_body(body), Caller::default()).await?;
    let answered = Answered { model: id, backend: answer.backend, predictions: &answer.predictions };
    Ok(serde_json::to_value(answered).expect("an answer serializes"))
}

/// Renders the answer (`{model, backend, predictions}`) or the error, logs a 500, and records the
/// request's status and time.
fn finish(state: &AppState, id: &str, started: Instant, result: Result<Answer, ApiError>) -> HttpResponse {
    let response = match result {
        Ok(answer) => {
            HttpResponse::Ok().json(Answered { model: id, backend: answer.backend, predictions: &answer.predictions })
        }
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
    state.node.record(id, code, seconds);
    response
}
