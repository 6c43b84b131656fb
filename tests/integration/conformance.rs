//! Engine conformance: the same inputs through tract and ONNX Runtime give the same outputs, and
//! both match a reference computed by onnxruntime in Python (scripts/reference.py), saved in
//! tests/fixtures/reference.json with its tokens. Tolerance: 1e-4 absolute on every value.
//!
//! The ort half needs the ONNX Runtime library (ORT_DYLIB_PATH, from scripts/ort-lib.sh). Without
//! it the ort half is skipped with a message, unless STOWAGE_REQUIRE_ORT=1 (CI sets it).

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};
use stowage::synth::{self, Preset, SynthSpec};
use stowage_core::Engine;
use stowage_engine::{self as backend, EngineOptions, Inputs};
use stowage_node::lifecycle::load;
use stowage_node::lifecycle::spec::ModelSpec;

const TOLERANCE: f32 = 1e-4;

fn reference() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The models the fixture was computed on, made again (synth is deterministic).
fn models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth::write(&SynthSpec {
        out: dir.path().to_path_buf(),
        count: 2,
        shape: Preset::Tiny.shape(2),
        profile: "synth-tiny".into(),
        prefix: "conf".into(),
        embedding_every: 2,
        seed: 11,
        peak_rps: 2.0,
        local_per_node: None,
    })
    .unwrap();
    dir
}

fn rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tract_and_ort_match_the_onnxruntime_reference() {
    let fixture = reference();
    let texts: Vec<String> =
        fixture["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    let dir = models();
    let with_ort = crate::common::ort_available("the ort half of the conformance test");
    for m in fixture["models"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let artifact = dir.path().join(id).join("model.onnx");
        let bytes = std::fs::read(&artifact).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            m["sha256"].as_str().unwrap(),
            "{id}: synth output changed; regenerate the fixture"
        );

        // Tokens: the server's tokenization equals Hugging Face's Python tokenizer.
        let spec = ModelSpec {
            id: id.into(),
            engine: Engine::Tract,
            artifact: artifact.clone().into(),
            tokenizer: dir.path().join(id).join("tokenizer.json").into(),
            config: None,
            config_optional: false,
            sha256: None,
            cold: false,
            request_tokens: stowage_core::catalog::DEFAULT_REQUEST_TOKENS,
            slo_p90_ms: None,
        };
        let loaded = load::load(&spec, &EngineOptions::default()).unwrap();
        let x = loaded.model.text.encode(&texts, None).unwrap();
        let (ids, mask, types) = (rows(&m["input_ids"]), rows(&m["attention_mask"]), rows(&m["token_type_ids"]));
        assert_eq!(x.input_ids, ids.concat(), "{id}: token ids differ from the reference");
        assert_eq!(x.attention_mask, mask.concat());
        assert_eq!(x.token_type_ids, types.concat());

        let want: Vec<f32> = m["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let shape: Vec<usize> = m["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let inputs = Inputs {
            batch: ids.len(),
            seq: ids[0].len(),
            input_ids: ids.concat(),
            attention_mask: mask.concat(),
            token_type_ids: types.concat(),
        };
        let sig = backend::signature(&bytes).unwrap();
        assert_eq!(sig.output, m["output"].as_str().unwrap());

        // One engine's output, checked against the reference.
        let run = |engine: Engine| {
            let out = backend::load(engine, &bytes, &sig, &EngineOptions::default()).unwrap().predict(&inputs).unwrap();
            assert_eq!(out.shape, shape);
            let d = max_diff(&out.data, &want);
            eprintln!("{id}: {engine} vs onnxruntime (Python): max |diff| {d:e}");
            assert!(d <= TOLERANCE, "{id}: {engine} differs from the Python reference by {d}");
            out
        };
        let tract = run(Engine::Tract);
        if with_ort {
            let ort = run(Engine::Ort);
            let d = max_diff(&ort.data, &tract.data);
            eprintln!("{id}: tract vs ort: max |diff| {d:e}");
            assert!(d <= TOLERANCE, "{id}: tract and ort differ by {d}");
        }
    }
}
