//! One module per subcommand; each exposes `run(args)`.

pub mod manifests;
pub mod plan;
pub mod serve;
pub mod synth;
