//! The node's models: a DashMap from model id to its entry, each loading → ready | failed.
//! A model that fails to load is marked failed with its reason; every other model serves. The set
//! changes at run time (`reconcile.rs`): entries are added, removed, or staged beside the one they
//! replace and swapped in when warm.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use serde::Serialize;
use stowage_core::Engine as EngineKind;

use crate::lifecycle::load::LoadedModel;
use crate::lifecycle::spec::ModelSpec;
use crate::metrics::ModelMetrics;
use crate::serve::admission::Admission;
use crate::serve::batch::Batcher;
use crate::serve::pace::Pace;

/// Where a model is in its life.
#[derive(Clone)]
pub enum State {
    Loading,
    Ready(Arc<LoadedModel>),
    Failed(String),
    /// A cold model whose files are on local disk, not loaded: its first request loads it
    /// (`cold.rs`), and it comes back here when evicted.
    Cold,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Loading => "loading",
            State::Ready(_) => "ready",
            State::Failed(_) => "failed",
            State::Cold => "cold",
        }
    }
}

/// Start-up facts about a model, for `/models`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadInfo {
    /// Resident memory the process grew by while this model loaded (approximate when several
    /// models load at once).
    pub memory_bytes: u64,
    pub weights_bytes: u64,
    /// Bytes downloaded from S3 at this start, and bytes of cached copies reused.
    pub fetched_bytes: u64,
    pub cached_bytes: u64,
    pub fetch_seconds: f64,
    pub load_seconds: f64,
    pub warmup_seconds: f64,
}

pub struct Entry {
    pub spec: ModelSpec,
    state: RwLock<State>,
    info: RwLock<LoadInfo>,
    /// Requests in the model's hands (running or pending in its batcher), and those waiting.
    pub admission: Admission,
    /// How fast the model answers while its requests wait for a slot (`Node::expect_in_time`).
    pub pace: std::sync::Mutex<Pace>,
    pub batcher: Arc<Batcher>,
    pub metrics: ModelMetrics,
    /// Added by a reload, not at start-up: while it loads (or if it fails) it does not hold the
    /// node's readiness back, so the models already serving keep their traffic.
    pub late: bool,
    /// A cold model's side: its files, its last use, its one load at a time.
    pub cold: Option<ColdSlot>,
    /// Requests that hold this model now (from `Node::acquire` until answered): a cold model is
    /// never evicted while any does, and a drain waits until none does.
    active: std::sync::atomic::AtomicUsize,
    /// Woken when the last request that held the model lets go.
    idle: tokio::sync::Notify,
}

/// A request's hold on a model (`Entry::hold`), counted until dropped: also when the client goes
/// away and the HTTP server drops the request mid-wait.
pub struct Hold(Arc<Entry>);

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What a cold model keeps while it is not loaded.
#[derive(Default)]
pub struct ColdSlot {
    /// Its files on local disk (fetched at start: a load never waits for S3).
    pub files: std::sync::Mutex<Option<crate::lifecycle::load::Files>>,
    /// Milliseconds since the node started, at its last request (LRU order).
    pub last_used: std::sync::atomic::AtomicU64,
    /// Held while it loads: concurrent first requests wait here, and the first loads it once.
    pub loading: tokio::sync::Mutex<()>,
    /// Pool bytes it holds while loaded.
    pub reserved: std::sync::atomic::AtomicU64,
}

impl Entry {
    fn new(spec: ModelSpec, limits: Limits, late: bool) -> Self {
        let (calls, rows) = (limits.concurrency.max(1), limits.batch.max(1));
        let named = (spec.engine != EngineKind::Auto).then(|| spec.engine.to_string());
        let metrics = ModelMetrics::new(&spec.id, named.as_deref());
        Entry {
            admission: Admission::new(calls * rows, limits.queue),
            pace: Default::default(),
            batcher: Arc::new(Batcher::new(&spec.id, &metrics, calls, rows, limits.batch_tokens)),
            metrics,
            state: RwLock::new(State::Loading),
            info: RwLock::new(LoadInfo::default()),
            cold: spec.cold.then(ColdSlot::default),
            spec,
            late,
            active: std::sync::atomic::AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }

    /// Counts a request as holding this model until the returned hold is dropped.
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.active.fetch_add(1, Ordering::SeqCst);
        Hold(self.clone())
    }

