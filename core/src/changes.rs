//! What changes from one plan to the next (docs/formats.md, "changes"): models added, removed and
//! moved, nodes added, removed, changed (other models or another type) and unchanged, and the
//! bytes a deployment must reload. `stowage plan --previous` writes it into the new plan;
//! `stowage diff A B` prints it for any two plans.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Catalog, Plan};

/// A model that runs on another node than before (or on a retyped node, which restarts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Move {
    pub model: String,
    pub from: String,
    pub to: String,
}

/// A node that keeps its id on another instance type: its pod moves to another machine, so its
/// models reload (they count as moved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retype {
    pub node: String,
    pub from: String,
    pub to: String,
}

/// The `changes` block of a plan made with `--previous`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// The previous plan's catalog.
    pub previous_catalog_sha256: String,
    pub previous_cost_per_hour: f64,
    /// The cost of a fresh plan of the new catalog, made in the same run (none from `diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_cost_per_hour: Option<f64>,
    pub models_added: Vec<String>,
    pub models_removed: Vec<String>,
    pub models_moved: Vec<Move>,
    /// Memory of the moved models on their new nodes: what must be loaded again (0 when the
    /// catalog is not known).
    pub moved_bytes: u64,
    pub nodes_added: Vec<String>,
    pub nodes_removed: Vec<String>,
    /// Nodes of both plans whose models or type differ.
    pub nodes_changed: Vec<String>,
    pub nodes_retyped: Vec<Retype>,
    pub nodes_unchanged: usize,
    /// Per instance type, the next index a new node id takes: ids of removed nodes are never
    /// given again.
    #[serde(default)]
    pub next_node_index: BTreeMap<String, usize>,
}

impl Changes {
    /// The differences from `previous` to `next`; moved bytes from `catalog` (the new one) when
    /// given.
    pub fn between(previous: &Plan, next: &Plan, catalog: Option<&Catalog>) -> Self {
        let (where_was, where_is) = (nodes_of(previous), nodes_of(next));
        let before: BTreeMap<&str, _> = previous.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let after: BTreeMap<&str, _> = next.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let retyped: Vec<Retype> = next
            .nodes
            .iter()
            .filter_map(|n| {
                let b = before.get(n.id.as_str())?;
                (b.instance_type != n.instance_type).then(|| Retype {
                    node: n.id.clone(),
                    from: b.instance_type.clone(),
                    to: n.instance_type.clone(),
                })
            })
            .collect();
        let restarted: BTreeSet<&str> = retyped.iter().map(|r| r.node.as_str()).collect();
        let mut moved = Vec::new();
        let mut moved_bytes = 0u64;
        for (m, now) in &where_is {
            let Some(was) = where_was.get(m) else { continue };
            // A node that gained the model took it from one that lost it (a new replica: from
            // its first node).
            let mut lost = was.difference(now);
            for to in now {
                let from = if was.contains(to) {
                    if !restarted.contains(to) {
                        continue;
                    }
                    *to
                } else {
                    lost.next().or_else(|| was.first()).copied().unwrap_or(to)
                };
                moved.push(Move { model: m.to_string(), from: from.to_string(), to: to.to_string() });
                moved_bytes += catalog.map_or(0, |c| model_bytes(c, m, &after[to].instance_type));
            }
        }
        let mut changed = Vec::new();
        let mut unchanged = 0;
        for n in &next.nodes {
            if let Some(b) = before.get(n.id.as_str()) {
                let (mut x, mut y) = (b.models.clone(), n.models.clone());
                x.sort();
                y.sort();
                if x != y || b.instance_type != n.instance_type {
                    changed.push(n.id.clone());
                } else {
                    unchanged += 1;
                }
            }
        }
        Changes {
            previous_catalog_sha256: previous.catalog_sha256.clone(),
            previous_cost_per_hour: previous.cost_per_hour,
            fresh_cost_per_hour: None,
            models_added: where_is.keys().filter(|m| !where_was.contains_key(*m)).map(|m| m.to_string()).collect(),
            models_removed: where_was.keys().filter(|m| !where_is.contains_key(*m)).map(|m| m.to_string()).collect(),
            models_moved: moved,
            moved_bytes,
            nodes_added: next
                .nodes
                .iter()
                .filter(|n| !before.contains_key(n.id.as_str()))
                .map(|n| n.id.clone())
                .collect(),
            nodes_removed: previous
                .nodes
                .iter()
                .filter(|n| !after.contains_key(n.id.as_str()))
                .map(|n| n.id.clone())
                .collect(),
            nodes_changed: changed,
            nodes_retyped: retyped,
            nodes_unchanged: unchanged,
            next_node_index: BTreeMap::new(),
        }
    }

    /// One line: `3 nodes changed, 115 unchanged, 1 added, 0 removed; 4 models moved (1.6 GiB to
    /// reload), 150 added, 150 removed`.
    pub fn summary(&self) -> String {
        let gib = self.moved_bytes as f64 / (1u64 << 30) as f64;
        let retyped = if self.nodes_retyped.is_empty() {
            String::new()
        } else {
            format!(" ({} retyped)", self.nodes_retyped.len())
        };
        format!(
            "{} nodes changed{retyped}, {} unchanged, {} added, {} removed; {} models moved ({gib:.1} GiB to reload), {} added, {} removed",
            self.nodes_changed.len(),
            self.nodes_unchanged,
            self.nodes_added.len(),
            self.nodes_removed.len(),
            self.models_moved.len(),
            self.models_added.len(),
            self.models_removed.len()
        )
    }
}

/// Memory of model `id` on a node of `instance_type`, in bytes (0 if the catalog does not say).
pub fn model_bytes(catalog: &Catalog, id: &str, instance_type: &str) -> u64 {
    let family = catalog.instance_type(instance_type).map(|t| t.family.as_str());
    catalog
        .model(id)
        .and_then(|m| family.and_then(|f| m.footprints.get(f)))
        .map_or(0, |f| (f.memory_mib * 1048576.0) as u64)
}

/// Each model of `p` with its nodes (several for a model with replicas).
fn nodes_of(p: &Plan) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut at: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for n in &p.nodes {
        for m in &n.models {
            at.entry(m.as_str()).or_default().insert(n.id.as_str());
        }
    }
    at
}
