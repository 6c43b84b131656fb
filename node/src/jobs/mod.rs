//! Asynchronous requests (docs/http-api.md, "Asynchronous requests"): a front end hands a
//! request over (`Jobs::submit`: on disk before it is acknowledged), the dispatcher runs it on the
//! node's spare capacity through the front end's own request path (`Runner`), and its result is
//! stored once (`store.rs`) for `GET /async/results/{id}`, and POSTed to its callback if it has
//! one.
//!
//! **Spare capacity.** Synchronous requests go first: the dispatcher starts a job only while
//! (1) fewer than `concurrency` jobs run (default: the node's inference threads), (2) no engine
//! call waits for an inference thread (the pool's backlog is empty) and (3) no request waits for
//! a slot of the job's model. So a synchronous request finds at most `concurrency` jobs' engine
//! calls ahead of it, about one service time, however deep the asynchronous queue.
//!
//! **Delivery.** At least once into the engine, one stored result per job. A job leaves the queue
//! only in the transaction that stores its result; a node that dies mid-job runs it again after
//! its restart, with the attempt counted; after `max_attempts` it fails with the reason. What
//! never reached the model (its queue was full, it was still loading, the node was stopping) is
//! tried again later without counting.

//!
//! **Where the queue lives.** `local.rs`: a redb database under `--async-dir` (`store.rs`), the
//! waiting jobs also in memory; `sqs.rs`: one SQS queue per node, the jobs' documents in S3.

mod local;
pub mod sqs;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::error::Code;
use crate::metrics;
use crate::serve::predict::Node;
pub use sqs::AwsQueue;
pub use store::{Job, JobError, NewJob, Outcome, Pending, Protocol, Status, Store, StoreError};

/// Default of `--async-max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default of `--async-result-ttl-seconds`: a day.
pub const DEFAULT_RESULT_TTL_SECONDS: u64 = 86_400;
/// SQS jobs received ahead of the engine, at least.
const SQS_AHEAD: usize = 8;
/// How long the dispatcher waits before it looks again for room for a job it holds back.
const POLL: Duration = Duration::from_millis(2);
/// Tries of a callback, and how long each may take.
const CALLBACK_TRIES: u32 = 3;
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's queue and results live.
#[derive(Debug, Clone)]
pub enum Place {
    /// `--async-dir`: `jobs.redb` in this folder.
    Dir(PathBuf),
    /// `--async-queue-url` and `--async-results`.
    Aws(sqs::AwsQueue),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Dir(d) => write!(f, "{}", d.display()),
            Place::Aws(q) => write!(f, "{} (results in {})", q.queue_url, q.results),
        }
    }
}

/// Settings of a node's asynchronous requests.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub place: Place,
    pub max_attempts: u32,
    /// How long a result is kept after its job ends.
    pub result_ttl: Duration,
    /// Most jobs running at once (`None`: the node's inference threads).
    pub concurrency: Option<usize>,
    /// Where every job's result is POSTed, unless the request names its own.
    pub callback_url: Option<String>,
    /// Whether a request may name its own callback (`callback_url`).
    pub request_callbacks: bool,
}

impl JobOptions {
    pub fn new(place: Place) -> Self {
        Self {
            place,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            result_ttl: Duration::from_secs(DEFAULT_RESULT_TTL_SECONDS),
            concurrency: None,
            callback_url: None,
            request_callbacks: false,
        }
    }
}

/// Why a job's run gave no answer: the error the synchronous route would have answered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: Code,
    pub error: String,
}

pub type RunFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, Failure>> + Send>>;

/// Runs one job's request as its synchronous route would, and gives the answer's JSON body.
pub trait Runner: Send + Sync + 'static {
    fn run(&self, job: &Job, body: Vec<u8>) -> RunFuture;
}

/// What to do with a job whose run failed.
#[derive(Debug, PartialEq)]
enum Next {
    /// Back in the queue; `counted: false` when it never reached the model.
    Retry {
        counted: bool,
        after: Duration,
    },
    Fail,
}

