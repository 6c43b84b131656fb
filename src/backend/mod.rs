//! The engine boundary: one small synchronous trait between the HTTP layer and the inference
//! engines (tract, ONNX Runtime). Load bytes → a model with a signature → `predict(inputs)`.
//! No actix, tract or ort type crosses it; callers run it on the node's inference threads, never the async workers.

pub mod ort;
pub mod tract;

use prost::Message;
use stowage_core::Engine as EngineKind;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto};

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

#[derive(Debug, Clone, thiserror::Error)]
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

/// Engine settings that apply to every model of a node.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// ONNX Runtime intra-op threads per session (1 on small machines: parallelism comes from
    /// serving several requests at once, not from splitting one).
    pub ort_intra_threads: usize,
    /// Run ONNX Runtime sessions on this CUDA device (g4dn). Needs the `onnxruntime-gpu` library
    /// (`scripts/ort-lib.sh --gpu`) with CUDA and cuDNN; a model that cannot get the device fails
    /// to load instead of silently falling back to the CPU.
    pub ort_cuda_device: Option<i32>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { ort_intra_threads: 1, ort_cuda_device: None }
    }
}

/// Reads the signature and refuses models the server cannot feed or interpret.
pub fn signature(bytes: &[u8]) -> Result<Signature, EngineError> {
    let model = ModelProto::decode(bytes).map_err(|e| EngineError::Decode(e.to_string()))?;
    let graph = model.graph.ok_or_else(|| EngineError::Decode("the file has no graph".into()))?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut inputs = Vec::new();
    for i in graph.input.iter().filter(|i| !initializers.contains(i.name.as_str())) {
        if !["input_ids", "attention_mask", "token_type_ids"].contains(&i.name.as_str()) {
            return Err(EngineError::Unsupported(format!(
                "unexpected input {:?} (expected input_ids, attention_mask, optional token_type_ids)",
                i.name
            )));
        }
        let elem = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.elem_type,
            _ => -1,
        };
        if elem != DataType::Int64 as i32 {
            return Err(EngineError::Unsupported(format!("input {:?} is not int64", i.name)));
        }
        inputs.push(i.name.clone());
    }
    for required in ["input_ids", "attention_mask"] {
        if !inputs.iter().any(|i| i == required) {
            return Err(EngineError::Unsupported(format!("the model has no {required:?} input")));
        }
    }
    let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let (out, kind) = if let Some(o) = graph.output.iter().find(|o| o.name == "logits") {
        (o, OutputKind::Logits)
    } else if let Some(o) = graph.output.iter().find(|o| o.name == "last_hidden_state") {
        (o, OutputKind::LastHiddenState)
    } else {
        return Err(EngineError::Unsupported(format!(
            "no `logits` or `last_hidden_state` output (outputs: {names:?})"
        )));
    };
    let output_width = match out.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            t.shape.as_ref().and_then(|s| s.dim.last()).and_then(|d| match d.value {
                Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
                _ => None,
            })
        }
        _ => None,
    };
    let (vocab_rows, position_rows) = embedding_rows(&graph);
    Ok(Signature { inputs, output: out.name.clone(), kind, output_width, vocab_rows, position_rows })
}

/// Most rows a token-type table has (BERT 2, RoBERTa 1); fewer than any position table.
const MIN_POSITIONS: usize = 8;

/// Rows of the word and position embedding tables, as far as the file shows them. Exporters
/// write `Gather(words, input_ids)` and take positions from a table as wide, by `Gather` with
/// computed indices or by `Slice`; ONNX Runtime's optimizer fuses both into
/// `EmbedLayerNormalization(input_ids, segment_ids, words, positions, …)`. The token-type table
/// is looked up by a graph input (`token_type_ids`), which tells it from the positions; where the
/// export made token types a constant, its table (1 or 2 rows) is told apart by its size: a table
/// of `MIN_POSITIONS` rows or fewer is never taken for the positions, which would cut every text.
fn embedding_rows(graph: &tract_onnx::pb::GraphProto) -> (Option<usize>, Option<usize>) {
    let table = |name: Option<&String>| name.and_then(|n| graph.initializer.iter().find(|t| &t.name == n));
    let rows = |t: &tract_onnx::pb::TensorProto| t.dims.first().and_then(|&d| usize::try_from(d).ok());
    let graph_input = |name: Option<&String>| name.is_some_and(|n| graph.input.iter().any(|i| &i.name == n));
    let reads_ids = |n: &&tract_onnx::pb::NodeProto, i: usize| n.input.get(i).is_some_and(|x| x == "input_ids");
    if let Some(n) = graph.node.iter().find(|n| n.op_type == "EmbedLayerNormalization" && reads_ids(n, 0)) {
        return (table(n.input.get(2)).and_then(rows), table(n.input.get(3)).and_then(rows));
    }
    let Some(words) =
        graph.node.iter().find(|n| n.op_type == "Gather" && reads_ids(n, 1)).and_then(|n| table(n.input.first()))
    else {
        return (None, None);
    };
    let positions = graph
        .node
        .iter()
        .filter(|n| match n.op_type.as_str() {
            "Gather" => !graph_input(n.input.get(1)),
            "Slice" => true,
            _ => false,
        })
        .filter_map(|n| table(n.input.first()))
        .filter(|t| t.name != words.name && t.dims.len() == 2 && t.dims.get(1) == words.dims.get(1))
        .filter_map(rows)
        .filter(|&n| n > MIN_POSITIONS)
        .max();
    (rows(words), positions)
}

