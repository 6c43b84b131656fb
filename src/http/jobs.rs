//! Asynchronous requests (docs/http-api.md, "Asynchronous requests"): `POST
//! /async/predictions/{model_id}` (and KServe v2's infer with `Prefer: respond-async`, in
//! `v2.rs`) check the request as the synchronous route would, hand it to the node's job queue
//! (`stowage_node::jobs`: on disk before the 202) and answer where its result will be;
//! `GET /async/results/{job_id}` shows the job. The queue runs each job through the same
//! handlers' request path (`runner`), so a job's result is the synchronous route's answer.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{header, Uri};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde_json::{json, Value};
use stowage_node::jobs::{Failure, Job, Jobs, NewJob, Protocol, RunFuture, Runner, StoreError};
use stowage_node::PredictError;

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;
use crate::http::{body, predictions, v2};

/// Longest `Idempotency-Key` taken.
const MAX_KEY: usize = 255;
/// Longest callback URL taken.
const MAX_URL: usize = 2048;

fn malformed(msg: impl Into<String>) -> ApiError {
    ApiError::new(Code::MalformedRequest, msg)
}

/// The node's queue, or 501 where it takes no asynchronous requests.
pub fn enabled(state: &AppState) -> Result<&Arc<Jobs>, ApiError> {
    state.jobs.as_ref().ok_or_else(|| {
        ApiError::new(Code::AsyncDisabled, "this node takes no asynchronous requests (start it with --async-dir)")
    })
}

/// A callback URL the node will not POST to, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadCallback(String);

/// A callback address the node will POST to: `http://host[:port]/path`.
pub fn check_callback_url(url: &str) -> Result<(), BadCallback> {
    if url.len() > MAX_URL {
        return Err(BadCallback(format!("a callback URL must be at most {MAX_URL} characters")));
    }
    let uri: Uri = url.parse().map_err(|e| BadCallback(format!("{url:?} is not a URL: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(BadCallback(format!("{url:?}: a callback URL must be http://host[:port]/path")));
    }
    Ok(())
}

fn store_failed(e: StoreError) -> ApiError {
    if let StoreError::TooLarge(..) = e {
        return ApiError::new(Code::BodyTooLarge, e.to_string());
    }
    tracing::error!(error = %e, "the job store failed");
    ApiError::new(Code::JobStoreFailed, "the node cannot store the job now; try again")
}

pub async fn submit(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> HttpResponse {
    let started = Instant::now();
    let result = async {
        let jobs = enabled(&state)?;
        let body = body::read_for_model(&state, &id, &req, &mut payload).await?;
        let (body, callback) = take_callback(&body)?;
        // Checked now: a request that is not one gets its 400 here, not as a failed job later.
        predictions::parse_body(&body)?;
        accept(&state, jobs, &id, Protocol::Predictions, body, callback, &req).await
    }
    .await;
    let response = result.unwrap_or_else(|e| e.error_response());
    state.node.record(&id, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// The body without its `callback_url` (a string), and that URL.
fn take_callback(body: &[u8]) -> Result<(Vec<u8>, Option<String>), ApiError> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return Ok((body.to_vec(), None)); // not an object: the request's own check says why
    };
    let url = match fields.remove("callback_url") {
        None => return Ok((body.to_vec(), None)),
        Some(Value::String(url)) => url,
        Some(_) => return Err(malformed("\"callback_url\" must be a string (an http:// URL)")),
    };
    let rest = serde_json::to_vec(&Value::Object(fields)).expect("a JSON object serializes");
    Ok((rest, Some(url)))
}

/// Queues a checked request for model `id` and answers 202 with where its result will be.
pub async fn accept(
    state: &AppState,
    jobs: &Jobs,
    id: &str,
    protocol: Protocol,
    body: Vec<u8>,
    callback: Option<String>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if state.node.registry.get(id).is_none() {
        return Err(PredictError::UnknownModel(id.to_string()).into());
    }
    if state.node.registry.shutting_down() {
        return Err(PredictError::ShuttingDown.into());
    }
    if let Some(url) = &callback {
        if !jobs.options.request_callbacks {
            return Err(malformed(
                "this node does not take per-request callbacks (its operator can allow them with --async-request-callbacks)",
            ));
        }
        check_callback_url(url).map_err(|e| malformed(format!("\"callback_url\": {e}")))?;
    }
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let k = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()));
            Some(
                k.ok_or_else(|| malformed(format!("Idempotency-Key must be 1 to {MAX_KEY} visible ASCII characters")))?
                    .to_string(),
            )
        }
    };
    let new = NewJob { model: id.to_string(), protocol, body, key, callback_url: callback };
    let (job, existed) = jobs.submit(new).await.map_err(store_failed)?;
    let url = format!("/async/results/{}", job.id);
    let mut r = HttpResponse::Accepted();
    r.insert_header((header::LOCATION, url.clone()));
    if existed {
        r.insert_header(("idempotent-replayed", "true"));
    }
    Ok(r.json(json!({"id": job.id, "status": job.status, "status_url": url})))
}

pub async fn result(state: web::Data<AppState>, id: web::Path<String>) -> HttpResponse {
    let found = match enabled(&state) {
        Ok(jobs) => jobs.get(&id).await.map_err(store_failed),
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(job)) => HttpResponse::Ok().json(job.view()),
        Ok(None) => ApiError::new(
            Code::UnknownJob,
            format!("no job {:?} on this node (never submitted here, or its result has expired)", id.as_str()),
        )
        .error_response(),
        Err(e) => e.error_response(),
    }
}

/// Runs jobs through the handlers' own request path.
struct HttpRunner(Arc<AppState>);

impl Runner for HttpRunner {
    fn run(&self, job: &Job, body: Vec<u8>) -> RunFuture {
        let (state, model, protocol) = (self.0.clone(), job.model.clone(), job.protocol);
        Box::pin(async move {
            let answer = match protocol {
                Protocol::Predictions => predictions::run_job(&state, &model, &body).await,
                Protocol::V2 => v2::run_job(&state, &model, &body).await,
            };
            answer.map_err(|e| Failure { code: e.code, error: e.message })
        })
    }
}

/// The runner the node's job queue runs its jobs with.
pub fn runner(state: Arc<AppState>) -> Arc<dyn Runner> {
    Arc::new(HttpRunner(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_plain_http_urls() {
        assert!(check_callback_url("http://hooks.internal:8080/done").is_ok());
        assert!(check_callback_url("http://10.0.0.7/x?y=1").is_ok());
        for bad in ["https://x/y", "ftp://x", "x/y", "http://", "", &format!("http://x/{}", "a".repeat(3000))] {
            assert!(check_callback_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_callback_leaves_the_body() {
        let (rest, url) = take_callback(br#"{"inputs":"hi","callback_url":"http://h/x"}"#).unwrap();
        assert_eq!(url.as_deref(), Some("http://h/x"));
        assert_eq!(serde_json::from_slice::<Value>(&rest).unwrap(), json!({"inputs": "hi"}));
        let (same, none) = take_callback(b"not json").unwrap();
        assert_eq!((same.as_slice(), none), (&b"not json"[..], None));
        assert!(take_callback(br#"{"callback_url": 3}"#).is_err());
    }
}
