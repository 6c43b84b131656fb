//! The AWS queue (`--async-queue-url`, `--async-results`): one SQS queue per node carries the
//! jobs; each job's document (as `GET /async/results/{id}` shows it) is an S3 object,
//! `{prefix}{id}.json`, written when the job is queued, when it starts and when it ends.
//!
//! A received message is invisible to other receivers for the visibility timeout; the node deletes
//! it only after the job's result is stored, so a node that dies mid-job leaves the message to
//! come back (at least once into the engine). SQS counts receives (`ApproximateReceiveCount`):
//! that count is the job's attempts, and a message received more than `--async-max-attempts`
//! times ends `failed` without running again (the dead letter). A job already ended in S3 (a
//! second delivery) keeps its first result: one stored result per id.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::{now_ms, Job, JobError, NewJob, Outcome, Protocol, Status, StoreError};
use crate::lifecycle::storage::s3::{s3_client, sdk_config, Timeouts};

/// Largest SQS message.
pub const MAX_MESSAGE: usize = 256 * 1024;
/// Default of `--async-visibility-timeout-seconds`.
pub const DEFAULT_VISIBILITY_SECONDS: u64 = 60;
/// How long one receive waits for a message (SQS long polling).
const WAIT_SECONDS: i32 = 1;

/// Where a node's AWS queue and results are.
#[derive(Debug, Clone)]
pub struct AwsQueue {
    pub queue_url: String,
    /// `s3://bucket/prefix/`.
    pub results: String,
    /// An SQS- and S3-compatible endpoint (a local test server); else `AWS_ENDPOINT_URL`, else AWS.
    pub endpoint: Option<String>,
    /// How long a received job stays invisible to other receivers.
    pub visibility: Duration,
}

/// A job as its message carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    id: String,
    model: String,
    protocol: Protocol,
    callback_url: Option<String>,
    submitted_ms: u64,
    /// The request body (JSON text: asynchronous requests are JSON only).
    body: String,
}

/// A message received and not yet deleted.
pub struct Received {
    receipt: String,
    msg: Message,
    receives: u32,
}

impl Received {
    pub fn id(&self) -> &str {
        &self.msg.id
    }

    pub fn model(&self) -> &str {
        &self.msg.model
    }
}

pub struct Sqs {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    queue_url: String,
    bucket: String,
    prefix: String,
    visibility: i32,
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{what}: {e}"))
}

