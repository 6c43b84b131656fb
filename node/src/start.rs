//! A node, assembled: `start(options)` builds every long-lived part in one place — the engines'
//! set-up, the registry, the inference threads, the loader and its runtime, the cold pool, the
//! reconciler and what triggers it (a watch of the plan and catalog, SIGHUP) — and starts loading
//! the models in the background; with `--async-dir`, it opens the job store and takes back
//! the queue a previous process left. What it returns, `RunningNode`, is what a front end (the HTTP
//! server in `src/http/`) binds, routes and renders; it constructs nothing itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stowage_core::Engine as EngineKind;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::jobs::{JobOptions, Jobs, StoreError};
use crate::lifecycle::cold::ColdPool;
use crate::lifecycle::reconcile::{self, Outcome, Reconciler};
use crate::lifecycle::registry::{Limits, Registry};
use crate::lifecycle::spec::{NodeSet, SpecSource};
use crate::lifecycle::startup::{LoadOptions, Loader};
use crate::process::lower_thread_priority;
use crate::serve::predict::{Config, Node};

/// How long a reload waits after the first file event, so that a plan and catalog written
/// together are read together.
pub const RELOAD_SETTLE: Duration = Duration::from_millis(250);

/// Everything a node needs, but its front end's settings.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Where the node's models are named (read again at every reload), and what it read at start.
    pub source: SpecSource,
    pub initial: NodeSet,
    /// Reload when the plan or catalog files change (else only on SIGHUP or `RunningNode::reload`).
    pub watch: bool,
    pub limits: Limits,
    pub config: Config,
    pub load: LoadOptions,
    /// ONNX Runtime's library (else `ORT_DYLIB_PATH`).
    pub ort_library: Option<PathBuf>,
    /// Longest a removed or replaced model may take to finish what it holds.
    pub drain: Duration,
    /// Asynchronous requests (`--async-dir`): where their queue lives and how it runs.
    pub jobs: Option<JobOptions>,
}

