//! The model catalog (`models.toml`): which models exist, what each needs on each instance family,
//! and which instance types may be bought. Parsed and validated as a whole, up front: every problem
//! is reported with file, line and field, like a compiler.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, SourceMap};
use crate::ident::is_dns_label;

/// Mmax default: share of an instance type's `memory_gib` that models may use.
pub const DEFAULT_MAX_MEMORY: f64 = 0.90;
/// Cmax default: share of an instance type's compute that models may use at peak traffic.
pub const DEFAULT_MAX_UTILIZATION: f64 = 0.83;

/// Default of `[limits] cold_below_rps`: an `auto` model with less peak traffic is cold.
pub const DEFAULT_COLD_BELOW_RPS: f64 = 0.05;
/// Default of `[limits] cold_window_seconds`: the cold pool keeps a model about this long after its
/// last request (the characteristic time of its LRU cache).
pub const DEFAULT_COLD_WINDOW_SECONDS: f64 = 60.0;
/// Default of `[limits] cold_pool_margin`: a node's cold pool holds its cold models' expected
/// resident memory (Che's approximation at `cold_window_seconds`) times 1 + this.
pub const DEFAULT_COLD_POOL_MARGIN: f64 = 0.25;
/// Default of `[limits] request_tokens`: the typical request's length, in tokens, at which
/// service times are measured (`stowage profile`) and engines compared (`auto`).
pub const DEFAULT_REQUEST_TOKENS: usize = 32;

/// Node-wide limits (Mmax, Cmax) and when models are cold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_memory: f64,
    pub max_utilization: f64,
    pub cold_below_rps: f64,
    pub cold_window_seconds: f64,
    pub cold_pool_margin: f64,
    /// Typical request length in tokens (a model's `request_tokens` overrides it).
    pub request_tokens: usize,
    /// Latency target: the P90 response time each node must keep at its planned peak (a
    /// model's `slo_p90_ms` may tighten it for the nodes that hold it). `None`: no target.
    pub slo_p90_ms: Option<f64>,
    /// A node whose models' summed `peak_rps` is below this may scale to zero replicas (0: only
    /// nodes whose models all ask for it, `scale_to_zero = true`).
    pub scale_to_zero_below_rps: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_MAX_MEMORY,
            max_utilization: DEFAULT_MAX_UTILIZATION,
            cold_below_rps: DEFAULT_COLD_BELOW_RPS,
            cold_window_seconds: DEFAULT_COLD_WINDOW_SECONDS,
            cold_pool_margin: DEFAULT_COLD_POOL_MARGIN,
            request_tokens: DEFAULT_REQUEST_TOKENS,
            slo_p90_ms: None,
            scale_to_zero_below_rps: 0.0,
        }
    }
}

/// Whether a model holds memory all the time (`hot`) or shares its node's cold pool, loaded on
/// its first request and evicted when idle (`cold`); `auto`: cold below `cold_below_rps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    #[default]
    Auto,
    Hot,
    Cold,
}

/// One instance type that may be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: String,
    /// `c5`, `g4dn`, `inf1`, …: selects the models' footprints and the accelerator.
    pub family: String,
    pub price_per_hour: f64,
    /// Memory that holds models on this type (host RAM or accelerator memory, whichever binds).
    pub memory_gib: f64,
    /// Parallel compute units: vCPUs (c5), GPUs (g4dn), NeuronCores (inf1).
    pub compute: f64,
    pub max_count: Option<u32>,
    /// Nodes of this type may be Spot capacity (interruptions tolerated; `stowage manifests
    /// --karpenter`); else on-demand only.
    pub spot: bool,
}

/// What one model needs on one instance family.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    pub memory_mib: f64,
    /// Busy time of one compute unit per request on a busy node: a unit serves at most
    /// 1000 / service_ms requests a second. Utilization and capacity count it; `stowage profile`
    /// measures it on a saturated node.
    pub service_ms: f64,
    /// A request's own time on a lightly loaded node (half its capacity), where threads wake for
    /// it and it is batched alone; the latency model takes it for a request's own service time
    /// there, falling linearly to `service_ms` at full load. `service_ms` without it.
    pub light_service_ms: Option<f64>,
    /// Time to load the model from the node's local disk and warm it up (`stowage profile`
    /// measures it); else `estimated_load_ms` of the memory.
    pub load_ms: Option<f64>,
    /// Spread of the service time: its squared coefficient of variation (variance ÷ mean²), as
    /// `stowage profile` measures it; the latency model assumes `DEFAULT_SERVICE_SCV` without it.
    pub service_scv: Option<f64>,
}

