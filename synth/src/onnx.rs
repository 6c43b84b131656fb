//! Writes BERT-style ONNX models as Hugging Face exports them (inputs `input_ids`, `attention_mask`,
//! `token_type_ids`, int64, dynamic batch and sequence; output `logits` or `last_hidden_state`),
//! with random weights, using tract-onnx's protobuf types. No Python, no download.

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// Shape of a synthetic BERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BertShape {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    /// Classification labels; 0 makes an embedding model (`last_hidden_state`).
    pub labels: usize,
}

impl BertShape {
    pub fn params(&self) -> usize {
        let h = self.hidden;
        let emb = (self.vocab + self.max_positions + 2) * h + 2 * h;
        let layer = 4 * (h * h + h) + 2 * (h * self.intermediate) + self.intermediate + h + 4 * h;
        let head = if self.labels > 0 { h * h + h + h * self.labels + self.labels } else { 0 };
        emb + self.layers * layer + head
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    rng: ChaCha8Rng,
    next: usize,
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Int as i32, i: v, ..Default::default() }
}
fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Ints as i32, ints: v.to_vec(), ..Default::default() }
}
fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: AttributeType::Float as i32, f: v, ..Default::default() }
}

impl Graph {
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.next += 1;
        let out = format!("{}_{}", op.to_lowercase(), self.next);
        self.op_named(op, inputs, attrs, &out);
        out
    }

    fn op_named(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>, out: &str) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: format!("n{}", self.nodes.len()),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }

    /// An initializer tensor from little-endian raw bytes.
    fn tensor(&mut self, name: &str, dims: &[usize], data_type: DataType, raw_data: Vec<u8>) -> String {
        self.inits.push(TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            raw_data,
            ..Default::default()
        });
        name.into()
    }

    fn f32s(&mut self, name: &str, dims: &[usize], data: Vec<f32>) -> String {
        self.tensor(name, dims, DataType::Float, data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn i64s(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        self.tensor(name, dims, DataType::Int64, data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    /// Uniform weights with standard deviation `std` (BERT initializes with 0.02).
    fn random(&mut self, name: &str, dims: &[usize], std: f32) -> String {
        let n: usize = dims.iter().product();
        let a = std * 3f32.sqrt();
        let data = (0..n).map(|_| self.rng.random_range(-a..a)).collect();
        self.f32s(name, dims, data)
    }

    fn constant(&mut self, name: &str, dims: &[usize], v: f32) -> String {
        let n: usize = dims.iter().product();
        self.f32s(name, dims, vec![v; n])
    }

    fn linear(&mut self, x: &str, name: &str, din: usize, dout: usize) -> String {
        let w = self.random(&format!("{name}.weight"), &[din, dout], 0.02);
        let b = self.random(&format!("{name}.bias"), &[dout], 0.02);
        let y = self.op("MatMul", &[x, &w], vec![]);
        self.op("Add", &[&y, &b], vec![])
    }

    fn layer_norm(&mut self, x: &str, name: &str, h: usize) -> String {
        let g = self.constant(&format!("{name}.gamma"), &[h], 1.0);
        let b = self.constant(&format!("{name}.beta"), &[h], 0.0);
        self.op("LayerNormalization", &[x, &g, &b], vec![attr_int("axis", -1), attr_float("epsilon", 1e-12)])
    }
}

fn tensor_type(elem: DataType, dims: &[&str]) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: elem as i32,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| tensor_shape_proto::Dimension {
                        value: Some(tensor_shape_proto::dimension::Value::DimParam(d.to_string())),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    }
}

fn value(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto { name: name.into(), r#type: Some(ty), ..Default::default() }
}

/// A serialized ONNX model (opset 17) of the given shape, weights drawn from `seed`.
pub fn bert(shape: &BertShape, seed: u64) -> Vec<u8> {
    let (h, nh) = (shape.hidden, shape.heads);
    assert!(nh > 0 && h.is_multiple_of(nh), "hidden size must be a multiple of the number of heads");
    let hd = h / nh;
    let mut g = Graph { nodes: Vec::new(), inits: Vec::new(), rng: ChaCha8Rng::seed_from_u64(seed), next: 0 };

    // Embeddings: word + token type + position (positions sliced to the sequence length).
    let word = g.random("embeddings.word", &[shape.vocab, h], 0.02);
    let types = g.random("embeddings.token_type", &[2, h], 0.02);
    let pos = g.random("embeddings.position", &[shape.max_positions, h], 0.02);
    let we = g.op("Gather", &[&word, "input_ids"], vec![attr_int("axis", 0)]);
    let te = g.op("Gather", &[&types, "token_type_ids"], vec![attr_int("axis", 0)]);
    let ids_shape = g.op("Shape", &["input_ids"], vec![]);
    let one = g.i64s("const.one", &[1], &[1]);
    let two = g.i64s("const.two", &[1], &[2]);
    let zero = g.i64s("const.zero", &[1], &[0]);
    let seq = g.op("Slice", &[&ids_shape, &one, &two, &zero], vec![]);
    let pe = g.op("Slice", &[&pos, &zero, &seq, &zero], vec![]);
    let x = g.op("Add", &[&we, &te], vec![]);
    let x = g.op("Add", &[&x, &pe], vec![]);
    let mut x = g.layer_norm(&x, "embeddings.norm", h);

    // Additive attention mask: 0 where attended, -10000 where padded; [batch, 1, 1, seq].
    let mask = g.op("Cast", &["attention_mask"], vec![attr_int("to", DataType::Float as i64)]);
    let axes12 = g.i64s("const.axes12", &[2], &[1, 2]);
    let mask = g.op("Unsqueeze", &[&mask, &axes12], vec![]);
    let onef = g.constant("const.onef", &[], 1.0);
    let neg = g.constant("const.neg", &[], -10000.0);
    let inv = g.op("Sub", &[&onef, &mask], vec![]);
    let ext = g.op("Mul", &[&inv, &neg], vec![]);

    let split = g.i64s("const.split_heads", &[4], &[0, 0, nh as i64, hd as i64]);
    let merge = g.i64s("const.merge_heads", &[3], &[0, 0, h as i64]);
    let scale = g.constant("const.scale", &[], (hd as f32).sqrt());
    let half = g.constant("const.half", &[], 0.5);
    let sqrt2 = g.constant("const.sqrt2", &[], std::f32::consts::SQRT_2);
    for l in 0..shape.layers {
        let p = format!("layer{l}");
        let heads = |g: &mut Graph, t: &str, perm: &[i64]| {
            let r = g.op("Reshape", &[t, &split], vec![]);
            g.op("Transpose", &[&r], vec![attr_ints("perm", perm)])
        };
        let q = g.linear(&x, &format!("{p}.query"), h, h);
        let k = g.linear(&x, &format!("{p}.key"), h, h);
        let v = g.linear(&x, &format!("{p}.value"), h, h);
        let q = heads(&mut g, &q, &[0, 2, 1, 3]);
        let k = heads(&mut g, &k, &[0, 2, 3, 1]);
        let v = heads(&mut g, &v, &[0, 2, 1, 3]);
        let s = g.op("MatMul", &[&q, &k], vec![]);
        let s = g.op("Div", &[&s, &scale], vec![]);
        let s = g.op("Add", &[&s, &ext], vec![]);
        let a = g.op("Softmax", &[&s], vec![attr_int("axis", -1)]);
        let c = g.op("MatMul", &[&a, &v], vec![]);
        let c = g.op("Transpose", &[&c], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let c = g.op("Reshape", &[&c, &merge], vec![]);
        let o = g.linear(&c, &format!("{p}.attention_output"), h, h);
        let r = g.op("Add", &[&o, &x], vec![]);
        x = g.layer_norm(&r, &format!("{p}.attention_norm"), h);
        // Feed-forward with exact GELU: x · ½ · (1 + erf(x / √2)).
        let f = g.linear(&x, &format!("{p}.intermediate"), h, shape.intermediate);
        let e = g.op("Div", &[&f, &sqrt2], vec![]);
        let e = g.op("Erf", &[&e], vec![]);
        let e = g.op("Add", &[&e, &onef], vec![]);
        let f = g.op("Mul", &[&f, &e], vec![]);
        let f = g.op("Mul", &[&f, &half], vec![]);
        let o = g.linear(&f, &format!("{p}.output"), shape.intermediate, h);
        let r = g.op("Add", &[&o, &x], vec![]);
        x = g.layer_norm(&r, &format!("{p}.output_norm"), h);
    }

    let (out_name, out_type) = if shape.labels > 0 {
        // Pooler on [CLS], then the classifier.
        let idx = g.i64s("const.cls", &[], &[0]);
        let cls = g.op("Gather", &[&x, &idx], vec![attr_int("axis", 1)]);
        let pooled = g.linear(&cls, "pooler", h, h);
        let pooled = g.op("Tanh", &[&pooled], vec![]);
        let logits = g.linear(&pooled, "classifier", h, shape.labels);
        g.op_named("Identity", &[&logits], vec![], "logits");
        ("logits", tensor_type(DataType::Float, &["batch", "labels"]))
    } else {
        g.op_named("Identity", &[&x], vec![], "last_hidden_state");
        ("last_hidden_state", tensor_type(DataType::Float, &["batch", "sequence", "hidden"]))
    };
    // A known-size output dim reads better than a symbol in tools.
    let out_type = fix_last_dim(out_type, if shape.labels > 0 { shape.labels } else { h });

    let ids = tensor_type(DataType::Int64, &["batch", "sequence"]);
    let graph = GraphProto {
        name: "stowage-synthetic-bert".into(),
        node: g.nodes,
        initializer: g.inits,
        input: vec![
            value("input_ids", ids.clone()),
            value("attention_mask", ids.clone()),
            value("token_type_ids", ids),
        ],
        output: vec![value(out_name, out_type)],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        producer_name: "stowage synth".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn fix_last_dim(mut t: TypeProto, n: usize) -> TypeProto {
    if let Some(type_proto::Value::TensorType(tt)) = &mut t.value {
        if let Some(last) = tt.shape.as_mut().and_then(|s| s.dim.last_mut()) {
            last.value = Some(tensor_shape_proto::dimension::Value::DimValue(n as i64));
        }
    }
    t
}
