//! Start-up: every model of the node on a fetch → load pipeline (`fetch_parallelism` downloads
//! and `parallelism` loads at once), each marked ready or failed with its reason, and one summary
//! line when all are done. A failed model never fails the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use stowage_engine::EngineOptions;
use tracing::{error, info, Instrument};

use crate::lifecycle::choice::Verdicts;
use crate::lifecycle::load::{self, LoadError, LoadedModel};
use crate::lifecycle::registry::{Entry, LoadInfo, Registry, State};
use crate::lifecycle::storage::{FetchOptions, Fetcher};
use crate::metrics;
use crate::process::{release_freed_memory, rss_bytes};

/// Default of `--load-parallelism`.
pub const DEFAULT_LOAD_PARALLELISM: usize = 2;
/// Default of `--cold-load-parallelism`.
pub const DEFAULT_COLD_LOAD_PARALLELISM: usize = 1;
/// Default of `--fetch-parallelism`.
pub const DEFAULT_FETCH_PARALLELISM: usize = 4;

/// How a node brings up its models.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub engine: EngineOptions,
    /// CUDA devices for ONNX Runtime sessions: the models take them in turn, in plan order, so a
    /// node with several GPUs uses every one (empty: the CPU).
    pub cuda_devices: Vec<i32>,
    /// Models read, optimized and warmed up at once.
    pub parallelism: usize,
    /// Cold models loaded at once while the node serves (within `parallelism`; see `ColdPool`).
    pub cold_parallelism: usize,
    /// Models downloading at once (downloads overlap with loading).
    pub fetch_parallelism: usize,
    pub fetch: FetchOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            engine: EngineOptions::default(),
            cuda_devices: Vec::new(),
            parallelism: DEFAULT_LOAD_PARALLELISM,
            cold_parallelism: DEFAULT_COLD_LOAD_PARALLELISM,
            fetch_parallelism: DEFAULT_FETCH_PARALLELISM,
            fetch: FetchOptions::default(),
        }
    }
}

/// What one model's start-up took.
struct Timing {
    id: String,
    ok: bool,
    /// When its download ran, if anything was downloaded.
    download: Option<(Instant, Instant)>,
    /// What `/models` shows for it (bytes and seconds per phase).
    info: LoadInfo,
}

impl Timing {
    /// Fetch, load and warm-up together.
    fn seconds(&self) -> f64 {
        self.info.fetch_seconds + self.info.load_seconds + self.info.warmup_seconds
    }
}

/// Brings models up: a fetch → load pipeline (`fetch_parallelism` downloads and `parallelism`
/// loads at once, on blocking threads) that start-up and every later reload share, so a reload
/// never loads more models at once than `--load-parallelism` (the memory a change may add on top
/// of the models serving) and reuses the S3 client.
pub struct Loader {
    fetcher: Arc<Fetcher>,
    /// `auto`'s engine verdicts, kept under the cache folder across restarts.
    verdicts: Arc<Verdicts>,
    gates: Gates,
    opts: LoadOptions,
    /// Models brought up so far: the next one takes the next CUDA device.
    brought: AtomicUsize,
}

/// How one model's bring-up ended.
#[derive(Debug, Clone)]
pub struct BroughtUp {
    pub id: String,
    pub ok: bool,
    /// Fetch, load and warm-up together.
    pub seconds: f64,
}

impl Loader {
    pub fn new(opts: LoadOptions) -> Arc<Self> {
        // Load metrics must not be lost to a recorder installed later.
        metrics::install();
        let fetcher = Arc::new(Fetcher::new(opts.fetch.clone()));
        let fetch_gate = Arc::new(tokio::sync::Semaphore::new(opts.fetch_parallelism.max(1)));
        let load_gate = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
        let verdicts = Arc::new(Verdicts::new(Some(opts.fetch.cache_dir.join("engines"))));
        Arc::new(Self { fetcher, verdicts, gates: (fetch_gate, load_gate), opts, brought: AtomicUsize::new(0) })
    }

    /// Fetches, loads and warms up `entries` (each marked ready or failed with its reason) and
    /// gives the freed heap back when all are done. Never fails as a whole.
    pub async fn bring_up(&self, entries: Vec<Arc<Entry>>, registry: &Arc<Registry>) -> Vec<BroughtUp> {
        self.bring_up_timed(entries, registry)
            .await
            .iter()
            .map(|t| BroughtUp { id: t.id.clone(), ok: t.ok, seconds: t.seconds() })
            .collect()
    }

