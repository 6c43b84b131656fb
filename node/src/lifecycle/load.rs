//! Loading one model: bring its files to local disk, read and check the artifact, read its
//! signature, load it in its engine, set up its tokenizer and labels, warm up. Every failure is a
//! `LoadError`: its sentence names the file in full (a local path, an S3 URI) for the node's log,
//! and `public()` says the same by file name only, for clients.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use stowage_core::Engine as EngineKind;
use stowage_engine::{self as engine, EngineError, EngineOptions, Inputs, Model, OutputKind, Signature};
use tokenizers::Tokenizer;

use crate::lifecycle::choice::{Verdict, Verdicts, ROUNDS};
use crate::lifecycle::spec::ModelSpec;
use crate::lifecycle::storage::{Fetcher, Source, StorageError};
use crate::serve::tokenize::{EncodeError, TextEncoder, TokenizerError};

/// Why a model could not be brought up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{error}")]
    Fetch { file: String, error: StorageError },
    #[error("{0}: fetch S3 files first (load::fetch)")]
    NotLocal(String),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("{path}: sha256 is {got}, the catalog says {want}")]
    Checksum { path: String, got: String, want: String },
    #[error("{artifact}: {error}")]
    Engine { artifact: String, error: EngineError },
    #[error("cannot load tokenizer {tokenizer}: {error}")]
    Tokenizer { tokenizer: String, error: String },
    #[error("{path}: {error}")]
    Config { path: String, error: String },
    #[error(
        "{tokenizer}: the tokenizer has {vocab_size} tokens but {artifact}'s word embeddings have {rows} rows \
         (the tokenizer of another model?)"
    )]
    Vocabulary { tokenizer: String, artifact: String, vocab_size: usize, rows: usize },
    #[error("warm-up: {0}")]
    WarmupInput(String),
    #[error("warm-up failed: {0}")]
    Warmup(EngineError),
    #[error("warm-up: the model's output is not finite ({0}): its weights are broken")]
    NotFinite(String),
    #[error("the loader crashed (see the node's log)")]
    Crashed,
}

impl LoadError {
    /// The reason for clients (`/models`, 503 `model_failed`): files by name, without local
    /// paths, buckets or keys; the full sentence goes to the node's log.
    pub fn public(&self) -> String {
        use LoadError::*;
        match self {
            Fetch { file, error } => format!("{}: {}", name(file), error.summary()),
            NotLocal(file) => format!("{}: not on local disk", name(file)),
            Read { path, error } => format!("cannot read {}: {error}", name(path)),
            Checksum { path, got, want } => format!("{}: sha256 is {got}, the catalog says {want}", name(path)),
            Engine { artifact, error } => format!("{}: {}", name(artifact), error.public()),
            Tokenizer { tokenizer, error } => format!("cannot load tokenizer {}: {error}", name(tokenizer)),
            Config { path, error } => format!("{}: {error}", name(path)),
            Vocabulary { tokenizer, artifact, vocab_size, rows } => format!(
                "{}: the tokenizer has {vocab_size} tokens but {}'s word embeddings have {rows} rows \
                 (the tokenizer of another model?)",
                name(tokenizer),
                name(artifact)
            ),
            WarmupInput(_) | Warmup(_) | NotFinite(_) | Crashed => self.to_string(),
        }
    }
}

