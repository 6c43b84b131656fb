//! Loading one model: read the artifact, check it, read its signature, load it in its engine, load
//! the tokenizer and labels, warm up. Every failure is a sentence naming the model and the file.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use stowage_core::{Catalog, Engine as EngineKind};
use tokenizers::Tokenizer;

use crate::backend::{self, EngineOptions, Inputs, Model, Row, Signature};
use crate::storage::{Fetcher, Source};

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

impl ModelSpec {
    /// The spec of catalog model `id`; tokenizer and config default to files beside the artifact.
    pub fn from_catalog(catalog: &Catalog, id: &str, default_engine: EngineKind) -> Result<Self, String> {
        let m =
            catalog.model(id).ok_or_else(|| format!("model {id:?} is not in catalog {}", catalog.path.display()))?;
        let base = catalog.base_dir();
        let artifact = Source::parse(base, &m.artifact)?;
        let tokenizer = match &m.tokenizer {
            Some(t) => Source::parse(base, t)?,
            None => artifact.beside("tokenizer.json"),
        };
        let (config, config_optional) = match &m.config {
            Some(c) => (Some(Source::parse(base, c)?), false),
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

/// A model's files on local disk.
#[derive(Debug, Clone)]
pub struct Files {
    pub artifact: PathBuf,
    pub tokenizer: PathBuf,
    pub config: Option<PathBuf>,
    /// The catalog's sha256 of the artifact was already checked (when it was downloaded).
    pub sha256_checked: bool,
    /// Bytes downloaded now, and bytes of cached copies reused.
    pub downloaded: u64,
    pub reused: u64,
}

/// Brings a model's files to local disk (a no-op for local files).
pub async fn fetch(spec: &ModelSpec, fetcher: &Fetcher) -> Result<Files, String> {
    let artifact = fetcher.fetch(&spec.artifact, spec.sha256.as_deref()).await?;
    let tokenizer = fetcher.fetch(&spec.tokenizer, None).await?;
    let config = match &spec.config {
        Some(c) if spec.config_optional => fetcher.fetch_optional(c).await?,
        Some(c) => Some(fetcher.fetch(c, None).await?),
        None => None,
    };
    let all = [Some(&artifact), Some(&tokenizer), config.as_ref()];
    Ok(Files {
        downloaded: all.iter().flatten().map(|f| f.downloaded).sum(),
        reused: all.iter().flatten().map(|f| f.reused).sum(),
        artifact: artifact.path,
        tokenizer: tokenizer.path,
        sha256_checked: artifact.sha256_checked,
        config: config.map(|c| c.path),
    })
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

/// Loads and warms up a model whose files are all local. Runs on a blocking thread.
pub fn load(spec: &ModelSpec, opts: &EngineOptions) -> Result<Loaded, String> {
    let local = |s: &Source| match s {
        Source::Local(p) => Ok(p.clone()),
        Source::S3(u) => Err(format!("{u}: fetch S3 files first (registry::load::fetch)")),
    };
    let config = match &spec.config {
        Some(c) => Some(local(c)?).filter(|p| !spec.config_optional || p.is_file()),
        None => None,
    };
    let files = Files {
        artifact: local(&spec.artifact)?,
        tokenizer: local(&spec.tokenizer)?,
        config,
        sha256_checked: false,
        downloaded: 0,
        reused: 0,
    };
    load_files(spec, &files, opts)
}

/// Loads and warms up one model from its local files. Runs on a blocking thread.
pub fn load_files(spec: &ModelSpec, files: &Files, opts: &EngineOptions) -> Result<Loaded, String> {
    let start = Instant::now();
    let path = files.artifact.display();
    let bytes = std::fs::read(&files.artifact).map_err(|e| format!("cannot read {path}: {e}"))?;
    if let Some(want) = spec.sha256.as_ref().filter(|_| !files.sha256_checked) {
        let got = hex::encode(Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("{path}: sha256 is {got}, the catalog says {want}"));
        }
    }
    let signature = backend::signature(&bytes).map_err(|e| format!("{}: {e}", spec.artifact))?;
    let model = backend::load(spec.engine, &bytes, &signature, opts).map_err(|e| format!("{}: {e}", spec.artifact))?;
    let mut tokenizer =
        Tokenizer::from_file(&files.tokenizer).map_err(|e| format!("cannot load tokenizer {}: {e}", spec.tokenizer))?;
    let (mut labels, positions) = read_config(files.config.as_deref())?;
    // Many exported tokenizer.json files pad every input to 128: pad only within a batch, here.
    tokenizer.with_padding(None);
    let positions = positions.into_iter().chain(signature.position_rows).min();
    let max_length = tokenizer.get_truncation().map_or(512, |t| t.max_length).min(positions.unwrap_or(512)).max(2);
    // Truncate at what the model can take, also when the tokenizer.json itself does not.
    let truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams { max_length, ..truncation }))
        .map_err(|e| format!("{}: {e}", spec.tokenizer))?;
    let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64;
    let vocab_size = tokenizer.get_vocab_size(true);
    if let Some(rows) = signature.vocab_rows.filter(|&rows| vocab_size > rows) {
        // Texts with the tokenizer's last ids would fail in the engine, request after request.
        return Err(format!(
            "{}: the tokenizer has {vocab_size} tokens but {}'s word embeddings have {rows} rows \
             (the tokenizer of another model?)",
            spec.tokenizer, spec.artifact
        ));
    }
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
        // One text at a time on the calling (inference) thread, without `encode_batch`'s
        // parallel iterator; offsets are not used, so `encode_fast` does not compute them.
        if pairs.is_some_and(|p| p.len() != texts.len()) {
            return Err("give one text pair per text".into());
        }
        let one = |i: usize, text: &String| match pairs {
            None => self.tokenizer.encode_fast(text.as_str(), true),
            Some(p) => self.tokenizer.encode_fast((text.as_str(), p[i].as_str()), true),
        };
        let encodings = texts
            .iter()
            .enumerate()
            .map(|(i, t)| one(i, t))
            .collect::<Result<Vec<_>, _>>()
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
        let rows: Vec<Row<'_>> = rows.iter().map(|(i, m, t)| (&i[..], &m[..], &t[..])).collect();
        Inputs::from_rows(&rows, self.pad_id)
    }
}
