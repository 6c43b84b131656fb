//! Real exports: small Hugging Face architectures (BERT, DistilBERT, MPNet, XLM-R; encoder and
//! classifier) with random weights, exported by torch.onnx as users export them
//! (scripts/export-fixtures.sh; versions in tests/fixtures/exports/versions.json). Every fixture
//! must load and answer like onnxruntime in Python with the default engine (`auto`), and each
//! named engine must either match too or refuse the model with a reason that names the graph node
//! and the other engine to try.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stowage_core::Engine;
use stowage_engine::EngineOptions;
use stowage_node::lifecycle::load::{self, LoadedModel};
use stowage_node::lifecycle::spec::ModelSpec;

use crate::common::{free_port, ort_available, stowage, wait_ok, Proc};

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exports");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("reference.json").is_file())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 8, "four architectures × (encoder, classifier) in {}", root.display());
    dirs
}

fn spec(dir: &Path, engine: Engine) -> ModelSpec {
    ModelSpec {
        id: dir.file_name().unwrap().to_string_lossy().into_owned(),
        engine,
        artifact: dir.join("model.onnx").into(),
        tokenizer: dir.join("tokenizer.json").into(),
        config: Some(dir.join("config.json").into()),
        config_optional: false,
        sha256: None,
        cold: false,
        request_tokens: stowage_core::catalog::DEFAULT_REQUEST_TOKENS,
        slo_p90_ms: None,
    }
}

fn reference(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap()
}

/// Every case of the fixture through `model`: the same token ids as the Python tokenizer and the
/// same outputs as onnxruntime in Python.
fn check(dir: &Path, model: &LoadedModel) {
    let name = dir.file_name().unwrap().to_string_lossy();
    let r = reference(dir);
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap().to_string();
        let pair = case["text_pair"].as_str().map(|p| vec![p.to_string()]);
        let x = model.text.encode(&[text], pair.as_deref()).unwrap();
        let want_ids: Vec<i64> = case["input_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        assert_eq!(x.input_ids, want_ids, "{name}: token ids differ from the Python tokenizer's");
        let out = model.model.predict(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        let shape: Vec<usize> =
            case["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(out.shape, shape, "{name}");
        let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let d = out.data.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(d <= TOLERANCE, "{name} on {}: differs from onnxruntime by {d}", model.model.backend());
    }
}

#[test]
fn every_fixture_answers_like_onnxruntime_with_the_default_engine() {
    if !ort_available("the real-export fixtures") {
        return;
    }
    for dir in fixtures() {
        let loaded = load::load(&spec(&dir, Engine::Auto), &EngineOptions::default())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let reason = loaded.model.engine_reason.clone().unwrap_or_default();
        assert!(reason.starts_with("auto: "), "{reason}");
        eprintln!("{}: {} ({reason})", dir.display(), loaded.model.model.backend());
        check(&dir, &loaded.model);
    }
}

#[test]
fn each_engine_matches_or_says_which_node_it_cannot_run_and_what_to_try() {
    if !ort_available("the real-export fixtures") {
        return;
    }
    let mut refused = 0;
    for dir in fixtures() {
        for (engine, other) in [(Engine::Tract, "ort"), (Engine::Ort, "tract")] {
            match load::load(&spec(&dir, engine), &EngineOptions::default()) {
                Ok(loaded) => check(&dir, &loaded.model),
                Err(e) => {
                    let e = e.to_string();
                    refused += 1;
                    assert!(e.contains("node") && e.contains(&format!("engine = \"{other}\"")), "{e}");
                }
            }
        }
    }
    eprintln!("{refused} (fixture, engine) pairs refused with a reason");
}

#[test]
fn roberta_style_positions_are_cut_before_the_padding_offset() {
    // XLM-R numbers positions from the padding id + 1: 66 rows hold 64 tokens. A tokenizer.json
    // without truncation (as save_pretrained writes many) must still cut at 64.
    let dir = fixtures().into_iter().find(|d| d.ends_with("xlm-roberta-encoder")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut tok: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap()).unwrap();
    tok["truncation"] = Value::Null;
    std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
    let spec = ModelSpec { tokenizer: tmp.path().join("tokenizer.json").into(), ..spec(&dir, Engine::Auto) };
    if !ort_available("the real-export fixtures") {
        return;
    }
    let loaded = load::load(&spec, &EngineOptions::default()).unwrap();
    assert_eq!(loaded.model.text.max_length, 64);
    let x = loaded.model.text.encode(&["the delivery was fast ".repeat(100)], None).unwrap();
    assert_eq!(x.seq, 64);
    loaded.model.model.predict(&x).expect("a long text runs");
}

#[test]
fn a_catalog_without_engines_serves_every_fixture() {
    if !ort_available("the real-export fixtures") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut catalog = String::from(
        "[instance_types.\"local.small\"]\nfamily = \"local\"\nprice_per_hour = 0.1\nmemory_gib = 1\ncompute = 2\n\n\
         [profiles.export.local]\nmemory_mib = 20\nservice_ms = 1\n\n",
    );
    let dirs = fixtures();
    for dir in &dirs {
        let id = dir.file_name().unwrap().to_string_lossy();
        catalog += &format!(
            "[[models]]\nid = \"{id}\"\nprofile = \"export\"\nartifact = \"{}\"\npeak_rps = 1\n\n",
            dir.join("model.onnx").display()
        );
    }
    let path = tmp.path().join("models.toml");
    std::fs::write(&path, catalog).unwrap();
    let port = free_port();
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(&path)
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), &mut node);
    let models: Value = ureq::get(&format!("{base}/models")).call().unwrap().body_mut().read_json().unwrap();
    for m in models["models"].as_array().unwrap() {
        assert_eq!(m["state"], "ready", "{m}");
        assert!(m["engine_choice"].as_str().is_some_and(|c| c.starts_with("auto: ")), "{m}");
        let id = m["id"].as_str().unwrap();
        let body: Value = ureq::post(&format!("{base}/predictions/{id}"))
            .send_json(
                serde_json::json!({"inputs": ["I love this product", "ok"], "text_pair": ["is it good?", "yes"]}),
            )
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        assert_eq!(body["predictions"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(body["backend"], m["backend"]);
    }
}
