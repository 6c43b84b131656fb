//! `stowage serve`: one process per node. Binds at once (so probes answer), loads the node's
//! models in the background, and on SIGTERM/SIGINT stops being ready, refuses new work with 503,
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
use crate::registry::{self, LoadInfo, ModelSpec, Registry, State};

/// Settings the request path reads.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    /// Share of the node's models that must be ready for `/ready` to answer 200.
    pub ready_fraction: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self { max_body_bytes: 1 << 20, max_batch: 32, ready_fraction: 1.0 }
    }
}

pub struct AppState {
    pub registry: Arc<Registry>,
    pub metrics: PrometheusHandle,
    pub config: ServeConfig,
}

impl AppState {
    pub fn new(registry: Arc<Registry>, config: ServeConfig) -> Self {
        Self { registry, metrics: crate::metrics::install(), config }
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
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Loading decodes, copies and optimizes whole weight sets; give the freed heap back to the OS so
/// the node's resident memory is what its models keep, not what loading once touched.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Loads every model, `parallelism` at a time, on blocking threads; never fails as a whole.
pub async fn load_all(registry: Arc<Registry>, opts: EngineOptions, parallelism: usize) {
    let start = Instant::now();
    // Load metrics must not be lost to a recorder installed later.
    crate::metrics::install();
    let gate = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    registry.publish_counts();
    let mut tasks = Vec::new();
    for entry in registry.entries() {
        let gate = gate.clone();
        let registry = registry.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(_slot) = gate.acquire().await else { return };
            let spec = entry.spec.clone();
            let before = rss_bytes();
            let result = tokio::task::spawn_blocking(move || registry::load::load(&spec, &opts)).await;
            match result {
                Ok(Ok(l)) => {
                    let memory = rss_bytes().saturating_sub(before);
                    let id = entry.spec.id.clone();
                    metrics::histogram!(crate::metrics::LOAD_DURATION, "model" => id.clone(), "phase" => "load").record(l.load_seconds);
                    metrics::histogram!(crate::metrics::LOAD_DURATION, "model" => id.clone(), "phase" => "warmup").record(l.warmup_seconds);
                    metrics::gauge!(crate::metrics::MODEL_MEMORY, "model" => id.clone()).set(memory as f64);
                    info!(model = %id, backend = %entry.spec.engine, load_s = l.load_seconds, warmup_s = l.warmup_seconds, memory_mib = memory / 1048576, "model ready");
                    entry.set_info(LoadInfo { memory_bytes: memory, weights_bytes: l.weights_bytes, load_seconds: l.load_seconds, warmup_seconds: l.warmup_seconds });
                    entry.set_state(State::Ready(Arc::new(l.model)));
                }
                Ok(Err(reason)) => {
                    error!(model = %entry.spec.id, %reason, "model failed to load");
                    entry.set_state(State::Failed(reason));
                }
                Err(e) => {
                    error!(model = %entry.spec.id, error = %e, "model loader crashed");
                    entry.set_state(State::Failed(format!("loader crashed: {e}")));
                }
            }
            registry.publish_counts();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    release_freed_memory();
    let (_, ready, failed) = registry.counts();
    info!(ready, failed, seconds = start.elapsed().as_secs_f64(), rss_mib = rss_bytes() / 1048576, "start-up finished");
}

/// Everything `stowage serve` needs.
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub specs: Vec<ModelSpec>,
    pub limits: registry::Limits,
    pub config: ServeConfig,
    pub engine: EngineOptions,
    pub ort_library: Option<PathBuf>,
    pub load_parallelism: usize,
    pub drain: Duration,
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
    let state = Arc::new(AppState::new(registry.clone(), opts.config));
    actix_web::rt::System::new().block_on(async move {
        let app_state = state.clone();
        let server = HttpServer::new(move || App::new().configure(crate::api::configure(app_state.clone())))
            .workers(opts.workers.max(1))
            .shutdown_timeout(opts.drain.as_secs().max(1))
            .disable_signals()
            .bind((opts.host.as_str(), opts.port))
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        for addr in server.addrs() {
            info!(%addr, models = registry.len(), "listening");
        }
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(load_all(registry.clone(), opts.engine, opts.load_parallelism));
        actix_web::rt::spawn(async move {
            wait_for_signal().await;
            info!("shutting down: not ready, draining in-flight requests");
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
