//! Reading a request body, for the node's handlers and the gateway alike: at most `limit` bytes
//! (a declared Content-Length over it is refused before a byte is read), and within `deadline`
//! (the HTTP server's own timeout covers the request head only: a client that stalls mid-body
//! would hold its connection, memory and the drain on shutdown for ever).

use std::time::Duration;

use actix_web::web::{Bytes, BytesMut, Payload};
use actix_web::HttpRequest;
use futures_util::StreamExt;

use crate::http::error::{ApiError, Code};
use crate::http::state::AppState;

pub async fn read(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(Code::BodyTooLarge, format!("the body is over the {limit}-byte limit"));
    let declared =
        req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::new(Code::MalformedRequest, format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    let got = tokio::time::timeout(deadline, read).await.map_err(|_| {
        ApiError::new(Code::BodyTimeout, format!("the body did not arrive within {} ms", deadline.as_millis()))
    });
    // A body cut short leaves the connection mid-request: no later request on it can be parsed.
    // The answer says so (`Connection: close`), but a chunked body's end never comes, and the
    // server would wait for it before closing: end the reading side now, so the connection
    // closes once the answer is written.
    if matches!(
        &got,
        Err(_) | Ok(Err(ApiError { code: Code::BodyTimeout | Code::BodyTooLarge | Code::MalformedRequest, .. }))
    ) {
        end_reading(req);
    }
    got?
}

/// Shuts the reading side of `req`'s connection (where the server kept its socket).
fn end_reading(req: &HttpRequest) {
    if let Some(socket) = req.conn_data::<crate::http::Socket>() {
        // SAFETY: shutdown only changes the state of the socket, which the server keeps open
        // (and owns) for as long as this request lives.
        unsafe {
            libc::shutdown(socket.0, libc::SHUT_RD);
        }
    }
}

/// A request's body for model `id` under the node's limits; a body refused for its size or its
/// slowness counts against the model in `stowage_rejected_total`.
pub async fn read_for_model(
    state: &AppState,
    id: &str,
    req: &HttpRequest,
    payload: &mut Payload,
) -> Result<Bytes, ApiError> {
    read(req, payload, state.config.max_body_bytes, state.config.body_timeout).await.inspect_err(|e| {
        let reason = match e.code {
            Code::BodyTooLarge => "too_large",
            Code::BodyTimeout => "body_timeout",
            _ => return,
        };
        state.node.rejected(id, reason);
    })
}