/// The service-time spread assumed for a footprint that does not give one: between a fixed
/// service time (0) and an exponential one (1), what interleaved requests of mixed lengths
/// measure on a packed node (BENCHMARKS.md, "Plans that hold").
pub const DEFAULT_SERVICE_SCV: f64 = 0.5;

/// The load time assumed for a model of `memory_mib` when its footprint gives none: 100 ms and
/// 5 ms per MiB (a synthetic mini model, 87 MiB, loads and warms up in about 0.5 s on tract).
pub fn estimated_load_ms(memory_mib: f64) -> f64 {
    100.0 + 5.0 * memory_mib
}

impl Footprint {
    pub fn load_ms(&self) -> f64 {
        self.load_ms.unwrap_or_else(|| estimated_load_ms(self.memory_mib))
    }

    pub fn service_scv(&self) -> f64 {
        self.service_scv.unwrap_or(DEFAULT_SERVICE_SCV)
    }

    pub fn light_service_ms(&self) -> f64 {
        self.light_service_ms.unwrap_or(self.service_ms)
    }
}

/// Inference engine that runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Tract,
    Ort,
    /// Chosen per model when it loads: tract when it can run the graph, else ONNX Runtime
    /// (docs/formats.md). A loaded model always runs on `Tract` or `Ort`.
    Auto,
}

/// A name that is not an engine's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine {0:?}: expected \"auto\", \"tract\" or \"ort\"")]
pub struct UnknownEngine(pub String);

impl std::str::FromStr for Engine {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        match s {
            "tract" => Ok(Engine::Tract),
            "ort" => Ok(Engine::Ort),
            "auto" => Ok(Engine::Auto),
            other => Err(UnknownEngine(other.to_string())),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Tract => "tract",
            Engine::Ort => "ort",
            Engine::Auto => "auto",
        })
    }
}

/// One model of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub id: String,
    pub profile: Option<String>,
    /// Footprint per family: the profile's, overridden by inline `[models.footprint.<family>]`.
    pub footprints: BTreeMap<String, Footprint>,
    /// `s3://bucket/key`, a file path (relative to the catalog's folder) or `file://…`.
    pub artifact: String,
    pub tokenizer: Option<String>,
    /// Optional `config.json` with `id2label`.
    pub config: Option<String>,
    pub peak_rps: f64,
    pub engine: Option<Engine>,
    pub sha256: Option<String>,
    pub residency: Residency,
    /// Typical request length in tokens, if it differs from the catalog's.
    pub request_tokens: Option<usize>,
    /// A tighter latency target than the catalog's for the node that holds this model.
    pub slo_p90_ms: Option<f64>,
    /// The model may wait for its node to start: a node whose models all say so scales to zero
    /// replicas when idle (the gateway holds its first request while it starts).
    pub scale_to_zero: bool,
    /// Copies of the model on distinct nodes at least (for availability); more where its peak
    /// needs more compute than one node of any type gives (`Model::replicas`).
    pub min_replicas: u32,
}

/// Most copies one model may be split into.
pub const MAX_REPLICAS: u32 = 1000;

impl Model {
    /// Its typical request length in tokens: its own, else the catalog's.
    pub fn request_tokens(&self, limits: &Limits) -> usize {
        self.request_tokens.unwrap_or(limits.request_tokens)
    }

