//! A node's own slice of a plan and its catalog: the plan with only that node, and the catalog
//! with only that node's models, the plan naming the slice's sha256. Each node's ConfigMap holds
//! its slice, so every object stays small whatever the number of models (a ConfigMap holds
//! 1 MiB; the whole catalog of 3,000 models is about that), and a node's ConfigMap changes only
//! when its own models do.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use stowage_core::{Plan, PlanNode};

/// A catalog that cannot be cut into slices.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    #[error("the catalog is not TOML that can be rewritten: {0}")]
    Toml(#[from] toml_edit::TomlError),
    #[error("the catalog's models must be [[models]] tables to be cut per node")]
    ModelsNotTables,
}

/// Cuts a catalog into per-node slices: parsed once, each slice the catalog without its models
/// (limits, instance types, profiles, comments as they were) and the node's `[[models]]` tables.
pub struct Slicer {
    base: toml_edit::DocumentMut,
    tables: HashMap<String, toml_edit::Table>,
}

impl Slicer {
    pub fn new(catalog_toml: &str) -> Result<Self, SliceError> {
        let mut base: toml_edit::DocumentMut = catalog_toml.parse()?;
        let mut tables = HashMap::new();
        if let Some(item) = base.get_mut("models") {
            let all = item.as_array_of_tables_mut().ok_or(SliceError::ModelsNotTables)?;
            for t in all.iter() {
                if let Some(id) = t.get("id").and_then(|v| v.as_str()) {
                    tables.insert(id.to_string(), t.clone());
                }
            }
            all.clear();
        }
        Ok(Self { base, tables })
    }

    /// The catalog text with only `models` among its `[[models]]`, in that order.
    pub fn slice(&self, models: &[String]) -> String {
        let mut doc = self.base.clone();
        let mut part = toml_edit::ArrayOfTables::new();
        for t in models.iter().filter_map(|m| self.tables.get(m)) {
            part.push(t.clone());
        }
        if !part.is_empty() {
            doc.insert("models", toml_edit::Item::ArrayOfTables(part));
        }
        doc.to_string()
    }
}

/// One node's slice of a catalog (`Slicer` cuts many from one parse).
pub fn catalog_slice(catalog_toml: &str, models: &[String]) -> Result<String, SliceError> {
    Ok(Slicer::new(catalog_toml)?.slice(models))
}

/// The sha256 a node computes of a catalog file with this text.
pub fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The plan with only `node`, made from the catalog slice whose sha256 is `catalog_sha256`. It
/// holds nothing that changes when only other nodes do (no solver time, no `changes` block), so
/// a re-plan rewrites the ConfigMaps of changed nodes only.
pub fn plan_slice(plan: &Plan, node: &PlanNode, catalog_sha256: &str) -> Plan {
    Plan {
        format: plan.format.clone(),
        catalog_sha256: catalog_sha256.to_string(),
        cost_per_hour: node.price_per_hour,
        lower_bound_per_hour: node.price_per_hour,
        solver: stowage_core::SolverInfo {
            method: "slice".into(),
            seconds: 0.0,
            proven_optimal: false,
            gap: 0.0,
            bound: String::new(),
        },
        // A model's shares over its replicas' nodes are the whole plan's (a slice's would not
        // add up); the node has no use for them.
        nodes: vec![PlanNode { shares: Default::default(), ..node.clone() }],
        changes: None,
    }
}
