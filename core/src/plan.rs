//! The packing plan (`plan.json`): which node runs which models. Written by `stowage plan`, read by
//! `stowage serve`, `stowage manifests` and `stowage targets`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ident::is_dns_label;

/// The `format` field of every plan this version writes and reads.
pub const PLAN_FORMAT: &str = "stowage-plan/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format: String,
    pub catalog_sha256: String,
    pub cost_per_hour: f64,
    pub lower_bound_per_hour: f64,
    pub solver: SolverInfo,
    pub nodes: Vec<PlanNode>,
    /// What changed from the previous plan (`stowage plan --previous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<crate::Changes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolverInfo {
    /// e.g. `milp-cbc`, `heuristic+lns`.
    pub method: String,
    /// Wall time of the solve; the only field that differs between runs on the same catalog.
    pub seconds: f64,
    /// True only when optimality was proven (by the MILP or by matching the lower bound).
    pub proven_optimal: bool,
    /// (cost − lower bound) / cost.
    #[serde(default)]
    pub gap: f64,
    /// Which bound: `continuous LP`, `column generation, converged`, `column generation, Farley
    /// at the time limit`, `MILP branch and bound` (empty in plans written before it existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bound: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanNode {
    /// DNS label; names the node's Kubernetes Service.
    pub id: String,
    pub instance_type: String,
    #[serde(default)]
    pub family: String,
    pub price_per_hour: f64,
    /// Model ids, sorted: every model the node serves, hot or cold.
    pub models: Vec<String>,
    pub usage: Usage,
    /// The models of `models` that are cold: loaded on their first request into the node's cold
    /// pool, evicted when it is full (least recently used first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cold_models: Vec<String>,
    /// Memory the cold models share, in MiB (0 without cold models).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cold_pool_mib: f64,
    /// The response times the planner predicts for the node at its peak (all its models at their
    /// `peak_rps`): its compute units as a queue of its models' service times (docs/formats.md,
    /// "Latency"). Absent when the node would be at or over capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Predicted>,
    /// The P90 target the node must keep: the tightest of its models' (`slo_p90_ms`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_p90_ms: Option<f64>,
    /// Replicas the node keeps when idle: 1, or 0 for a node that scales to zero (its models all
    /// `scale_to_zero`, or their traffic below `[limits] scale_to_zero_below_rps`); written only
    /// when 0.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub min_replicas: u32,
    /// The models of `models` that are on other nodes too (replicas: more traffic than one node
    /// serves, or the catalog's `min_replicas`), with the share of the model's traffic this node
    /// carries; the shares of a model over its nodes add up to 1.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub shares: std::collections::BTreeMap<String, f64>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl PlanNode {
    /// Whether the node may have no replica: the gateway holds its requests while it starts.
    pub fn scales_to_zero(&self) -> bool {
        self.min_replicas == 0
    }
}

/// Predicted response-time percentiles of a node at its peak, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicted {
    pub p50_ms: f64,
    pub p90_ms: f64,
}

/// Why `text` is some other kind of file than a plan (a catalog, another JSON document), if it
/// clearly is; a plan with a defect is left to the parser's line-and-column errors.
fn not_a_plan(text: &str) -> Option<String> {
    let start = text.trim_start();
    if start.is_empty() {
        return Some("the file is empty".into());
    }
    if !start.starts_with('{') {
        let catalog = ["[[models]]", "[instance_types", "[limits]", "[profiles"].iter().any(|s| text.contains(s));
        return Some(if catalog {
            "it is a catalog (TOML); plan it first: stowage plan --catalog FILE --out plan.json".into()
        } else {
            "it is not a JSON object".into()
        });
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) if !o.contains_key("format") => {
            Some("it has no \"format\" field (plans have \"format\": \"stowage-plan/v1\")".into())
        }
        _ => None,
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Share of the node's memory and compute that its models use (of the whole node, not of the limit).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    pub memory: f64,
    pub utilization: f64,
}

/// Why a plan file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    // The reason is in the sentence, not a `source` too (anyhow's `{e:#}` would say it twice).
    #[error("cannot read plan {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Json { path: String, line: usize, column: usize, message: String },
    #[error("{path}: {defect}")]
    Invalid { path: String, defect: PlanDefect },
    #[error("{path}: not a plan: {why} (a plan is the JSON file that `stowage plan --out` writes)")]
    NotAPlan { path: String, why: String },
    #[error(transparent)]
    Catalog(#[from] crate::CatalogError),
    #[error(
        "{catalog}: not the catalog {plan} was planned from (the catalog's sha256 is {got}, the plan's catalog_sha256 {want}); \
         if the catalog was edited, re-plan it (stowage plan --catalog {catalog} --previous {plan}), else pass the catalog the plan was made from (--catalog)"
    )]
    WrongCatalog { catalog: String, plan: String, got: String, want: String },
}

