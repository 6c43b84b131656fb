//! The node's one request call: `Node::target(id)` finds a model that can take requests, and
//! `Node::predict(&target, request)` admits the request (or turns it away: 429, queue timeout),
//! queues it as data for the model's batcher (`batch.rs`), which tokenizes, runs the engine and
//! postprocesses on an inference thread (`pool.rs`), and awaits the answer. The HTTP layer parses
//! before and renders after; nothing here knows about HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lifecycle::cold::ColdPool;
use crate::lifecycle::load::LoadedModel;
use crate::lifecycle::registry::{Entry, Hold, Registry, State, DEFAULT_QUEUE_SIZE};
use crate::metrics;
use crate::serve::pace::Pace;
use crate::serve::pool::{Counted, Lost, Pool};
use crate::serve::request::{Answer, Caller, PredictError, Queued, Request};

/// Default of `--max-batch`: most inputs in one request.
pub const DEFAULT_MAX_BATCH: usize = 32;
/// Default of `--ready-fraction`: every model must be ready for `/ready`.
pub const DEFAULT_READY_FRACTION: f64 = 1.0;
/// Default of `--reject-delay-ms`.
pub const DEFAULT_REJECT_DELAY_MS: u64 = 100;

/// The inference threads a node starts without `--inference-threads`: one per CPU.
pub fn default_inference_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Without `--max-queue-delay-ms`, a request is refused when it would wait longer than this many
/// times its model's P90 target. The target lets one request in ten take longer, and a node at its
/// planned peak sees Poisson bursts and its machine's slow spells. A spell of one second at half
/// speed, at the planned peak, let the busiest model's requests wait up to about 750 ms: at 5 × a
/// 100 ms target it refused 52 requests, at 10 × none (BENCHMARKS.md, "A count that refused
/// before the bound"). Over capacity for good, the bound still keeps requests from waiting
/// seconds: at 1.25 × the plan the answered ones took P90 851 ms, P99 1,057 ms.
pub const TARGET_WAIT_MULTIPLE: f64 = 10.0;

/// The longest queue of one model that a wait bound sets without `--queue-size`
/// (`Node::queue_limit`): what waiting requests may hold in memory stays bounded.
pub const MAX_AUTO_QUEUE: usize = 4096;

/// Settings of the request path.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most inputs in one request.
    pub max_batch: usize,
    /// Share of the node's models that must be ready for `/ready` to answer 200.
    pub ready_fraction: f64,
    /// Threads that run inference for the whole node: at most this many inferences at once.
    pub inference_threads: usize,
    /// Longest a request may wait for its model (admission and batch) before it runs.
    pub queue_timeout: Option<Duration>,
    /// How long a request turned away for a full queue waits before it hears so (429).
    pub reject_delay: Duration,
    /// The longest a request may expect to wait for its engine call before it is refused at once
    /// (429): `None` takes each model's latency target (`slo_p90_ms`), `Some(ZERO)` turns it off.
    pub max_queue_delay: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            ready_fraction: DEFAULT_READY_FRACTION,
            inference_threads: default_inference_threads(),
            queue_timeout: None,
            reject_delay: Duration::from_millis(DEFAULT_REJECT_DELAY_MS),
            max_queue_delay: None,
        }
    }
}

/// A node: its models and the threads that run them.
pub struct Node {
    pub registry: Arc<Registry>,
    pub pool: Arc<Pool>,
    pub config: Config,
    /// The cold pool that loads cold models on their first request (every running node has one,
    /// empty without cold models; a node made without a loader, in tests, has none).
    pub cold: Option<Arc<ColdPool>>,
    /// Requests in `predict` now, admitted or waiting for a slot: the work ahead of a new one.
    in_system: AtomicUsize,
    /// How fast the node answers while it is busy (`Node::answered`).
    pace: std::sync::Mutex<Pace>,
}

/// A model that takes requests now. While one exists its model counts as in use (a cold model
/// is not evicted).
pub struct Target {
    pub entry: Arc<Entry>,
    pub model: Arc<LoadedModel>,
    _use: Hold,
}

/// Counts an admitted request in `stowage_inflight_requests` until dropped: also when the client
/// goes away and the HTTP server drops the request mid-wait.
struct InFlight(::metrics::Gauge);

