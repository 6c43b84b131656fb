//! The command line: one binary, one subcommand per step of the data flow (see DESIGN.md).
//! Every flag also reads an environment variable `STOWAGE_<FLAG>`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "Pack thousands of small models onto the cheapest instances, and serve them"
)]
pub struct Cli {
    /// Log as JSON lines (for clusters) instead of human-readable text.
    #[arg(long, global = true, env = "STOWAGE_JSON_LOGS")]
    pub json_logs: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack every model of a catalog onto the cheapest set of instances; write plan.json.
    Plan(PlanArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanMethod {
    /// Exact MILP up to --exact-max-models models, heuristic with a lower bound above.
    Auto,
    /// Exact MILP (CBC) whatever the size, within --time-limit.
    Exact,
    /// Heuristic and large-neighbourhood search only.
    Heuristic,
    /// Plain first-fit decreasing, no improvement: the baseline benchmarks compare against.
    Ffd,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Model catalog to pack (models.toml).
    #[arg(long, env = "STOWAGE_CATALOG")]
    pub catalog: PathBuf,

    /// Where to write the plan.
    #[arg(long, env = "STOWAGE_OUT", default_value = "plan.json")]
    pub out: PathBuf,

    /// Also draw the packing as an SVG picture here.
    #[arg(long, env = "STOWAGE_SVG")]
    pub svg: Option<PathBuf>,

    /// Wall-clock limit for the solver, in seconds. Plans are deterministic unless it is reached.
    #[arg(long, env = "STOWAGE_TIME_LIMIT", default_value_t = 30.0)]
    pub time_limit: f64,

    /// Solver to use.
    #[arg(long, env = "STOWAGE_METHOD", value_enum, default_value_t = PlanMethod::Auto)]
    pub method: PlanMethod,

    /// With --method auto, the largest catalog solved by the exact MILP.
    #[arg(long, env = "STOWAGE_EXACT_MAX_MODELS", default_value_t = 120)]
    pub exact_max_models: usize,

    /// Iterations of the large-neighbourhood search.
    #[arg(long, env = "STOWAGE_LNS_ITERATIONS", default_value_t = 3000)]
    pub lns_iterations: usize,

    /// Seed of the search's random choices.
    #[arg(long, env = "STOWAGE_SEED", default_value_t = 0x0570_7a6e)]
    pub seed: u64,
}
