//! One module per subcommand; each exposes `run(args)`.

pub mod attack;
pub mod diff;
pub mod gateway;
pub mod manifests;
pub mod plan;
pub mod profile;
pub mod serve;
pub mod synth;
pub mod targets;
pub mod upload;
pub mod verify;
