//! Synthetic models (`stowage synth`): N BERT-style models on local disk, every one different (own seed),
//! each with `model.onnx`, `tokenizer.json` and `config.json` (labels), plus a matching catalog.
//! Tests, demos and benchmarks use these; nothing downloads weights from a hub.

pub mod onnx;
pub mod tokenizer;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

pub use onnx::BertShape;

/// Size presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// 2 layers, hidden 64: tests (≈ 0.1 M parameters).
    Tiny,
    /// 6 layers, hidden 384, like MiniLM (≈ 22 M parameters).
    Mini,
    /// 12 layers, hidden 768, like bert-base (≈ 110 M parameters).
    Base,
}

impl Preset {
    pub fn shape(self, labels: usize) -> BertShape {
        match self {
            Preset::Tiny => BertShape {
                layers: 2,
                hidden: 64,
                heads: 4,
                intermediate: 128,
                vocab: 1000,
                max_positions: 128,
                labels,
            },
            Preset::Mini => BertShape {
                layers: 6,
                hidden: 384,
                heads: 12,
                intermediate: 1536,
                vocab: 30522,
                max_positions: 512,
                labels,
            },
            Preset::Base => BertShape {
                layers: 12,
                hidden: 768,
                heads: 12,
                intermediate: 3072,
                vocab: 30522,
                max_positions: 512,
                labels,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Mini => "mini",
            Preset::Base => "base",
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub out: PathBuf,
    pub count: usize,
    pub shape: BertShape,
    pub profile: String,
    /// Model ids are `{prefix}-0001`, …
    pub prefix: String,
    /// Every n-th model is an embedding model (`last_hidden_state`); 0 for none.
    pub embedding_every: usize,
    pub seed: u64,
    pub peak_rps: f64,
    /// Plan onto one small local instance type (`local.small`) that holds this many of the models,
    /// instead of the AWS types: for multi-node deployments on one machine.
    pub local_per_node: Option<usize>,
}

/// One generated model.
#[derive(Debug, Clone)]
pub struct SynthModel {
    pub id: String,
    pub dir: PathBuf,
    pub bytes: u64,
}

fn labels(n: usize) -> Vec<String> {
    match n {
        2 => vec!["negative".into(), "positive".into()],
        3 => vec!["negative".into(), "neutral".into(), "positive".into()],
        _ => (0..n).map(|i| format!("LABEL_{i}")).collect(),
    }
}

/// Writes the models and `models.toml` under `spec.out`.
pub fn write(spec: &SynthSpec) -> Result<Vec<SynthModel>> {
    ensure!(spec.count > 0, "--count must be at least 1");
    ensure!(
        spec.shape.heads > 0 && spec.shape.hidden.is_multiple_of(spec.shape.heads),
        "--hidden must be a multiple of --heads (> 0)"
    );
    ensure!(spec.shape.layers > 0 && spec.shape.hidden > 0, "--layers and --hidden must be at least 1");
    ensure!(stowage_core::is_dns_label(&format!("{}-0001", spec.prefix)), "--prefix must make DNS-label model ids");
    std::fs::create_dir_all(&spec.out).with_context(|| format!("cannot create {}", spec.out.display()))?;
    let vocab = tokenizer::vocabulary(spec.shape.vocab);
    let tok = tokenizer::build(&vocab, spec.shape.max_positions.min(512))?;
    let mut models = Vec::with_capacity(spec.count);
    for k in 0..spec.count {
        let id = format!("{}-{:04}", spec.prefix, k + 1);
        let dir = spec.out.join(&id);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let embedding = spec.embedding_every > 0 && (k + 1) % spec.embedding_every == 0;
        let shape = BertShape { labels: if embedding { 0 } else { spec.shape.labels.max(1) }, ..spec.shape };
        let bytes = onnx::bert(&shape, spec.seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
        write_atomic(&dir.join("model.onnx"), &bytes)?;
        tokenizer::save(&tok, &dir.join("tokenizer.json"))?;
        let mut config = serde_json::json!({
            "model_type": "bert",
            "hidden_size": shape.hidden,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "intermediate_size": shape.intermediate,
            "vocab_size": shape.vocab,
            "max_position_embeddings": shape.max_positions,
            "generator": "stowage synth",
        });
        if !embedding {
            let id2label: serde_json::Map<String, serde_json::Value> =
                labels(shape.labels).into_iter().enumerate().map(|(i, l)| (i.to_string(), l.into())).collect();
            config["id2label"] = id2label.into();
        }
        write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
        models.push(SynthModel { id, dir, bytes: bytes.len() as u64 });
    }
    write_atomic(&spec.out.join("models.toml"), catalog(spec, &models).as_bytes())?;
    Ok(models)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// A catalog for the generated models: the standard instance types, and a profile whose footprint
/// is estimated from the weights (replace with `stowage profile` measurements for real plans).
fn catalog(spec: &SynthSpec, models: &[SynthModel]) -> String {
    let mib = models.iter().map(|m| m.bytes).max().unwrap_or(0) as f64 / (1024.0 * 1024.0);
    // Engine memory ≈ 2× the weights plus runtime overhead; service time grows with parameters.
    let memory = (2.0 * mib + 40.0).ceil();
    let params = spec.shape.params() as f64;
    let cpu_ms = (params / 1.1e6).max(1.0).round();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `stowage synth` ({} × {} models). Footprints are estimates from the weights.",
        spec.count, spec.profile
    );
    let _ = writeln!(s, "[limits]\nmax_memory = 0.90\nmax_utilization = 0.83\n");
    let profiles: Vec<(&str, f64, f64)> = match spec.local_per_node {
        Some(n) => {
            // Room for n models and half of one more under max_memory: the planner puts n a node.
            let gib = ((n as f64 + 0.5) * memory / 1024.0 / 0.9 * 1000.0).ceil() / 1000.0;
            let _ = writeln!(
                s,
                "# One local instance type that holds {n} of these models (stowage synth --per-node {n}).\n\
                 [instance_types.\"local.small\"]\nfamily = \"local\"\nprice_per_hour = 0.1\nmemory_gib = {gib}\ncompute = 2"
            );
            vec![("local", memory, cpu_ms)]
        }
        None => {
            s.push_str(stowage_core::instance_types::INSTANCE_TYPES);
            vec![
                ("c5", memory, cpu_ms),
                ("inf1", memory, (cpu_ms / 15.0).max(0.5)),
                ("g4dn", memory + 200.0, (cpu_ms / 12.0).max(0.5)),
            ]
        }
    };
    for (family, m, ms) in profiles {
        let _ = writeln!(s, "\n[profiles.\"{}\".{family}]\nmemory_mib = {m}\nservice_ms = {ms}", spec.profile);
    }
    for m in models {
        let _ = write!(
            s,
            "\n[[models]]\nid = \"{id}\"\nprofile = \"{p}\"\nartifact = \"{id}/model.onnx\"\ntokenizer = \"{id}/tokenizer.json\"\nconfig = \"{id}/config.json\"\npeak_rps = {r}\n",
            id = m.id,
            p = spec.profile,
            r = spec.peak_rps
        );
    }
    s
}
