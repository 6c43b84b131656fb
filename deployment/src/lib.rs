//! From a plan to what runs and tests it: Kubernetes manifests (`manifests`) and load-test
//! targets (`targets`). Reads the plan and catalog types of `stowage-core`; knows nothing of
//! packing (`stowage-planner`) or serving (`stowage-node`).

pub mod jobs;
pub mod karpenter;
pub mod manifests;
pub mod monitoring;
pub mod slices;
pub mod targets;
