//! Stowage: serve thousands of small models from a few packed nodes.
//!
//! This crate is the `stowage` binary's library: the command line (`cli`) and each command's
//! implementation (`commands`). The planner lives in `stowage-planner`, shared types in
//! `stowage-core`.

pub mod api;
pub mod backend;
pub mod batch;
pub mod cli;
pub mod commands;
pub mod error;
pub mod inference;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod storage;
pub mod synth;
