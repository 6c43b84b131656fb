//! `stowage gateway`: one address for every model of a plan. A stateless HTTP proxy: it finds the
//! node of a request's model in its route table (`routes.rs`) and forwards the request there on
//! pooled keep-alive connections (awc), answering 404 for a model no node has and 503 when its
//! node cannot be reached (a node that scales to zero: held until it starts, `wake.rs`);
//! `/predictions/…` and the KServe v2 model routes pass through, the
//! health, readiness and metrics routes are its own. Any number of gateways can run side by side.

pub mod grpc;
pub mod proxy;
pub mod routes;
pub mod wake;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer, ResponseError};
use anyhow::{Context, Result};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tracing::info;

use self::routes::{Source, Table};
use crate::http::error::{ApiError, Code};
use crate::http::health::ping;
use crate::http::only;
use crate::http::v2::{live, server_metadata};

/// Default of `--upstream-timeout-ms`.
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 30_000;
/// Connections to the nodes one gateway worker holds open at most.
const UPSTREAM_CONNECTIONS: usize = 4096;

/// Default of `--reload-interval-ms`.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1_000;

/// Everything `stowage gateway` needs.
pub struct GatewayOptions {
    pub host: String,
    pub port: u16,
    /// KServe v2 over gRPC's listener (`--grpc-port`).
    pub grpc_port: Option<u16>,
    pub workers: usize,
    pub source: Source,
    pub upstream_timeout: Duration,
    pub reload_every: Duration,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// Client connections held open at most (default: from the open-file limit).
    pub max_connections: Option<usize>,
    /// From SIGTERM to refusing new requests: forwarding on, not ready.
    pub shutdown_delay: Duration,
    /// How long in-flight requests may take to finish once the gateway stops accepting.
    pub drain: Duration,
    /// How long a request waits for a node that scales to zero to start (`--hold-timeout-ms`).
    pub hold_timeout: Duration,
}

/// What the gateway's handlers share.
pub struct GatewayState {
    pub routes: Arc<Table>,
    pub metrics: PrometheusHandle,
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    /// Set on SIGTERM: /ready and /v2/health/ready fail while requests are still forwarded.
    pub leaving: std::sync::atomic::AtomicBool,
    /// Holds requests for nodes that scale to zero while they start.
    pub waker: wake::Waker,
}

/// Mounts the gateway's routes; used by `run` and by in-process tests.
pub fn configure(state: Arc<GatewayState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let timeout = state.upstream_timeout;
        cfg.app_data(web::Data::from(state))
            // One client per worker: its connection pool is the worker's. awc holds 100
            // connections by default and makes the 101st request wait for one: far too few for a
            // gateway in front of many nodes.
            .app_data(web::Data::new(
                awc::Client::builder()
                    .connector(awc::Connector::new().limit(UPSTREAM_CONNECTIONS))
                    .timeout(timeout)
                    .disable_redirects()
                    .finish(),
            ))
            // Other methods get the node's JSON 405 naming those these take.
            .service(web::resource("/ping").get(ping).head(ping).default_service(only("GET, HEAD")))
            .service(web::resource("/ready").get(ready).head(ready).default_service(only("GET, HEAD")))
            .service(web::resource("/metrics").get(metrics).default_service(only("GET")))
            .service(web::resource("/models").get(models).default_service(only("GET")))
            .service(web::resource("/openapi.json").get(crate::http::openapi::gateway).default_service(only("GET")))
            .service(web::resource("/v2").get(server_metadata).default_service(only("GET")))
            .service(web::resource("/v2/health/live").get(live).default_service(only("GET")))
            .service(web::resource("/v2/health/ready").get(v2_ready).default_service(only("GET")))
            .service(web::resource("/predictions/{model_id}").to(proxy::forward))
            .service(web::resource("/async/predictions/{model_id}").to(proxy::forward))
            .service(web::resource("/async/results/{job_id}").to(proxy::forward))
            .service(web::resource("/v2/models/{model_id}").to(proxy::forward))
            .service(web::resource("/v2/models/{model_id}/{action}").to(proxy::forward))
            .default_service(web::to(proxy::no_such_route));
    }
}

/// Ready when it has routes: whether a node answers is for the node's own readiness to say. The
/// same bodies as a node's `/ready` (docs/http-api.md, "The gateway"): `{"status": "ready", …}`,
/// else 503 `not_ready`.
async fn ready(state: web::Data<GatewayState>) -> HttpResponse {
    match routed(&state) {
        Ok((models, nodes)) => {
            HttpResponse::Ok().json(json!({"status": "ready", "routes": {"models": models, "nodes": nodes}}))
        }
        Err(e) => e.error_response(),
    }
}