/// Why a node could not start: the operating system refused a thread or a runtime.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the inference threads")]
    InferenceThreads(#[source] std::io::Error),
    #[error("cannot start the loader runtime")]
    LoaderRuntime(#[source] std::io::Error),
    #[error("cannot start the loader thread")]
    LoaderThread(#[source] std::io::Error),
    #[error("cannot open the asynchronous job store")]
    Jobs(#[source] StoreError),
}

/// A started node: its models load (or are loaded) in the background, reloads follow its files.
pub struct RunningNode {
    /// The request path: find a model, predict, readiness.
    pub node: Arc<Node>,
    pub reconciler: Arc<Reconciler>,
    /// The loader's runtime: fetches, loads and reloads run there, never on a front end's workers.
    pub runtime: tokio::runtime::Handle,
    /// Asynchronous requests, when the node takes them: the store is open and the queue taken
    /// back; the front end starts the dispatcher with its runner (`Jobs::start`).
    pub jobs: Option<Arc<Jobs>>,
    /// Fires a reload (as a file change or SIGHUP does).
    trigger: Arc<Notify>,
}

impl RunningNode {
    /// Reads the plan and catalog again now, on the loader's runtime, and says how it went.
    pub async fn reload(&self, why: &'static str) -> Option<Outcome> {
        let reconciler = self.reconciler.clone();
        self.runtime.spawn(async move { reconciler.reload(why).await }).await.ok()
    }

    /// Asks for a reload soon (after `RELOAD_SETTLE`), as a file change does.
    pub fn reload_soon(&self) {
        self.trigger.notify_one();
    }
}

/// Builds the node and starts loading its models; returns at once (models load in the
/// background: `node.readiness()` says when they are ready).
pub fn start(opts: NodeOptions) -> Result<RunningNode, StartError> {
    // Requests already run in parallel; the tokenizer's own rayon pool would only wake more
    // threads per request on the cores the engines need.
    tokenizers::utils::parallelism::set_parallelism(false);
    init_engines(&opts);
    let registry = Arc::new(Registry::new(opts.initial.specs.clone(), opts.limits));
    // Downloads, hashing, loading and reloads run on their own runtime and threads, never
    // delaying probes; they yield to the inference threads of serving models.
    let loader_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stowage-fetch")
        .on_thread_start(lower_thread_priority)
        .enable_all()
        .build()
        .map_err(StartError::LoaderRuntime)?;
    let runtime = loader_rt.handle().clone();
    let _in = loader_rt.enter();
    let loader = Loader::new(opts.load.clone());
    // The cold pool: the plan's size (0 without cold models); a reload resizes it.
    let cold_models = opts.initial.specs.iter().filter(|s| s.cold).count();
    let cold = ColdPool::new(opts.initial.cold_pool_mib, registry.clone(), loader.clone(), runtime.clone());
    if cold_models > 0 {
        info!(cold_models, pool_mib = opts.initial.cold_pool_mib, "cold models load on their first request");
    }
    let node = Arc::new(
        Node::new(registry.clone(), opts.config.clone(), Some(cold.clone())).map_err(StartError::InferenceThreads)?,
    );
    let jobs = match opts.jobs.clone() {
        // On the loader's runtime, from a thread of its own: `start` may run inside another.
        Some(o) => {
            let (node, rt) = (node.clone(), runtime.clone());
            let opened = std::thread::scope(|s| s.spawn(move || rt.block_on(Jobs::open(o, node))).join());
            Some(
                opened
                    .map_err(|_| StartError::Jobs(StoreError::Failed("opening the job store panicked".into())))?
                    .map_err(StartError::Jobs)?,
            )
        }
        None => None,
    };
    let reconciler = Reconciler::new(registry, loader, cold, opts.source.clone(), &opts.initial, opts.drain);
    let trigger = Arc::new(Notify::new());
    let watcher = opts.watch.then(|| watch(&opts.source, trigger.clone())).flatten();
    let (rec, hup, wake) = (reconciler.clone(), trigger.clone(), trigger.clone());
    drop(_in);
    std::thread::Builder::new()
        .name("stowage-loader".into())
        .spawn(move || {
            loader_rt.block_on(async move {
                let _watching = watcher;
                tokio::spawn(reload_on_sighup(hup));
                rec.start().await;
                rec.run(wake, RELOAD_SETTLE).await
            })
        })
        .map_err(StartError::LoaderThread)?;
    Ok(RunningNode { node, reconciler, runtime, jobs, trigger })
}

/// Loads ONNX Runtime's library when a model may use it. A missing library fails the ort models
/// (with the reason in /models), not the node; auto models then run on tract, or fail with both
/// reasons when tract cannot run them.
fn init_engines(opts: &NodeOptions) {
    let wants = |kind: EngineKind| opts.initial.specs.iter().any(|s| s.engine == kind);
    if !(wants(EngineKind::Ort) || wants(EngineKind::Auto)) {
        return;
    }
    if let Err(e) = stowage_engine::ort::init(opts.ort_library.as_deref(), opts.load.engine.ort_intra_threads) {
        if wants(EngineKind::Ort) {
            warn!(error = %e, "ONNX Runtime is not available; models on the ort engine will fail to load");
        } else {
            info!(error = %e, "ONNX Runtime is not available; auto models run on tract only");
        }
    }
}

/// Watches the plan and catalog; `None` (and a warning) when the system cannot.
fn watch(source: &SpecSource, trigger: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let files = source.files();
    match reconcile::watch(&files, trigger) {
        Ok(w) => {
            info!(files = ?files, "watching the plan and catalog; a change reloads the node");
            Some(w)
        }
        Err(e) => {
            warn!(error = %e, "cannot watch the plan and catalog; the node reloads on SIGHUP or POST /admin/reload only");
            None
        }
    }
}

async fn reload_on_sighup(trigger: Arc<Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut s) => {
            while s.recv().await.is_some() {
                info!("SIGHUP: reloading the plan and catalog");
                trigger.notify_one();
            }
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP"),
    }
}