    /// Requests that hold the model now.
    pub fn holders(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Waits until no request holds the model, at most until `deadline`; true when none does.
    pub async fn idle_by(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a hold let go in between still wakes it.
            notified.as_mut().enable();
            if self.holders() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.holders() == 0;
            }
        }
    }

    pub fn state(&self) -> State {
        self.state.read().map(|s| s.clone()).unwrap_or(State::Failed("state lock poisoned".into()))
    }

    pub fn set_state(&self, s: State) {
        if let Ok(mut g) = self.state.write() {
            *g = s;
        }
    }

    pub fn info(&self) -> LoadInfo {
        self.info.read().map(|i| i.clone()).unwrap_or_default()
    }

    pub fn set_info(&self, i: LoadInfo) {
        if let Ok(mut g) = self.info.write() {
            *g = i;
        }
    }

    /// Lowers the engine calls that may run at once to what the loaded engine allows (before the
    /// model serves), and the requests admitted with them.
    pub fn cap_calls(&self, n: usize) {
        self.batcher.cap(n);
        self.admission.cap(self.batcher.calls() * self.batcher.rows());
    }
}

/// Default of `--batch-inputs`.
pub const DEFAULT_BATCH_INPUTS: usize = 4;
/// Default of `--max-batch-tokens`: four rows of 128 tokens, so that short texts batch as
/// before, and one long text never pads more than a few short ones.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 512;
/// Requests of one model that may wait without `--queue-size` where no wait bound applies, and
/// the fewest where one does (`Node::queue_limit`).
pub const DEFAULT_QUEUE_SIZE: usize = 64;

/// Limits that apply to every model of the node.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Engine calls of one model that may run at once.
    pub concurrency: usize,
    /// Requests of one model that may wait beyond those in its hands; beyond, 429. `None`: the
    /// node's wait bound sets it (`Node::queue_limit`).
    pub queue: Option<usize>,
    /// Most inputs in one engine call: requests waiting for the same model run together up to
    /// this (1: no batching across requests). A model holds `concurrency × batch` requests.
    pub batch: usize,
    /// Most padded tokens (rows × the longest) in one engine call.
    pub batch_tokens: usize,
}

/// Where the node is in its life, as far as requests are concerned. Only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Serving = 0,
    /// From SIGTERM on: not ready, still serving while load balancers let go.
    Leaving = 1,
    /// Refusing new requests (503 `shutting_down`); those admitted finish.
    ShuttingDown = 2,
}

pub struct Registry {
    models: DashMap<String, Arc<Entry>>,
    /// Model ids in plan order.
    order: RwLock<Vec<String>>,
    limits: Limits,
    /// A `Phase`, as its number.
    phase: AtomicU8,
}

impl Registry {
    pub fn new(specs: Vec<ModelSpec>, limits: Limits) -> Self {
        let order = specs.iter().map(|s| s.id.clone()).collect();
        let models =
            specs.into_iter().map(|spec| (spec.id.clone(), Arc::new(Entry::new(spec, limits, false)))).collect();
        Self { models, order: RwLock::new(order), limits, phase: AtomicU8::new(Phase::Serving as u8) }
    }

