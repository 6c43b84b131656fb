//! Where inference runs: a fixed set of OS threads for the whole node (one per CPU by default),
//! fed by one FIFO channel, as TEI gives its backend its own threads and a channel. The models'
//! batchers hand them tokenization + inference, and answer the waiting handlers from there, so
//! blocking work never runs on the async workers. Because the set is fixed, however many models
//! are busy at once the node runs at most `threads` inferences: the cores are never
//! oversubscribed (a blocking pool would start a thread per waiting request).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// The weight of the newest engine call in `Pool::per_request`.
const EWMA_WEIGHT: f64 = 0.1;

pub struct Pool {
    jobs: Sender<Job>,
    threads: usize,
    busy: Arc<AtomicUsize>,
    /// Thread-seconds per request, a moving average over engine calls (`f64` bits; 0 until the
    /// first call): tokenization, the engine and postprocessing, shared by a batch's requests.
    per_request: AtomicU64,
}

/// Counts one in a counter until dropped (also when what it counts panics): a running job here,
/// a request in the node in `predict.rs`.
pub(crate) struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    pub(crate) fn start(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The job did not give an answer: it panicked (the thread survives), or the pool is gone.
#[derive(Debug, thiserror::Error)]
#[error("the inference thread gave no answer (the job panicked or the node is stopping)")]
pub struct Lost;

impl Pool {
    /// Starts `threads` threads named `stowage-infer-N`. They end when the pool is dropped.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, queue) = unbounded::<Job>();
        let busy = Arc::new(AtomicUsize::new(0));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("stowage-infer-{n}")).spawn(move || {
                while let Ok(job) = queue.recv() {
                    // A panicking engine fails its own request (its answer channel is dropped
                    // while unwinding), not the thread.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs, threads, busy, per_request: AtomicU64::new(0f64.to_bits()) })
    }

    /// Queues `f` behind the jobs queued before it, without waiting for it; `f` answers its
    /// callers itself (and counts as busy until it returns).
    pub fn submit(&self, f: impl FnOnce() + Send + 'static) -> Result<(), Lost> {
        let busy = self.busy.clone();
        self.jobs
            .send(Box::new(move || {
                let _running = Counted::start(&busy);
                f();
            }))
            .map_err(|_| Lost)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Counts an engine call that took `seconds` of a thread for `requests` requests.
    pub fn account(&self, seconds: f64, requests: usize) {
        if requests == 0 || !seconds.is_finite() {
            return;
        }
        let sample = seconds / requests as f64;
        let _ = self.per_request.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            let old = f64::from_bits(bits);
            let new = if old == 0.0 { sample } else { old + EWMA_WEIGHT * (sample - old) };
            Some(new.to_bits())
        });
    }

    /// Thread-seconds a request takes, on average lately (0 before the first engine call).
    pub fn per_request(&self) -> f64 {
        f64::from_bits(self.per_request.load(Ordering::Relaxed))
    }

    /// Jobs running now and jobs waiting for a thread.
    pub fn load(&self) -> (usize, usize) {
        (self.busy.load(Ordering::SeqCst), self.jobs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;
    use tokio::sync::oneshot;

    impl Pool {
        /// `f`'s answer, through the queue.
        async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Lost> {
            let (tx, rx) = oneshot::channel();
            self.submit(move || drop(tx.send(f())))?;
            rx.await.map_err(|_| Lost)
        }
    }

    #[tokio::test]
    async fn runs_jobs_on_its_own_threads() {
        let pool = Pool::new(2).unwrap();
        let names: HashSet<String> = futures_util::future::join_all((0..16).map(|_| {
            pool.run(|| {
                std::thread::sleep(Duration::from_millis(5));
                std::thread::current().name().unwrap_or_default().to_string()
            })
        }))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        assert_eq!(names, HashSet::from(["stowage-infer-0".to_string(), "stowage-infer-1".to_string()]));
    }

    #[tokio::test]
    async fn never_runs_more_jobs_than_threads() {
        let pool = Pool::new(2).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let jobs = (0..12).map(|_| {
            let (running, peak) = (running.clone(), peak.clone());
            pool.run(move || {
                peak.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(3));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        futures_util::future::join_all(jobs).await;
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let pool = Pool::new(1).unwrap();
        let lost = pool.run(|| -> u32 { panic!("engine bug") }).await;
        assert!(lost.is_err());
        // The single thread survived and serves the next job.
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