fn next(code: Code, attempts: u32, max_attempts: u32) -> Next {
    match code {
        // Never reached the model: its queue was full (the dispatcher's view was a moment old),
        // it is loading or its cold pool is busy, or the node is stopping.
        Code::QueueFull => Next::Retry { counted: false, after: Duration::from_millis(50) },
        Code::QueueTimeout | Code::NotReady | Code::ShuttingDown | Code::ColdPoolFull | Code::ClientClosedRequest => {
            Next::Retry { counted: false, after: Duration::from_secs(code.retry_after().unwrap_or(1).into()) }
        }
        // The model failed (a reload may bring it back) or its engine did.
        Code::InferenceFailed | Code::ModelFailed if attempts < max_attempts => {
            let backoff = Duration::from_secs(1 << attempts.saturating_sub(1).min(5));
            Next::Retry {
                counted: true,
                after: backoff.max(Duration::from_secs(code.retry_after().unwrap_or(0).into())),
            }
        }
        // The request itself is wrong (or the model is gone): trying again gives the same.
        _ => Next::Fail,
    }
}

enum Backend {
    Local(local::Local),
    Sqs(sqs::Sqs),
}

/// A job taken off the queue to run.
enum Lease {
    Local(Pending),
    Sqs(sqs::Received),
}

impl Lease {
    fn id(&self) -> &str {
        match self {
            Lease::Local(p) => &p.id,
            Lease::Sqs(r) => r.id(),
        }
    }
}

/// The node's asynchronous requests: where they are queued, and the dispatcher.
pub struct Jobs {
    backend: Backend,
    node: Arc<Node>,
    pub options: JobOptions,
    concurrency: usize,
    /// Jobs taken off the queue and not yet back or ended: `concurrency` in the engine and as
    /// many more (`SQS_AHEAD` for SQS) whose store calls overlap the engine's work.
    running: AtomicUsize,
    /// Jobs in their model's hands at once: `concurrency`.
    engine: tokio::sync::Semaphore,
    wake: Notify,
}

impl Jobs {
    /// Opens the queue (and, for `--async-dir`, takes back the jobs a previous process left);
    /// nothing runs until `start`.
    pub async fn open(options: JobOptions, node: Arc<Node>) -> Result<Arc<Self>, StoreError> {
        let backend = match &options.place {
            Place::Dir(dir) => Backend::Local(local::Local::open(dir, options.max_attempts)?),
            Place::Aws(q) => Backend::Sqs(sqs::Sqs::connect(q).await?),
        };
        let concurrency = options.concurrency.unwrap_or(node.config.inference_threads).max(1);
        Ok(Arc::new(Self {
            backend,
            node,
            options,
            concurrency,
            running: AtomicUsize::new(0),
            engine: tokio::sync::Semaphore::new(concurrency),
            wake: Notify::new(),
        }))
    }