/// What a well-formed plan file may still get wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanDefect {
    #[error("format {0:?} is not supported (expected {PLAN_FORMAT:?})")]
    Format(String),
    #[error("node id {0:?} is not a DNS label")]
    NodeId(String),
    #[error("node id {0:?} appears twice")]
    DuplicateNode(String),
    #[error("model {model:?} is on both {first:?} and {second:?} without a share of its traffic on each (\"shares\")")]
    ModelTwice { model: String, first: String, second: String },
    #[error("model {model:?} has replicas whose shares of its traffic add up to {total}, not 1")]
    Shares { model: String, total: String },
}

impl Plan {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PlanError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PlanError::Io { path: name.clone(), error })?;
        Self::parse(&name, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Self, PlanError> {
        if let Some(why) = not_a_plan(text) {
            return Err(PlanError::NotAPlan { path: name.to_string(), why });
        }
        let plan: Plan = serde_json::from_str(text).map_err(|e| PlanError::Json {
            path: name.to_string(),
            line: e.line(),
            column: e.column(),
            // serde_json ends its sentence with the place, which the error already starts with.
            message: {
                let m = e.to_string();
                let at = format!(" at line {} column {}", e.line(), e.column());
                m.strip_suffix(&at).map(str::to_string).unwrap_or(m)
            },
        })?;
        plan.validate().map_err(|defect| PlanError::Invalid { path: name.to_string(), defect })?;
        Ok(plan)
    }

    /// Checks what serde cannot: the format, DNS-label node ids, each model on one node.
    pub fn validate(&self) -> Result<(), PlanDefect> {
        if self.format != PLAN_FORMAT {
            return Err(PlanDefect::Format(self.format.clone()));
        }
        let mut nodes = std::collections::BTreeSet::new();
        let mut models = std::collections::BTreeMap::new();
        for n in &self.nodes {
            if !is_dns_label(&n.id) {
                return Err(PlanDefect::NodeId(n.id.clone()));
            }
            if !nodes.insert(n.id.as_str()) {
                return Err(PlanDefect::DuplicateNode(n.id.clone()));
            }
            for m in &n.models {
                let replica = n.shares.get(m).copied();
                if let Some((other, shared)) = models.insert(m.as_str(), (n.id.as_str(), replica)) {
                    if shared.is_none() || replica.is_none() {
                        return Err(PlanDefect::ModelTwice {
                            model: m.clone(),
                            first: other.to_string(),
                            second: n.id.clone(),
                        });
                    }
                }
            }
        }
        let mut totals: std::collections::BTreeMap<&str, f64> = Default::default();
        for n in &self.nodes {
            for (m, share) in &n.shares {
                *totals.entry(m.as_str()).or_default() += share;
            }
        }
        if let Some((m, total)) = totals.into_iter().find(|(_, t)| (t - 1.0).abs() > 1e-3) {
            return Err(PlanDefect::Shares { model: m.to_string(), total: format!("{total:.4}") });
        }
        Ok(())
    }

    /// The nodes that serve `model`, with the share of its traffic each carries (1 for a model
    /// on one node).
    pub fn replicas_of(&self, model: &str) -> Vec<(&PlanNode, f64)> {
        self.nodes
            .iter()
            .filter(|n| n.models.iter().any(|m| m == model))
            .map(|n| (n, n.shares.get(model).copied().unwrap_or(1.0)))
            .collect()
    }

    pub fn node(&self, id: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The (first) node that hosts `model`.
    pub fn node_of(&self, model: &str) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.models.iter().any(|m| m == model))
    }

    /// Models of the plan, each once (a model with replicas is on several nodes).
    pub fn model_count(&self) -> usize {
        self.nodes.iter().map(|n| n.models.len()).sum::<usize>() - self.extra_replicas().1
    }

    /// Copies beyond the first of the models with replicas: (models with replicas, extra copies).
    pub fn extra_replicas(&self) -> (usize, usize) {
        let copies: usize = self.nodes.iter().map(|n| n.shares.len()).sum();
        let models: std::collections::BTreeSet<&str> =
            self.nodes.iter().flat_map(|n| n.shares.keys().map(String::as_str)).collect();
        (models.len(), copies - models.len())
    }

    /// The catalog this plan was made from: `catalog`, or `models.toml` beside the plan; its
    /// sha256 must match the plan's `catalog_sha256`.
    pub fn catalog(&self, plan_path: &Path, catalog: Option<&Path>) -> Result<crate::Catalog, PlanError> {
        let path = catalog.map(Path::to_path_buf).unwrap_or_else(|| plan_path.with_file_name("models.toml"));
        let c = crate::Catalog::load(&path)?;
        if c.sha256 != self.catalog_sha256 {
            return Err(PlanError::WrongCatalog {
                catalog: path.display().to_string(),
                plan: plan_path.display().to_string(),
                got: c.sha256,
                want: self.catalog_sha256.clone(),
            });
        }
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plan serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            format: PLAN_FORMAT.into(),
            catalog_sha256: "x".into(),
            cost_per_hour: 1.18,
            lower_bound_per_hour: 1.0,
            solver: SolverInfo {
                method: "milp".into(),
                seconds: 0.1,
                proven_optimal: false,
                gap: 0.15,
                bound: String::new(),
            },
            nodes: vec![PlanNode {
                id: "inf1-6xlarge-000".into(),
                instance_type: "inf1.6xlarge".into(),
                family: "inf1".into(),
                price_per_hour: 1.18,
                models: vec!["a".into(), "b".into()],
                usage: Usage { memory: 0.5, utilization: 0.1 },
                cold_models: vec![],
                cold_pool_mib: 0.0,
                predicted: Some(Predicted { p50_ms: 4.0, p90_ms: 9.5 }),
                slo_p90_ms: Some(100.0),
                min_replicas: 1,
                shares: Default::default(),
            }],
            changes: None,
        }
    }

    #[test]
    fn round_trips() {
        let p = plan();
        assert_eq!(Plan::parse("p.json", &p.to_json()).unwrap(), p);
        assert_eq!(p.node_of("b").unwrap().id, "inf1-6xlarge-000");
        assert_eq!(p.model_count(), 2);
        // `min_replicas` is written only for a node that scales to zero.
        assert!(!p.to_json().contains("min_replicas"));
        let mut zero = p.clone();
        zero.nodes[0].min_replicas = 0;
        assert!(zero.to_json().contains("\"min_replicas\": 0"));
        assert!(Plan::parse("p.json", &zero.to_json()).unwrap().nodes[0].scales_to_zero());
    }

    #[test]
    fn a_model_on_two_nodes_needs_shares_that_add_up() {
        let mut p = plan();
        let mut other = p.nodes[0].clone();
        other.id = "inf1-6xlarge-001".into();
        other.models = vec!["b".into()];
        p.nodes.push(other);
        assert!(matches!(p.validate(), Err(PlanDefect::ModelTwice { .. })));
        p.nodes[0].shares.insert("b".into(), 0.5);
        p.nodes[1].shares.insert("b".into(), 0.25);
        assert!(matches!(p.validate(), Err(PlanDefect::Shares { .. })));
        p.nodes[1].shares.insert("b".into(), 0.5);
        p.validate().unwrap();
        assert_eq!((p.model_count(), p.extra_replicas()), (2, (1, 1)));
        let r = Plan::parse("p.json", &p.to_json()).unwrap();
        assert_eq!(
            r.replicas_of("b").iter().map(|(n, s)| (n.id.as_str(), *s)).collect::<Vec<_>>(),
            [("inf1-6xlarge-000", 0.5), ("inf1-6xlarge-001", 0.5)]
        );
    }

    #[test]
    fn rejects_bad_plans() {
        let mut p = plan();
        p.format = "v0".into();
        assert!(Plan::parse("p.json", &p.to_json()).unwrap_err().to_string().contains("not supported"));
        let mut p = plan();
        p.nodes.push(p.nodes[0].clone());
        p.nodes[1].id = "other".into();
        assert!(Plan::parse("p.json", &p.to_json()).unwrap_err().to_string().contains("model \"a\" is on both"));
        let err = Plan::parse("p.json", "{\n  \"format\": 1").unwrap_err().to_string();
        assert!(err.starts_with("p.json:2:"), "{err}");
        let err = Plan::parse("p.json", "{bad").unwrap_err().to_string();
        assert_eq!(err, "p.json:1:2: key must be a string", "the place said once");
    }

    #[test]
    fn other_files_are_named_for_what_they_are() {
        let catalog = "[limits]\nmax_memory = 0.9\n\n[[models]]\nid = \"a\"\n";
        let err = Plan::parse("models.toml", catalog).unwrap_err().to_string();
        assert!(err.starts_with("models.toml: not a plan: it is a catalog (TOML)"), "{err}");
        let err = Plan::parse("x.json", "{\"models\": []}").unwrap_err().to_string();
        assert!(err.contains("not a plan: it has no \"format\" field"), "{err}");
        assert!(Plan::parse("x", "   ").unwrap_err().to_string().contains("the file is empty"));
        assert!(Plan::parse("x", "[1, 2]").unwrap_err().to_string().contains("not a JSON object"));
    }
}
