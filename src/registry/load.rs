//! Loading one model: read the artifact, check it, read its signature, load it in its engine, load
//! the tokenizer and labels, warm up. Every failure is a sentence naming the model and the file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use stowage_core::{Catalog, Engine as EngineKind};
use tokenizers::Tokenizer;

use crate::backend::{self, EngineOptions, Inputs, Model, Signature};

/// What the node needs to know to load one model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub id: String,
    pub engine: EngineKind,
    pub artifact: PathBuf,
    pub tokenizer: PathBuf,
    pub config: Option<PathBuf>,
    pub sha256: Option<String>,
}

/// Resolves a catalog URI to a local path: plain paths are relative to the catalog's folder.
pub fn local_path(base: &Path, uri: &str) -> Result<PathBuf, String> {
    if uri.starts_with("s3://") {
        return Err(format!(
            "{uri}: s3:// artifacts need the S3 loader, which this build does not have yet; use a local path"
        ));
    }
    let p = Path::new(uri.strip_prefix("file://").unwrap_or(uri));
    Ok(if p.is_absolute() { p.to_path_buf() } else { base.join(p) })
}

impl ModelSpec {
    /// The spec of catalog model `id`; tokenizer and config default to files beside the artifact.
    pub fn from_catalog(catalog: &Catalog, id: &str, default_engine: EngineKind) -> Result<Self, String> {
        let m =
            catalog.model(id).ok_or_else(|| format!("model {id:?} is not in catalog {}", catalog.path.display()))?;
        let base = catalog.base_dir();
        let artifact = local_path(base, &m.artifact)?;
        let beside = |name: &str| artifact.parent().unwrap_or(base).join(name);
        let tokenizer = match &m.tokenizer {
            Some(t) => local_path(base, t)?,
            None => beside("tokenizer.json"),
        };
        let config = match &m.config {
            Some(c) => Some(local_path(base, c)?),
            None => Some(beside("config.json")).filter(|p| p.is_file()),
        };
        Ok(Self {
            id: id.to_string(),
            engine: m.engine.unwrap_or(default_engine),
            artifact,
            tokenizer,
            config,
            sha256: m.sha256.clone(),
        })
    }
}

/// A model ready to answer.
pub struct LoadedModel {
    pub model: Box<dyn Model>,
    pub signature: Signature,
    pub tokenizer: Tokenizer,
    pub labels: Vec<String>,
    /// Longest token sequence accepted (tokenizer truncation, capped by the model's positions).
    pub max_length: usize,
    pub vocab_size: usize,
    pub pad_id: i64,
}

/// Facts measured while loading.
pub struct Loaded {
    pub model: LoadedModel,
    pub weights_bytes: u64,
    pub load_seconds: f64,
    pub warmup_seconds: f64,
}

fn read_config(path: Option<&Path>) -> Result<(Vec<String>, Option<usize>), String> {
    let Some(path) = path else { return Ok((Vec::new(), None)) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let mut labels = Vec::new();
    if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        let mut pairs: Vec<(usize, String)> = Vec::new();
        for (k, name) in map {
            let i =
                k.parse::<usize>().map_err(|_| format!("{}: id2label key {k:?} is not a number", path.display()))?;
            pairs.push((i, name.as_str().unwrap_or_default().to_string()));
        }
        pairs.sort();
        labels = pairs.into_iter().map(|p| p.1).collect();
    }
    let positions = v.get("max_position_embeddings").and_then(|x| x.as_u64()).map(|x| x as usize);
    Ok((labels, positions))
}