    /// The specs of the models served now, in plan order.
    pub fn specs(&self) -> Vec<ModelSpec> {
        self.entries().iter().map(|e| e.spec.clone()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Entry>> {
        self.models.get(id).map(|e| e.value().clone())
    }

    /// Entries in plan order.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        self.ids().iter().filter_map(|id| self.get(id)).collect()
    }

    /// Model ids in plan order.
    pub fn ids(&self) -> Vec<String> {
        self.order.read().map(|o| o.clone()).unwrap_or_default()
    }

    /// A new entry for `spec` that takes no requests until `add`ed or `swap`ped in.
    pub fn stage(&self, spec: ModelSpec) -> Arc<Entry> {
        Arc::new(Entry::new(spec, self.limits, true))
    }

    /// Adds a staged entry (its model id must be new to the node): it answers `not_ready` until
    /// its state is ready.
    pub fn add(&self, entry: Arc<Entry>) {
        let id = entry.spec.id.clone();
        if self.models.insert(id.clone(), entry).is_none() {
            if let Ok(mut o) = self.order.write() {
                o.push(id);
            }
        }
    }

    /// Puts `entry` in the place of the entry of the same model id, at once for every new
    /// request, and returns the one it replaced (which finishes what it holds).
    pub fn swap(&self, entry: Arc<Entry>) -> Option<Arc<Entry>> {
        let id = entry.spec.id.clone();
        let old = self.models.insert(id.clone(), entry);
        if old.is_none() {
            if let Ok(mut o) = self.order.write() {
                o.push(id);
            }
        }
        old
    }

    /// Takes model `id` out: new requests for it are 404 `unknown_model` from now on; those that
    /// hold its entry finish with it.
    pub fn remove(&self, id: &str) -> Option<Arc<Entry>> {
        let old = self.models.remove(id).map(|(_, e)| e);
        if old.is_some() {
            if let Ok(mut o) = self.order.write() {
                o.retain(|m| m != id);
            }
        }
        old
    }

    /// Orders the models as `ids` (the plan's order); ids the node does not have are skipped.
    pub fn reorder(&self, ids: &[String]) {
        if let Ok(mut o) = self.order.write() {
            let mut next: Vec<String> = ids.iter().filter(|id| self.models.contains_key(*id)).cloned().collect();
            next.extend(o.iter().filter(|id| !ids.contains(id) && self.models.contains_key(*id)).cloned());
            *o = next;
        }
    }

    /// (loading, ready, failed)
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in self.models.iter() {
            match e.state() {
                State::Loading if e.cold.is_some() => c.1 += 1,
                State::Loading => c.0 += 1,
                // A cold model serves: its first request loads it.
                State::Ready(_) | State::Cold => c.1 += 1,
                State::Failed(_) => c.2 += 1,
            }
        }
        c
    }

    /// Models that count for readiness: those of the start-up set, and those added by a reload
    /// once they are ready (one still loading, or failed, never takes a serving node out).
    pub fn readiness_base(&self) -> usize {
        self.models.iter().filter(|e| !e.late || matches!(e.state(), State::Ready(_) | State::Cold)).count()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The node is about to stop: `/ready` fails so that load balancers let go of it, while
    /// requests still reach it and are served.
    pub fn begin_leaving(&self) {
        self.enter(Phase::Leaving);
    }

    /// New requests are refused (503 `shutting_down`); those admitted finish.
    pub fn begin_shutdown(&self) {
        self.enter(Phase::ShuttingDown);
    }

    fn enter(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Serving,
            1 => Phase::Leaving,
            _ => Phase::ShuttingDown,
        }
    }

    pub fn leaving(&self) -> bool {
        self.phase() >= Phase::Leaving
    }

    pub fn shutting_down(&self) -> bool {
        self.phase() >= Phase::ShuttingDown
    }

    pub fn publish_counts(&self) {
        let (l, r, f) = self.counts();
        metrics::gauge!(crate::metrics::MODELS, "state" => "loading").set(l as f64);
        metrics::gauge!(crate::metrics::MODELS, "state" => "ready").set(r as f64);
        metrics::gauge!(crate::metrics::MODELS, "state" => "failed").set(f as f64);
    }
}
