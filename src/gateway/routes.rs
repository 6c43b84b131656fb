//! The gateway's route table: model id → the node that serves it and that node's base URL, from
//! a plan (with a URL template) or from a route map (`scripts/deploy.sh`'s routes.json). The file
//! is read again when it changes — polled, so that a ConfigMap's symlink swap, an editor's
//! rename or `mv` all count — and a file that cannot be used changes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

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
#[derive(Debug, Default, PartialEq, Eq)]
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
    /// Requests this gateway has sent it that are not answered yet, and when it was last found
    /// unreachable: how a model with replicas picks one.
    pub load: Load,
}

/// What the gateway knows of a node's load now (never part of the routes' equality).
#[derive(Debug, Default)]
pub struct Load {
    inflight: AtomicUsize,
    /// Milliseconds after the gateway's start until which the node is passed over.
    down_until_ms: AtomicU64,
}

impl PartialEq for Load {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Load {}

/// How long a node that could not be reached is passed over by a model's other replicas.
const DOWN_FOR: Duration = Duration::from_secs(2);

/// Milliseconds since the process started.
fn now_ms() -> u64 {
    static START: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// A request in flight to a node, counted until it is dropped.
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.load.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Counts a request sent to the node until the guard is dropped.
    pub fn sending(self: &Arc<Self>) -> InFlight {
        self.load.inflight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The node could not be reached: its model's other replicas take its requests for a while.
    pub fn unreachable(&self) {
        self.load.down_until_ms.store(now_ms() + DOWN_FOR.as_millis() as u64, Ordering::Relaxed);
    }

    fn down(&self) -> bool {
        self.load.down_until_ms.load(Ordering::Relaxed) > now_ms()
    }
}

/// The nodes of one model: one, or its replicas'.
#[derive(Debug, Default)]
pub struct Replicas {
    pub nodes: Vec<Arc<Upstream>>,
    /// Where the next pick starts: ties go round.
    next: AtomicUsize,
}

impl PartialEq for Replicas {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Eq for Replicas {}

impl Replicas {
    fn of(nodes: Vec<Arc<Upstream>>) -> Self {
        Self { nodes, next: AtomicUsize::new(0) }
    }

    /// The node to send the model's next request to, of those not `tried` yet: the one with the
    /// fewest requests in flight from this gateway (least outstanding requests; ties in turn),
    /// passing over nodes found unreachable in the last seconds unless all are.
    pub fn pick(&self, tried: &[usize]) -> Option<(usize, Arc<Upstream>)> {
        let n = self.nodes.len();
        let start = if n > 1 { self.next.fetch_add(1, Ordering::Relaxed) } else { 0 };
        let best = |skip_down: bool| {
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|k| !tried.contains(k))
                .filter(|&k| !skip_down || !self.nodes[k].down())
                .min_by_key(|&k| self.nodes[k].load.inflight.load(Ordering::Relaxed))
        };
        best(true).or_else(|| best(false)).map(|k| (k, self.nodes[k].clone()))
    }

    /// The first node (for what names one node per model).
    pub fn first(&self) -> &Arc<Upstream> {
        &self.nodes[0]
    }
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
    pub models: HashMap<String, Replicas>,
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
                .or_insert_with(|| {
                    Arc::new(Upstream {
                        node: node.to_string(),
                        base,
                        grpc,
                        named,
                        scales_to_zero,
                        load: Load::default(),
                    })
                })
                .clone()
        };
        let mut models: HashMap<String, Vec<Arc<Upstream>>> = HashMap::new();
        match self {
            Source::Plan { path, template, grpc_template, namespace } => {
                let plan = Plan::load(path)?;
                for n in &plan.nodes {
                    let fill = |t: &str| {
                        t.replace("{node}", &n.id).replace("{namespace}", namespace).trim_end_matches('/').to_string()
                    };
                    let up = upstream(&n.id, fill(template), Some(fill(grpc_template)), true, n.scales_to_zero());
                    for m in &n.models {
                        models.entry(m.clone()).or_default().push(up.clone());
                    }
                }
            }
            Source::Map(path) => {
                let show = path.display().to_string();
                let text =
                    std::fs::read_to_string(path).map_err(|error| RoutesError::Read { path: show.clone(), error })?;
                let map: HashMap<String, serde_json::Value> =
                    serde_json::from_str(&text).map_err(|error| RoutesError::Map { path: show.clone(), error })?;
                let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
                for (model, value) in map {
                    // A model with replicas: a list of entries, one per node.
                    let entries = match &value {
                        serde_json::Value::Array(list) if !list.is_empty() => list.iter().collect(),
                        _ => vec![&value],
                    };
                    for entry in entries {
                        let Some((url, grpc, min_replicas)) = map_entry(entry) else {
                            return Err(RoutesError::Entry { path: show, model, value: entry.to_string() });
                        };
                        if !http(&url) {
                            return Err(RoutesError::Url { path: show, model, url });
                        }
                        // A node is its URL in a route map.
                        let base = url.trim_end_matches('/').to_string();
                        let node = base.split("://").nth(1).unwrap_or(&base).to_string();
                        let up = upstream(&node, base, grpc, false, min_replicas == 0);
                        models.entry(model.clone()).or_default().push(up);
                    }
                }
            }
        }
        Ok(Routes { models: models.into_iter().map(|(m, nodes)| (m, Replicas::of(nodes))).collect() })
    }
}