/// Loads `bytes` with the chosen engine.
pub fn load(
    engine: EngineKind,
    bytes: &[u8],
    sig: &Signature,
    opts: &EngineOptions,
) -> Result<Box<dyn Model>, EngineError> {
    match engine {
        EngineKind::Tract => Ok(Box::new(tract::TractModel::load(bytes, sig)?)),
        EngineKind::Ort => Ok(Box::new(ort::OrtModel::load(bytes, sig, opts)?)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{type_proto, GraphProto, TypeProto, ValueInfoProto};

    fn model(inputs: &[(&str, DataType)], outputs: &[&str]) -> Vec<u8> {
        let vi = |name: &str, t: DataType| ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: t as i32, shape: None })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let graph = GraphProto {
            input: inputs.iter().map(|(n, t)| vi(n, *t)).collect(),
            output: outputs.iter().map(|n| vi(n, DataType::Float)).collect(),
            ..Default::default()
        };
        ModelProto { ir_version: 8, graph: Some(graph), ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn reads_signatures() {
        let s = signature(&model(&[("input_ids", DataType::Int64), ("attention_mask", DataType::Int64)], &["logits"]))
            .unwrap();
        assert_eq!((s.kind, s.inputs.len(), s.has_token_type_ids()), (OutputKind::Logits, 2, false));
        let s = signature(&model(
            &[("input_ids", DataType::Int64), ("attention_mask", DataType::Int64)],
            &["pooler_output", "last_hidden_state"],
        ))
        .unwrap();
        assert_eq!((s.kind, s.output.as_str()), (OutputKind::LastHiddenState, "last_hidden_state"));
    }

    #[test]
    fn finds_the_word_and_position_embedding_rows() {
        use tract_onnx::pb::{NodeProto, TensorProto, ValueInfoProto};
        let table =
            |name: &str, rows: i64| TensorProto { name: name.into(), dims: vec![rows, 8], ..Default::default() };
        let node = |op: &str, inputs: &[&str]| NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        let graph = |nodes: Vec<NodeProto>| GraphProto {
            node: nodes,
            input: ["input_ids", "token_type_ids"]
                .iter()
                .map(|n| ValueInfoProto { name: n.to_string(), ..Default::default() })
                .collect(),
            initializer: vec![
                table("types", 2),
                table("words", 30522),
                table("pos", 512),
                TensorProto { name: "dense".into(), dims: vec![8, 32], ..Default::default() },
            ],
            ..Default::default()
        };
        // Token types are looked up by an input, positions by computed indices (or sliced).
        let exported = graph(vec![
            node("Gather", &["types", "token_type_ids"]),
            node("Gather", &["words", "input_ids"]),
            node("Gather", &["pos", "position_ids_sliced"]),
            node("Gather", &["dense", "some_index"]),
        ]);
        assert_eq!(embedding_rows(&exported), (Some(30522), Some(512)));
        let sliced =
            graph(vec![node("Gather", &["words", "input_ids"]), node("Slice", &["pos", "zero", "seq", "zero"])]);
        assert_eq!(embedding_rows(&sliced), (Some(30522), Some(512)));
        let fused = graph(vec![node("EmbedLayerNormalization", &["input_ids", "token_type_ids", "words", "pos"])]);
        assert_eq!(embedding_rows(&fused), (Some(30522), Some(512)));
        // Token types from a constant (no token_type_ids input) and positions not found.
        let constant_types = graph(vec![node("Gather", &["words", "input_ids"]), node("Gather", &["types", "zeros"])]);
        assert_eq!(embedding_rows(&constant_types), (Some(30522), None));
        let computed = graph(vec![node("Gather", &["made_at_run_time", "input_ids"])]);
        assert_eq!(embedding_rows(&computed), (None, None));
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let cases = [
            (model(&[("pixel_values", DataType::Float)], &["logits"]), "unexpected input \"pixel_values\""),
            (
                model(&[("input_ids", DataType::Int32), ("attention_mask", DataType::Int64)], &["logits"]),
                "is not int64",
            ),
            (model(&[("input_ids", DataType::Int64)], &["logits"]), "no \"attention_mask\" input"),
            (
                model(&[("input_ids", DataType::Int64), ("attention_mask", DataType::Int64)], &["start_logits"]),
                "no `logits` or `last_hidden_state` output",
            ),
            (b"not protobuf at all".to_vec(), "not a readable ONNX model"),
        ];
        for (bytes, want) in cases {
            let e = signature(&bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
    }
}
