//! The HTTP side of a node (docs/http-api.md): one file per resource, the error table
//! (`error.rs`), the handlers' state (`state.rs`) and the server's run and shutdown
//! (`server.rs`). Handlers parse, call the node (`stowage-node`) and render.

pub mod admin;
pub mod body;
pub mod error;
pub mod health;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod predictions;
pub mod server;
pub mod state;
pub mod v2;

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest, HttpResponse, ResponseError};

use self::error::{ApiError, Code};
use self::state::AppState;

/// Mounts every route; used by the server and by in-process tests. Whatever no route takes gets a
/// JSON error like every other: 404 `not_found` for an unknown path, 405 `method_not_allowed`
/// (with `Allow`) for a known path and another method.
pub fn configure(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .service(
                web::resource("/predictions/{model_id}")
                    .get(predictions::get)
                    .post(predictions::post)
                    .default_service(only("GET, POST")),
            )
            .service(web::resource("/async/predictions/{model_id}").post(jobs::submit).default_service(only("POST")))
            .service(web::resource("/async/results/{job_id}").get(jobs::result).default_service(only("GET")))
            // Health checks also answer HEAD (load balancers such as HAProxy's `httpchk` send it).
            .service(web::resource("/ping").get(health::ping).head(health::ping).default_service(only("GET, HEAD")))
            .service(web::resource("/ready").get(health::ready).head(health::ready).default_service(only("GET, HEAD")))
            .service(web::resource("/models").get(models::list).default_service(only("GET")))
            .service(web::resource("/models/{model_id}").get(models::one).default_service(only("GET")))
            .service(web::resource("/metrics").get(metrics::render).default_service(only("GET")))
            .service(web::resource("/openapi.json").get(openapi::node).default_service(only("GET")))
            // The Open Inference Protocol (KServe v2), for Triton and KServe clients.
            .service(web::resource("/v2").get(v2::server_metadata).default_service(only("GET")))
            .service(web::resource("/v2/health/live").get(v2::live).default_service(only("GET")))
            .service(web::resource("/v2/health/ready").get(v2::ready).default_service(only("GET")))
            .service(web::resource("/v2/models/{model_id}").get(v2::model_metadata).default_service(only("GET")))
            .service(web::resource("/v2/models/{model_id}/ready").get(v2::model_ready).default_service(only("GET")))
            .service(web::resource("/v2/models/{model_id}/infer").post(v2::infer).default_service(only("POST")))
            .default_service(web::to(no_such_route));
    }
}

/// The health checks alone, for `--probe-port`'s listener: the same handlers and answers as on
/// the serving port.
pub fn configure_probes(state: Arc<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .service(web::resource("/ping").get(health::ping).head(health::ping).default_service(only("GET, HEAD")))
            .service(web::resource("/ready").get(health::ready).head(health::ready).default_service(only("GET, HEAD")))
            .service(web::resource("/v2/health/live").get(v2::live).default_service(only("GET")))
            .service(web::resource("/v2/health/ready").get(v2::ready).default_service(only("GET")))
            .default_service(web::to(|req: HttpRequest| async move {
                let msg = format!(
                    "no route {} {}; the probe port serves /ping, /ready and /v2/health/{{live,ready}}",
                    req.method(),
                    req.path()
                );
                ApiError::new(Code::NotFound, msg).error_response()
            }));
    }
}

/// A connection's socket, kept by the server for its requests (`connected`).
#[derive(Clone, Copy)]
struct Socket(std::os::fd::RawFd);

/// `HttpServer::on_connect`: keeps each TCP connection's socket with it, so the node can tell
/// when a waiting request's client has hung up.
pub fn connected(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsRawFd;
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(Socket(tcp.as_raw_fd()));
    }
}

/// Who sent `req`: its connection, when the server kept it (in-process tests have none).
pub fn caller(req: &HttpRequest) -> stowage_node::Caller {
    req.conn_data::<Socket>().map_or_else(stowage_node::Caller::default, |s| stowage_node::Caller::on(s.0))
}

/// 405 for a method the resource does not take, naming those it does.
pub(crate) fn only(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        let e = ApiError::new(
            Code::MethodNotAllowed,
            format!("{} {} is not served; use {allow}", req.method(), req.path()),
        );
        let mut r = e.error_response();
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        r
    })
}

async fn no_such_route(req: HttpRequest) -> HttpResponse {
    let msg = format!(
        "no route {} {}; the node serves /predictions/{{model_id}}, /async/predictions/{{model_id}}, /async/results/{{job_id}}, /ping, /ready, /models, /models/{{model_id}}, /metrics and /v2 (KServe v2: /v2/health/…, /v2/models/{{model_id}}[/ready|/infer])",
        req.method(),
        req.path()
    );
    ApiError::new(Code::NotFound, msg).error_response()
}
