//! The gateway's route table: model id → the node that serves it and that node's base URL, from
//! a plan (with a URL template) or from a route map (`scripts/deploy.sh`'s routes.json). The file
//! is read again when it changes — polled, so that a ConfigMap's symlink swap, an editor's
//! rename or `mv` all count — and a file that cannot be used changes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use stowage_core::Plan;
use tracing::{info, warn};

/// Default of `--node-url`: each node's in-cluster Service.
pub const DEFAULT_NODE_URL: &str = "http://{node}.{namespace}.svc.cluster.local:8080";
/// Default of `--node-grpc-url`: the gRPC port of each node's in-cluster Service.
pub const DEFAULT_NODE_GRPC_URL: &str = "http://{node}.{namespace}.svc.cluster.local:8001";

/// Where the routes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A plan; each node's URL is `template` with `{node}` and `{namespace}` filled in, its gRPC
    /// address `grpc_template` likewise.
    Plan { path: PathBuf, template: String, grpc_template: String, namespace: String },
    /// A JSON object of model id → node base URL, or → `{"url": …, "grpc": …, "min_replicas": 0}`
    /// (the node's gRPC address too; 0 for a node that scales to zero).
    Map(PathBuf),
}

/// One node as the gateway reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub node: String,
    pub base: String,
    /// The node's KServe v2 gRPC address (`http://host:port`), where the routes give one.
    pub grpc: Option<String>,
    /// Whether `node` is an id clients may see (a plan's); a route map's nodes are their
    /// addresses, which error bodies never show.
    pub named: bool,
    /// The node may have no replica (`min_replicas` 0): its requests are held while it starts.
    pub scales_to_zero: bool,
}

impl Upstream {
    /// The node as an error body names it.
    pub fn shown(&self) -> String {
        if self.named {
            format!("node {}", self.node)
        } else {
            "its node".to_string()
        }
    }
}

/// The routes in force.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub models: HashMap<String, Arc<Upstream>>,
}

/// Why a route file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    #[error(transparent)]
    Plan(#[from] stowage_core::PlanError),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: not a JSON object of model id → URL: {error}")]
    Map { path: String, error: serde_json::Error },
    #[error("{path}: model {model:?} has no http(s) URL: {url:?}")]
    Url { path: String, model: String, url: String },
    #[error(
        "{path}: model {model:?}: expected a URL or {{\"url\": …, \"grpc\": …, \"min_replicas\": 0}}, not {value}"
    )]
    Entry { path: String, model: String, value: String },
}

impl Source {
    fn path(&self) -> &Path {
        match self {
            Source::Plan { path, .. } | Source::Map(path) => path,
        }
    }

    /// Reads the routes.
    pub fn load(&self) -> Result<Routes, RoutesError> {
        let mut by_node: HashMap<String, Arc<Upstream>> = HashMap::new();
        // One upstream per node and gRPC address: a route map's entries for one URL may differ in
        // their gRPC address (or give none), and each model keeps what its own entry says.
        let mut upstream = |node: &str, base: String, grpc: Option<String>, named: bool, scales_to_zero: bool| {
            by_node
                .entry(format!("{node} {grpc:?} {scales_to_zero}"))
                .or_insert_with(|| Arc::new(Upstream { node: node.to_string(), base, grpc, named, scales_to_zero }))
                .clone()
        };
        let mut models = HashMap::new();
        match self {
            Source::Plan { path, template, grpc_template, namespace } => {
                let plan = Plan::load(path)?;
                for n in &plan.nodes {
                    let fill = |t: &str| {
                        t.replace("{node}", &n.id).replace("{namespace}", namespace).trim_end_matches('/').to_string()
                    };
                    let up = upstream(&n.id, fill(template), Some(fill(grpc_template)), true, n.scales_to_zero());
                    models.extend(n.models.iter().map(|m| (m.clone(), up.clone())));
                }
            }
            Source::Map(path) => {
                let show = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|error| RoutesError::Read { path: show.clone(), error })?;
                let map: HashMap<String, serde_json::Value> =
                    serde_json::from_str(&text).map_err(|error| RoutesError::Map { path: show.clone(), error })?;
                let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
                for (model, entry) in map {
                    let bad =
                        |model: String| RoutesError::Entry { path: show.clone(), model, value: entry.to_string() };
                    let (url, grpc, min_replicas) = match &entry {
                        serde_json::Value::String(url) => (url.clone(), None, 1),
                        serde_json::Value::Object(o) => {
                            if o.keys().any(|k| !["url", "grpc", "min_replicas"].contains(&k.as_str())) {
                                return Err(bad(model));
                            }
                            let min_replicas = match o.get("min_replicas") {
                                None => 1,
                                Some(v) => match v.as_u64() {
                                    Some(n) => n,
                                    None => return Err(bad(model)),
                                },
                            };
                            match (o.get("url"), o.get("grpc")) {
                                (Some(serde_json::Value::String(u)), None) => (u.clone(), None, min_replicas),
                                (Some(serde_json::Value::String(u)), Some(serde_json::Value::String(g))) if http(g) => {
                                    (u.clone(), Some(g.trim_end_matches('/').to_string()), min_replicas)
                                }
                                _ => return Err(bad(model)),
                            }
                        }
                        _ => return Err(bad(model)),
                    };
                    if !http(&url) {
                        return Err(RoutesError::Url { path: show, model, url });
                    }
                    // A node is its URL in a route map.
                    let base = url.trim_end_matches('/').to_string();
                    let node = base.split("://").nth(1).unwrap_or(&base).to_string();
                    models.insert(model, upstream(&node, base, grpc, false, min_replicas == 0));
                }
            }
        }
        Ok(Routes { models })
    }
}