impl InFlight {
    fn enter(gauge: &::metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// How many models are where, and whether the node takes traffic.
pub struct Readiness {
    pub loading: usize,
    pub ready: usize,
    pub failed: usize,
    /// Models that must be ready (`--ready-fraction` of all).
    pub needed: usize,
    /// The node is leaving (from SIGTERM on): not ready whatever its models.
    pub leaving: bool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        !self.leaving && self.ready >= self.needed
    }
}

impl Node {
    /// Starts the inference threads; fails only when the operating system refuses them. A node
    /// that serves is assembled by `stowage_node::start`, with its cold pool.
    pub fn new(registry: Arc<Registry>, config: Config, cold: Option<Arc<ColdPool>>) -> std::io::Result<Self> {
        let pool = Arc::new(Pool::new(config.inference_threads)?);
        metrics::install();
        Ok(Self { registry, pool, config, cold, in_system: AtomicUsize::new(0), pace: Default::default() })
    }

    /// Checks the node and the model (so an unknown model is a 404 whatever the request); a cold
    /// model that is not loaded is `NotReady` here: `acquire` loads it.
    pub fn target(&self, id: &str) -> Result<Target, PredictError> {
        let entry = self.registry.get(id);
        self.target_of(id, entry)
    }

    fn target_of(&self, id: &str, entry: Option<Arc<Entry>>) -> Result<Target, PredictError> {
        if self.registry.shutting_down() {
            return Err(PredictError::ShuttingDown);
        }
        let entry = entry.ok_or_else(|| PredictError::UnknownModel(id.to_string()))?;
        let used = entry.hold();
        match entry.state() {
            State::Ready(model) => {
                if let Some(pool) = &self.cold {
                    pool.touch(&entry);
                }
                Ok(Target { entry, model, _use: used })
            }
            State::Loading | State::Cold => {
                metrics::rejected(id, "not_ready");
                Err(PredictError::NotReady(id.to_string()))
            }
            State::Failed(reason) => Err(PredictError::ModelFailed { id: id.to_string(), reason }),
        }
    }

    /// `target`, loading a cold model first (its first request, or after an eviction), within
    /// `--queue-timeout-ms`.
    pub async fn acquire(&self, id: &str) -> Result<Target, PredictError> {
        let entry = match self.registry.get(id) {
            Some(e) if e.cold.is_some() && !self.registry.shutting_down() => e,
            other => return self.target_of(id, other),
        };
        let Some(pool) = &self.cold else { return self.target_of(id, Some(entry)) };
        let used = entry.hold();
        let loaded = match self.config.queue_timeout {
            None => pool.ensure(&entry).await,
            Some(t) => match tokio::time::timeout(t, pool.ensure(&entry)).await {
                Ok(r) => r,
                Err(_) => return Err(PredictError::timed_out(id, t)),
            },
        };
        match loaded {
            Ok(model) => Ok(Target { entry, model, _use: used }),
            Err(e) => {
                if matches!(e, PredictError::PoolFull(_)) {
                    metrics::rejected(id, "cold_pool_full");
                }
                Err(e)
            }
        }
    }

    /// Checks the request against the node's limits, admits it, queues it for the model's next
    /// engine call and waits for the answer. A request whose `caller` hangs up while it waits is
    /// dropped before its engine call.
    pub async fn predict(&self, target: &Target, request: Request, caller: Caller) -> Result<Answer, PredictError> {
        let entry = &target.entry;
        let id = entry.spec.id.as_str();
        check(&request, self.config.max_batch)?;
        self.expect_in_time(entry)?;
        let _in = Counted::start(&self.in_system);
        let arrived = Instant::now();
        let span = tracing::Span::current();
        let queue = crate::step!(&span, "queue");
        let limit = self.config.queue_timeout;
        let waiters = self.queue_limit(entry);
        let entered = match limit {
            None => Some(entry.admission.enter(waiters).await),
            Some(t) => tokio::time::timeout(t, entry.admission.enter(waiters)).await.ok(),
        };
        let Some(entered) = entered else {
            return Err(PredictError::timed_out(id, limit.unwrap_or_default()));
        };
        let Some((_permit, waited)) = entered else {
            metrics::rejected(id, "queue_full");
            // Clients that ignore Retry-After come straight back: answered at once, a flood of
            // them takes the cores the model needs (256 connections: 45,000 429s a second and
            // under half the model's capacity left). A short wait, which costs no CPU, bounds
            // their rate to connections ÷ delay.
            tokio::time::sleep(self.config.reject_delay).await;
            return Err(PredictError::QueueFull(id.to_string()));
        };
        let admitted = Instant::now();
        entry.metrics.queue_wait.record(waited.as_secs_f64());
        let _inflight = InFlight::enter(&entry.metrics.inflight);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let rows = request.rows();
        let queued = Queued { request, rows, reply, arrived, admitted, limit, caller, inputs: None, span, queue };
        let lost = |_: Lost| PredictError::Inference(Lost.to_string());
        entry.batcher.submit(&self.pool, &target.model, queued).map_err(lost)?;
        let answer = answer.await.map_err(|_| lost(Lost))??;
        if let Some(h) = entry.metrics.inference_duration.get() {
            h.record(answer.engine_seconds);
        }
        self.answered(entry);
        Ok(answer)
    }