/// The file name of a path or URI (`model.onnx` of `/srv/models/m/model.onnx` or `s3://b/m/model.onnx`).
fn name(file: &str) -> &str {
    file.rsplit('/').next().unwrap_or(file)
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
pub async fn fetch(spec: &ModelSpec, fetcher: &Fetcher) -> Result<Files, LoadError> {
    fn failed(file: &Source) -> impl FnOnce(StorageError) -> LoadError + '_ {
        move |error| LoadError::Fetch { file: file.to_string(), error }
    }
    let artifact = fetcher.fetch(&spec.artifact, spec.sha256.as_deref()).await.map_err(failed(&spec.artifact))?;
    let tokenizer = fetcher.fetch(&spec.tokenizer, None).await.map_err(failed(&spec.tokenizer))?;
    let config = match &spec.config {
        Some(c) if spec.config_optional => fetcher.fetch_optional(c).await.map_err(failed(c))?,
        Some(c) => Some(fetcher.fetch(c, None).await.map_err(failed(c))?),
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
    /// Why this engine runs the model, when it was chosen (`auto`) rather than named.
    pub engine_reason: Option<String>,
    /// For `auto`: both engines' timings behind the choice (one when the other cannot run it).
    pub engine_verdict: Option<Verdict>,
    pub signature: Signature,
    pub text: TextEncoder,
    pub labels: Vec<String>,
}

/// Facts measured while loading.
pub struct Loaded {
    pub model: LoadedModel,
    pub weights_bytes: u64,
    pub load_seconds: f64,
    pub warmup_seconds: f64,
}

/// The engine of an `auto` model: the kept verdict for `key` when that engine loads, else every
/// engine that loads the model, timed on a typical request (`choice.rs`); the faster serves and
/// the verdict is kept. One engine alone serves when the other cannot load the model.
fn choose(
    bytes: &[u8],
    signature: &engine::Signature,
    text: &TextEncoder,
    tokens: usize,
    opts: &EngineOptions,
    verdicts: &Verdicts,
    key: &str,
) -> Result<(Box<dyn Model>, Option<Verdict>), EngineError> {
    if let Some(v) = verdicts.get(key) {
        if let Ok(model) = engine::load(v.engine, bytes, signature, opts) {
            return Ok((model, Some(v)));
        }
    }
    let engine::Candidates { models: mut candidates, failed } = engine::candidates(bytes, signature, opts)?;
    let verdict = if let [a, b] = &candidates[..] {
        let x = typical_input(text, tokens).map_err(|e| EngineError::Run(format!("the typical request: {e}")))?;
        let times = engine::time(&[a.as_ref(), b.as_ref()], &x, ROUNDS)?;
        // candidates() lists tract first.
        let verdict = Verdict::faster(times[0], times[1], tokens);
        verdicts.put(key, &verdict);
        verdict
    } else {
        // One engine loads it: the other's reason is said, and nothing is kept (a library that
        // was missing may be there at the next start).
        let why = failed.first().map(|(kind, e)| match e {
            EngineError::Unavailable(_) => format!("{kind} is not available"),
            e => format!("{kind} cannot run it: {}", e.to_string().lines().next().unwrap_or_default()),
        });
        Verdict::only(candidates[0].backend(), tokens, why.unwrap_or_default())
    };
    let timed = candidates.len() > 1;
    candidates.retain(|m| m.backend() == verdict.engine);
    let model = candidates.pop().ok_or_else(|| EngineError::Load("auto: no engine chosen".into()))?;
    if timed {
        // The slower engine's copy of the weights is gone: give its heap back, or the node keeps
        // two models' memory for one (once per artifact: the verdict is kept).
        crate::process::release_freed_memory();
    }
    Ok((model, Some(verdict)))
}

/// A typical request of `tokens` tokens (capped at the model's length): real words of its
/// vocabulary, tokenized as the node tokenizes requests.
pub fn typical_input(text: &TextEncoder, tokens: usize) -> Result<Inputs, EncodeError> {
    let x = text.encode(&[typical_text(&text.tokenizer, tokens)], None)?;
    let want = tokens.clamp(2, x.seq.max(2));
    if want >= x.seq {
        return Ok(x);
    }
    // Keep the first want-1 tokens and the closing one ([SEP]).
    let keep = |v: &[i64]| v[..want - 1].iter().chain(v.last()).copied().collect::<Vec<_>>();
    Ok(text.pad(vec![(keep(&x.input_ids), keep(&x.attention_mask), keep(&x.token_type_ids))]))
}

/// A text of about `tokens` tokens: whole words of the model's vocabulary (word-piece and
/// sentence-piece markers taken off), as a client would send them.
pub fn typical_text(tokenizer: &Tokenizer, tokens: usize) -> String {
    let vocab = tokenizer.get_vocab(false);
    let mut words: Vec<&str> = vocab
        .keys()
        .map(|w| w.trim_start_matches(['▁', 'Ġ']))
        .filter(|w| w.chars().count() >= 2 && w.chars().all(|c| c.is_alphabetic()))
        .collect();
    words.sort_unstable();
    words.dedup();
    if words.is_empty() {
        words = vec!["word"];
    }
    // Two of the tokens are the tokenizer's own markers ([CLS], [SEP]).
    words.iter().cycle().take(tokens.saturating_sub(2).max(1)).copied().collect::<Vec<_>>().join(" ")
}

/// Labels (`id2label`) and the most tokens the position table takes (`max_position_embeddings`,
/// less the padding offset of RoBERTa-style models) from a config.json.
fn read_config(path: Option<&Path>) -> Result<(Vec<String>, Option<usize>), LoadError> {
    let Some(path) = path else { return Ok((Vec::new(), None)) };
    let bad = |error: String| LoadError::Config { path: path.display().to_string(), error };
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Read { path: path.display().to_string(), error: e.to_string() })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let mut labels = Vec::new();
    if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
        let mut pairs: Vec<(usize, String)> = Vec::new();
        for (k, name) in map {
            let i = k.parse::<usize>().map_err(|_| bad(format!("id2label key {k:?} is not a number")))?;
            pairs.push((i, name.as_str().unwrap_or_default().to_string()));
        }
        pairs.sort();
        labels = pairs.into_iter().map(|p| p.1).collect();
    }
    let positions = v.get("max_position_embeddings").and_then(|x| x.as_u64()).map(|x| x as usize);
    // RoBERTa-style models number positions from the padding id + 1 (XLM-R: 514 rows for 512
    // tokens): a text as long as the table would index past it.
    let offset = match v.get("model_type").and_then(|t| t.as_str()) {
        Some(t) if POSITIONS_AFTER_PADDING.contains(&t) => {
            v.get("pad_token_id").and_then(|p| p.as_u64()).map_or(2, |p| p + 1)
        }
        _ => 0,
    };
    Ok((labels, positions.map(|p| p.saturating_sub(offset as usize))))
}