    async fn bring_up_timed(&self, entries: Vec<Arc<Entry>>, registry: &Arc<Registry>) -> Vec<Timing> {
        let devices = &self.opts.cuda_devices;
        let tasks: Vec<_> = entries
            .into_iter()
            .map(|entry| {
                let i = self.brought.fetch_add(1, Ordering::Relaxed);
                let device = (!devices.is_empty()).then(|| devices[i % devices.len()]);
                let engine =
                    EngineOptions { ort_cuda_device: device.or(self.opts.engine.ort_cuda_device), ..self.opts.engine };
                let (fetcher, verdicts) = (self.fetcher.clone(), self.verdicts.clone());
                tokio::spawn(bring_up(entry, registry.clone(), fetcher, verdicts, self.gates.clone(), engine))
            })
            .collect();
        let mut timings = Vec::new();
        for t in tasks {
            if let Ok(t) = t.await {
                timings.push(t);
            }
        }
        release_freed_memory();
        timings
    }
}

impl Loader {
    /// Cold models loaded at once (`LoadOptions::cold_parallelism`, at least 1).
    pub fn cold_parallelism(&self) -> usize {
        self.opts.cold_parallelism.max(1)
    }

    /// Loads cold `entry` from its files on local disk (on a blocking thread, within
    /// `--load-parallelism`) and marks it ready.
    pub async fn load_cold(&self, entry: &Arc<Entry>, files: load::Files) -> Result<Arc<LoadedModel>, LoadError> {
        let _slot = self.gates.1.acquire().await.map_err(|_| LoadError::Crashed)?;
        let i = self.brought.fetch_add(1, Ordering::Relaxed);
        let devices = &self.opts.cuda_devices;
        let device = (!devices.is_empty()).then(|| devices[i % devices.len()]);
        let engine = EngineOptions { ort_cuda_device: device.or(self.opts.engine.ort_cuda_device), ..self.opts.engine };
        let (spec, verdicts) = (entry.spec.clone(), self.verdicts.clone());
        let l = tokio::task::spawn_blocking(move || {
            crate::process::lower_thread_priority();
            let loaded = load::load_files(&spec, &files, &engine, &verdicts);
            // What the load decoded, copied and optimized is free now, spread over the malloc
            // arenas of whichever threads ran it: give it back, or a busy pool's churn keeps
            // several times the pool (BENCHMARKS.md, "Cold-pool memory").
            release_freed_memory();
            loaded
        })
        .await
        .map_err(|_| LoadError::Crashed)??;
        let backend = l.model.model.backend().to_string();
        entry.metrics.engine_known(&entry.spec.id, &backend);
        let mut info = entry.info();
        (info.weights_bytes, info.load_seconds, info.warmup_seconds) =
            (l.weights_bytes, l.load_seconds, l.warmup_seconds);
        entry.set_info(info);
        if let Some(n) = l.model.model.concurrency_limit() {
            entry.cap_calls(n);
        }
        let model = Arc::new(l.model);
        entry.set_state(State::Ready(model.clone()));
        Ok(model)
    }
}

/// Loads every model of the registry (see `Loader`); never fails as a whole: a model that cannot
/// be fetched or loaded is marked failed with its reason. Ends with the start-up summary.
pub async fn load_all(registry: Arc<Registry>, opts: LoadOptions) {
    start_up(registry, Loader::new(opts)).await
}

/// `load_all` with a loader that later reloads share.
pub async fn start_up(registry: Arc<Registry>, loader: Arc<Loader>) {
    let start = Instant::now();
    registry.publish_counts();
    let timings = loader.bring_up_timed(registry.entries(), &registry).await;
    summarize(&registry, &timings, start);
}

type Gates = (Arc<tokio::sync::Semaphore>, Arc<tokio::sync::Semaphore>);

