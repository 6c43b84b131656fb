//! Stowage: serve thousands of small models from a few packed nodes.
//!
//! This crate is the `stowage` binary's library: the command line (`cli`), each command's
//! implementation (`commands`), a node's HTTP side (`http`), the gateway (`gateway`) and the
//! open-loop load generator of `attack --rate` and `verify` (`openloop`). A node without HTTP is
//! `stowage-node`, its engines `stowage-engine`; the planner is `stowage-planner`, manifests and
//! load-test targets `stowage-deployment`, shared types `stowage-core`, generated models
//! `stowage-synth`. docs/architecture.md maps them and says what each may depend on.

pub mod cli;
pub mod commands;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod openloop;
pub mod trace;

pub use stowage_synth as synth;
