//! A model's signature, read from the ONNX file itself: its inputs, the output the node reads
//! and what it means, and the rows of its embedding tables. Models the node cannot feed or
//! interpret are refused here, before any engine sees them.

use prost::Message;
use tract_onnx::pb::{tensor_proto::DataType, type_proto, ModelProto};

use crate::{EngineError, OutputKind, Signature};

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
    finite_weights(&graph)?;
    let (vocab_rows, position_rows) = embedding_rows(&graph);
    Ok(Signature { inputs, output: out.name.clone(), kind, output_width, vocab_rows, position_rows })
}

/// Refuses weights that hold NaN, or ±inf in a tensor of more than one value: an engine may
/// still load them, and tract then answers every input with the same finite scores (a corrupt
/// download or a broken conversion served as a working model). A single infinite value is a
/// constant (a mask's −inf) and is kept. Initializers and `Constant` nodes are read; tensors
/// stored outside the file are not.
fn finite_weights(graph: &tract_onnx::pb::GraphProto) -> Result<(), EngineError> {
    let constants = graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant")
        .flat_map(|n| n.attribute.iter().filter_map(|a| a.t.as_ref()));
    for t in graph.initializer.iter().chain(constants) {
        if let Some((i, what)) = first_non_finite(t) {
            return Err(EngineError::Unsupported(format!(
                "weights not finite: {:?} holds {what} at index {i} (a corrupt file or a broken conversion)",
                t.name
            )));
        }
    }
    Ok(())
}

/// The first value of `t` that is NaN (or ±inf, where `t` holds more than one value), by index.
fn first_non_finite(t: &tract_onnx::pb::TensorProto) -> Option<(usize, &'static str)> {
    let many = t.dims.iter().product::<i64>() > 1;
    let raw = &t.raw_data;
    // (NaN, infinite) for each value.
    let flags: Box<dyn Iterator<Item = (bool, bool)> + '_> = match DataType::try_from(t.data_type).ok()? {
        DataType::Float if !raw.is_empty() => Box::new(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .map(|x| (x.is_nan(), x.is_infinite())),
        ),
        DataType::Float => Box::new(t.float_data.iter().map(|x| (x.is_nan(), x.is_infinite()))),
        DataType::Double if !raw.is_empty() => Box::new(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .map(|x| (x.is_nan(), x.is_infinite())),
        ),
        DataType::Double => Box::new(t.double_data.iter().map(|x| (x.is_nan(), x.is_infinite()))),
        // Half precision: an all-ones exponent (5 bits for float16, 8 for bfloat16).
        kind @ (DataType::Float16 | DataType::Bfloat16) => {
            let (exponent, mantissa) =
                if kind == DataType::Float16 { (0x7c00u16, 0x03ffu16) } else { (0x7f80, 0x007f) };
            let flag = move |h: u16| {
                (h & exponent == exponent && h & mantissa != 0, h & exponent == exponent && h & mantissa == 0)
            };
            if raw.is_empty() {
                Box::new(t.int32_data.iter().map(move |&x| flag(x as u16)))
            } else {
                Box::new(raw.chunks_exact(2).map(move |c| flag(u16::from_le_bytes([c[0], c[1]]))))
            }
        }
        _ => return None,
    };
    flags.enumerate().find_map(|(i, (nan, inf))| {
        if nan {
            Some((i, "NaN"))
        } else if inf && many {
            Some((i, "an infinite value"))
        } else {
            None
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{type_proto, GraphProto, TensorProto, TypeProto, ValueInfoProto};

    #[test]
    fn nan_anywhere_and_inf_in_weights_are_found_in_every_float_layout() {
        let tensor = |t: DataType, dims: Vec<i64>, raw: Vec<u8>| TensorProto {
            name: "w".into(),
            data_type: t as i32,
            dims,
            raw_data: raw,
            ..Default::default()
        };
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let u16s = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let check = |t: TensorProto| first_non_finite(&t);
        assert_eq!(check(tensor(DataType::Float, vec![3], f32s(&[1.0, f32::NAN, 2.0]))), Some((1, "NaN")));
        assert_eq!(
            check(tensor(DataType::Float, vec![2], f32s(&[1.0, f32::INFINITY]))),
            Some((1, "an infinite value"))
        );
        assert_eq!(check(tensor(DataType::Float, vec![3], f32s(&[1.0, -2.0, 3.0e38]))), None);
        // A lone −inf is a constant (a mask), a lone NaN never is.
        assert_eq!(check(tensor(DataType::Float, vec![], f32s(&[f32::NEG_INFINITY]))), None);
        assert_eq!(check(tensor(DataType::Float, vec![1], f32s(&[f32::NAN]))), Some((0, "NaN")));
        let listed =
            TensorProto { float_data: vec![0.5, f32::NEG_INFINITY], ..tensor(DataType::Float, vec![2], vec![]) };
        assert_eq!(check(listed), Some((1, "an infinite value")));
        assert_eq!(check(tensor(DataType::Double, vec![2], f64s(&[0.0, f64::NAN]))), Some((1, "NaN")));
        // float16: 0x7e00 NaN, 0x7c00 +inf, 0x3c00 1.0; bfloat16: 0x7fc0 NaN, 0xff80 −inf.
        assert_eq!(check(tensor(DataType::Float16, vec![2], u16s(&[0x3c00, 0x7e00]))), Some((1, "NaN")));
        assert_eq!(check(tensor(DataType::Float16, vec![2], u16s(&[0x7c00, 0x3c00]))), Some((0, "an infinite value")));
        assert_eq!(check(tensor(DataType::Bfloat16, vec![2], u16s(&[0x3f80, 0xff80]))), Some((1, "an infinite value")));
        assert_eq!(check(tensor(DataType::Bfloat16, vec![2], u16s(&[0x3f80, 0x7fc0]))), Some((1, "NaN")));
        assert_eq!(check(tensor(DataType::Int64, vec![1], vec![0xff; 8])), None);
    }

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
