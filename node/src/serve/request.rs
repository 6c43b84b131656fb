//! A prediction request as data: what the client asked (`Request`), the same request waiting in
//! its model's queue (`Queued`: inputs, reply channel, deadline, timings — as TEI's queue entries
//! are), what it gets back (`Answer`), and why it may not (`PredictError`). The HTTP layer builds
//! the first and renders the last two (docs/http-api.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use stowage_core::Engine;
use tokio::sync::oneshot;

/// What a client asks of a model, parsed but not yet checked against it.
#[derive(Debug, Clone)]
pub enum Request {
    /// Texts (and optional second texts of pairs), tokenized by the node.
    Texts { texts: Vec<String>, pairs: Option<Vec<String>>, truncate: bool },
    /// Token ids the client made itself, checked by the node.
    Tokens { input_ids: Vec<Vec<i64>>, attention_mask: Vec<Vec<i64>>, token_type_ids: Option<Vec<Vec<i64>>> },
}

impl Request {
    /// What is left of a request once it is tokenized: nothing.
    pub fn taken() -> Self {
        Request::Tokens { input_ids: Vec::new(), attention_mask: Vec::new(), token_type_ids: None }
    }

    /// Inputs in the request: the rows of its batch.
    pub fn rows(&self) -> usize {
        match self {
            Request::Texts { texts, .. } => texts.len(),
            Request::Tokens { input_ids, .. } => input_ids.len(),
        }
    }
}

/// What one input gets back.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Prediction {
    /// A classifier's answer: the best label, its probability, and every label's; and, for the
    /// tensor protocol (KServe v2), the probabilities and raw logits in label order.
    Class {
        label: String,
        score: f64,
        scores: BTreeMap<String, f64>,
        #[serde(skip)]
        probabilities: Vec<f64>,
        #[serde(skip)]
        logits: Vec<f32>,
    },
    /// An embedding model's answer: mean-pooled over the attention mask, L2-normalized.
    Embedding { embedding: Vec<f32> },
}

/// A request's answer: one prediction per input, the engine that ran it and the time of its call.
#[derive(Debug, Clone)]
pub struct Answer {
    pub predictions: Vec<Prediction>,
    pub backend: Engine,
    pub engine_seconds: f64,
}

/// Why a request got no answer. Each variant has its code in the one table (`error.rs`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("no model {0:?} on this node")]
    UnknownModel(String),
    #[error("model {0:?} is still loading")]
    NotReady(String),
    #[error("model {id:?} failed to load: {reason}")]
    ModelFailed { id: String, reason: String },
    /// The request does not fit the model (empty text, too many inputs, bad token ids…).
    #[error("{0}")]
    Invalid(String),
    #[error("model {0:?} has a full queue; retry later")]
    QueueFull(String),
    #[error("model {0:?} is cold and the node's cold pool has no room for it now (every loaded cold model is in use); retry later")]
    PoolFull(String),
    #[error("model {id:?} did not take the request within {} ms; retry later", limit.as_millis())]
    QueueTimeout { id: String, limit: Duration },
    /// The request would wait longer than the node's bound (`--max-queue-delay-ms`, else the
    /// model's latency target): refused at once instead.
    #[error("model {id:?} would take about {} ms to reach this request, over this node's {} ms bound; retry later", expected.as_millis(), bound.as_millis())]
    Overloaded { id: String, expected: Duration, bound: Duration },
    /// The client closed its side of the connection while the request waited: it never ran.
    #[error("the client closed its connection before model {0:?} ran the request")]
    ClientGone(String),
    /// The engine failed: its error, kept as the source.
    #[error(transparent)]
    Engine(#[from] stowage_engine::EngineError),
    /// The engine gave an answer that cannot be sent, or the inference threads are gone (the
    /// node's fault).
    #[error("{0}")]
    Inference(String),
}

impl PredictError {
    /// The answer to a request that waited longer than `limit` for model `id`, counted in
    /// `stowage_rejected_total{reason="queue_timeout"}`.
    pub fn timed_out(id: &str, limit: Duration) -> Self {
        crate::metrics::rejected(id, "queue_timeout");
        PredictError::QueueTimeout { id: id.to_string(), limit }
    }
}

/// Who asked: the client's connection, when the front end knows it, so that a request whose
/// client has hung up is dropped before it costs engine time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    /// The connection's socket; valid while the request is in flight (the server keeps the
    /// connection open until it has answered, or drops the request with it).
    fd: Option<std::os::fd::RawFd>,
}

impl Caller {
    /// A caller on connection `fd` (its socket as the HTTP server holds it).
    pub fn on(fd: std::os::fd::RawFd) -> Self {
        Self { fd: Some(fd) }
    }

    /// Whether the client has closed its side of the connection: the socket reports a hang-up or
    /// an error (data still to read, a pipelined request, is not a hang-up). Does not block.
    pub fn gone(&self) -> bool {
        let Some(fd) = self.fd else { return false };
        let mut p = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: poll reads and writes the one pollfd passed by pointer; a timeout of 0 returns
        // at once. A closed descriptor is reported in revents (POLLNVAL), not as undefined behaviour.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }
}

/// A request in its model's queue: plain data. The batcher takes it up on an inference thread,
/// and the reply goes back through `reply`, whatever happens (a dropped sender answers too: the
/// waiting side sees the channel closed).
pub struct Queued {
    pub request: Request,
    /// Inputs in the request (`request.rows()`, kept for the batcher's arithmetic).
    pub rows: usize,
    pub reply: oneshot::Sender<Result<Answer, PredictError>>,
    /// When the node took the request, and when its model admitted it.
    pub arrived: Instant,
    pub admitted: Instant,
    /// Longest the request may wait for its model, from `arrived` (`--queue-timeout-ms`).
    pub limit: Option<Duration>,
    pub caller: Caller,
    /// Its tokenized inputs, once tokenized (a request left out of a batch by the token budget
    /// keeps them for the next one).
    pub inputs: Option<stowage_engine::Inputs>,
    /// The request's span (docs/http-api.md, "Tracing"): its steps on the inference thread are
    /// its children. `queue` is open from its arrival until an engine call takes it up.
    pub span: tracing::Span,
    pub queue: tracing::Span,
}

impl Queued {
    /// Whether the request waited past its limit (its client may be long gone).
    pub fn expired(&self) -> Option<Duration> {
        self.limit.filter(|&t| self.arrived.elapsed() > t)
    }

    /// Whether nobody waits for the answer: the server dropped the request (its reply channel
    /// is closed), or the client hung up.
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed() || self.caller.gone()
    }
}
