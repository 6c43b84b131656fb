//! The cold pool: a node's rarely used models share a fixed amount of memory. A cold model's
//! files are fetched to local disk at start; its first request loads it (one load per model at a
//! time: concurrent requests wait for it), evicting the least recently used idle cold models
//! when the pool is full — never a hot model, never one with requests in flight. A load that
//! cannot fit answers 503 `cold_pool_full` with Retry-After, never an out-of-memory.
//!
//! A model takes `COLD_BYTES_PER_WEIGHT_BYTE` × its ONNX file of the pool while loaded: what a
//! loaded model keeps resident is about 1.1 × its weights on both engines (BENCHMARKS.md).
//! While it loads it holds `COLD_LOAD_WORKING_PER_WEIGHT_BYTE` × its file more (the file read,
//! decoded and optimized before the copies are freed): cold loads run `--cold-load-parallelism`
//! at a time (1), take that room out of the pool where it is free (the plan grows pools into the
//! node's spare memory for it), and the heap a load freed goes back to the system when it ends,
//! so under any churn the node's memory stays within the pool and one load's working memory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};

use crate::lifecycle::load::LoadedModel;
use crate::lifecycle::registry::{Entry, Registry, State};
use crate::lifecycle::startup::Loader;
use crate::metrics;
use crate::serve::request::PredictError;

/// Pool bytes a loaded cold model holds per byte of its ONNX file.
pub const COLD_BYTES_PER_WEIGHT_BYTE: f64 = 1.15;

/// Pool bytes a cold load holds while it runs, beyond `COLD_BYTES_PER_WEIGHT_BYTE`, per byte of
/// its ONNX file (measured 0.5–2.4 × the file, BENCHMARKS.md "Cold-pool memory"), as far as the
/// pool has it free.
pub const COLD_LOAD_WORKING_PER_WEIGHT_BYTE: f64 = 2.4;

pub struct ColdPool {
    /// Bytes; a reload may change it (`resize`).
    capacity: AtomicU64,
    /// Held while room is made and reserved (the bytes in use are the cold models' own
    /// reservations, so a model a reload removes gives its bytes back with it).
    reserving: Mutex<()>,
    /// Pool bytes the loads in flight hold beyond their models' reservations.
    working: Arc<AtomicU64>,
    /// One permit per cold load that may run at once.
    loads: Arc<tokio::sync::Semaphore>,
    registry: Arc<Registry>,
    loader: Arc<Loader>,
    /// The loader's runtime: cold loads run there, never on the HTTP workers.
    runtime: tokio::runtime::Handle,
    start: Instant,
}

