//! Every integration test of the `stowage` package, as one test binary with a module per area
//! (linking the node server once instead of eleven times). Unit tests stay beside their code.

mod async_jobs;
mod cli_env;
mod cli_manifests;
mod cli_plan;
mod cli_profile;
mod cold_models;
mod common;
mod conformance;
mod dockerfiles;
mod e2e_nodes;
mod engine_choice;
mod exports;
mod fast_path;
mod gateway;
mod hardening;
mod http_api;
mod kserve;
mod layers;
mod live_nodes;
mod local_runtime;
mod logs;
mod open_loop;
mod openapi;
mod readme;
mod repository;
mod s3;
mod shutdown;
mod trace;
