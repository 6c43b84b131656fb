//! `stowage serve`: one process per node. Binds at once (so probes answer), loads the node's
//! models in the background, and on SIGTERM/SIGINT stops being ready, serves on for
//! `--shutdown-delay-seconds` (while load balancers let go of it), then refuses new work with 503,
//! drains what is in flight and exits 0 (the Kubernetes termination contract).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer};
use anyhow::{Context, Result};
use stowage_node::{NodeOptions, RunningNode};
use tracing::{error, info};

use crate::http::admin::AdminState;
use crate::http::state::{AppState, ServeConfig};

/// The admin API's listener (`--admin-port`) and its bearer token.
pub struct AdminOptions {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
}

/// Everything `stowage serve` needs: the node's options and the HTTP side's.
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// The health checks' own listener (`--probe-port`).
    pub probe_port: Option<u16>,
    /// KServe v2 over gRPC's listener (`--grpc-port`).
    pub grpc_port: Option<u16>,
    pub workers: usize,
    /// Client connections held open at most (default: from the open-file limit).
    pub max_connections: Option<usize>,
    pub admin: Option<AdminOptions>,
    pub config: ServeConfig,
    pub node: NodeOptions,
    /// How long in-flight requests may take to finish once the node stops accepting.
    pub drain: Duration,
    /// From SIGTERM to refusing new requests: serving on, not ready.
    pub shutdown_delay: Duration,
}

pub fn run(opts: ServeOptions) -> Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let running = stowage_node::start(opts.node)?;
        let state = Arc::new(AppState::new(running.node.clone(), opts.config).with_jobs(running.jobs.clone()));
        if let Some(jobs) = &running.jobs {
            jobs.start(&running.runtime, crate::http::jobs::runner(state.clone()));
            info!(queue = %jobs.options.place, queued = jobs.queued(), "asynchronous requests on");
        }
        let registry = running.node.registry.clone();
        let app_state = state.clone();
        let workers = opts.workers.max(1);
        let files = raise_open_file_limit();
        let connections = opts.max_connections.unwrap_or_else(|| connection_budget(files, registry.len()));
        info!(open_files = files, max_connections = connections, "connection limit");
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(crate::trace::traced))
                .configure(crate::http::configure(app_state.clone()))
        })
        .on_connect(crate::http::connected)
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
        let admin = match opts.admin {
            Some(a) => Some(admin_server(&a, &running)?),
            None => None,
        };
        let probes = match opts.probe_port {
            Some(port) => Some(probe_server(&opts.host, port, state.clone())?),
            None => None,
        };
        let grpc = match opts.grpc_port {
            Some(port) => {
                let routes = tonic::service::Routes::new(crate::grpc::NodeService::server(state.clone()));
                Some(grpc_server(&opts.host, port, workers, routes)?)
            }
            None => None,
        };
        let (delay, drain) = (opts.shutdown_delay, opts.drain.max(Duration::from_secs(1)));
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
            let grpc_drained = grpc.map(|g| g.stop(drain));
            handle.stop(true).await;
            if let Some(done) = grpc_drained {
                done.await;
            }
            if let Some(p) = probes {
                p.stop(false).await;
            }
        });
        server.await.context("server failed")?;
        info!("stopped");
        Ok(())
    })
}

/// Binds the admin API on its own listener and runs it beside the node's.
fn admin_server(a: &AdminOptions, running: &RunningNode) -> Result<actix_web::dev::ServerHandle> {
    let state = Arc::new(AdminState::new(running.reconciler.clone(), running.runtime.clone(), a.token.as_deref()));
    let server = HttpServer::new(move || App::new().configure(crate::http::admin::configure(state.clone())))
        .workers(1)
        .disable_signals()
        .bind((a.host.as_str(), a.port))
        .with_context(|| format!("cannot listen on {}:{} (--admin-port)", a.host, a.port))?;
    for addr in server.addrs() {
        info!(%addr, token = a.token.is_some(), "admin API listening");
    }
    Ok(beside(server.run(), "the admin API"))
}