impl ColdPool {
    pub fn new(mib: f64, registry: Arc<Registry>, loader: Arc<Loader>, runtime: tokio::runtime::Handle) -> Arc<Self> {
        let capacity = bytes(mib);
        ::metrics::gauge!(metrics::COLD_POOL_BYTES).set(capacity as f64);
        Arc::new(Self {
            capacity: AtomicU64::new(capacity),
            reserving: Mutex::new(()),
            working: Arc::new(AtomicU64::new(0)),
            loads: Arc::new(tokio::sync::Semaphore::new(loader.cold_parallelism())),
            registry,
            loader,
            runtime,
            start: Instant::now(),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::SeqCst)
    }

    /// Makes the pool smaller (a reload whose plan gave it less; nothing if not smaller): idle
    /// cold models go, least recently used first, until the rest fit; a model in use stays until
    /// it is idle and the next load needs its room. True when it shrank.
    pub fn shrink_to(&self, mib: f64) -> bool {
        self.resize(bytes(mib), |before, after| after < before)
    }

    /// Makes the pool larger (a reload whose plan gave it more; nothing if not larger).
    pub fn grow_to(&self, mib: f64) {
        self.resize(bytes(mib), |before, after| after > before);
    }

    fn resize(&self, after: u64, wanted: impl Fn(u64, u64) -> bool) -> bool {
        let Ok(_reserving) = self.reserving.lock() else { return false };
        let before = self.capacity();
        if !wanted(before, after) {
            return false;
        }
        self.capacity.store(after, Ordering::SeqCst);
        ::metrics::gauge!(metrics::COLD_POOL_BYTES).set(after as f64);
        for victim in self.victims(None) {
            if self.used() <= after {
                break;
            }
            self.evict(&victim);
        }
        let over = self.used().saturating_sub(after);
        info!(
            pool_mib_before = before / 1048576,
            pool_mib = after / 1048576,
            in_use_over_mib = over / 1048576,
            "cold pool resized"
        );
        true
    }

    /// Loaded cold models other than `except`, least recently used first.
    fn victims(&self, except: Option<&str>) -> Vec<Arc<Entry>> {
        let mut victims: Vec<(u64, Arc<Entry>)> = self
            .registry
            .entries()
            .into_iter()
            .filter(|e| Some(e.spec.id.as_str()) != except && matches!(e.state(), State::Ready(_)))
            .filter_map(|e| e.cold.as_ref().map(|c| (c.last_used.load(Ordering::Relaxed), e.clone())))
            .collect();
        victims.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.spec.id.cmp(&b.1.spec.id)));
        victims.into_iter().map(|(_, e)| e).collect()
    }

    /// Pool bytes the loaded (or loading) cold models hold, and the loads in flight.
    pub fn used(&self) -> u64 {
        used(&self.registry, &self.working)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Marks a cold model used now (LRU order).
    pub fn touch(&self, entry: &Entry) {
        if let Some(c) = &entry.cold {
            c.last_used.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The loaded model of cold `entry`, loading it first if it is not (once, however many
    /// requests ask at the same time).
    pub async fn ensure(&self, entry: &Arc<Entry>) -> Result<Arc<LoadedModel>, PredictError> {
        let id = entry.spec.id.clone();
        let slot = entry.cold.as_ref().ok_or_else(|| PredictError::NotReady(id.clone()))?;
        self.touch(entry);
        if let State::Ready(m) = entry.state() {
            return Ok(m);
        }
        let _one = slot.loading.lock().await;
        match entry.state() {
            State::Ready(m) => return Ok(m),
            State::Failed(reason) => return Err(PredictError::ModelFailed { id, reason }),
            State::Loading | State::Cold => {}
        }
        let files = slot.files.lock().ok().and_then(|f| f.clone()).ok_or_else(|| PredictError::NotReady(id.clone()))?;
        let weights = std::fs::metadata(&files.artifact).map_or(0, |m| m.len());
        let need = (weights as f64 * COLD_BYTES_PER_WEIGHT_BYTE) as u64;
        let working = (weights as f64 * COLD_LOAD_WORKING_PER_WEIGHT_BYTE) as u64;
        let permit = self.loads.clone().acquire_owned().await.map_err(|_| PredictError::NotReady(id.clone()))?;
        // A load that a request gave up waiting for went on and may have finished meanwhile.
        if let State::Ready(m) = entry.state() {
            return Ok(m);
        }
        let Some(working) = self.make_room(entry, need, working) else {
            ::metrics::counter!(metrics::COLD_LOADS, "result" => "pool_full").increment(1);
            return Err(PredictError::PoolFull(id));
        };
        // The turn and the working room go with the load, not with this request: a request that
        // stops waiting (its queue timeout) leaves them held until the load ends.
        let turn = LoadTurn { working: self.working.clone(), bytes: working, _permit: permit };
        entry.set_state(State::Loading);
        let (loader, e, started) = (self.loader.clone(), entry.clone(), Instant::now());
        let (registry, working) = (self.registry.clone(), self.working.clone());
        // Counted and logged in the task, also when no request waits for the load any more.
        let loaded = self.runtime.spawn(async move {
            let loaded = loader.load_cold(&e, files).await;
            drop(turn);
            let seconds = started.elapsed().as_secs_f64();
            match loaded {
                Ok(model) => {
                    let used = used(&registry, &working);
                    ::metrics::counter!(metrics::COLD_LOADS, "result" => "loaded").increment(1);
                    ::metrics::histogram!(metrics::COLD_LOAD_DURATION).record(seconds);
                    ::metrics::gauge!(metrics::COLD_RESIDENT_BYTES).set(used as f64);
                    info!(model = %e.spec.id, seconds = format!("{seconds:.3}"), pool_used_mib = used / 1048576, "cold model loaded");
                    Ok(model)
                }
                Err(failed) => Err(failed_load(&e, failed.public())),
            }
        });
        match loaded.await {
            Ok(Ok(model)) => Ok(model),
            Ok(Err(reason)) => Err(PredictError::ModelFailed { id, reason }),
            Err(_) => Err(PredictError::ModelFailed {
                id,
                reason: failed_load(entry, "the loader crashed (see the node's log)".into()),
            }),
        }
    }

    /// Reserves `need` bytes for `entry`, evicting idle cold models (least recently used first)
    /// until they fit, and up to `working` more for its load out of what is then free; the
    /// working bytes reserved, or None when `need` cannot fit (the rest is held by models in use
    /// or loading).
    fn make_room(&self, entry: &Entry, need: u64, working: u64) -> Option<u64> {
        let _reserving = self.reserving.lock().ok()?;
        let capacity = self.capacity();
        if need > capacity {
            return None;
        }
        // Loaded cold models, least recently used first (`evict` skips those in use).
        let mut victims = self.victims(Some(&entry.spec.id)).into_iter();
        loop {
            let used = self.used();
            if used + need <= capacity {
                if let Some(c) = &entry.cold {
                    c.reserved.store(need, Ordering::SeqCst);
                }
                // The working room the pool has free; never a model evicted for it: a pool that
                // holds all its models would then evict one on every load, and reload it next.
                let working = working.min(capacity - used - need);
                self.working.fetch_add(working, Ordering::SeqCst);
                return Some(working);
            }
            // Models in use hold the rest: the request gets 503 and Retry-After.
            let victim = victims.next()?;
            self.evict(&victim);
        }
    }

    /// Unloads an idle cold model and gives its pool bytes back.
    fn evict(&self, entry: &Arc<Entry>) {
        // A request may have taken it since it was picked: then it stays.
        let Some(slot) = &entry.cold else { return };
        let Ok(_one) = slot.loading.try_lock() else { return };
        if entry.holders() > 0 {
            return;
        }
        entry.set_state(State::Cold);
        release(entry);
        // No malloc_trim here: the load that asked for the room reuses the freed heap at once,
        // and a trim locks every malloc arena while the inference threads allocate.
        ::metrics::counter!(metrics::COLD_EVICTIONS).increment(1);
        self.publish();
        info!(model = %entry.spec.id, pool_used_mib = self.used() / 1048576, "cold model evicted");
    }

    fn publish(&self) {
        ::metrics::gauge!(metrics::COLD_RESIDENT_BYTES).set(self.used() as f64);
    }
}

/// Pool bytes `registry`'s loaded (or loading) cold models hold, and the loads in flight
/// (`working`).
fn used(registry: &Registry, working: &AtomicU64) -> u64 {
    let models: u64 =
        registry.entries().iter().filter_map(|e| e.cold.as_ref()).map(|c| c.reserved.load(Ordering::SeqCst)).sum();
    models + working.load(Ordering::SeqCst)
}

/// A cold load that failed: the model gives its bytes back and is cold again; `reason`.
fn failed_load(entry: &Entry, reason: String) -> String {
    release(entry);
    entry.set_state(State::Cold);
    ::metrics::counter!(metrics::COLD_LOADS, "result" => "failed").increment(1);
    warn!(model = %entry.spec.id, %reason, "cold model failed to load");
    reason
}

/// Gives a cold model's pool bytes back.
fn release(entry: &Entry) {
    if let Some(slot) = &entry.cold {
        slot.reserved.store(0, Ordering::SeqCst);
    }
}

/// A cold load's turn (`--cold-load-parallelism`) and the working room it holds in the pool,
/// both given back when the load ends.
struct LoadTurn {
    working: Arc<AtomicU64>,
    bytes: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for LoadTurn {
    fn drop(&mut self) {
        self.working.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

fn bytes(mib: f64) -> u64 {
    (mib.max(0.0) * 1048576.0) as u64
}