    /// Starts the dispatcher (and, for `--async-dir`, the sweeper of old results) on `runtime`.
    pub fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle, runner: Arc<dyn Runner>) {
        runtime.spawn(self.clone().dispatch(runner));
        if let Backend::Local(_) = self.backend {
            runtime.spawn(self.clone().sweep());
        }
    }

    /// Stores a job (durably) and queues it; an idempotency key already used for the model gives
    /// its job back instead: `(job, true)`.
    pub async fn submit(&self, new: NewJob) -> Result<(Job, bool), StoreError> {
        let (job, existed) = match &self.backend {
            Backend::Local(l) => l.submit(new).await?,
            Backend::Sqs(q) => q.submit(new).await?,
        };
        if !existed {
            metrics::async_submitted(&job.model);
            self.wake.notify_one();
        }
        Ok((job, existed))
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.get(id),
            Backend::Sqs(q) => q.get(id).await,
        }
    }

    /// Jobs queued (not running) here now; `None` for SQS, whose depth SQS knows.
    pub fn queued(&self) -> Option<usize> {
        match &self.backend {
            Backend::Local(l) => Some(l.len()),
            Backend::Sqs(_) => None,
        }
    }

    /// Publishes the age of the oldest queued job (0 when none; `--async-dir` only: SQS reports
    /// its own, `ApproximateAgeOfOldestMessage`).
    pub fn publish_gauges(&self) {
        if let Backend::Local(l) = &self.backend {
            let age = l.oldest_ms().map_or(0.0, |ms| store::now_ms().saturating_sub(ms) as f64 / 1e3);
            ::metrics::gauge!(metrics::ASYNC_OLDEST).set(age);
        }
    }

    /// No engine call waits for an inference thread, and the node is not leaving.
    fn node_has_room(&self) -> bool {
        !self.node.registry.leaving() && self.node.pool.load().1 == 0
    }

    /// No request waits for a slot of `model`.
    fn model_has_room(&self, model: &str) -> bool {
        self.node.registry.get(model).is_none_or(|e| e.admission.waiting() == 0)
    }

    /// The next job to run now, if there is room for it (module docs).
    async fn next(&self) -> Option<Lease> {
        // Jobs ahead of the engine: their store calls overlap the engine's work (local commits
        // take a few ms; an SQS job makes several round trips to SQS and S3 before and after).
        let ahead = match self.backend {
            Backend::Local(_) => self.concurrency,
            Backend::Sqs(_) => self.concurrency.max(SQS_AHEAD),
        };
        if self.running.load(Ordering::SeqCst) >= self.concurrency + ahead || !self.node_has_room() {
            return None;
        }
        match &self.backend {
            Backend::Local(l) => l.next(|m| self.model_has_room(m)).map(Lease::Local),
            Backend::Sqs(q) => match q.next().await {
                Ok(r) => r.map(Lease::Sqs),
                Err(e) => {
                    warn!(error = %e, "cannot receive jobs; trying again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            },
        }
    }

    async fn dispatch(self: Arc<Self>, runner: Arc<dyn Runner>) {
        loop {
            if let Some(lease) = self.next().await {
                self.running.fetch_add(1, Ordering::SeqCst);
                let (jobs, runner) = (self.clone(), runner.clone());
                tokio::spawn(async move {
                    jobs.run_one(lease, runner.as_ref()).await;
                    jobs.running.fetch_sub(1, Ordering::SeqCst);
                    jobs.wake.notify_one();
                });
                continue;
            }
            match &self.backend {
                Backend::Local(l) if l.len() == 0 => self.wake.notified().await,
                _ => {
                    let _ = tokio::time::timeout(POLL, self.wake.notified()).await;
                }
            }
        }
    }

    async fn start_job(&self, lease: &Lease) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
        match (&self.backend, lease) {
            (Backend::Local(l), Lease::Local(p)) => l.start(p).await,
            (Backend::Sqs(q), Lease::Sqs(r)) => q.start(r).await,
            _ => unreachable!("a lease comes from its backend"),
        }
    }

    async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<Option<Job>, StoreError> {
        match (&self.backend, lease) {
            (Backend::Local(l), Lease::Local(p)) => l.finish(&p.id, outcome).await,
            (Backend::Sqs(q), Lease::Sqs(r)) => q.finish(r, outcome).await,
            _ => unreachable!("a lease comes from its backend"),
        }
    }

    /// Back in the queue, to run no sooner than `after`.
    async fn retry(&self, lease: Lease, started: bool, counted: bool, after: Duration) {
        match (&self.backend, lease) {
            (Backend::Local(l), Lease::Local(p)) => l.retry(p, started, counted, after).await,
            (Backend::Sqs(q), Lease::Sqs(r)) => q.retry(&r, started, after).await,
            _ => unreachable!("a lease comes from its backend"),
        }
        self.wake.notify_one();
    }

    async fn run_one(&self, lease: Lease, runner: &dyn Runner) {
        let (job, body) = match self.start_job(&lease).await {
            Ok(Some(started)) => started,
            Ok(None) => return, // ended already
            Err(e) => {
                warn!(job = lease.id(), error = %e, "cannot start a job; trying again in 1 s");
                return self.retry(lease, false, false, Duration::from_secs(1)).await;
            }
        };
        let result = if job.attempts > self.options.max_attempts {
            // Received again and again without a result (SQS): its node keeps dying on it.
            Err(None)
        } else {
            // Its turn in the engine; the room checked again, as it may have gone meanwhile.
            let _slot = self.engine.acquire().await.expect("the semaphore is never closed");
            while !(self.node_has_room() && self.model_has_room(&job.model)) {
                if self.node.registry.leaving() {
                    // Stopping: back to the queue, this attempt not counted (it never ran).
                    return self.retry(lease, true, false, Duration::from_secs(1)).await;
                }
                tokio::time::sleep(POLL).await;
            }
            metrics::async_jobs(&job.model, "running", 1.0);
            let result = match (&self.backend, &lease) {
                // While it runs, SQS must not hand it to another receiver.
                (Backend::Sqs(q), Lease::Sqs(r)) => tokio::select! {
                    result = runner.run(&job, body) => result,
                    never = q.hold(r) => match never {},
                },
                _ => runner.run(&job, body).await,
            };
            metrics::async_jobs(&job.model, "running", -1.0);
            result.map_err(Some)
        };
        self.wake.notify_one();
        let outcome = match result {
            Ok(v) => Outcome::Done(v),
            Err(None) => Outcome::Failed(sqs::dead_letter(job.attempts)),
            Err(Some(f)) => match next(f.code, job.attempts, self.options.max_attempts) {
                Next::Retry { counted, after } => {
                    if counted {
                        metrics::async_retried(&job.model);
                        warn!(
                            job = job.id,
                            model = job.model,
                            attempt = job.attempts,
                            code = f.code.name(),
                            error = f.error,
                            "job failed; trying again"
                        );
                    }
                    return self.retry(lease, true, counted, after).await;
                }
                Next::Fail => {
                    let error = if job.attempts > 1 {
                        format!("{} (attempt {} of {})", f.error, job.attempts, self.options.max_attempts)
                    } else {
                        f.error
                    };
                    Outcome::Failed(JobError { code: f.code.name().to_string(), error })
                }
            },
        };
        match self.finish(&lease, outcome).await {
            Ok(Some(ended)) => {
                metrics::async_completed(&ended.model, if ended.status == Status::Done { "done" } else { "failed" });
                if let Some(url) = ended.callback_url.clone().or_else(|| self.options.callback_url.clone()) {
                    tokio::task::spawn_blocking(move || callback(&url, &ended));
                }
            }
            Ok(None) => {}
            Err(e) => {
                // Not stored: it runs again (at least once into the engine, one stored result).
                warn!(job = job.id, error = %e, "cannot store a job's result; running it again in 1 s");
                self.retry(lease, true, false, Duration::from_secs(1)).await;
            }
        }
    }

    /// Deletes results older than the TTL, every tenth of it (at most every minute).
    async fn sweep(self: Arc<Self>) {
        let Backend::Local(l) = &self.backend else { return };
        let every = (self.options.result_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::time::sleep(every).await;
            match l.sweep(self.options.result_ttl).await {
                Ok(0) => {}
                Ok(n) => info!(jobs = n, "expired asynchronous results deleted"),
                Err(e) => warn!(error = %e, "cannot delete expired asynchronous results"),
            }
        }
    }
}

/// RFC 3339, from milliseconds since the Unix epoch.
fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

impl Job {
    /// The job as `GET /async/results/{id}` and callbacks show it.
    pub fn view(&self) -> serde_json::Value {
        let mut v = json!({
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "attempts": self.attempts,
            "submitted_at": rfc3339(self.submitted_ms),
        });
        if let Some(ms) = self.finished_ms {
            v["finished_at"] = json!(rfc3339(ms));
        }
        if let Some(r) = &self.result {
            v["result"] = r.clone();
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// POSTs an ended job to `url`, a few times if it must; logs what it could not.
fn callback(url: &str, job: &Job) {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(CALLBACK_TIMEOUT)).build().into();
    let body = job.view();
    for attempt in 1..=CALLBACK_TRIES {
        match agent.post(url).send_json(&body) {
            Ok(_) => {
                metrics::async_callback(true);
                return;
            }
            Err(e) if attempt == CALLBACK_TRIES => {
                metrics::async_callback(false);
                warn!(job = job.id, url, error = %e, "the job's callback failed; its result stays at /async/results");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500 << attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_never_reached_the_model_and_fails_what_cannot_succeed() {
        assert_eq!(next(Code::QueueFull, 1, 3), Next::Retry { counted: false, after: Duration::from_millis(50) });
        assert_eq!(next(Code::NotReady, 3, 3), Next::Retry { counted: false, after: Duration::from_secs(5) });
        assert_eq!(next(Code::InferenceFailed, 1, 3), Next::Retry { counted: true, after: Duration::from_secs(1) });
        assert_eq!(next(Code::InferenceFailed, 2, 3), Next::Retry { counted: true, after: Duration::from_secs(2) });
        assert_eq!(next(Code::InferenceFailed, 3, 3), Next::Fail);
        assert_eq!(next(Code::ModelFailed, 1, 3), Next::Retry { counted: true, after: Duration::from_secs(60) });
        assert_eq!(next(Code::InvalidInput, 1, 3), Next::Fail);
        assert_eq!(next(Code::UnknownModel, 1, 3), Next::Fail);
    }
}
