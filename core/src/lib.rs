//! Types shared by every part of Stowage: the model catalog (`models.toml`), the packing plan
//! (`plan.json`) and the identifiers both use. The planner writes these and the node server reads
//! them; this crate pulls in neither the solver nor the HTTP stack.

pub mod catalog;
pub mod changes;
pub mod diagnostic;
pub mod ident;
pub mod instance_types;
pub mod plan;

pub use catalog::{
    Catalog, CatalogError, Engine, Footprint, InstanceType, Limits, Model, Residency, UnknownEngine, MAX_REPLICAS,
};
pub use changes::{Changes, Move, Retype};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use ident::{is_dns_label, node_id};
pub use plan::{Plan, PlanDefect, PlanError, PlanNode, Predicted, SolverInfo, Usage, PLAN_FORMAT};
