//! One module per subcommand; each exposes `run(args)`.

pub mod plan;
