//! One module per subcommand; each exposes `run(args)`.

pub mod plan;
pub mod serve;
pub mod synth;
