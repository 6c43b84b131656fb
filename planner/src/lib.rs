//! The offline side of Stowage: from a catalog to a plan (and, from a plan, to what deploys and
//! tests it). Nothing here runs at serving time.

pub mod bound;
pub mod catalogs;
pub mod heuristic;
pub mod milp;
pub mod problem;
pub mod report;
pub mod solve;
pub mod svg;

pub use solve::{plan, solve_problem, Method, Options, SolveError, Solved};
