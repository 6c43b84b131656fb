//! `stowage serve`: one process per node. Binds at once (so probes answer), loads the node's
//! models in the background, and on SIGTERM/SIGINT stops being ready, serves on for
//! `--shutdown-delay-seconds` (while load balancers let go of it), then refuses new work with 503,
//! drains what is in flight and exits 0 (the Kubernetes termination contract).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer};
use anyhow::{Context, Result};
use stowage_core::Engine as EngineKind;
use stowage_node::cold::ColdPool;
use stowage_node::reconcile::{self, Reconciler};
use stowage_node::registry::{Limits, Registry};
use stowage_node::spec::{NodeSet, SpecSource};
use stowage_node::startup::{LoadOptions, Loader};
use tracing::{error, info, warn};

use crate::http::admin::AdminState;
use crate::http::state::{AppState, ServeConfig};

/// The admin API's listener (`--admin-port`) and its bearer token.
pub struct AdminOptions {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
}

/// How long a reload waits after the first file event, so that a plan and catalog written
/// together are read together.
pub const RELOAD_SETTLE: Duration = Duration::from_millis(250);

/// Everything `stowage serve` needs.
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    /// Client connections held open at most (default: from the open-file limit).
    pub max_connections: Option<usize>,
    /// Where the node's models are named (read again at every reload), and what it read at start.
    pub source: SpecSource,
    pub initial: NodeSet,
    /// Reload when the plan or catalog files change (else only on SIGHUP or the admin API).
    pub watch: bool,
    pub admin: Option<AdminOptions>,
    pub limits: Limits,
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
    let wants = |kind: EngineKind| opts.initial.specs.iter().any(|s| s.engine == kind);
    if wants(EngineKind::Ort) || wants(EngineKind::Auto) {
        // A missing library fails the ort models (with the reason in /models), not the node; auto
        // models then run on tract, or fail with both reasons when tract cannot run them.
        if let Err(e) = stowage_engine::ort::init(opts.ort_library.as_deref()) {
            if wants(EngineKind::Ort) {
                warn!(error = %e, "ONNX Runtime is not available; models on the ort engine will fail to load");
            } else {
                info!(error = %e, "ONNX Runtime is not available; auto models run on tract only");
            }
        }
    }
    let registry = Arc::new(Registry::new(opts.initial.specs.clone(), opts.limits));
    let state = Arc::new(AppState::new(registry.clone(), opts.config).context("cannot start the inference threads")?);
    actix_web::rt::System::new().block_on(async move {
        let app_state = state.clone();
        let workers = opts.workers.max(1);
        let files = raise_open_file_limit();
        let connections = opts.max_connections.unwrap_or_else(|| connection_budget(files, registry.len()));
        info!(open_files = files, max_connections = connections, "connection limit");
        let server = HttpServer::new(move || App::new().configure(crate::http::configure(app_state.clone())))
            .workers(workers)
            // actix counts per worker: split the node's budget over them.
            .max_connections(connections.div_ceil(workers).max(1))
            .shutdown_timeout(opts.drain.as_secs().max(1))
            .disable_signals()
            .bind((opts.host.as_str(), opts.port))
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        for addr in server.addrs() {
            info!(%addr, models = registry.len(), inference_threads = state.node.pool.threads(), "listening");
        }
        let server = server.run();
        let handle = server.handle();
        // Downloads, hashing, loading and reloads run on their own runtime and threads, never
        // delaying probes.
        let loader_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stowage-fetch")
            // Fetching, hashing and loading yield to the inference threads of serving models.
            .on_thread_start(stowage_node::process::lower_thread_priority)
            .enable_all()
            .build()
            .context("cannot start the loader runtime")?;
        let loader = {
            let _in = loader_rt.enter();
            Loader::new(opts.load)
        };
        // The cold pool: the plan's size (0 without cold models); a reload resizes it.
        let cold = opts.initial.specs.iter().filter(|s| s.cold).count();
        let pool = ColdPool::new(opts.initial.cold_pool_mib, registry.clone(), loader.clone(), loader_rt.handle().clone());
        if cold > 0 {
            info!(cold_models = cold, pool_mib = opts.initial.cold_pool_mib, "cold models load on their first request");
        }
        let _ = state.node.cold.set(pool.clone());
        let reconciler = {
            let _in = loader_rt.enter();
            Reconciler::new(registry.clone(), loader, pool, opts.source.clone(), &opts.initial, opts.drain)
        };
        let trigger = Arc::new(tokio::sync::Notify::new());
        let watcher = if opts.watch {
            let files = opts.source.files();
            match reconcile::watch(&files, trigger.clone()) {
                Ok(w) => {
                    info!(files = ?files, "watching the plan and catalog; a change reloads the node");
                    Some(w)
                }
                Err(e) => {
                    warn!(error = %e, "cannot watch the plan and catalog; the node reloads on SIGHUP or POST /admin/reload only");
                    None
                }
            }
        } else {
            None
        };
        let admin = match opts.admin {
            Some(a) => {
                let state = Arc::new(AdminState::new(reconciler.clone(), loader_rt.handle().clone(), a.token.as_deref()));
                let server = HttpServer::new(move || App::new().configure(crate::http::admin::configure(state.clone())))
                    .workers(1)
                    .disable_signals()
                    .bind((a.host.as_str(), a.port))
                    .with_context(|| format!("cannot listen on {}:{} (--admin-port)", a.host, a.port))?;
                for addr in server.addrs() {
                    info!(%addr, token = a.token.is_some(), "admin API listening");
                }
                let server = server.run();
                let handle = server.handle();
                actix_web::rt::spawn(async move {
                    if let Err(e) = server.await {
                        error!(error = %e, "admin API failed");
                    }
                });
                Some(handle)
            }
            None => None,
        };
        let (rec, hup) = (reconciler.clone(), trigger.clone());
        std::thread::Builder::new()
            .name("stowage-loader".into())
            .spawn(move || {
                loader_rt.block_on(async move {
                    let _watching = watcher;
                    tokio::spawn(async move {
                        use tokio::signal::unix::{signal, SignalKind};
                        match signal(SignalKind::hangup()) {
                            Ok(mut s) => {
                                while s.recv().await.is_some() {
                                    info!("SIGHUP: reloading the plan and catalog");
                                    hup.notify_one();
                                }
                            }
                            Err(e) => warn!(error = %e, "cannot listen for SIGHUP"),
                        }
                    });
                    rec.start().await;
                    rec.run(trigger, RELOAD_SETTLE).await
                })
            })
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
            if let Some(a) = admin {
                a.stop(false).await;
            }
            handle.stop(true).await;
        });
        server.await.context("server failed")?;
        info!("stopped");
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard limit (where the system lets it), and returns
/// the soft limit in force.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max.min(1 << 20), rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Connections the node may hold with `files` open files: what is left after a reserve for its
/// models' files, downloads, the engines and the process (64, and 4 per model), at least 16.
fn connection_budget(files: u64, models: usize) -> usize {
    let reserve = 64 + 4 * models as u64;
    files.saturating_sub(reserve).clamp(16, 1 << 16) as usize
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