async fn bring_up(
    entry: Arc<Entry>,
    registry: Arc<Registry>,
    fetcher: Arc<Fetcher>,
    verdicts: Arc<Verdicts>,
    gates: Gates,
    engine: EngineOptions,
) -> Timing {
    let id = entry.spec.id.clone();
    let mut t = Timing { id: id.clone(), ok: false, download: None, info: LoadInfo::default() };
    // The log has the whole reason; clients see it without paths, buckets or keys.
    let fail = |reason: &LoadError, phase: &str| {
        error!(model = %entry.spec.id, phase, %reason, "model failed");
        entry.set_state(State::Failed(reason.public()));
        registry.publish_counts();
    };
    let fetched = {
        let Ok(_slot) = gates.0.acquire().await else { return t };
        let began = Instant::now();
        // Retries are logged inside this span: with the model they are for.
        let r = load::fetch(&entry.spec, &fetcher).instrument(tracing::warn_span!("fetch", model = %id)).await;
        t.info.fetch_seconds = began.elapsed().as_secs_f64();
        if r.as_ref().is_ok_and(|f| f.downloaded > 0) {
            t.download = Some((began, Instant::now()));
        }
        r
    };
    let files = match fetched {
        Ok(f) => f,
        Err(reason) => {
            fail(&reason, "fetch");
            return t;
        }
    };
    (t.info.fetched_bytes, t.info.cached_bytes) = (files.downloaded, files.reused);
    entry.set_info(t.info.clone());
    let fetch_s = t.info.fetch_seconds;
    ::metrics::histogram!(metrics::LOAD_DURATION, "phase" => "fetch").record(fetch_s);
    if files.downloaded + files.reused > 0 {
        let source = if files.downloaded > 0 { "s3" } else { "cache" };
        ::metrics::counter!(metrics::FETCHED_BYTES, "source" => source).increment(files.downloaded + files.reused);
        let mib = (files.downloaded + files.reused) as f64 / 1048576.0;
        info!(model = %id, source, mib = format!("{mib:.1}"), seconds = format!("{fetch_s:.2}"), mib_per_s = format!("{:.0}", mib / fetch_s.max(1e-6)), "fetched");
    }

    if let Some(cold) = &entry.cold {
        // A cold model waits on local disk for its first request (`cold.rs`).
        if let Ok(mut f) = cold.files.lock() {
            *f = Some(files);
        }
        entry.set_state(State::Cold);
        registry.publish_counts();
        t.ok = true;
        return t;
    }
    let Ok(_slot) = gates.1.acquire().await else { return t };
    let spec = entry.spec.clone();
    let before = rss_bytes();
    let result = tokio::task::spawn_blocking(move || {
        crate::process::lower_thread_priority();
        load::load_files(&spec, &files, &engine, &verdicts)
    })
    .await;
    match result {
        Ok(Ok(l)) => {
            let memory = rss_bytes().saturating_sub(before);
            t.ok = true;
            ::metrics::histogram!(metrics::LOAD_DURATION, "phase" => "load").record(l.load_seconds);
            ::metrics::histogram!(metrics::LOAD_DURATION, "phase" => "warmup").record(l.warmup_seconds);
            ::metrics::gauge!(metrics::MODEL_MEMORY, "model" => id.clone()).set(memory as f64);
            let backend = l.model.model.backend().to_string();
            let choice = l.model.engine_reason.as_deref().unwrap_or("named in the catalog or by --engine");
            info!(model = %id, %backend, engine_choice = choice, load_s = l.load_seconds, warmup_s = l.warmup_seconds, memory_mib = memory / 1048576, "model ready");
            entry.metrics.engine_known(&id, &backend);
            (t.info.memory_bytes, t.info.weights_bytes) = (memory, l.weights_bytes);
            (t.info.load_seconds, t.info.warmup_seconds) = (l.load_seconds, l.warmup_seconds);
            entry.set_info(t.info.clone());
            if let Some(n) = l.model.model.concurrency_limit() {
                entry.cap_calls(n);
            }
            entry.set_state(State::Ready(Arc::new(l.model)));
            registry.publish_counts();
        }
        Ok(Err(reason)) => fail(&reason, "load"),
        Err(e) => {
            error!(model = %id, error = %e, "model failed: the loader crashed");
            entry.set_state(State::Failed("the loader crashed (see the node's log)".into()));
            registry.publish_counts();
        }
    }
    t
}

/// The start-up summary: per phase and in total, download bandwidth, the slowest models.
fn summarize(registry: &Registry, timings: &[Timing], start: Instant) {
    let wall = start.elapsed().as_secs_f64();
    ::metrics::gauge!(metrics::STARTUP).set(wall);
    let (_, ready, failed) = registry.counts();
    let mib = |b: u64| b as f64 / 1048576.0;
    let downloaded: u64 = timings.iter().map(|t| t.info.fetched_bytes).sum();
    let reused: u64 = timings.iter().map(|t| t.info.cached_bytes).sum();
    let windows: Vec<_> = timings.iter().filter_map(|t| t.download).collect();
    let download_s = match (windows.iter().map(|w| w.0).min(), windows.iter().map(|w| w.1).max()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let sum = |f: fn(&LoadInfo) -> f64| timings.iter().map(|t| f(&t.info)).sum::<f64>();
    let mut slowest: Vec<&Timing> = timings.iter().filter(|t| t.ok).collect();
    slowest.sort_by(|a, b| b.seconds().total_cmp(&a.seconds()));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|t| {
            let i = &t.info;
            let (fetch, load, warmup) = (i.fetch_seconds, i.load_seconds, i.warmup_seconds);
            format!("{} {:.2}s (fetch {fetch:.2} load {load:.2} warmup {warmup:.2})", t.id, t.seconds())
        })
        .collect();
    info!(
        ready,
        failed,
        seconds = format!("{wall:.2}"),
        downloaded_mib = format!("{:.1}", mib(downloaded)),
        cached_mib = format!("{:.1}", mib(reused)),
        download_s = format!("{download_s:.2}"),
        download_mib_per_s = format!("{:.0}", if download_s > 0.0 { mib(downloaded) / download_s } else { 0.0 }),
        fetch_s_total = format!("{:.2}", sum(|i| i.fetch_seconds)),
        load_s_total = format!("{:.2}", sum(|i| i.load_seconds)),
        warmup_s_total = format!("{:.2}", sum(|i| i.warmup_seconds)),
        slowest = slowest.join("; "),
        rss_mib = rss_bytes() / 1048576,
        "start-up finished"
    );
}
