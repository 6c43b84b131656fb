//! The offline side of Stowage: from a catalog to a plan (and, from a plan, to what deploys and
//! tests it). Nothing here runs at serving time.

// Numeric code over several parallel per-type arrays: an index reads better than zipped iterators.
#![allow(clippy::needless_range_loop)]

pub mod bound;
pub mod catalogs;
pub mod heuristic;
pub mod manifests;
pub mod milp;
pub mod problem;
pub mod report;
pub mod solve;
pub mod svg;
pub mod tail;
pub mod targets;

pub use solve::{plan, solve_problem, Method, Options, SolveError, Solved};