/// Model types (config.json's `model_type`) whose position ids start after the padding id.
const POSITIONS_AFTER_PADDING: [&str; 10] = [
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "mpnet",
    "longformer",
    "data2vec-text",
    "ibert",
    "xmod",
    "roberta-prelayernorm",
];

/// Loads and warms up a model whose files are all local. Runs on a blocking thread.
pub fn load(spec: &ModelSpec, opts: &EngineOptions) -> Result<Loaded, LoadError> {
    let local = |s: &Source| match s {
        Source::Local(p) => Ok(p.clone()),
        Source::S3(u) => Err(LoadError::NotLocal(u.to_string())),
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
    load_files(spec, &files, opts, &Verdicts::new(None))
}

/// Loads and warms up one model from its local files; an `auto` model on the faster engine
/// (`choice.rs`: a verdict kept in `verdicts`, or measured now). Runs on a blocking thread.
pub fn load_files(
    spec: &ModelSpec,
    files: &Files,
    opts: &EngineOptions,
    verdicts: &Verdicts,
) -> Result<Loaded, LoadError> {
    let start = Instant::now();
    let path = files.artifact.display().to_string();
    let read = |e: std::io::Error| LoadError::Read { path: path.clone(), error: e.to_string() };
    // The node's own cached copy (downloaded) is mapped, not read: no second copy of the weights
    // in memory while the engine parses them, and no page faults to fill it (a cold load from the
    // cache is that much faster and disturbs the serving threads less). A file of the catalog's
    // own folder is read: someone may rewrite it in place, and a mapped file that shrinks would
    // kill the process.
    let (_map, owned);
    let bytes: &[u8] = if matches!(spec.artifact, Source::S3(_)) {
        let file = std::fs::File::open(&files.artifact).map_err(read)?;
        // SAFETY: the cache writes a file once and renames it into place, and never changes it
        // after (it may unlink it, which leaves a mapped inode intact): the map sees fixed bytes.
        _map = unsafe { memmap2::Mmap::map(&file) }.map_err(read)?;
        &_map
    } else {
        owned = std::fs::read(&files.artifact).map_err(read)?;
        &owned
    };
    let mut sha256 = None;
    if let Some(want) = spec.sha256.as_ref().filter(|_| !files.sha256_checked) {
        let got = hex::encode(Sha256::digest(bytes));
        if !got.eq_ignore_ascii_case(want) {
            return Err(LoadError::Checksum { path, got, want: want.clone() });
        }
        sha256 = Some(got);
    }
    let in_engine = |error| LoadError::Engine { artifact: spec.artifact.to_string(), error };
    let signature = engine::signature(bytes).map_err(in_engine)?;
    let tokenizer = Tokenizer::from_file(&files.tokenizer)
        .map_err(|e| LoadError::Tokenizer { tokenizer: spec.tokenizer.to_string(), error: e.to_string() })?;
    let (mut labels, positions) = read_config(files.config.as_deref())?;
    let positions = positions.into_iter().chain(signature.position_rows).min();
    let text = TextEncoder::new(tokenizer, positions, signature.vocab_rows).map_err(|e| match e {
        TokenizerError::Vocabulary { vocab_size, rows } => LoadError::Vocabulary {
            tokenizer: spec.tokenizer.to_string(),
            artifact: spec.artifact.to_string(),
            vocab_size,
            rows,
        },
        TokenizerError::Truncation(error) => LoadError::Tokenizer { tokenizer: spec.tokenizer.to_string(), error },
    })?;
    if let (OutputKind::Logits, Some(n)) = (signature.kind, signature.output_width) {
        if labels.len() != n {
            labels = (0..n).map(|i| format!("LABEL_{i}")).collect();
        }
    }
    let (model, verdict) = if spec.engine == EngineKind::Auto {
        let sha256 =
            sha256.or_else(|| spec.sha256.clone()).unwrap_or_else(|| verdicts.sha256_of(&files.artifact, bytes));
        let key = Verdicts::key(&sha256, opts, spec.request_tokens);
        choose(bytes, &signature, &text, spec.request_tokens, opts, verdicts, &key).map_err(in_engine)?
    } else {
        (engine::load(spec.engine, bytes, &signature, opts).map_err(in_engine)?, None)
    };
    let engine_reason = verdict.as_ref().map(Verdict::reason);
    let loaded = LoadedModel { model, engine_reason, engine_verdict: verdict, signature, text, labels };
    let load_seconds = start.elapsed().as_secs_f64();

    let warm = Instant::now();
    let inputs =
        loaded.text.encode(&["warm up".to_string()], None).map_err(|e| LoadError::WarmupInput(e.to_string()))?;
    let out = loaded.model.predict(&inputs).map_err(LoadError::Warmup)?;
    if let Some(bad) = out.data.iter().find(|v| !v.is_finite()) {
        // It would answer 500 to every request: fail it now, with the reason, instead.
        return Err(LoadError::NotFinite(format!("{bad}")));
    }
    Ok(Loaded {
        model: loaded,
        weights_bytes: bytes.len() as u64,
        load_seconds,
        warmup_seconds: warm.elapsed().as_secs_f64(),
    })
}