    /// The P90 target of the node that holds it: the tighter of its own and the catalog's.
    pub fn slo_p90_ms(&self, limits: &Limits) -> Option<f64> {
        match (self.slo_p90_ms, limits.slo_p90_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many copies of the model the plan places, on distinct nodes, each with an equal share
    /// of its traffic: its `min_replicas`, or as many as its peak needs on the type where it
    /// needs the fewest (its compute share there, rounded up), whichever is more.
    pub fn replicas(&self, limits: &Limits, types: &[InstanceType]) -> u32 {
        let needed = types
            .iter()
            .filter_map(|it| demand(limits, self, it))
            .filter(|d| d.memory <= 1.0 + 1e-12)
            .map(|d| d.utilization.max(1.0).ceil())
            .fold(f64::INFINITY, f64::min);
        let needed = if needed.is_finite() { needed.min(f64::from(u32::MAX)) as u32 } else { 1 };
        needed.max(self.min_replicas)
    }

    /// Whether the model is cold under `limits` (its own `residency`, or `auto` by traffic).
    pub fn is_cold(&self, limits: &Limits) -> bool {
        match self.residency {
            Residency::Cold => true,
            Residency::Hot => false,
            Residency::Auto => self.peak_rps < limits.cold_below_rps,
        }
    }
}

/// A validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Where it was read from (for messages and for resolving relative artifact paths).
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, recorded in the plan.
    pub sha256: String,
    pub limits: Limits,
    /// Sorted by name.
    pub instance_types: Vec<InstanceType>,
    /// In file order.
    pub models: Vec<Model>,
    /// Model id → position in `models`.
    index: std::collections::HashMap<String, usize>,
}

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    // The reason is in the sentence and not a `source` too: `{e:#}` (anyhow's chain) would say
    // it twice.
    #[error("cannot read catalog {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

/// A model's load on one instance type, as fractions of that type's limits (1.0 = full).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Demand {
    pub memory: f64,
    pub utilization: f64,
}

impl Demand {
    pub fn fits(&self) -> bool {
        self.memory <= 1.0 + 1e-12 && self.utilization <= 1.0 + 1e-12
    }
}

impl Catalog {
    /// Reads and validates a catalog file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|error| CatalogError::Io { path: path.to_path_buf(), error })?;
        Ok(Self::parse(path, &text)?)
    }

    /// Validates catalog text; `path` names it in messages.
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<Self, Diagnostics> {
        Self::parse_with(path.as_ref(), text, true)
    }

    /// Reads a catalog whose models may have no footprint yet (what `stowage profile` measures):
    /// everything else is validated as `load` does.
    pub fn load_unmeasured(path: impl AsRef<Path>) -> Result<Self, CatalogError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|error| CatalogError::Io { path: path.to_path_buf(), error })?;
        Ok(Self::parse_with(path, &text, false)?)
    }

    fn parse_with(path: &Path, text: &str, footprints_required: bool) -> Result<Self, Diagnostics> {
        let file = path.display().to_string();
        let map = SourceMap::new(&file, text);
        let raw: RawCatalog = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            Diagnostics(vec![map.at(e.span(), "", message)])
        })?;
        let mut v = Validator { map: &map, errors: Vec::new(), footprints_required };
        let catalog = v.catalog(raw, path, text);
        if v.errors.is_empty() {
            Ok(catalog)
        } else {
            v.errors.sort_by_key(|d| (d.line, d.column));
            Err(Diagnostics(v.errors))
        }
    }

    /// The catalog with only the models `keep` keeps (in their order), the rest as it is.
    pub fn subset(&self, keep: impl Fn(&Model) -> bool) -> Catalog {
        self.with_models(self.models.iter().filter(|m| keep(m)).cloned().collect())
    }

    /// The catalog with `models` instead of its own (the planner's copies of models with
    /// replicas), the rest as it is.
    pub fn with_models(&self, models: Vec<Model>) -> Catalog {
        Catalog {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
            limits: self.limits,
            instance_types: self.instance_types.clone(),
            index: models.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect(),
            models,
        }
    }

    pub fn model(&self, id: &str) -> Option<&Model> {
        self.index.get(id).map(|&i| &self.models[i])
    }

    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        self.instance_types.iter().find(|t| t.name == name)
    }

    /// Folder that relative artifact paths are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Local files the catalog names (artifacts, and tokenizers and configs it names explicitly)
    /// that are not on this machine, as (model id, path). `s3://` objects are not checked.
    pub fn missing_local_files(&self) -> Vec<(String, PathBuf)> {
        let mut missing = Vec::new();
        for m in &self.models {
            for uri in std::iter::once(&m.artifact).chain(&m.tokenizer).chain(&m.config) {
                if uri.starts_with("s3://") {
                    continue;
                }
                let path = self.base_dir().join(uri.strip_prefix("file://").unwrap_or(uri));
                if !path.exists() {
                    missing.push((m.id.clone(), path));
                }
            }
        }
        missing
    }

    /// What `model` uses of one node of type `it`, or `None` when it has no footprint there.
    pub fn demand(&self, model: &Model, it: &InstanceType) -> Option<Demand> {
        demand(&self.limits, model, it)
    }
}

