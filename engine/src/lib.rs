//! The engine boundary: one small synchronous trait between the node and the inference engines
//! (tract, ONNX Runtime). Load bytes → a model with a signature → `predict(inputs)`. No actix,
//! tract or ort type crosses it; callers run it on the node's inference threads, never on async
//! workers. This crate depends on `stowage-core` only (docs/architecture.md).

pub mod ort;
pub mod signature;
pub mod tract;

use stowage_core::Engine as EngineKind;

pub use signature::signature;

/// Token inputs for one batch, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub batch: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// One row of token inputs: (ids, mask, types).
pub type Row<'a> = (&'a [i64], &'a [i64], &'a [i64]);

impl Inputs {
    /// One batch from `rows`, each padded to the longest: ids with `pad_id`, mask and types with 0.
    pub fn from_rows(rows: &[Row<'_>], pad_id: i64) -> Inputs {
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
            x.input_ids.extend(ids.iter().copied().chain(std::iter::repeat_n(pad_id, pad)));
            x.attention_mask.extend(mask.iter().copied().chain(std::iter::repeat_n(0, pad)));
            x.token_type_ids.extend(types.iter().copied().chain(std::iter::repeat_n(0, pad)));
        }
        x
    }

    /// Its rows, each `seq` long (padding included).
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        let seq = self.seq.max(1);
        self.input_ids
            .chunks(seq)
            .zip(self.attention_mask.chunks(seq))
            .zip(self.token_type_ids.chunks(seq))
            .map(|((ids, mask), types)| (ids, mask, types))
    }
}

/// The model's output tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What a model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// `logits` `[batch, labels]`: classification.
    Logits,
    /// `last_hidden_state` `[batch, seq, hidden]`: embeddings.
    LastHiddenState,
}

/// Inputs and output of a model, read from the ONNX file itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Signature {
    /// Graph inputs in file order: `input_ids`, `attention_mask`, optionally `token_type_ids`.
    pub inputs: Vec<String>,
    pub output: String,
    pub kind: OutputKind,
    /// Last dimension of the output when the file fixes it (labels or hidden size).
    pub output_width: Option<usize>,
    /// Rows of the word-embedding table that `input_ids` index, when the file shows it: token ids
    /// at or above it cannot run.
    pub vocab_rows: Option<usize>,
    /// Rows of the position-embedding table, when the file shows it: the most tokens one input
    /// can have.
    pub position_rows: Option<usize>,
}

impl Signature {
    pub fn has_token_type_ids(&self) -> bool {
        self.inputs.iter().any(|i| i == "token_type_ids")
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("not a readable ONNX model: {0}")]
    Decode(String),
    #[error("cannot serve this model: {0}")]
    Unsupported(String),
    #[error("engine failed to load the model: {0}")]
    Load(String),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("engine not available: {0}")]
    Unavailable(String),
    /// `auto`, and no engine loads the model: each one's error, kept whole (the sentence shows
    /// the first line of each).
    #[error("auto: neither engine loads the model: tract: {}; ort: {}", first_line(&tract.to_string()), first_line(&ort.to_string()))]
    Neither { tract: Box<EngineError>, ort: Box<EngineError> },
}

impl EngineError {
    /// The sentence for clients: the same, except where it names files of the machine (the
    /// ONNX Runtime library's path).
    pub fn public(&self) -> String {
        match self {
            EngineError::Unavailable(_) => "engine not available: ONNX Runtime (see the node's log)".into(),
            EngineError::Neither { tract, ort } => format!(
                "auto: neither engine loads the model: tract: {}; ort: {}",
                first_line(&tract.public()),
                first_line(&ort.public())
            ),
            e => e.to_string(),
        }
    }
}

/// A loaded model: thread-safe, synchronous.
pub trait Model: Send + Sync {
    fn backend(&self) -> EngineKind;
    fn predict(&self, inputs: &Inputs) -> Result<Output, EngineError>;
    /// How many `predict` calls can make progress at once, when the engine limits it. More
    /// admitted requests would only hold inference threads while they wait for the engine.
    fn concurrency_limit(&self) -> Option<usize> {
        None
    }
}

/// Default of `--ort-intra-threads`: one per CPU. The threads form one pool that every ONNX
/// Runtime session of the process shares (`ort::init`), so a lone request uses the cores that
/// would idle, and many requests at once never run more threads than this.
pub fn default_ort_intra_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Engine settings that apply to every model of a node.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// ONNX Runtime's intra-op threads: the size of the one pool every session shares (set when
    /// the library is loaded, `ort::init`).
    pub ort_intra_threads: usize,
    /// Run ONNX Runtime sessions on this CUDA device (g4dn). Needs the `onnxruntime-gpu` library
    /// (`scripts/ort-lib.sh --gpu`) with CUDA and cuDNN; a model that cannot get the device fails
    /// to load instead of silently falling back to the CPU.
    pub ort_cuda_device: Option<i32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { ort_intra_threads: default_ort_intra_threads(), ort_cuda_device: None }
    }
}

