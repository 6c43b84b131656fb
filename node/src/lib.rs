//! A Stowage node, everything but HTTP: which models it serves (`spec`), where their files come
//! from (`storage`: local disk, S3 into a cache), how each is loaded (`load`) and brought up at
//! start (`startup`), the registry of their states (`registry`), and the request path:
//! `predict` (admission, `admission`) → the model's queue of plain-data requests (`request`,
//! `batch`) → an inference thread (`pool`) that tokenizes (`tokenize`), runs the engine
//! (`stowage-engine`) and postprocesses (`postprocess`) → the answer back through the request's
//! channel. Metrics are described in `metrics`. This crate has no HTTP dependency; the crate map
//! and what each crate may depend on are in docs/architecture.md.

pub mod admission;
pub mod batch;
pub mod cold;
pub mod load;
pub mod metrics;
pub mod pool;
pub mod postprocess;
pub mod predict;
pub mod process;
pub mod reconcile;
pub mod registry;
pub mod request;
pub mod spec;
pub mod startup;
pub mod storage;
pub mod tokenize;

pub use predict::{Config, Node, Target};
pub use request::{Answer, PredictError, Prediction, Request};