/// What `model` uses of one node of type `it` under `limits`.
pub fn demand(limits: &Limits, model: &Model, it: &InstanceType) -> Option<Demand> {
    let fp = model.footprints.get(&it.family)?;
    let memory = fp.memory_mib / (it.memory_gib * 1024.0 * limits.max_memory);
    let busy = model.peak_rps * fp.service_ms / 1000.0 / it.compute;
    Some(Demand { memory, utilization: busy / limits.max_utilization })
}

// ---- raw, as written in the file -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    limits: Option<RawLimits>,
    #[serde(default)]
    instance_types: BTreeMap<Spanned<String>, Spanned<RawInstanceType>>,
    #[serde(default)]
    profiles: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, Spanned<RawFootprint>>>,
    #[serde(default)]
    models: Vec<Spanned<RawModel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_memory: Option<Spanned<f64>>,
    max_utilization: Option<Spanned<f64>>,
    cold_below_rps: Option<Spanned<f64>>,
    cold_window_seconds: Option<Spanned<f64>>,
    cold_pool_margin: Option<Spanned<f64>>,
    request_tokens: Option<Spanned<f64>>,
    slo_p90_ms: Option<Spanned<f64>>,
    scale_to_zero_below_rps: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstanceType {
    family: Option<Spanned<String>>,
    price_per_hour: Option<Spanned<f64>>,
    memory_gib: Option<Spanned<f64>>,
    compute: Option<Spanned<f64>>,
    max_count: Option<Spanned<i64>>,
    spot: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFootprint {
    memory_mib: Option<Spanned<f64>>,
    service_ms: Option<Spanned<f64>>,
    light_service_ms: Option<Spanned<f64>>,
    load_ms: Option<Spanned<f64>>,
    service_scv: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    #[serde(default)]
    footprint: BTreeMap<Spanned<String>, Spanned<RawFootprint>>,
    artifact: Option<Spanned<String>>,
    tokenizer: Option<Spanned<String>>,
    config: Option<Spanned<String>>,
    peak_rps: Option<Spanned<f64>>,
    engine: Option<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    residency: Option<Spanned<String>>,
    request_tokens: Option<Spanned<f64>>,
    slo_p90_ms: Option<Spanned<f64>>,
    scale_to_zero: Option<bool>,
    min_replicas: Option<Spanned<i64>>,
}

// ---- validation ------------------------------------------------------------------------------

struct Validator<'a> {
    map: &'a SourceMap<'a>,
    errors: Vec<Diagnostic>,
    /// A model without any footprint is an error (else it waits for `stowage profile`).
    footprints_required: bool,
}

/// How a number must compare with zero.
#[derive(Clone, Copy)]
enum Sign {
    Positive,
    NonNegative,
    /// In (0, 1].
    Fraction,
}