/// Loads `bytes` with a named engine (`Tract` or `Ort`). An engine that cannot load the model fails
/// with its own reason (tract's names the graph node) and the other engine to try. `Auto` is
/// decided by the caller from `candidates` (which engines load it) and `time` (which is faster).
pub fn load(
    engine: EngineKind,
    bytes: &[u8],
    sig: &Signature,
    opts: &EngineOptions,
) -> Result<Box<dyn Model>, EngineError> {
    match engine {
        EngineKind::Tract | EngineKind::Auto => load_tract(bytes, sig).map_err(|e| suggest(e, EngineKind::Ort)),
        EngineKind::Ort => load_ort(bytes, sig, opts).map_err(|e| suggest(e, EngineKind::Tract)),
    }
}

/// What `auto` can choose from: every engine that loads the model (tract first), with why each
/// other one did not; `Neither` when none does.
pub fn candidates(bytes: &[u8], sig: &Signature, opts: &EngineOptions) -> Result<Candidates, EngineError> {
    let tract = load_tract(bytes, sig);
    let ort = match ort::available() {
        Ok(()) => load_ort(bytes, sig, opts),
        Err(e) => Err(e),
    };
    match (tract, ort) {
        (Err(tract), Err(ort)) => Err(EngineError::Neither { tract: Box::new(tract), ort: Box::new(ort) }),
        (tract, ort) => {
            let mut c = Candidates { models: Vec::new(), failed: Vec::new() };
            for (kind, r) in [(EngineKind::Tract, tract), (EngineKind::Ort, ort)] {
                match r {
                    Ok(m) => c.models.push(m),
                    Err(e) => c.failed.push((kind, e)),
                }
            }
            Ok(c)
        }
    }
}

/// The engines that load a model, and why the others do not.
pub struct Candidates {
    pub models: Vec<Box<dyn Model>>,
    pub failed: Vec<(EngineKind, EngineError)>,
}

/// Median milliseconds of a `predict` of `x` on each model, after one warm-up call each: the
/// models take turns (A B A B …) so that a change in the machine's speed falls on all of them;
/// at most `rounds` rounds, fewer once one model is more than twice as fast as another after
/// three. A model that fails is reported as such.
pub fn time(models: &[&dyn Model], x: &Inputs, rounds: usize) -> Result<Vec<f64>, EngineError> {
    for m in models {
        m.predict(x)?;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    for round in 0..rounds.max(1) {
        for (i, m) in models.iter().enumerate() {
            let start = std::time::Instant::now();
            m.predict(x)?;
            times[i].push(start.elapsed().as_secs_f64() * 1e3);
        }
        if round >= 2 {
            let m: Vec<f64> = times.iter().map(|t| median(t)).collect();
            let (lo, hi) = m.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if hi > 2.0 * lo {
                break;
            }
        }
    }
    Ok(times.iter().map(|t| median(t)).collect())
}

fn load_tract(bytes: &[u8], sig: &Signature) -> Result<Box<dyn Model>, EngineError> {
    Ok(Box::new(tract::TractModel::load(bytes, sig)?))
}

fn load_ort(bytes: &[u8], sig: &Signature, opts: &EngineOptions) -> Result<Box<dyn Model>, EngineError> {
    Ok(Box::new(ort::OrtModel::load(bytes, sig, opts)?))
}

/// A load failure of one engine, with the other engine to try.
fn suggest(e: EngineError, other: EngineKind) -> EngineError {
    match e {
        EngineError::Load(m) => {
            EngineError::Load(format!("{m} (engine = \"{other}\" or \"auto\" in the catalog may run it)"))
        }
        e => e,
    }
}

/// The first line of an engine's (often multi-line) error.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Checks an output against the batch it answers.
fn check_output(sig: &Signature, x: &Inputs, shape: &[usize], len: usize) -> Result<(), EngineError> {
    let ok = match sig.kind {
        OutputKind::Logits => shape.len() == 2 && shape[0] == x.batch,
        OutputKind::LastHiddenState => shape.len() == 3 && shape[0] == x.batch && shape[1] == x.seq,
    } && shape.iter().product::<usize>() == len;
    if ok {
        Ok(())
    } else {
        Err(EngineError::Run(format!(
            "output {:?} has shape {shape:?} for a batch of {}×{}",
            sig.output, x.batch, x.seq
        )))
    }
}