/// What a file looked like when it was last read: a change in any of these reads it again.
fn stamp(path: &Path) -> Option<(SystemTime, u64, std::path::PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    // Kubernetes updates a mounted ConfigMap by pointing a symlink elsewhere: follow it too.
    let target = std::fs::canonicalize(path).unwrap_or_default();
    Some((meta.modified().ok()?, meta.len(), target))
}

/// The routes, shared by the request handlers and replaced whole when the file changes.
pub struct Table {
    pub source: Source,
    current: RwLock<Arc<Routes>>,
}

impl Table {
    /// Reads `source` once; the gateway refuses to start on a file it cannot use.
    pub fn new(source: Source) -> Result<Arc<Self>, RoutesError> {
        let routes = source.load()?;
        Ok(Arc::new(Self { source, current: RwLock::new(Arc::new(routes)) }))
    }

    pub fn get(&self) -> Arc<Routes> {
        self.current.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// Watches the file every `every` on a thread of its own, and swaps in what it reads when
    /// it changed and can be used; else logs why and keeps the routes it has.
    pub fn watch(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let table = self.clone();
        let mut seen = stamp(self.source.path());
        std::thread::Builder::new().name("stowage-routes".into()).spawn(move || loop {
            std::thread::sleep(every);
            let now = stamp(table.source.path());
            if now == seen {
                continue;
            }
            seen = now;
            match table.source.load() {
                Ok(routes) => {
                    let models = routes.models.len();
                    if let Ok(mut current) = table.current.write() {
                        *current = Arc::new(routes);
                    }
                    info!(path = %table.source.path().display(), models, "routes reloaded");
                }
                Err(e) => warn!(error = %e, "routes not reloaded: the file cannot be used; serving on with the routes in force"),
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(nodes: &[(&str, &[&str])]) -> String {
        let nodes: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(id, models)| {
                serde_json::json!({"id": id, "instance_type": "c5.xlarge", "family": "c5", "price_per_hour": 0.17,
                    "models": models, "usage": {"memory": 0.1, "utilization": 0.1}})
            })
            .collect();
        serde_json::json!({"format": "stowage-plan/v1", "catalog_sha256": "x", "cost_per_hour": 0.34,
            "lower_bound_per_hour": 0.34, "solver": {"method": "test", "seconds": 0.0, "proven_optimal": false},
            "nodes": nodes})
        .to_string()
    }

    #[test]
    fn a_new_plan_reroutes_and_a_broken_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, plan(&[("node-a", &["m1", "m2"]), ("node-b", &["m3"])])).unwrap();
        let source = Source::Plan {
            path: path.clone(),
            template: DEFAULT_NODE_URL.into(),
            grpc_template: DEFAULT_NODE_GRPC_URL.into(),
            namespace: "prod".into(),
        };
        let table = Table::new(source).unwrap();
        let base = |t: &Table, m: &str| t.get().models.get(m).map(|u| u.base.clone());
        assert_eq!(base(&table, "m3").as_deref(), Some("http://node-b.prod.svc.cluster.local:8080"));
        table.watch(Duration::from_millis(20)).unwrap();
        let settle = || std::thread::sleep(Duration::from_millis(300));

        // m3 moves to node-a, m1 is retired: no restart.
        std::fs::write(&path, plan(&[("node-a", &["m2", "m3"])])).unwrap();
        settle();
        assert_eq!(base(&table, "m3").as_deref(), Some("http://node-a.prod.svc.cluster.local:8080"));
        assert_eq!(base(&table, "m1"), None);

        // A file that cannot be used leaves the routes as they were.
        std::fs::write(&path, "{\"format\": \"nope\"").unwrap();
        settle();
        assert_eq!(table.get().models.len(), 2);
        // Replaced by rename (as editors, `mv` and the kubelet's symlink swap do): read again.
        let next = dir.path().join("next.json");
        std::fs::write(&next, plan(&[("node-c", &["m2"])])).unwrap();
        std::fs::rename(&next, &path).unwrap();
        settle();
        assert_eq!(base(&table, "m2").as_deref(), Some("http://node-c.prod.svc.cluster.local:8080"));
        assert_eq!(table.get().models.len(), 1);
    }
}