/// A route map entry: a URL, or `{"url", "grpc", "min_replicas"}` (no other key), as (URL, gRPC
/// address, min_replicas); `None` for anything else.
fn map_entry(entry: &serde_json::Value) -> Option<(String, Option<String>, u64)> {
    use serde_json::Value;
    let o = match entry {
        Value::String(url) => return Some((url.clone(), None, 1)),
        Value::Object(o) => o,
        _ => return None,
    };
    if o.keys().any(|k| !["url", "grpc", "min_replicas"].contains(&k.as_str())) {
        return None;
    }
    let min_replicas = match o.get("min_replicas") {
        None => 1,
        Some(v) => v.as_u64()?,
    };
    let grpc = match o.get("grpc") {
        None => None,
        Some(Value::String(g)) if g.starts_with("http://") || g.starts_with("https://") => {
            Some(g.trim_end_matches('/').to_string())
        }
        Some(_) => return None,
    };
    Some((o.get("url")?.as_str()?.to_string(), grpc, min_replicas))
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
    fn a_replica_is_picked_by_fewest_in_flight_ties_in_turn_and_a_down_one_passed_over() {
        let up = |n: &str| Arc::new(Upstream { node: n.into(), base: format!("http://{n}"), ..Default::default() });
        let r = Replicas::of(vec![up("a"), up("b"), up("c")]);
        let picks: Vec<usize> = (0..6).map(|_| r.pick(&[]).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Requests in flight on a and b: c takes the next ones.
        let (_a, _b) = (r.nodes[0].sending(), r.nodes[1].sending());
        assert!((0..3).all(|_| r.pick(&[]).unwrap().0 == 2));
        // c cannot be reached: passed over for a while, unless it is all that is left.
        r.nodes[2].unreachable();
        assert!((0..3).all(|_| r.pick(&[]).unwrap().0 != 2));
        assert_eq!(r.pick(&[0, 1]).unwrap().0, 2);
        assert!(r.pick(&[0, 1, 2]).is_none());
    }

    #[test]
    fn a_route_map_entry_may_list_a_models_replicas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let map = r#"{"m": [{"url": "http://n1:8080"}, "http://n2:8080"], "k": "http://n1:8080"}"#;
        std::fs::write(&path, map).unwrap();
        let routes = Source::Map(path.clone()).load().unwrap();
        let bases: Vec<&str> = routes.models["m"].nodes.iter().map(|u| u.base.as_str()).collect();
        assert_eq!(bases, ["http://n1:8080", "http://n2:8080"]);
        // One upstream per node, shared by its models.
        assert!(Arc::ptr_eq(&routes.models["m"].nodes[0], &routes.models["k"].nodes[0]));
        std::fs::write(&path, r#"{"m": [{"url": "http://n1:8080", "weight": 2}]}"#).unwrap();
        assert!(matches!(Source::Map(path).load(), Err(RoutesError::Entry { .. })));
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
        let base = |t: &Table, m: &str| t.get().models.get(m).map(|r| r.first().base.clone());
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
