//! `stowage serve`: one process per node. Binds at once (so probes answer), loads the node's
//! models in the background, and on SIGTERM/SIGINT stops being ready, serves on for
//! `--shutdown-delay-seconds` (while load balancers let go of it), then refuses new work with 503,
//! drains what is in flight and exits 0 (the Kubernetes termination contract).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer};
use anyhow::{bail, Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use stowage_core::{Catalog, Engine as EngineKind, Plan};
use tracing::{error, info, warn};

use crate::backend::EngineOptions;
use crate::inference::Pool;
use crate::registry::{self, Entry, LoadInfo, ModelSpec, Registry, State};
use crate::storage::{FetchOptions, Fetcher};

/// Settings the request path reads.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Share of the node's models that must be ready for `/ready` to answer 200.
    pub ready_fraction: f64,
    /// Threads that run inference for the whole node: at most this many inferences at once.
    pub inference_threads: usize,
    /// Longest a request may wait for its model (admission and batch) before it runs.
    pub queue_timeout: Option<Duration>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 32,
            ready_fraction: 1.0,
            inference_threads: cpus,
            queue_timeout: None,
        }
    }
}

pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: PrometheusHandle,
    pub config: ServeConfig,
    pub inference: Arc<Pool>,
}

impl AppState {
    /// Fails only when the operating system refuses to start the inference threads.
    pub fn new(registry: Arc<Registry>, config: ServeConfig) -> std::io::Result<Self> {
        let inference = Arc::new(Pool::new(config.inference_threads)?);
        Ok(Self { registry, metrics: crate::metrics::install(), config, inference })
    }
}

