//! The offline side of Stowage: from a catalog to a plan. Nothing here runs at serving time; what
//! deploys and load-tests a plan is `stowage-deployment`.

// Numeric code over several parallel per-type arrays: an index reads better than zipped iterators.
#![allow(clippy::needless_range_loop)]

pub mod bound;
pub mod catalogs;
pub mod cold;
pub mod colgen;
pub mod heuristic;
pub mod latency;
pub mod milp;
pub mod problem;
pub mod replan;
pub mod replicas;
pub mod report;
pub mod slo;
pub mod solve;
pub mod svg;
pub mod tail;
pub mod targets;

pub use cold::{characteristic_time, misses_per_second};
pub use solve::{
    plan, solve_problem, BoundKind, Method, Options, SolveError, Solved, DEFAULT_BOUND_SECONDS,
    DEFAULT_EXACT_MAX_MODELS, DEFAULT_LNS_ITERATIONS, DEFAULT_SEED, DEFAULT_TIME_LIMIT_SECONDS,
};
