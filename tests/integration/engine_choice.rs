//! `auto` chooses the faster engine by measurement, keeps the verdict by the artifact's sha256,
//! and says both timings. The int8 fixture (tests/fixtures/int8-tiny: a quantized synthetic
//! classifier) is one where tract is slower; no fixture here has tract faster in a test build
//! (its Rust code is not optimized there, ONNX Runtime's library always is), so the other way is
//! checked on engines whose speed the test sets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stowage_core::Engine;
use stowage_engine::{EngineError, EngineOptions, Inputs, Model, Output};
use stowage_node::lifecycle::choice::{Verdict, Verdicts};
use stowage_node::lifecycle::load;
use stowage_node::lifecycle::spec::ModelSpec;

use crate::common::{free_port, ort_available, run, stowage, wait_ok, Proc};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/int8-tiny")
}

fn spec(dir: &Path) -> ModelSpec {
    ModelSpec {
        id: "int8".into(),
        engine: Engine::Auto,
        artifact: dir.join("model.onnx").into(),
        tokenizer: dir.join("tokenizer.json").into(),
        config: Some(dir.join("config.json").into()),
        config_optional: false,
        sha256: None,
        cold: false,
        request_tokens: 16,
        slo_p90_ms: None,
    }
}

#[test]
fn auto_runs_the_int8_model_on_the_faster_engine_and_keeps_the_verdict() {
    if !ort_available("the auto engine choice") {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let files = load::Files {
        artifact: fixture().join("model.onnx"),
        tokenizer: fixture().join("tokenizer.json"),
        config: Some(fixture().join("config.json")),
        sha256_checked: false,
        downloaded: 0,
        reused: 0,
    };
    let opts = EngineOptions::default();
    let verdicts = Verdicts::new(Some(cache.path().to_path_buf()));
    let loaded = load::load_files(&spec(&fixture()), &files, &opts, &verdicts).unwrap();
    let v = loaded.model.engine_verdict.clone().unwrap();
    let (tract, ort) = (v.tract_ms.unwrap(), v.ort_ms.unwrap());
    assert_eq!((v.engine, v.tokens, v.cached), (Engine::Ort, 16, false), "{v:?}");
    assert!(tract > ort, "tract {tract} ms, ort {ort} ms");
    assert_eq!(loaded.model.model.backend(), Engine::Ort);
    let reason = loaded.model.engine_reason.clone().unwrap();
    assert!(
        reason.starts_with("auto: ort, the faster at 16 tokens (tract ") && reason.contains(" ms, ort "),
        "{reason}"
    );
    // A restart (a new process's verdicts, the same folder) takes the verdict without timing.
    let again = load::load_files(&spec(&fixture()), &files, &opts, &Verdicts::new(Some(cache.path().into()))).unwrap();
    let v2 = again.model.engine_verdict.unwrap();
    assert_eq!((v2.engine, v2.cached), (Engine::Ort, true));
    let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
    assert!(close(v2.tract_ms, tract) && close(v2.ort_ms, ort), "{v2:?}: the kept timings");
    assert!(again.model.engine_reason.unwrap().ends_with("measured earlier)"));
    // Another request length is measured anew.
    let longer = ModelSpec { request_tokens: 48, ..spec(&fixture()) };
    let v3 = load::load_files(&longer, &files, &opts, &verdicts).unwrap().model.engine_verdict.unwrap();
    assert_eq!((v3.tokens, v3.cached), (48, false));
}

/// An engine that takes a set time per call.
struct Timed(Engine, Duration);

impl Model for Timed {
    fn backend(&self) -> Engine {
        self.0
    }

    fn predict(&self, x: &Inputs) -> Result<Output, EngineError> {
        std::thread::sleep(self.1);
        Ok(Output { shape: vec![x.batch, 2], data: vec![0.0; x.batch * 2] })
    }
}

#[test]
fn the_faster_engine_wins_whichever_it_is() {
    let x = Inputs { batch: 1, seq: 2, input_ids: vec![1, 2], attention_mask: vec![1, 1], token_type_ids: vec![0, 0] };
    for (tract_ms, ort_ms, want) in [(1, 6, Engine::Tract), (6, 1, Engine::Ort)] {
        let tract = Timed(Engine::Tract, Duration::from_millis(tract_ms));
        let ort = Timed(Engine::Ort, Duration::from_millis(ort_ms));
        let times = stowage_engine::time(&[&tract, &ort], &x, 7).unwrap();
        let v = Verdict::faster(times[0], times[1], 32);
        assert_eq!(v.engine, want, "{times:?}");
        assert!(times[0] >= tract_ms as f64 && times[1] >= ort_ms as f64, "{times:?}");
    }
}

#[test]
fn a_node_shows_both_timings_and_remembers_its_verdict_across_a_restart() {
    if !ort_available("the auto engine choice on a node") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(
        dir.path().join("models.toml"),
        format!(
            "[instance_types.\"c5.large\"]\nfamily = \"c5\"\nprice_per_hour = 0.085\nmemory_gib = 3\ncompute = 2\n\n\
             [[models]]\nid = \"int8\"\nartifact = \"{}\"\npeak_rps = 1\nrequest_tokens = 16\n\
             [models.footprint.c5]\nmemory_mib = 10\nservice_ms = 1\n",
            fixture().join("model.onnx").display()
        ),
    )
    .unwrap();
    let serve = |log: &str| {
        let port = free_port();
        let mut node = Proc(
            stowage()
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
                .arg(dir.path().join("models.toml"))
                .arg("--cache-dir")
                .arg(&cache)
                .env("NO_COLOR", "1")
                .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ok(&format!("{base}/ready"), &mut node);
        let m: serde_json::Value =
            ureq::get(&format!("{base}/models/int8")).call().unwrap().body_mut().read_json().unwrap();
        assert_eq!(node.terminate().code(), Some(0));
        m
    };
    let first = serve("first.log");
    assert_eq!(first["backend"], "ort", "{first}");
    let t = &first["engine_timings"];
    assert!(t["tract_ms"].as_f64().unwrap() > t["ort_ms"].as_f64().unwrap(), "{first}");
    assert_eq!((t["engine"].as_str(), t["tokens"].as_u64()), (Some("ort"), Some(16)), "{first}");
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap();
    assert!(log.contains("auto: ort, the faster at 16 tokens (tract "), "the start-up log says why:\n{log}");
    let second = serve("second.log");
    assert_eq!(second["engine_timings"]["cached"], true, "{second}");
    assert!(second["engine_choice"].as_str().unwrap().ends_with("measured earlier)"), "{second}");
    assert_eq!(run(std::process::Command::new("ls").arg(cache.join("engines"))).lines().count(), 1);
}