/// The models a node serves: a plan's node, or catalog models by id (all when `ids` is empty).
pub fn node_models(
    plan: Option<&Path>,
    node: Option<&str>,
    catalog: Option<&Path>,
    ids: &[String],
    engine: EngineKind,
) -> Result<Vec<ModelSpec>> {
    let (catalog, ids): (Catalog, Vec<String>) = match (plan, node) {
        (Some(plan_path), Some(node)) => {
            let plan = Plan::load(plan_path)?;
            let n = plan.node(node).with_context(|| {
                let known: Vec<&str> = plan.nodes.iter().map(|n| n.id.as_str()).take(20).collect();
                format!("{}: no node {node:?} (nodes: {})", plan_path.display(), known.join(", "))
            })?;
            let ids = n.models.clone();
            (plan.catalog(plan_path, catalog)?, ids)
        }
        (Some(_), None) => bail!("--plan needs --node"),
        (None, _) => {
            let path = catalog.context("give --plan and --node, or --catalog (with --models)")?;
            (Catalog::load(path)?, ids.to_vec())
        }
    };
    let ids = if ids.is_empty() { catalog.models.iter().map(|m| m.id.clone()).collect() } else { ids };
    ids.iter()
        .map(|id| {
            ModelSpec::from_catalog(&catalog, id, engine)
                .map_err(|e| anyhow::anyhow!("{}: {e}", catalog.path.display()))
        })
        .collect()
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Loading decodes, copies and optimizes whole weight sets; give the freed heap back to the OS so
/// the node's resident memory is what its models keep, not what loading once touched.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How a node brings up its models.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub engine: EngineOptions,
    /// Models read, optimized and warmed up at once.
    pub parallelism: usize,
    /// Models downloading at once (downloads overlap with loading).
    pub fetch_parallelism: usize,
    pub fetch: FetchOptions,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { engine: EngineOptions::default(), parallelism: 2, fetch_parallelism: 4, fetch: FetchOptions::default() }
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

/// Loads every model on a fetch → load pipeline (`fetch_parallelism` downloads and `parallelism`
/// loads at once, on blocking threads); never fails as a whole: a model that cannot be fetched or
/// loaded is marked failed with its reason.
pub async fn load_all(registry: Arc<Registry>, opts: LoadOptions) {
    let start = Instant::now();
    // Load metrics must not be lost to a recorder installed later.
    crate::metrics::install();
    let fetcher = Arc::new(Fetcher::new(opts.fetch.clone()));
    let fetch_gate = Arc::new(tokio::sync::Semaphore::new(opts.fetch_parallelism.max(1)));
    let load_gate = Arc::new(tokio::sync::Semaphore::new(opts.parallelism.max(1)));
    registry.publish_counts();
    let tasks: Vec<_> = registry
        .entries()
        .into_iter()
        .map(|entry| {
            let gates = (fetch_gate.clone(), load_gate.clone());
            tokio::spawn(bring_up(entry, registry.clone(), fetcher.clone(), gates, opts.engine))
        })
        .collect();
    let mut timings = Vec::new();
    for t in tasks {
        if let Ok(t) = t.await {
            timings.push(t);
        }
    }
    release_freed_memory();
    summarize(&registry, &timings, start);
}

type Gates = (Arc<tokio::sync::Semaphore>, Arc<tokio::sync::Semaphore>);

async fn bring_up(
    entry: Arc<Entry>,
    registry: Arc<Registry>,
    fetcher: Arc<Fetcher>,
    gates: Gates,
    engine: EngineOptions,
) -> Timing {
    let id = entry.spec.id.clone();
    let mut t = Timing { id: id.clone(), ok: false, download: None, info: LoadInfo::default() };
    let fail = |reason: String, phase: &str| {
        error!(model = %entry.spec.id, phase, %reason, "model failed");
        entry.set_state(State::Failed(reason));
        registry.publish_counts();
    };
    let fetched = {
        let Ok(_slot) = gates.0.acquire().await else { return t };
        let began = Instant::now();
        let r = registry::load::fetch(&entry.spec, &fetcher).await;
        t.info.fetch_seconds = began.elapsed().as_secs_f64();
        if r.as_ref().is_ok_and(|f| f.downloaded > 0) {
            t.download = Some((began, Instant::now()));
        }
        r
    };
    let files = match fetched {
        Ok(f) => f,
        Err(reason) => {
            fail(reason, "fetch");
            return t;
        }
    };
    (t.info.fetched_bytes, t.info.cached_bytes) = (files.downloaded, files.reused);
    entry.set_info(t.info.clone());
    let fetch_s = t.info.fetch_seconds;
    metrics::histogram!(crate::metrics::LOAD_DURATION, "model" => id.clone(), "phase" => "fetch").record(fetch_s);
    if files.downloaded + files.reused > 0 {
        let source = if files.downloaded > 0 { "s3" } else { "cache" };
        metrics::counter!(crate::metrics::FETCHED_BYTES, "source" => source).increment(files.downloaded + files.reused);
        let mib = (files.downloaded + files.reused) as f64 / 1048576.0;
        info!(model = %id, source, mib = format!("{mib:.1}"), seconds = format!("{fetch_s:.2}"), mib_per_s = format!("{:.0}", mib / fetch_s.max(1e-6)), "fetched");
    }

    let Ok(_slot) = gates.1.acquire().await else { return t };
    let spec = entry.spec.clone();
    let before = rss_bytes();
    let result = tokio::task::spawn_blocking(move || registry::load::load_files(&spec, &files, &engine)).await;
    match result {
        Ok(Ok(l)) => {
            let memory = rss_bytes().saturating_sub(before);
            t.ok = true;
            metrics::histogram!(crate::metrics::LOAD_DURATION, "model" => id.clone(), "phase" => "load")
                .record(l.load_seconds);
            metrics::histogram!(crate::metrics::LOAD_DURATION, "model" => id.clone(), "phase" => "warmup")
                .record(l.warmup_seconds);
            metrics::gauge!(crate::metrics::MODEL_MEMORY, "model" => id.clone()).set(memory as f64);
            info!(model = %id, backend = %entry.spec.engine, load_s = l.load_seconds, warmup_s = l.warmup_seconds, memory_mib = memory / 1048576, "model ready");
            (t.info.memory_bytes, t.info.weights_bytes) = (memory, l.weights_bytes);
            (t.info.load_seconds, t.info.warmup_seconds) = (l.load_seconds, l.warmup_seconds);
            entry.set_info(t.info.clone());
            if let Some(n) = l.model.model.concurrency_limit() {
                entry.cap_calls(n);
            }
            entry.set_state(State::Ready(Arc::new(l.model)));
            registry.publish_counts();
        }
        Ok(Err(reason)) => fail(reason, "load"),
        Err(e) => fail(format!("loader crashed: {e}"), "load"),
    }
    t
}

/// The start-up summary: per phase and in total, download bandwidth, the slowest models.
fn summarize(registry: &Registry, timings: &[Timing], start: Instant) {
    let wall = start.elapsed().as_secs_f64();
    metrics::gauge!(crate::metrics::STARTUP).set(wall);
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

/// Everything `stowage serve` needs.
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub specs: Vec<ModelSpec>,
    pub limits: registry::Limits,
    pub config: ServeConfig,
    pub load: LoadOptions,
    pub ort_library: Option<PathBuf>,
    pub drain: Duration,
    /// From SIGTERM to refusing new requests: serving on, not ready.
    pub shutdown_delay: Duration,
}

pub fn run(opts: ServeOptions) -> Result<()> {
    // Requests already run in parallel; the tokenizer's own rayon pool would only wake more
    // threads per request on the cores the engines need.
    tokenizers::utils::parallelism::set_parallelism(false);
    if opts.specs.iter().any(|s| s.engine == EngineKind::Ort) {
        // A missing library fails the ort models (with the reason in /models), not the node.
        if let Err(e) = crate::backend::ort::init(opts.ort_library.as_deref()) {
            warn!(error = %e, "ONNX Runtime is not available; models on the ort engine will fail to load");
        }
    }
    let registry = Arc::new(Registry::new(opts.specs, opts.limits));
    let state = Arc::new(AppState::new(registry.clone(), opts.config).context("cannot start the inference threads")?);
    actix_web::rt::System::new().block_on(async move {
        let app_state = state.clone();
        let server = HttpServer::new(move || App::new().configure(crate::api::configure(app_state.clone())))
            .workers(opts.workers.max(1))
            .shutdown_timeout(opts.drain.as_secs().max(1))
            .disable_signals()
            .bind((opts.host.as_str(), opts.port))
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        for addr in server.addrs() {
            info!(%addr, models = registry.len(), inference_threads = state.inference.threads(), "listening");
        }
        let server = server.run();
        let handle = server.handle();
        // Downloads, hashing and loading run on their own runtime and threads, never delaying probes.
        let loader = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stowage-fetch")
            .enable_all()
            .build()
            .context("cannot start the loader runtime")?;
        let (reg, load) = (registry.clone(), opts.load);
        std::thread::Builder::new()
            .name("stowage-loader".into())
            .spawn(move || loader.block_on(load_all(reg, load)))
            .context("cannot start the loader thread")?;
        let delay = opts.shutdown_delay;
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            registry.begin_leaving();
            if !delay.is_zero() {
                info!(seconds = delay.as_secs_f64(), "leaving: not ready, serving on while load balancers let go");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_for_signal() => info!("a second signal: not waiting any longer"),
                }
            }
            info!("shutting down: refusing new requests, draining in-flight ones");
            registry.begin_shutdown();
            handle.stop(true).await;
        });
        server.await.context("server failed")?;
        info!("stopped");
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