impl Validator<'_> {
    fn error(&mut self, span: Option<Range<usize>>, field: &str, message: impl Into<String>) {
        self.errors.push(self.map.at(span, field, message));
    }

    /// A required or defaulted number, checked for sign; `None` after reporting a problem.
    fn number(&mut self, value: Option<&Spanned<f64>>, owner: Range<usize>, field: &str, sign: Sign) -> Option<f64> {
        let Some(value) = value else {
            self.error(Some(owner), field, "missing number");
            return None;
        };
        let x = *value.get_ref();
        let ok = x.is_finite()
            && match sign {
                Sign::Positive => x > 0.0,
                Sign::NonNegative => x >= 0.0,
                Sign::Fraction => x > 0.0 && x <= 1.0,
            };
        if !ok {
            let want = match sign {
                Sign::Positive => "a number > 0",
                Sign::NonNegative => "a number >= 0",
                Sign::Fraction => "a fraction in (0, 1]",
            };
            self.error(Some(value.span()), field, format!("must be {want}, got {x}"));
            return None;
        }
        Some(x)
    }

    fn footprint(&mut self, raw: &Spanned<RawFootprint>, field: &str) -> Option<Footprint> {
        let span = raw.span();
        let raw = raw.get_ref();
        let memory_mib =
            self.number(raw.memory_mib.as_ref(), span.clone(), &format!("{field}.memory_mib"), Sign::Positive);
        let service_ms =
            self.number(raw.service_ms.as_ref(), span.clone(), &format!("{field}.service_ms"), Sign::Positive);
        let load_ms = match &raw.load_ms {
            None => Some(None),
            Some(v) => self.number(Some(v), span.clone(), &format!("{field}.load_ms"), Sign::Positive).map(Some),
        };
        let light_service_ms = match &raw.light_service_ms {
            None => Some(None),
            Some(v) => {
                self.number(Some(v), span.clone(), &format!("{field}.light_service_ms"), Sign::Positive).map(Some)
            }
        };
        let service_scv = match &raw.service_scv {
            None => Some(None),
            Some(v) => self.number(Some(v), span, &format!("{field}.service_scv"), Sign::NonNegative).map(Some),
        };
        Some(Footprint {
            memory_mib: memory_mib?,
            service_ms: service_ms?,
            light_service_ms: light_service_ms?,
            load_ms: load_ms?,
            service_scv: service_scv?,
        })
    }

    fn family_known(&mut self, families: &BTreeSet<String>, family: &Spanned<String>, field: &str) -> bool {
        if families.contains(family.get_ref()) {
            return true;
        }
        let known: Vec<_> = families.iter().map(String::as_str).collect();
        self.error(
            Some(family.span()),
            field,
            format!("unknown family {:?}: no instance type has it (known: {})", family.get_ref(), known.join(", ")),
        );
        false
    }

    fn catalog(&mut self, raw: RawCatalog, path: &Path, text: &str) -> Catalog {
        let limits = self.limits(raw.limits);
        let instance_types = self.instance_types(&raw.instance_types);
        // From the raw tables, so that one bad instance type does not make its family unknown too.
        let families: BTreeSet<String> = raw
            .instance_types
            .values()
            .filter_map(|t| t.get_ref().family.as_ref())
            .map(|f| f.get_ref().clone())
            .collect();

        let mut profiles: BTreeMap<String, BTreeMap<String, Footprint>> = BTreeMap::new();
        for (name, per_family) in &raw.profiles {
            let entry = profiles.entry(name.get_ref().clone()).or_default();
            for (family, fp) in per_family {
                let field = format!("profiles.{}.{}", name.get_ref(), family.get_ref());
                if self.family_known(&families, family, &field) {
                    if let Some(fp) = self.footprint(fp, &field) {
                        entry.insert(family.get_ref().clone(), fp);
                    }
                }
            }
        }

        let mut models = Vec::with_capacity(raw.models.len());
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, m) in raw.models.iter().enumerate() {
            if let Some(model) = self.model(i, m, &profiles, &families, &mut seen) {
                // A model not measured yet fits nowhere until it is.
                let measured = !model.footprints.is_empty() || self.footprints_required;
                if let (Some(limits), true) = (&limits, measured) {
                    self.check_fits(i, m.span(), &model, limits, &instance_types);
                }
                models.push(model);
            }
        }
        if raw.models.is_empty() {
            self.error(None, "models", "the catalog has no [[models]]");
        }

        Catalog {
            path: path.to_path_buf(),
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            limits: limits.unwrap_or_default(),
            instance_types,
            index: models.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect(),
            models,
        }
    }

    fn limits(&mut self, raw: Option<RawLimits>) -> Option<Limits> {
        let Some(raw) = raw else {
            return Some(Limits::default());
        };
        let mut fraction = |v: Option<Spanned<f64>>, field: &str, default: f64| match v {
            None => Some(default),
            Some(v) => self.number(Some(&v), v.span(), field, Sign::Fraction),
        };
        let max_memory = fraction(raw.max_memory, "limits.max_memory", DEFAULT_MAX_MEMORY);
        let max_utilization = fraction(raw.max_utilization, "limits.max_utilization", DEFAULT_MAX_UTILIZATION);
        let mut positive = |v: Option<Spanned<f64>>, field: &str, default: f64, sign: Sign| match v {
            None => Some(default),
            Some(v) => self.number(Some(&v), v.span(), field, sign),
        };
        let cold_below_rps =
            positive(raw.cold_below_rps, "limits.cold_below_rps", DEFAULT_COLD_BELOW_RPS, Sign::NonNegative);
        let cold_window_seconds = positive(
            raw.cold_window_seconds,
            "limits.cold_window_seconds",
            DEFAULT_COLD_WINDOW_SECONDS,
            Sign::Positive,
        );
        let cold_pool_margin =
            positive(raw.cold_pool_margin, "limits.cold_pool_margin", DEFAULT_COLD_POOL_MARGIN, Sign::NonNegative);
        let scale_to_zero_below_rps =
            positive(raw.scale_to_zero_below_rps, "limits.scale_to_zero_below_rps", 0.0, Sign::NonNegative);
        let request_tokens = self.tokens(raw.request_tokens.as_ref(), "limits.request_tokens");
        let slo_p90_ms = match &raw.slo_p90_ms {
            None => Some(None),
            Some(v) => self.number(Some(v), v.span(), "limits.slo_p90_ms", Sign::Positive).map(Some),
        };
        Some(Limits {
            max_memory: max_memory?,
            max_utilization: max_utilization?,
            cold_below_rps: cold_below_rps?,
            cold_window_seconds: cold_window_seconds?,
            cold_pool_margin: cold_pool_margin?,
            request_tokens: request_tokens?.unwrap_or(DEFAULT_REQUEST_TOKENS),
            slo_p90_ms: slo_p90_ms?,
            scale_to_zero_below_rps: scale_to_zero_below_rps?,
        })
    }

    /// An optional token count: a whole number from 1 to 100,000.
    fn tokens(&mut self, v: Option<&Spanned<f64>>, field: &str) -> Option<Option<usize>> {
        let Some(v) = v else { return Some(None) };
        let x = *v.get_ref();
        if x.fract() != 0.0 || !(1.0..=100_000.0).contains(&x) {
            self.error(Some(v.span()), field, format!("must be a whole number of tokens from 1 to 100000, got {x}"));
            return None;
        }
        Some(Some(x as usize))
    }

    fn instance_types(&mut self, raw: &BTreeMap<Spanned<String>, Spanned<RawInstanceType>>) -> Vec<InstanceType> {
        if raw.is_empty() {
            self.error(None, "instance_types", "the catalog has no [instance_types.\"NAME\"] table");
        }
        let mut out = Vec::new();
        for (name, it) in raw {
            let span = it.span();
            let field = format!("instance_types.\"{}\"", name.get_ref());
            let r = it.get_ref();
            let family = match &r.family {
                Some(f) if !f.get_ref().trim().is_empty() => Some(f.get_ref().clone()),
                Some(f) => {
                    self.error(Some(f.span()), &format!("{field}.family"), "must not be empty");
                    None
                }
                None => {
                    self.error(Some(span.clone()), &format!("{field}.family"), "missing family (c5, g4dn, inf1, …)");
                    None
                }
            };
            let price = self.number(
                r.price_per_hour.as_ref(),
                span.clone(),
                &format!("{field}.price_per_hour"),
                Sign::Positive,
            );
            let memory =
                self.number(r.memory_gib.as_ref(), span.clone(), &format!("{field}.memory_gib"), Sign::Positive);
            let compute = self.number(r.compute.as_ref(), span.clone(), &format!("{field}.compute"), Sign::Positive);
            let max_count = match &r.max_count {
                None => Some(None),
                Some(c) => match u32::try_from(*c.get_ref()) {
                    Ok(n) => Some(Some(n)),
                    Err(_) => {
                        self.error(
                            Some(c.span()),
                            &format!("{field}.max_count"),
                            format!("must be an integer >= 0, got {}", c.get_ref()),
                        );
                        None
                    }
                },
            };
            if name.get_ref().trim().is_empty() {
                self.error(Some(name.span()), "instance_types", "instance type name must not be empty");
            }
            if let (Some(family), Some(price_per_hour), Some(memory_gib), Some(compute), Some(max_count)) =
                (family, price, memory, compute, max_count)
            {
                out.push(InstanceType {
                    name: name.get_ref().clone(),
                    family,
                    price_per_hour,
                    memory_gib,
                    compute,
                    max_count,
                    spot: r.spot.unwrap_or(false),
                });
            }
        }
        out
    }

    fn model(
        &mut self,
        i: usize,
        raw: &Spanned<RawModel>,
        profiles: &BTreeMap<String, BTreeMap<String, Footprint>>,
        families: &BTreeSet<String>,
        seen: &mut BTreeMap<String, usize>,
    ) -> Option<Model> {
        let span = raw.span();
        let r = raw.get_ref();
        let at = |f: &str| format!("models[{i}].{f}");

        let id = match &r.id {
            None => {
                self.error(Some(span.clone()), &at("id"), "missing model id");
                None
            }
            Some(id) if !is_dns_label(id.get_ref()) => {
                self.error(
                    Some(id.span()),
                    &at("id"),
                    format!("{:?} is not a DNS label: use 1-63 of a-z, 0-9 and '-', starting and ending with a letter or digit", id.get_ref()),
                );
                None
            }
            Some(id) => {
                if let Some(first) = seen.get(id.get_ref()) {
                    self.error(
                        Some(id.span()),
                        &at("id"),
                        format!("duplicate model id {:?} (first defined on line {first})", id.get_ref()),
                    );
                    None
                } else {
                    seen.insert(id.get_ref().clone(), self.map.position(id.span().start).0);
                    Some(id.get_ref().clone())
                }
            }
        };

        let mut footprints = BTreeMap::new();
        let mut footprint_ok = true;
        if let Some(p) = &r.profile {
            match profiles.get(p.get_ref()) {
                Some(fps) => footprints.extend(fps.iter().map(|(k, v)| (k.clone(), *v))),
                None => {
                    let known: Vec<_> = profiles.keys().map(String::as_str).collect();
                    let known = if known.is_empty() { "none defined".to_string() } else { known.join(", ") };
                    self.error(
                        Some(p.span()),
                        &at("profile"),
                        format!("unknown profile {:?} (known: {known})", p.get_ref()),
                    );
                    footprint_ok = false;
                }
            }
        }
        for (family, fp) in &r.footprint {
            let field = at(&format!("footprint.{}", family.get_ref()));
            if !self.family_known(families, family, &field) {
                footprint_ok = false;
                continue;
            }
            match self.footprint(fp, &field) {
                Some(fp) => {
                    footprints.insert(family.get_ref().clone(), fp);
                }
                None => footprint_ok = false,
            }
        }
        if footprint_ok && footprints.is_empty() && self.footprints_required {
            self.error(
                Some(span.clone()),
                &at("profile"),
                "no footprint: give a profile or [models.footprint.<family>] (stowage profile measures them)",
            );
            footprint_ok = false;
        }

        let text = |v: &mut Self, s: &Option<Spanned<String>>, f: &str, required: bool| -> Option<Option<String>> {
            match s {
                None if required => {
                    v.error(Some(span.clone()), &at(f), "missing");
                    None
                }
                None => Some(None),
                Some(s) if s.get_ref().trim().is_empty() => {
                    v.error(Some(s.span()), &at(f), "must not be empty");
                    None
                }
                Some(s) => Some(Some(s.get_ref().clone())),
            }
        };
        let artifact = text(self, &r.artifact, "artifact", true);
        let tokenizer = text(self, &r.tokenizer, "tokenizer", false);
        let config = text(self, &r.config, "config", false);
        let peak_rps = self.number(r.peak_rps.as_ref(), span.clone(), &at("peak_rps"), Sign::NonNegative);
        let request_tokens = self.tokens(r.request_tokens.as_ref(), &at("request_tokens"));
        let slo_p90_ms = match &r.slo_p90_ms {
            None => Some(None),
            Some(v) => self.number(Some(v), v.span(), &at("slo_p90_ms"), Sign::Positive).map(Some),
        };
        let min_replicas = match &r.min_replicas {
            None => Some(1),
            Some(n) if (1..=i64::from(MAX_REPLICAS)).contains(n.get_ref()) => Some(*n.get_ref() as u32),
            Some(n) => {
                self.error(
                    Some(n.span()),
                    &at("min_replicas"),
                    format!("must be a whole number from 1 to {MAX_REPLICAS}, got {}", n.get_ref()),
                );
                None
            }
        };
        let engine = match &r.engine {
            None => Some(None),
            Some(e) => match e.get_ref().parse::<Engine>() {
                Ok(e) => Some(Some(e)),
                Err(unknown) => {
                    self.error(Some(e.span()), &at("engine"), unknown.to_string());
                    None
                }
            },
        };
        let sha256 = match &r.sha256 {
            None => Some(None),
            Some(h) if h.get_ref().len() == 64 && h.get_ref().bytes().all(|c| c.is_ascii_hexdigit()) => {
                Some(Some(h.get_ref().to_ascii_lowercase()))
            }
            Some(h) => {
                self.error(Some(h.span()), &at("sha256"), "must be 64 hexadecimal digits");
                None
            }
        };

        let residency = match &r.residency {
            None => Some(Residency::Auto),
            Some(v) => match v.get_ref().as_str() {
                "auto" => Some(Residency::Auto),
                "hot" => Some(Residency::Hot),
                "cold" => Some(Residency::Cold),
                other => {
                    self.error(
                        Some(v.span()),
                        &at("residency"),
                        format!("unknown residency {other:?}: expected \"auto\", \"hot\" or \"cold\""),
                    );
                    None
                }
            },
        };

        if !footprint_ok {
            return None;
        }
        Some(Model {
            id: id?,
            profile: r.profile.as_ref().map(|p| p.get_ref().clone()),
            footprints,
            artifact: artifact??,
            tokenizer: tokenizer?,
            config: config?,
            peak_rps: peak_rps?,
            engine: engine?,
            sha256: sha256?,
            residency: residency?,
            request_tokens: request_tokens?,
            slo_p90_ms: slo_p90_ms?,
            scale_to_zero: r.scale_to_zero.unwrap_or(false),
            min_replicas: min_replicas?,
        })
    }

    /// A model that fits no instance type is an error naming it: never a silent drop. A model
    /// whose peak needs more compute than a node has fits as replicas (`Model::replicas`), up to
    /// `MAX_REPLICAS`.
    fn check_fits(&mut self, i: usize, span: Range<usize>, model: &Model, limits: &Limits, types: &[InstanceType]) {
        let mut reasons = Vec::new();
        for it in types {
            match demand(limits, model, it) {
                Some(d) if d.memory <= 1.0 + 1e-12 => {
                    let replicas = model.replicas(limits, types);
                    if replicas > MAX_REPLICAS {
                        let share = d.utilization * limits.max_utilization * 100.0;
                        self.error(
                            Some(span),
                            &format!("models[{i}]"),
                            format!(
                                "model {:?} needs {replicas} replicas (its peak is {share:.0}% of a {}'s compute), more than {MAX_REPLICAS}: check its peak_rps and service_ms",
                                model.id, it.name
                            ),
                        );
                    }
                    return;
                }
                Some(_) => {
                    let fp = model.footprints[&it.family];
                    let cap = it.memory_gib * 1024.0 * limits.max_memory;
                    reasons.push(format!("{}: needs {} MiB of {cap:.0} MiB", it.name, fp.memory_mib));
                }
                None => {}
            }
        }
        if !types.is_empty() {
            let why = if reasons.is_empty() {
                let fams: Vec<_> = model.footprints.keys().map(String::as_str).collect();
                format!("no instance type of its families ({})", fams.join(", "))
            } else {
                reasons.join("; ")
            };
            self.error(
                Some(span),
                &format!("models[{i}]"),
                format!("model {:?} fits no instance type: {why}", model.id),
            );
        }
    }
}

#[cfg(test)]
mod tests;