    /// Counts an answer in the node's pace and its model's; the next interval counts only if
    /// requests still wait (this one is still in `in_system`, hence `> 1`; for the model, one
    /// waits for a slot).
    fn answered(&self, entry: &Entry) {
        let now = Instant::now();
        let busy = self.in_system.load(Ordering::SeqCst) > 1;
        self.pace.lock().unwrap_or_else(|p| p.into_inner()).answered(now, busy);
        entry.pace.lock().unwrap_or_else(|p| p.into_inner()).answered(now, entry.admission.waiting() > 0);
    }

    /// How long a request of `entry` may expect to wait for its engine call before it is refused:
    /// `Config::max_queue_delay`, else `TARGET_WAIT_MULTIPLE` × the model's latency target; `None`
    /// without either, or where the bound is 0 (off).
    fn wait_bound(&self, entry: &Entry) -> Option<Duration> {
        let bound = match self.config.max_queue_delay {
            Some(d) => d,
            None => match entry.spec.slo_p90_ms {
                Some(ms) if ms.is_finite() && ms > 0.0 => Duration::from_secs_f64(TARGET_WAIT_MULTIPLE * ms / 1e3),
                _ => return None,
            },
        };
        (!bound.is_zero()).then_some(bound)
    }

    /// How many requests of `entry` may wait for a slot (beyond, 429 `queue_full`): `--queue-size`
    /// where it is set. Otherwise, under a wait bound, as many as the node answers within it (the
    /// bound over a request's thread time shared by the threads), at least `DEFAULT_QUEUE_SIZE` and
    /// at most `MAX_AUTO_QUEUE`: the bound then decides (`expect_in_time`), in time rather than in
    /// a count that a model of much traffic fills in a slow second at its planned peak. Without a
    /// bound, `DEFAULT_QUEUE_SIZE`.
    pub fn queue_limit(&self, entry: &Entry) -> usize {
        let per_request = self.pool.per_request() / self.pool.threads().max(1) as f64;
        let auto = match self.wait_bound(entry) {
            Some(bound) if per_request > 0.0 => {
                let n = (bound.as_secs_f64() / per_request).ceil();
                (n.min(MAX_AUTO_QUEUE as f64) as usize).max(DEFAULT_QUEUE_SIZE)
            }
            _ => DEFAULT_QUEUE_SIZE,
        };
        entry.admission.queue(auto)
    }

    /// Refuses a request that would wait longer than the node's bound (`wait_bound`) before its
    /// engine call. The wait is read off the work ahead (Little's law): the requests in the node
    /// beyond the free threads times the time between answers while busy (`Pace`, while fresh; at
    /// least what a request costs the inference threads, shared by them), or, when the model's own
    /// slots are all taken, its waiting requests shared by those slots.
    fn expect_in_time(&self, entry: &Entry) -> Result<(), PredictError> {
        let Some(bound) = self.wait_bound(entry) else { return Ok(()) };
        let per_request = self.pool.per_request();
        if per_request <= 0.0 {
            return Ok(());
        }
        let threads = self.pool.threads() as f64;
        // Between answers: at least a request's thread time shared by the threads; the pace
        // only while it is fresh.
        let floor = per_request / threads;
        let pace = self.pace.lock().map_or(0.0, |p| p.seconds()).max(floor);
        // With a thread free, nothing is ahead.
        let ahead = (self.in_system.load(Ordering::SeqCst) + 1).saturating_sub(self.pool.threads());
        let node = ahead as f64 * pace;
        // The model's own: its requests waiting for a slot times the time between its answers
        // while they wait (at least a request's thread time shared by its slots). A busy model
        // drains at its share of the threads, not at the node's pace: the node's other models
        // take turns with it.
        let slots = entry.admission.slots().min(self.pool.threads()).max(1) as f64;
        let model_pace = entry.pace.lock().map_or(0.0, |p| p.seconds()).max(per_request / slots);
        let model = entry.admission.waiting() as f64 * model_pace;
        let expected = Duration::from_secs_f64(node.max(model));
        if expected <= bound {
            return Ok(());
        }
        metrics::rejected(&entry.spec.id, "expected_wait");
        Err(PredictError::Overloaded { id: entry.spec.id.clone(), expected, bound })
    }

