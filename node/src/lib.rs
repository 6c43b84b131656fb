//! A Stowage node, everything but HTTP, in two flows:
//! - `serve/`, the request path: `predict` (find the model, admit the request, queue it as data
//!   with the model's batcher) → an inference thread that tokenizes, runs the engine
//!   (`stowage-engine`) and postprocesses → the answer back through the request's channel;
//! - `lifecycle/`, a model's life: which models the node serves (`spec`), their files (`storage`:
//!   local disk, S3 into a cache), loading (`load`, `startup`), the registry of their states, the
//!   cold pool, and live reloads (`diff`, `reconcile`).
//!
//! `start` assembles a node from both (`start(options) -> RunningNode`); `error` is the one table
//! of error codes; `metrics` describes every metric. This crate has no HTTP dependency; the crate
//! map and what each crate may depend on are in docs/architecture.md.

pub mod error;

pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod process;
pub mod serve;
pub mod start;

pub use serve::predict::{Config, Node, Target};
pub use serve::request::{Answer, Caller, PredictError, Prediction, Request};
pub use start::{start, NodeOptions, RunningNode, StartError};

/// A child span of `parent` for one step of a request (exported with `--otlp-endpoint`; target
/// `stowage::step`, which the logs leave out unless `RUST_LOG` names it); none where `parent`
/// is none (its request is not traced).
#[macro_export]
macro_rules! step {
    ($parent:expr, $name:literal $(, $($fields:tt)*)?) => {{
        let parent: &::tracing::Span = $parent;
        if parent.is_none() {
            ::tracing::Span::none()
        } else {
            ::tracing::info_span!(target: "stowage::step", parent: parent, $name $(, $($fields)*)?)
        }
    }};
}