/// Loads and warms up one model. Runs on a blocking thread.
pub fn load(spec: &ModelSpec, opts: &EngineOptions) -> Result<Loaded, String> {
    let start = Instant::now();
    let bytes = std::fs::read(&spec.artifact).map_err(|e| format!("cannot read {}: {e}", spec.artifact.display()))?;
    if let Some(want) = &spec.sha256 {
        let got = hex::encode(Sha256::digest(&bytes));
        if &got != want {
            return Err(format!("{}: sha256 is {got}, the catalog says {want}", spec.artifact.display()));
        }
    }
    let signature = backend::signature(&bytes).map_err(|e| format!("{}: {e}", spec.artifact.display()))?;
    let model = backend::load(spec.engine, &bytes, &signature, opts)
        .map_err(|e| format!("{}: {e}", spec.artifact.display()))?;
    let mut tokenizer = Tokenizer::from_file(&spec.tokenizer)
        .map_err(|e| format!("cannot load tokenizer {}: {e}", spec.tokenizer.display()))?;
    let (mut labels, positions) = read_config(spec.config.as_deref())?;
    // Many exported tokenizer.json files pad every input to 128: pad only within a batch, here.
    tokenizer.with_padding(None);
    let max_length = tokenizer.get_truncation().map_or(512, |t| t.max_length).min(positions.unwrap_or(512)).max(2);
    // Truncate at what the model can take, also when the tokenizer.json itself does not.
    let truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length, ..truncation }))
        .map_err(|e| format!("{}: {e}", spec.tokenizer.display()))?;
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;
    let vocab_size = tokenizer.get_vocab_size(true);
    if let (backend::OutputKind::Logits, Some(n)) = (signature.kind, signature.output_width) {
        if labels.len() != n {
            labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
        }
    }
    let loaded = LoadedModel { model, signature, tokenizer, labels, max_length, vocab_size, pad_id };
    let load_seconds = start.elapsed().as_secs_f64();

    let warm = Instant::now();
    let inputs = loaded.encode(&["warm up".to_string()], None).map_err(|e| format!("warm-up: {e}"))?;
    loaded.model.predict(&inputs).map_err(|e| format!("warm-up failed: {e}"))?;
    Ok(Loaded {
        model: loaded,
        weights_bytes: bytes.len() as u64,
        load_seconds,
        warmup_seconds: warm.elapsed().as_secs_f64(),
    })
}

impl LoadedModel {
    /// Tokenizes texts (and optional pairs) into one batch padded to its longest row.
    pub fn encode(&self, texts: &[String], pairs: Option<&[String]>) -> Result<Inputs, String> {
        self.encode_checked(texts, pairs).map(|(x, _)| x)
    }

    /// Like `encode`, and says whether any input was cut at `max_length`.
    pub fn encode_checked(&self, texts: &[String], pairs: Option<&[String]>) -> Result<(Inputs, bool), String> {
        let encodings = match pairs {
            None => self.tokenizer.encode_batch(texts.to_vec(), true),
            Some(p) => {
                self.tokenizer.encode_batch(texts.iter().cloned().zip(p.iter().cloned()).collect::<Vec<_>>(), true)
            }
        }
        .map_err(|e| format!("tokenization failed: {e}"))?;
        let rows: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)> = encodings
            .iter()
            .map(|e| {
                (
                    e.get_ids().iter().map(|&x| x as i64).collect(),
                    e.get_attention_mask().iter().map(|&x| x as i64).collect(),
                    e.get_type_ids().iter().map(|&x| x as i64).collect(),
                )
            })
            .collect();
        let truncated = encodings.iter().any(|e| !e.get_overflowing().is_empty());
        Ok((self.pad(rows), truncated))
    }

    /// Pads rows of (ids, mask, types) to the longest.
    pub fn pad(&self, rows: Vec<(Vec<i64>, Vec<i64>, Vec<i64>)>) -> Inputs {
        let seq = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
        let batch = rows.len();
        let mut x = Inputs {
            batch,
            seq,
            input_ids: Vec::with_capacity(batch * seq),
            attention_mask: Vec::with_capacity(batch * seq),
            token_type_ids: Vec::with_capacity(batch * seq),
        };
        for (ids, mask, types) in rows {
            let pad = seq - ids.len();
            x.input_ids.extend(ids.iter().copied().chain(std::iter::repeat_n(self.pad_id, pad)));
            x.attention_mask.extend(mask.iter().copied().chain(std::iter::repeat_n(0, pad)));
            x.token_type_ids.extend(types.iter().copied().chain(std::iter::repeat_n(0, pad)));
        }
        x
    }
}
