//! The admin API (docs/http-api.md, "Admin API"): `POST /admin/reload` reads the plan and catalog
//! again and moves the node to the set they name (`stowage_node::lifecycle::reconcile`), `GET /admin/plan`
//! shows what the node runs. It listens on its own port (`--admin-port`, loopback by default) and
//! never on the serving port; with a bearer token (`--admin-token-file` or `STOWAGE_ADMIN_TOKEN`)
//! every call must carry it.

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};
use stowage_node::lifecycle::reconcile::{Reconciler, ReloadResult};

use crate::http::error::{ApiError, Code};

pub struct AdminState {
    pub reconciler: Arc<Reconciler>,
    /// The loader's runtime: reloads fetch and load there, never on the HTTP workers.
    pub runtime: tokio::runtime::Handle,
    /// sha256 of the bearer token every call must carry, if one is set.
    token_sha256: Option<[u8; 32]>,
}

impl AdminState {
    pub fn new(reconciler: Arc<Reconciler>, runtime: tokio::runtime::Handle, token: Option<&str>) -> Self {
        Self { reconciler, runtime, token_sha256: token.map(|t| Sha256::digest(t.as_bytes()).into()) }
    }

    /// Refuses a call without the token (compared as digests, so the time taken says nothing of
    /// how much of it matched).
    fn authorize(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let Some(want) = &self.token_sha256 else { return Ok(()) };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, token)| token)
            .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
        match given {
            Some(g) if g.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 => Ok(()),
            Some(_) => Err(ApiError::new(Code::Unauthorized, "wrong bearer token")),
            None => Err(ApiError::new(Code::Unauthorized, "the admin API needs Authorization: Bearer <token>")),
        }
    }
}

/// Mounts the admin routes (on the admin listener only).
pub fn configure(state: Arc<AdminState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .service(web::resource("/admin/reload").post(reload).default_service(super::only("POST")))
            .service(web::resource("/admin/plan").get(plan).default_service(super::only("GET")))
            .default_service(web::to(|req: HttpRequest| async move {
                let msg = format!(
                    "no route {} {}; the admin API serves POST /admin/reload and GET /admin/plan",
                    req.method(),
                    req.path()
                );
                Err::<HttpResponse, _>(ApiError::new(Code::NotFound, msg))
            }));
    }
}

async fn reload(state: web::Data<AdminState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.authorize(&req)?;
    let reconciler = state.reconciler.clone();
    let outcome = state
        .runtime
        .spawn(async move { reconciler.reload("admin").await })
        .await
        .map_err(|e| ApiError::new(Code::InferenceFailed, format!("the reload crashed: {e}")))?;
    if outcome.result == ReloadResult::Refused {
        return Err(ApiError::new(Code::ReloadRefused, outcome.reason.unwrap_or_default()));
    }
    Ok(HttpResponse::Ok().json(outcome))
}

async fn plan(state: web::Data<AdminState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    state.authorize(&req)?;
    Ok(HttpResponse::Ok().json(state.reconciler.applied()))
}
