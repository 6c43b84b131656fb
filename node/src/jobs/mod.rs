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

pub mod store;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::error::Code;
use crate::metrics;
use crate::serve::predict::Node;
pub use store::{Job, JobError, NewJob, Outcome, Pending, Protocol, Status, Store, StoreError};

/// Default of `--async-max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default of `--async-result-ttl-seconds`: a day.
pub const DEFAULT_RESULT_TTL_SECONDS: u64 = 86_400;
/// How long the dispatcher waits before it looks again for room for a job it holds back.
const POLL: Duration = Duration::from_millis(2);
/// Tries of a callback, and how long each may take.
const CALLBACK_TRIES: u32 = 3;
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a node's asynchronous requests.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Where the queue and the results live (`jobs.redb`).
    pub dir: PathBuf,
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
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
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

/// A job the dispatcher holds, and when it may run.
struct Waiting {
    pending: Pending,
    not_before: Option<Instant>,
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

/// The node's asynchronous requests: the store, the queue in memory, the dispatcher.
pub struct Jobs {
    store: Store,
    node: Arc<Node>,
    pub options: JobOptions,
    concurrency: usize,
    queue: Mutex<BTreeMap<u64, Waiting>>,
    running: AtomicUsize,
    wake: Notify,
}

impl Jobs {
    /// Opens the store and takes back the jobs a previous process left; nothing runs until
    /// `start`.
    pub fn open(options: JobOptions, node: Arc<Node>) -> Result<Arc<Self>, StoreError> {
        let opened = Store::open(&options.dir, options.max_attempts)?;
        for job in &opened.dead {
            warn!(
                job = job.id,
                model = job.model,
                attempts = job.attempts,
                "job failed: the node stopped while running it, with no attempts left"
            );
            metrics::async_completed(&job.model, "failed");
        }
        let concurrency = options.concurrency.unwrap_or(node.config.inference_threads).max(1);
        let mut queue = BTreeMap::new();
        for p in opened.pending {
            metrics::async_jobs(&p.model, "queued", 1.0);
            queue.insert(p.seq, Waiting { pending: p, not_before: None });
        }
        if !queue.is_empty() {
            info!(jobs = queue.len(), dir = %options.dir.display(), "asynchronous jobs taken back from the last run");
        }
        Ok(Arc::new(Self {
            store: opened.store,
            node,
            options,
            concurrency,
            queue: Mutex::new(queue),
            running: AtomicUsize::new(0),
            wake: Notify::new(),
        }))
    }

    /// Starts the dispatcher and the sweeper of old results on `runtime`.
    pub fn start(self: &Arc<Self>, runtime: &tokio::runtime::Handle, runner: Arc<dyn Runner>) {
        runtime.spawn(self.clone().dispatch(runner));
        runtime.spawn(self.clone().sweep());
    }

    /// Stores a job (durably) and queues it; an idempotency key already used for the model gives
    /// its job back instead: `(job, true)`.
    pub async fn submit(&self, new: NewJob) -> Result<(Job, bool), StoreError> {
        let (job, existed) = self.store.submit(new).await?;
        if !existed {
            metrics::async_submitted(&job.model);
            metrics::async_jobs(&job.model, "queued", 1.0);
            self.lock().insert(job.seq, Waiting { pending: Pending::from(&job), not_before: None });
            self.wake.notify_one();
        }
        Ok((job, existed))
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.store.get(id)
    }

    /// Jobs queued (not running) now.
    pub fn queued(&self) -> usize {
        self.lock().len()
    }

    /// Publishes the age of the oldest queued job (0 when none).
    pub fn publish_gauges(&self) {
        let oldest = self.lock().values().map(|w| w.pending.submitted_ms).min();
        let age = oldest.map_or(0.0, |ms| store::now_ms().saturating_sub(ms) as f64 / 1e3);
        ::metrics::gauge!(metrics::ASYNC_OLDEST).set(age);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Waiting>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first queued job that may run now, taken off the queue; `None` while synchronous
    /// requests need the room (module docs) or nothing may run yet.
    fn pick(&self) -> Option<Pending> {
        let registry = &self.node.registry;
        if registry.leaving() || self.running.load(Ordering::SeqCst) >= self.concurrency {
            return None;
        }
        if self.node.pool.load().1 > 0 {
            return None;
        }
        let now = Instant::now();
        let mut queue = self.lock();
        let seq = queue.iter().find_map(|(&seq, w)| {
            if w.not_before.is_some_and(|t| t > now) {
                return None;
            }
            let busy = registry.get(&w.pending.model).is_some_and(|e| e.admission.waiting() > 0);
            (!busy).then_some(seq)
        })?;
        self.running.fetch_add(1, Ordering::SeqCst);
        queue.remove(&seq).map(|w| w.pending)
    }

    async fn dispatch(self: Arc<Self>, runner: Arc<dyn Runner>) {
        loop {
            if let Some(p) = self.pick() {
                let (jobs, runner) = (self.clone(), runner.clone());
                tokio::spawn(async move {
                    jobs.run_one(p, runner.as_ref()).await;
                    jobs.running.fetch_sub(1, Ordering::SeqCst);
                    jobs.wake.notify_one();
                });
                continue;
            }
            if self.lock().is_empty() {
                self.wake.notified().await;
            } else {
                let _ = tokio::time::timeout(POLL, self.wake.notified()).await;
            }
        }
    }

    /// Back in the queue, to run no sooner than `after`.
    fn hold(&self, p: Pending, after: Duration) {
        metrics::async_jobs(&p.model, "queued", 1.0);
        self.lock().insert(p.seq, Waiting { pending: p, not_before: Some(Instant::now() + after) });
    }

    async fn run_one(&self, p: Pending, runner: &dyn Runner) {
        metrics::async_jobs(&p.model, "queued", -1.0);
        let (job, body) = match self.store.start(&p.id).await {
            Ok(Some(started)) => started,
            Ok(None) => return, // ended already
            Err(e) => {
                warn!(job = p.id, error = %e, "cannot start a job; trying again in 1 s");
                return self.hold(p, Duration::from_secs(1));
            }
        };
        metrics::async_jobs(&job.model, "running", 1.0);
        let result = runner.run(&job, body).await;
        metrics::async_jobs(&job.model, "running", -1.0);
        let outcome = match result {
            Ok(v) => Outcome::Done(v),
            Err(f) => match next(f.code, job.attempts, self.options.max_attempts) {
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
                    if let Err(e) = self.store.requeue(&job.id, counted).await {
                        warn!(job = job.id, error = %e, "cannot put a job back in the queue");
                    }
                    return self.hold(p, after);
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
        match self.store.finish(&job.id, outcome).await {
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
                if let Err(e) = self.store.requeue(&job.id, false).await {
                    warn!(job = job.id, error = %e, "cannot put a job back in the queue");
                }
                self.hold(p, Duration::from_secs(1));
            }
        }
    }

    /// Deletes results older than the TTL, every tenth of it (at most every minute).
    async fn sweep(self: Arc<Self>) {
        let every = (self.options.result_ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::time::sleep(every).await;
            let before = store::now_ms().saturating_sub(self.options.result_ttl.as_millis() as u64);
            match self.store.sweep(before).await {
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
