//! The request path, from a parsed request to its answer: `predict` (the node's one call: find
//! the model, admit the request — `admission` —, queue it as plain data — `request` — with the
//! model's `batch`er), the node's inference threads (`pool`) that tokenize (`tokenize`), run the
//! engine (`stowage-engine`) and postprocess (`postprocess`), and the answer back through the
//! request's channel.

pub mod admission;
pub mod batch;
pub mod pace;
pub mod pool;
pub mod postprocess;
pub mod predict;
pub mod request;
pub mod tokenize;