    /// Records a finished request of model `id` (known or not): its status and seconds.
    pub fn record(&self, id: &str, status: u16, seconds: f64) {
        match self.registry.get(id) {
            Some(entry) => {
                if status == 200 {
                    entry.metrics.ok.increment(1);
                } else {
                    ::metrics::counter!(metrics::REQUESTS, "model" => id.to_string(), "code" => status.to_string())
                        .increment(1);
                }
                entry.metrics.request_duration.record(seconds);
            }
            None => {
                ::metrics::counter!(metrics::REQUESTS, "model" => UNKNOWN, "code" => status.to_string()).increment(1);
                ::metrics::histogram!(metrics::REQUEST_DURATION, "model" => UNKNOWN).record(seconds);
            }
        }
    }

    /// Counts a request for model `id` turned away before it reached the node's checks (a body
    /// too large, say), under the model's label if the node has it.
    pub fn rejected(&self, id: &str, reason: &'static str) {
        metrics::rejected(if self.registry.get(id).is_some() { id } else { UNKNOWN }, reason);
    }

    pub fn readiness(&self) -> Readiness {
        let (loading, ready, failed) = self.registry.counts();
        let needed = (self.config.ready_fraction * self.registry.readiness_base() as f64).ceil() as usize;
        Readiness { loading, ready, failed, needed, leaving: self.registry.leaving() }
    }

    /// Publishes the gauges that are read off state rather than counted as things happen.
    pub fn publish_gauges(&self) {
        metrics::collect_process();
        self.registry.publish_counts();
        let (busy, backlog) = self.pool.load();
        ::metrics::gauge!(metrics::INFERENCE_BUSY).set(busy as f64);
        ::metrics::gauge!(metrics::INFERENCE_BACKLOG).set(backlog as f64);
    }
}

/// The metric label of model ids the node does not have: one bounded bucket.
const UNKNOWN: &str = "_unknown";

/// What the node refuses of any request, before it waits for its model.
fn check(request: &Request, max_batch: usize) -> Result<(), PredictError> {
    let invalid = |m: String| Err(PredictError::Invalid(m));
    if let Request::Texts { texts, .. } = request {
        if texts.is_empty() || texts.iter().any(|t| is_blank(t)) {
            return invalid(
                "every input text must be non-empty (more than spaces, control and format characters)".into(),
            );
        }
    }
    let rows = request.rows();
    if rows > max_batch {
        return invalid(format!("{rows} inputs in one request, at most {max_batch}"));
    }
    if let Request::Texts { texts, pairs: Some(p), .. } = request {
        if p.len() != texts.len() {
            return invalid("\"text_pair\" must have one entry per input".into());
        }
    }
    Ok(())
}

/// A text with nothing to read: only whitespace, control characters (`%00`) and format
/// characters (zero-width spaces and joiners, the byte-order mark, soft hyphens), which every
/// tokenizer drops or maps to nothing.
fn is_blank(text: &str) -> bool {
    use unicode_categories::UnicodeCategories;
    text.chars().all(|c| c.is_whitespace() || c.is_other_control() || c.is_other_format() || c.is_separator())
}

#[cfg(test)]
mod tests {
    use super::is_blank;

    #[test]
    fn blank_texts_are_those_of_spaces_controls_and_format_characters_only() {
        for blank in
            ["", " ", "\t\n", "\u{0}", "\u{200b}", "\u{200b}\u{200d}\u{feff}", "\u{a0}\u{3000}", "\u{ad}\u{7f}"]
        {
            assert!(is_blank(blank), "{blank:?}");
        }
        for text in ["a", "\u{200b}a", "\u{0}1", "東", "👍", "."] {
            assert!(!is_blank(text), "{text:?}");
        }
    }
}
