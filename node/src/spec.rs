//! Which models a node serves, and where each one's files are: a plan's node or catalog models by
//! id, turned into one `ModelSpec` each (docs/formats.md: the catalog and the plan).

use std::path::Path;

use stowage_core::{Catalog, CatalogError, Engine as EngineKind, Plan, PlanError};

use crate::storage::{Source, StorageError};

/// What the node needs to know to load one model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub engine: EngineKind,
    pub artifact: Source,
    pub tokenizer: Source,
    pub config: Option<Source>,
    /// The config was not named in the catalog: the one beside the artifact is used if it exists.
    pub config_optional: bool,
    pub sha256: Option<String>,
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
    let (catalog, ids): (Catalog, Vec<String>) = match (plan, node) {
        (Some(plan_path), Some(node)) => {
            let plan = Plan::load(plan_path)?;
            let n = plan.node(node).ok_or_else(|| SpecError::NoSuchNode {
                plan: plan_path.display().to_string(),
                node: node.to_string(),
                known: plan.nodes.iter().map(|n| n.id.as_str()).take(20).collect::<Vec<_>>().join(", "),
            })?;
            let ids = n.models.clone();
            (plan.catalog(plan_path, catalog)?, ids)
        }
        (Some(_), None) => return Err(SpecError::PlanWithoutNode),
        (None, _) => (Catalog::load(catalog.ok_or(SpecError::NothingToServe)?)?, ids.to_vec()),
    };
    let ids = if ids.is_empty() { catalog.models.iter().map(|m| m.id.clone()).collect() } else { ids };
    ids.iter().map(|id| ModelSpec::from_catalog(&catalog, id, engine)).collect()
}
