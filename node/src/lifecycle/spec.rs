//! Which models a node serves, and where each one's files are: a plan's node or catalog models by
//! id, turned into one `ModelSpec` each (docs/formats.md: the catalog and the plan).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stowage_core::{Catalog, CatalogError, Engine as EngineKind, Plan, PlanError, PlanNode};

use crate::lifecycle::storage::{Source, StorageError};

/// What the node needs to know to load one model. Two specs that are equal load the same model:
/// a reload keeps a model whose spec did not change, and loads anew one whose did (a new
/// artifact, tokenizer, config, engine or sha256).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub engine: EngineKind,
    pub artifact: Source,
    pub tokenizer: Source,
    pub config: Option<Source>,
    /// The config was not named in the catalog: the one beside the artifact is used if it exists.
    pub config_optional: bool,
    pub sha256: Option<String>,
    /// Cold: loaded on its first request into the node's cold pool (`cold.rs`), not at start.
    pub cold: bool,
    /// The typical request's length in tokens, at which `auto` compares the engines.
    pub request_tokens: usize,
    /// The P90 latency target of the node that holds it (the catalog's `slo_p90_ms`): without
    /// `--max-queue-delay-ms`, the longest a request may expect to wait before it is refused.
    pub slo_p90_ms: Option<f64>,
}

/// Why a node's models cannot be named.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{plan}: no node {node:?} (nodes: {known})")]
    NoSuchNode { plan: String, node: String, known: String },
    #[error("--plan needs --node")]
    PlanWithoutNode,
    #[error("give --plan and --node, or --catalog (with --models)")]
    NothingToServe,
    #[error("model {id:?} is not in catalog {catalog}")]
    UnknownModel { id: String, catalog: String },
    #[error("{catalog}: {error}")]
    Uri { catalog: String, error: StorageError },
}

impl ModelSpec {
    /// The spec of catalog model `id`; tokenizer and config default to files beside the artifact.
    pub fn from_catalog(catalog: &Catalog, id: &str, default_engine: EngineKind) -> Result<Self, SpecError> {
        let m = catalog.model(id).ok_or_else(|| SpecError::UnknownModel {
            id: id.to_string(),
            catalog: catalog.path.display().to_string(),
        })?;
        let base = catalog.base_dir();
        let uri = |error| SpecError::Uri { catalog: catalog.path.display().to_string(), error };
        let artifact = Source::parse(base, &m.artifact).map_err(uri)?;
        let tokenizer = match &m.tokenizer {
            Some(t) => Source::parse(base, t).map_err(uri)?,
            None => artifact.beside("tokenizer.json"),
        };
        let (config, config_optional) = match &m.config {
            Some(c) => (Some(Source::parse(base, c).map_err(uri)?), false),
            None => (Some(artifact.beside("config.json")), true),
        };
        Ok(Self {
            id: id.to_string(),
            engine: m.engine.unwrap_or(default_engine),
            artifact,
            tokenizer,
            config,
            config_optional,
            sha256: m.sha256.clone(),
            cold: false,
            request_tokens: m.request_tokens(&catalog.limits),
            slo_p90_ms: m.slo_p90_ms(&catalog.limits),
        })
    }
}

/// The models a node serves: a plan's node, or catalog models by id (all when `ids` is empty).
pub fn node_models(
    plan: Option<&Path>,
    node: Option<&str>,
    catalog: Option<&Path>,
    ids: &[String],
    engine: EngineKind,
) -> Result<Vec<ModelSpec>, SpecError> {
    let source = SpecSource {
        plan: plan.map(Path::to_path_buf),
        node: node.map(str::to_string),
        catalog: catalog.map(Path::to_path_buf),
        models: ids.to_vec(),
        engine,
        cold_pool_mib: None,
    };
    Ok(source.read()?.specs)
}