/// KServe v2 readiness, with the node's bodies: `{"ready": true}`, else 503 `{"error"}`.
async fn v2_ready(state: web::Data<GatewayState>) -> HttpResponse {
    match routed(&state) {
        Ok(_) => HttpResponse::Ok().json(json!({"ready": true})),
        Err(e) => e.v2_response(),
    }
}

/// (models, nodes) the gateway routes to, or `not_ready` when it has no routes.
fn routed(state: &GatewayState) -> Result<(usize, usize), ApiError> {
    if state.leaving.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(ApiError::new(Code::NotReady, "the gateway is shutting down"));
    }
    let routes = state.routes.get();
    let nodes: std::collections::HashSet<&str> =
        routes.models.values().flat_map(|r| r.nodes.iter().map(|u| u.node.as_str())).collect();
    match routes.models.len() {
        0 => Err(ApiError::new(Code::NotReady, "the gateway has no routes")),
        models => Ok((models, nodes.len())),
    }
}

async fn metrics(state: web::Data<GatewayState>) -> HttpResponse {
    stowage_node::metrics::collect_process();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

/// Every model the gateway routes, with its node and that node's URL (a model with replicas:
/// the first, and all of them in `replicas`).
async fn models(state: web::Data<GatewayState>) -> HttpResponse {
    let routes = state.routes.get();
    let mut list: Vec<_> = routes.models.iter().collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    let models: Vec<_> = list
        .iter()
        .map(|(m, r)| {
            let up = r.first();
            let mut entry = json!({"id": m, "node": up.node, "url": up.base});
            if r.nodes.len() > 1 {
                entry["replicas"] = r.nodes.iter().map(|u| json!({"node": u.node, "url": u.base})).collect();
            }
            entry
        })
        .collect();
    HttpResponse::Ok().json(json!({"models": models}))
}

pub fn run(opts: GatewayOptions) -> Result<()> {
    let table = Table::new(opts.source.clone()).context("the gateway needs routes to start")?;
    table.watch(opts.reload_every).context("cannot start the route watcher")?;
    let state = Arc::new(GatewayState {
        routes: table.clone(),
        metrics: stowage_node::metrics::install(),
        upstream_timeout: opts.upstream_timeout,
        max_body_bytes: opts.max_body_bytes,
        body_timeout: opts.body_timeout,
        leaving: std::sync::atomic::AtomicBool::new(false),
        waker: wake::Waker::new(opts.hold_timeout),
    });
    let signalled = state.clone();
    let addr = (opts.host.as_str(), opts.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}:{}", opts.host, opts.port))?
        .next()
        .with_context(|| format!("no address for {}", opts.host))?;
    let workers = opts.workers.max(1);
    let files = crate::http::server::raise_open_file_limit();
    // Each client connection may need one to a node: two files each, after the reserve.
    let connections = opts.max_connections.unwrap_or_else(|| crate::http::server::connections_within(files, 64, 2));
    info!(open_files = files, max_connections = connections, "connection limit");
    let grpc = match opts.grpc_port {
        Some(port) => {
            let routes = tonic::service::Routes::new(grpc::GatewayService::server(state.clone()));
            Some(crate::http::server::grpc_server(&opts.host, port, workers, routes)?)
        }
        None => None,
    };
    let drain = opts.drain.max(Duration::from_secs(1));
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new().wrap(actix_web::middleware::from_fn(crate::trace::traced)).configure(configure(state.clone()))
        })
        // Each connection's socket, so that a body cut short can close it (`http::body`).
        .on_connect(crate::http::connected)
        .workers(workers)
        .shutdown_timeout(opts.drain.as_secs().max(1))
        .disable_signals()
        // actix counts per worker: split the budget over them.
        .max_connections(connections.div_ceil(workers).max(1))
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr}"))?;
        for addr in server.addrs() {
            info!(%addr, models = table.get().models.len(), "gateway listening");
        }
        let server = server.run();
        let handle = server.handle();
        let delay = opts.shutdown_delay;
        actix_web::rt::spawn(async move {
            crate::http::server::wait_for_signal().await;
            signalled.leaving.store(true, std::sync::atomic::Ordering::Relaxed);
            if !delay.is_zero() {
                info!(seconds = delay.as_secs_f64(), "leaving: not ready, forwarding on while load balancers let go");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = crate::http::server::wait_for_signal() => info!("a second signal: not waiting any longer"),
                }
            }
            info!("shutting down: refusing new requests, draining in-flight ones");
            let grpc_drained = grpc.map(|g| g.stop(drain));
            handle.stop(true).await;
            if let Some(done) = grpc_drained {
                done.await;
            }
        });
        server.await.context("gateway failed")?;
        info!("stopped");
        Ok(())
    })
}