/// Runs a listener beside the node's until it is stopped through the handle; logs a failure.
fn beside(server: actix_web::dev::Server, what: &'static str) -> actix_web::dev::ServerHandle {
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "{what} failed");
        }
    });
    handle
}

/// A gRPC listener: its own runtime and threads, and what stops it.
pub(crate) struct GrpcServer {
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::thread::JoinHandle<()>,
}

impl GrpcServer {
    /// Stops taking calls and waits (off the caller's runtime), at most `drain`, for those in
    /// flight to finish.
    pub(crate) fn stop(self, drain: Duration) -> impl std::future::Future<Output = ()> {
        let _ = self.stop.send(());
        let done = self.done;
        async move {
            let joined = tokio::task::spawn_blocking(move || done.join());
            if tokio::time::timeout(drain, joined).await.is_err() {
                error!(seconds = drain.as_secs_f64(), "gRPC calls still running after the drain time");
            }
        }
    }
}

/// Binds a gRPC service (`routes`: the node's or the gateway's, `crate::grpc`) on its own
/// listener and runs it on a runtime of `threads` threads, beside the HTTP server's workers.
pub(crate) fn grpc_server(host: &str, port: u16, threads: usize, routes: tonic::service::Routes) -> Result<GrpcServer> {
    let listener = std::net::TcpListener::bind((host, port))
        .with_context(|| format!("cannot listen on {host}:{port} (--grpc-port)"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("stowage-grpc")
        .enable_all()
        .build()
        .context("cannot start the gRPC runtime")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = std::thread::Builder::new()
        .name("stowage-grpc".into())
        .spawn(move || {
            runtime.block_on(async move {
                let incoming = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true)),
                    Err(e) => return error!(error = %e, "the gRPC listener failed"),
                };
                info!(%addr, "gRPC (KServe v2) listening");
                let served = tonic::transport::Server::builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "the gRPC listener failed");
                }
            })
        })
        .context("cannot start the gRPC thread")?;
    Ok(GrpcServer { stop, done })
}

/// Connections the probe listener holds at most: kubelets, load balancers' health checks.
const PROBE_CONNECTIONS: usize = 32;

/// Binds the health checks' own listener: one thread, a few connections of its own, so that
/// whatever holds the serving port's connections cannot make a probe wait.
fn probe_server(host: &str, port: u16, state: Arc<AppState>) -> Result<actix_web::dev::ServerHandle> {
    let server = HttpServer::new(move || App::new().configure(crate::http::configure_probes(state.clone())))
        .workers(1)
        .max_connections(PROBE_CONNECTIONS)
        .disable_signals()
        .bind((host, port))
        .with_context(|| format!("cannot listen on {host}:{port} (--probe-port)"))?;
    for addr in server.addrs() {
        info!(%addr, "health checks listening");
    }
    Ok(beside(server.run(), "the probe listener"))
}

/// Raises the soft limit on open files to the hard limit (where the system lets it), and returns
/// the soft limit in force.
pub(crate) fn raise_open_file_limit() -> u64 {
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
/// models' files, downloads, the engines, the probe listener and the process (64 + 32, and 4 per
/// model), at least 16.
fn connection_budget(files: u64, models: usize) -> usize {
    connections_within(files, 64 + PROBE_CONNECTIONS as u64 + 4 * models as u64, 1)
}

/// Client connections that `files` open files allow once `reserve` are set aside, when each
/// client connection may take `per_connection` files: between 16 and 65,536.
pub(crate) fn connections_within(files: u64, reserve: u64, per_connection: u64) -> usize {
    (files.saturating_sub(reserve) / per_connection.max(1)).clamp(16, 1 << 16) as usize
}

pub(crate) async fn wait_for_signal() {
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