/// Where a node learns its models, read again at every reload: a plan's node (with its catalog),
/// or catalog models by id (all when `models` is empty).
#[derive(Debug, Clone)]
pub struct SpecSource {
    pub plan: Option<PathBuf>,
    pub node: Option<String>,
    pub catalog: Option<PathBuf>,
    pub models: Vec<String>,
    /// For models whose catalog entry names no engine.
    pub engine: EngineKind,
    /// `--cold-pool-mib`: the cold pool, instead of the plan's (0: every model hot).
    pub cold_pool_mib: Option<f64>,
}

/// What a node serves, as read from its files at one moment.
#[derive(Debug, Clone)]
pub struct NodeSet {
    pub specs: Vec<ModelSpec>,
    /// sha256 of the plan file's bytes (none without a plan).
    pub plan_sha256: Option<String>,
    pub catalog_sha256: String,
    /// The plan's entry for this node.
    pub node: Option<PlanNode>,
    /// Memory the cold models share (0: none is cold).
    pub cold_pool_mib: f64,
}

impl SpecSource {
    /// The catalog file: `--catalog`, or `models.toml` beside the plan.
    pub fn catalog_path(&self) -> Option<PathBuf> {
        self.catalog.clone().or_else(|| self.plan.as_ref().map(|p| p.with_file_name("models.toml")))
    }

    /// The files whose change may change the node's models.
    pub fn files(&self) -> Vec<PathBuf> {
        self.plan.iter().cloned().chain(self.catalog_path()).collect()
    }

    /// Reads the plan and catalog and checks that they agree (the catalog sha256 the plan names,
    /// the node present, every model in the catalog).
    pub fn read(&self) -> Result<NodeSet, SpecError> {
        let (catalog, ids, plan_sha256, plan_node): (Catalog, Vec<String>, _, _) =
            match (self.plan.as_deref(), self.node.as_deref()) {
                (Some(plan_path), Some(node)) => {
                    let name = plan_path.display().to_string();
                    let text = std::fs::read_to_string(plan_path)
                        .map_err(|error| PlanError::Io { path: name.clone(), error })?;
                    let plan = Plan::parse(&name, &text)?;
                    let n = plan.node(node).ok_or_else(|| SpecError::NoSuchNode {
                        plan: name.clone(),
                        node: node.to_string(),
                        known: plan.nodes.iter().map(|n| n.id.as_str()).take(20).collect::<Vec<_>>().join(", "),
                    })?;
                    let sha = hex::encode(Sha256::digest(text.as_bytes()));
                    (plan.catalog(plan_path, self.catalog.as_deref())?, n.models.clone(), Some(sha), Some(n.clone()))
                }
                (Some(_), None) => return Err(SpecError::PlanWithoutNode),
                (None, _) => {
                    let path = self.catalog.as_deref().ok_or(SpecError::NothingToServe)?;
                    (Catalog::load(path)?, self.models.clone(), None, None)
                }
            };
        let ids = if ids.is_empty() { catalog.models.iter().map(|m| m.id.clone()).collect() } else { ids };
        // Cold models: the plan's, or (without a plan) the catalog's by residency and traffic;
        // only with a cold pool to put them in.
        let pool = self.cold_pool_mib.or(plan_node.as_ref().map(|n| n.cold_pool_mib)).unwrap_or(0.0).max(0.0);
        let cold = |id: &str| {
            pool > 0.0
                && match &plan_node {
                    Some(n) => n.cold_models.iter().any(|m| m == id),
                    None => catalog.model(id).is_some_and(|m| m.is_cold(&catalog.limits)),
                }
        };
        let specs = ids
            .iter()
            .map(|id| ModelSpec::from_catalog(&catalog, id, self.engine).map(|s| ModelSpec { cold: cold(id), ..s }))
            .collect::<Result<_, _>>()?;
        Ok(NodeSet { specs, plan_sha256, catalog_sha256: catalog.sha256.clone(), node: plan_node, cold_pool_mib: pool })
    }
}