impl Sqs {
    /// Clients for the queue and the results (no request is sent yet).
    pub async fn connect(q: &AwsQueue) -> Result<Self, StoreError> {
        let (bucket, prefix) = parse_results(&q.results)?;
        // Unlike model downloads, these calls are small and idempotent: the SDK's own retries.
        let shared = sdk_config(q.endpoint.as_deref(), Timeouts::default(), RetryConfig::standard()).await;
        Ok(Self {
            sqs: aws_sdk_sqs::Client::new(&shared),
            s3: s3_client(&shared),
            queue_url: q.queue_url.clone(),
            bucket,
            prefix,
            visibility: q.visibility.as_secs().clamp(1, 43_200) as i32,
        })
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}.json", self.prefix)
    }

    async fn put(&self, job: &Job) -> Result<(), StoreError> {
        let body = serde_json::to_vec(job).expect("a job serializes");
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(&job.id))
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| failed("cannot store the job in S3", aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let got = self.s3.get_object().bucket(&self.bucket).key(self.key(id)).send().await;
        let out = match got {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(failed("cannot read the job from S3", aws_sdk_s3::error::DisplayErrorContext(e))),
        };
        let bytes = out.body.collect().await.map_err(|e| failed("cannot read the job from S3", e))?.into_bytes();
        serde_json::from_slice(&bytes).map(Some).map_err(|e| failed("a stored job does not parse", e))
    }

    /// Writes the job's document, then sends its message; a key already used for the model
    /// gives its job back. The id of a keyed job is derived from the key, so that even two
    /// submissions racing each other name one job.
    pub async fn submit(&self, new: NewJob) -> Result<(Job, bool), StoreError> {
        let id = match &new.key {
            Some(k) => {
                let digest = Sha256::digest(format!("{}/{k}", new.model).as_bytes());
                format!("{}.{}", new.model, &hex::encode(digest)[..32])
            }
            None => format!("{}.{:032x}", new.model, rand::random::<u128>()),
        };
        if new.key.is_some() {
            if let Some(job) = self.get(&id).await? {
                return Ok((job, true));
            }
        }
        let body = String::from_utf8(new.body).map_err(|_| failed("the request", "not UTF-8 text"))?;
        let msg = Message {
            id: id.clone(),
            model: new.model.clone(),
            protocol: new.protocol,
            callback_url: new.callback_url.clone(),
            submitted_ms: now_ms(),
            body,
        };
        let text = serde_json::to_string(&msg).expect("a message serializes");
        if text.len() > MAX_MESSAGE {
            return Err(StoreError::TooLarge(text.len(), MAX_MESSAGE));
        }
        let job = job_of(&msg, Status::Queued, 0);
        self.put(&job).await?;
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(text)
            .send()
            .await
            .map_err(|e| failed("cannot queue the job in SQS", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok((job, false))
    }

    /// The next message, waiting up to a second for one.
    pub async fn next(&self) -> Result<Option<Received>, StoreError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(1)
            .wait_time_seconds(WAIT_SECONDS)
            .visibility_timeout(self.visibility)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| failed("cannot receive from SQS", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let Some(m) = out.messages.unwrap_or_default().into_iter().next() else { return Ok(None) };
        let receipt = m.receipt_handle().unwrap_or_default().to_string();
        let receives = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        match serde_json::from_str::<Message>(m.body().unwrap_or_default()) {
            Ok(msg) => Ok(Some(Received { receipt, msg, receives })),
            Err(e) => {
                // Not ours (or not any more): it would come back for ever.
                tracing::warn!(error = %e, "an SQS message that is not a Stowage job; deleting it");
                self.delete(&receipt).await?;
                Ok(None)
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), StoreError> {
        self.sqs
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| failed("cannot delete the job's message", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Marks the job running (its attempts: the message's receives). A second delivery of a job
    /// that has ended runs again, and `finish` keeps the first result.
    pub async fn start(&self, r: &Received) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
        let job = job_of(&r.msg, Status::Running, r.receives);
        self.put(&job).await?;
        Ok(Some((job, r.msg.body.clone().into_bytes())))
    }

    /// Stores the job's end, then deletes its message; `None` when it had ended already.
    pub async fn finish(&self, r: &Received, outcome: Outcome) -> Result<Option<Job>, StoreError> {
        if self.get(r.id()).await?.is_some_and(|j| j.status.is_final()) {
            self.delete(&r.receipt).await?;
            return Ok(None);
        }
        let mut job = job_of(&r.msg, Status::Done, r.receives);
        match outcome {
            Outcome::Done(v) => job.result = Some(v),
            Outcome::Failed(e) => {
                job.status = Status::Failed;
                job.error = Some(e);
            }
        }
        job.finished_ms = Some(now_ms());
        self.put(&job).await?;
        self.delete(&r.receipt).await?;
        Ok(Some(job))
    }

    /// Keeps a received job invisible to other receivers while it runs: every half visibility
    /// timeout, the timeout again from now. A job that outlasts the timeout (a cold model's load,
    /// a long batch) is not received and run a second time meanwhile. Ends when dropped.
    pub async fn hold(&self, r: &Received) -> std::convert::Infallible {
        let every = Duration::from_secs((self.visibility as u64 / 2).max(1));
        loop {
            tokio::time::sleep(every).await;
            self.invisible_for(
                r,
                self.visibility,
                "cannot extend a running job's visibility; another node may run it too",
            )
            .await;
        }
    }

    /// Makes `r`'s message invisible for `secs` from now (0: visible at once); logs `why` when
    /// SQS refuses.
    async fn invisible_for(&self, r: &Received, secs: i32, why: &'static str) {
        let changed = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&r.receipt)
            .visibility_timeout(secs)
            .send()
            .await;
        if let Err(e) = changed {
            tracing::warn!(job = r.id(), error = %aws_sdk_sqs::error::DisplayErrorContext(e), "{why}");
        }
    }

    /// Back in the queue: the document says queued again, and the message comes back after
    /// `after` (else after the visibility timeout).
    pub async fn retry(&self, r: &Received, started: bool, after: Duration) {
        if started {
            if let Err(e) = self.put(&job_of(&r.msg, Status::Queued, r.receives)).await {
                tracing::warn!(job = r.id(), error = %e, "cannot mark a job queued again");
            }
        }
        let secs = after.as_secs_f64().ceil().clamp(0.0, 43_200.0) as i32;
        self.invisible_for(
            r,
            secs,
            "cannot put a job's message back early; it comes back after the visibility timeout",
        )
        .await;
    }
}

fn job_of(m: &Message, status: Status, attempts: u32) -> Job {
    Job {
        id: m.id.clone(),
        model: m.model.clone(),
        protocol: m.protocol,
        status,
        attempts,
        submitted_ms: m.submitted_ms,
        finished_ms: None,
        result: None,
        error: None,
        callback_url: m.callback_url.clone(),
        seq: 0,
        key: None,
    }
}

/// `s3://bucket/prefix/` → (bucket, prefix ending in `/`, or empty).
fn parse_results(uri: &str) -> Result<(String, String), StoreError> {
    let bad = || StoreError::Failed(format!("--async-results {uri:?}: expected s3://bucket/prefix/"));
    let rest = uri.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad());
    }
    let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_string() } else { format!("{prefix}/") };
    Ok((bucket.to_string(), prefix))
}

/// Why a job that keeps coming back ends.
pub fn dead_letter(receives: u32) -> JobError {
    JobError {
        code: "inference_failed".into(),
        error: format!(
            "received {receives} times without a stored result (its node stopped or failed while running it); the job is not tried again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_a_bucket_and_a_folder() {
        assert_eq!(parse_results("s3://b/p/q/").unwrap(), ("b".into(), "p/q/".into()));
        assert_eq!(parse_results("s3://b/p").unwrap(), ("b".into(), "p/".into()));
        assert_eq!(parse_results("s3://b").unwrap(), ("b".into(), String::new()));
        for bad in ["b/p", "s3:///p", "http://b/p"] {
            assert!(parse_results(bad).is_err(), "{bad}");
        }
    }
}
