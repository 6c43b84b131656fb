//! The embedded queue (`--async-dir`): the redb store (`store.rs`) and, in memory, the jobs
//! waiting to run in arrival order, each with the time it may run again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::store::{self, Job, NewJob, Outcome, Pending, Store, StoreError};
use crate::metrics;

/// A job held in memory, and when it may run.
struct Waiting {
    pending: Pending,
    not_before: Option<Instant>,
}

pub struct Local {
    store: Store,
    queue: Mutex<BTreeMap<u64, Waiting>>,
}

impl Local {
    /// Opens the store and takes back what a previous process left; jobs it finds dead (no
    /// attempts left) are logged and counted.
    pub fn open(dir: &Path, max_attempts: u32) -> Result<Self, StoreError> {
        let opened = Store::open(dir, max_attempts)?;
        for job in &opened.dead {
            warn!(
                job = job.id,
                model = job.model,
                attempts = job.attempts,
                "job failed: the node stopped while running it, with no attempts left"
            );
            metrics::async_completed(&job.model, "failed");
        }
        let mut queue = BTreeMap::new();
        for p in opened.pending {
            metrics::async_jobs(&p.model, "queued", 1.0);
            queue.insert(p.seq, Waiting { pending: p, not_before: None });
        }
        if !queue.is_empty() {
            info!(jobs = queue.len(), dir = %dir.display(), "asynchronous jobs taken back from the last run");
        }
        Ok(Self { store: opened.store, queue: Mutex::new(queue) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Waiting>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn submit(&self, new: NewJob) -> Result<(Job, bool), StoreError> {
        let (job, existed) = self.store.submit(new).await?;
        if !existed {
            metrics::async_jobs(&job.model, "queued", 1.0);
            self.lock().insert(job.seq, Waiting { pending: Pending::from(&job), not_before: None });
        }
        Ok((job, existed))
    }

    pub fn get(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.store.get(id)
    }

    /// The first job that may run now and whose model has room, taken off the queue.
    pub fn next(&self, room: impl Fn(&str) -> bool) -> Option<Pending> {
        let now = Instant::now();
        let mut queue = self.lock();
        let seq = queue
            .iter()
            .find_map(|(&seq, w)| (w.not_before.is_none_or(|t| t <= now) && room(&w.pending.model)).then_some(seq))?;
        let p = queue.remove(&seq).map(|w| w.pending)?;
        metrics::async_jobs(&p.model, "queued", -1.0);
        Some(p)
    }

    pub async fn start(&self, p: &Pending) -> Result<Option<(Job, Vec<u8>)>, StoreError> {
        self.store.start(&p.id).await
    }

    pub async fn finish(&self, id: &str, outcome: Outcome) -> Result<Option<Job>, StoreError> {
        self.store.finish(id, outcome).await
    }

    /// Back in the queue, to run no sooner than `after`; `started`: it was marked running (and
    /// `counted`: that attempt stays counted).
    pub async fn retry(&self, p: Pending, started: bool, counted: bool, after: Duration) {
        if started {
            if let Err(e) = self.store.requeue(&p.id, counted).await {
                warn!(job = p.id, error = %e, "cannot put a job back in the queue");
            }
        }
        metrics::async_jobs(&p.model, "queued", 1.0);
        self.lock().insert(p.seq, Waiting { pending: p, not_before: Some(Instant::now() + after) });
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// When the oldest queued job was submitted (ms since the epoch).
    pub fn oldest_ms(&self) -> Option<u64> {
        self.lock().values().map(|w| w.pending.submitted_ms).min()
    }

    /// Deletes the results older than `ttl`, in transactions of at most `MAX_SWEEP` jobs.
    pub async fn sweep(&self, ttl: Duration) -> Result<usize, StoreError> {
        let before = store::now_ms().saturating_sub(ttl.as_millis() as u64);
        let mut all = 0;
        loop {
            let n = self.store.sweep(before).await?;
            all += n;
            if n < store::MAX_SWEEP {
                return Ok(all);
            }
        }
    }
}
