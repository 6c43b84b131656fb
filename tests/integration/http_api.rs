//! Every route and every error of the HTTP API, in-process against the real app factory
//! (actix_web::test), with real synthetic models run by tract.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use actix_web::{test, App};
use serde_json::{json, Value};
use stowage::http::state::{AppState, ServeConfig};
use stowage::synth::{self, Preset, SynthSpec};
use stowage_core::Engine;
use stowage_engine::{EngineError, EngineOptions};
use stowage_node::lifecycle::load::{self, LoadedModel};
use stowage_node::lifecycle::registry::{Limits, Registry, State};
use stowage_node::lifecycle::spec::ModelSpec;
use stowage_node::lifecycle::startup::{load_all, LoadOptions};
use stowage_node::{Config, Node};

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// Three tiny models (two classifiers, one embedding model) and one corrupt file, made once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        synth::write(&SynthSpec {
            out: root.clone(),
            count: 3,
            shape: Preset::Tiny.shape(2),
            profile: "synth-tiny".into(),
            prefix: "tiny".into(),
            embedding_every: 3,
            seed: 7,
            peak_rps: 1.0,
            local_per_node: None,
        })
        .unwrap();
        std::fs::create_dir_all(root.join("broken")).unwrap();
        std::fs::write(root.join("broken/model.onnx"), b"this is not a protobuf").unwrap();
        Fixture { _dir: dir, root }
    })
}

fn spec(id: &str) -> ModelSpec {
    let root = &fixture().root;
    let dir = if id == "broken" { root.join("broken") } else { root.join(id) };
    ModelSpec {
        id: id.into(),
        engine: Engine::Tract,
        artifact: dir.join("model.onnx").into(),
        tokenizer: root.join("tiny-0001/tokenizer.json").into(),
        config: Some(dir.join("config.json")).filter(|p| p.exists()).map(Into::into),
        config_optional: false,
        sha256: None,
        cold: false,
        request_tokens: stowage_core::catalog::DEFAULT_REQUEST_TOKENS,
        slo_p90_ms: None,
    }
}

async fn state_with(ids: &[&str], limits: Limits, config: ServeConfig, load: bool) -> Arc<AppState> {
    state_of(ids.iter().map(|id| spec(id)).collect(), limits, config, load).await
}

/// A node's state for `specs`, its models loaded when `load`.
async fn state_of(specs: Vec<ModelSpec>, limits: Limits, config: ServeConfig, load: bool) -> Arc<AppState> {
    let reg = Arc::new(Registry::new(specs, limits));
    if load {
        load_all(reg.clone(), LoadOptions { parallelism: 2, ..LoadOptions::default() }).await;
    }
    let node = Node::new(reg, config.node.clone(), None).expect("inference threads");
    Arc::new(AppState::new(Arc::new(node), config))
}

async fn state() -> Arc<AppState> {
    state_with(
        &["tiny-0001", "tiny-0002", "tiny-0003"],
        Limits { concurrency: 2, queue: Some(4), batch: 4, batch_tokens: 512 },
        ServeConfig::default(),
        true,
    )
    .await
}

macro_rules! app {
    ($state:expr) => {
        test::init_service(App::new().configure(stowage::http::configure($state.clone()))).await
    };
}

/// (status, JSON body, Retry-After) of one request.
macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service($app, $req.to_request()).await;
        let status = resp.status().as_u16();
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let body = test::read_body(resp).await;
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null), retry)
    }};
}

fn post(path: &str, body: &str) -> test::TestRequest {
    test::TestRequest::post().uri(path).set_payload(body.to_string())
}

/// One engine call of a model at once, `queue` more waiting at most, batches of `batch`.
fn one(queue: usize, batch: usize) -> Limits {
    Limits { concurrency: 1, queue: Some(queue), batch, batch_tokens: 512 }
}

/// Three requests to `id`, each answered: the node has measured what a request costs.
macro_rules! warm {
    ($app:expr, $id:expr) => {
        for _ in 0..3 {
            let (code, body, _) = call!($app, post(&format!("/predictions/{}", $id), r#"{"inputs": "warm"}"#));
            assert_eq!(code, 200, "{body}");
        }
    };
}

/// A node of tiny-0001 on one inference thread, one slot and 64 waiting at most, that refuses a
/// request expected to wait past `bound`.
async fn bounded_node(bound: std::time::Duration) -> Arc<AppState> {
    let config = ServeConfig {
        node: stowage_node::Config {
            inference_threads: 1,
            max_queue_delay: Some(bound),
            ..stowage_node::Config::default()
        },
        ..ServeConfig::default()
    };
    state_with(&["tiny-0001"], one(64, 1), config, true).await
}

/// The text of `GET /metrics` (asserting a 200).
macro_rules! metrics_text {
    ($app:expr) => {{
        let resp = test::call_service($app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(resp.status().as_u16(), 200);
        String::from_utf8(test::read_body(resp).await.to_vec()).unwrap()
    }};
}

/// Holds the node's only inference thread (`inference_threads: 1`) at once; the future releases
/// it when `n` requests wait in `model`'s batcher, and `after` more, so that one engine call takes
/// them. The hold starts before the future is first polled: before the requests are sent.
fn hold_inference_until_pending(
    s: &AppState,
    model: &str,
    n: usize,
    after: std::time::Duration,
) -> impl std::future::Future<Output = ()> {
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    s.node.pool.submit(move || blocked.recv().unwrap_or_default()).unwrap();
    let entry = s.node.registry.get(model).unwrap();
    async move {
        while entry.batcher.pending() < n {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        tokio::time::sleep(after).await;
        release.send(()).unwrap();
    }
}

#[actix_web::test]
async fn ping_and_ready() {
    let s = state_with(&["tiny-0001"], one(1, 1), ServeConfig::default(), false).await;
    let app = app!(s);
    let (code, body, _) = call!(&app, test::TestRequest::get().uri("/ping"));
    assert_eq!((code, body), (200, json!({"status": "Healthy"})));
    let (code, body, retry) = call!(&app, test::TestRequest::get().uri("/ready"));
    assert_eq!(code, 503);
    assert_eq!(body["code"], "not_ready");
    assert!(retry.is_some());
    // Health checks that send HEAD get the same statuses.
    let head = |uri: &str| test::TestRequest::default().method(actix_web::http::Method::HEAD).uri(uri).to_request();
    assert_eq!(test::call_service(&app, head("/ping")).await.status().as_u16(), 200);
    assert_eq!(test::call_service(&app, head("/ready")).await.status().as_u16(), 503);
    // While loading, predictions are refused too.
    let (code, body, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!((code, body["code"].as_str()), (503, Some("not_ready")));
    load_all(s.node.registry.clone(), LoadOptions { parallelism: 1, ..LoadOptions::default() }).await;
    let (code, body, _) = call!(&app, test::TestRequest::get().uri("/ready"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["models"]["ready"], 1);
    assert_eq!(test::call_service(&app, head("/ready")).await.status().as_u16(), 200);
}

#[actix_web::test]
async fn classifies_text_by_get_and_post() {
    let s = state().await;
    let app = app!(s);
    let (code, body, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=I+love+this+product"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["model"], "tiny-0001");
    assert_eq!(body["backend"], "tract");
    let p = &body["predictions"][0];
    assert!(["negative", "positive"].contains(&p["label"].as_str().unwrap()));
    let scores = p["scores"].as_object().unwrap();
    let sum: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-9);
    assert_eq!(p["score"], scores[p["label"].as_str().unwrap()]);

    // The reference sample's seq_0 alias gives the same answer.
    let (_, alias, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?seq_0=I+love+this+product"));
    assert_eq!(alias["predictions"], body["predictions"]);

    // A batch answers one prediction per input, the same as one at a time (padding is masked).
    let (code, batch, _) = call!(
        &app,
        post(
            "/predictions/tiny-0001",
            r#"{"inputs": ["I love this product", "terrible, slow delivery and a broken item"]}"#
        )
    );
    assert_eq!(code, 200, "{batch}");
    assert_eq!(batch["predictions"].as_array().unwrap().len(), 2);
    let a = batch["predictions"][0]["scores"]["positive"].as_f64().unwrap();
    let b = body["predictions"][0]["scores"]["positive"].as_f64().unwrap();
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");

    let (code, pair, _) =
        call!(&app, post("/predictions/tiny-0002", r#"{"inputs": "is it good", "text_pair": "yes it is"}"#));
    assert_eq!(code, 200, "{pair}");
}

#[actix_web::test]
async fn pre_tokenized_input_matches_text() {
    let s = state().await;
    let app = app!(s);
    let reg = &s.node.registry;
    let State::Ready(m) = reg.get("tiny-0001").unwrap().state() else { panic!("not ready") };
    let x = m.text.encode(&["thanks for the fast delivery".to_string()], None).unwrap();
    let body =
        json!({"input_ids": [x.input_ids], "attention_mask": [x.attention_mask], "token_type_ids": [x.token_type_ids]});
    let (code, tok, _) = call!(&app, post("/predictions/tiny-0001", &body.to_string()));
    assert_eq!(code, 200, "{tok}");
    let (_, text, _) = call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "thanks for the fast delivery"}"#));
    assert_eq!(tok["predictions"], text["predictions"]);
}

#[actix_web::test]
async fn embedding_models_answer_unit_vectors() {
    let s = state().await;
    let app = app!(s);
    let (code, body, _) = call!(&app, post("/predictions/tiny-0003", r#"{"inputs": ["hello world", "hi"]}"#));
    assert_eq!(code, 200, "{body}");
    for p in body["predictions"].as_array().unwrap() {
        let v: Vec<f64> = p["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), 64);
        let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
}

#[actix_web::test]
async fn request_errors() {
    let config = ServeConfig {
        max_body_bytes: 512,
        node: Config { max_batch: 4, ..Config::default() },
        ..ServeConfig::default()
    };
    let s = state_with(&["tiny-0001"], one(0, 1), config, true).await;
    let app = app!(s);
    let cases: Vec<(test::TestRequest, u16, &str)> = vec![
        (post("/predictions/tiny-0001", r#"{"inputs": "#), 400, "malformed_request"),
        (post("/predictions/tiny-0001", r#"{"inputs": 5}"#), 400, "malformed_request"),
        (post("/predictions/tiny-0001", r#"{"input": "typo"}"#), 400, "malformed_request"),
        (post("/predictions/tiny-0001", r#"{}"#), 400, "malformed_request"),
        (post("/predictions/tiny-0001", r#"{"input_ids": [[101, 102]]}"#), 400, "malformed_request"),
        (post("/predictions/tiny-0001", r#"{"inputs": "a", "attention_mask": [[1]]}"#), 400, "malformed_request"),
        (
            post("/predictions/tiny-0001", r#"{"input_ids": [[101]], "attention_mask": [[1]], "text_pair": "b"}"#),
            400,
            "malformed_request",
        ),
        (test::TestRequest::get().uri("/predictions/tiny-0001"), 400, "malformed_request"),
        (test::TestRequest::get().uri("/predictions/nope?text=hi"), 404, "unknown_model"),
        (post("/predictions/nope", "{}"), 404, "unknown_model"),
        (post("/predictions/tiny-0001", &format!(r#"{{"inputs": "{}"}}"#, "word ".repeat(200))), 413, "body_too_large"),
        (post("/predictions/tiny-0001", r#"{"inputs": ""}"#), 422, "invalid_input"),
        (post("/predictions/tiny-0001", r#"{"inputs": ["ok", "   "]}"#), 422, "invalid_input"),
        // Nothing to read: a NUL, zero-width spaces and joiners, a byte-order mark.
        (test::TestRequest::get().uri("/predictions/tiny-0001?text=%00"), 422, "invalid_input"),
        (test::TestRequest::get().uri("/predictions/tiny-0001?text=%E2%80%8B"), 422, "invalid_input"),
        (post("/predictions/tiny-0001", r#"{"inputs": ["ok", "\u200b\u200d\ufeff \u0000"]}"#), 422, "invalid_input"),
        (post("/predictions/tiny-0001", r#"{"inputs": []}"#), 422, "invalid_input"),
        (post("/predictions/tiny-0001", r#"{"inputs": ["a","b","c","d","e"]}"#), 422, "invalid_input"),
        (post("/predictions/tiny-0001", r#"{"inputs": ["a","b"], "text_pair": ["c"]}"#), 422, "invalid_input"),
        (
            post("/predictions/tiny-0001", r#"{"input_ids": [[101, 99999, 102]], "attention_mask": [[1, 1, 1]]}"#),
            422,
            "invalid_input",
        ),
        (
            post("/predictions/tiny-0001", r#"{"input_ids": [[101, -1, 102]], "attention_mask": [[1, 1, 1]]}"#),
            422,
            "invalid_input",
        ),
        (
            post("/predictions/tiny-0001", r#"{"input_ids": [[101, 102]], "attention_mask": [[1, 2]]}"#),
            422,
            "invalid_input",
        ),
        (
            post("/predictions/tiny-0001", r#"{"input_ids": [[101, 102], [101]], "attention_mask": [[1, 1], [1]]}"#),
            422,
            "invalid_input",
        ),
        (
            post("/predictions/tiny-0001", &format!(r#"{{"inputs": "{}", "truncate": false}}"#, "a ".repeat(140))),
            422,
            "invalid_input",
        ),
    ];
    for (req, want, code) in cases {
        let (status, body, _) = call!(&app, req);
        assert_eq!((status, body["code"].as_str()), (want, Some(code)), "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    // Truncation is on by default: the same long text is accepted.
    let (status, _, _) =
        call!(&app, post("/predictions/tiny-0001", &format!(r#"{{"inputs": "{}"}}"#, "a ".repeat(140))));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn unknown_paths_and_methods_answer_json_errors() {
    let s = state_with(&["tiny-0001"], one(1, 1), ServeConfig::default(), false).await;
    let app = app!(s);
    let cases = [
        (test::TestRequest::get().uri("/nope"), 404, "not_found", None),
        (test::TestRequest::get().uri("/predictions/"), 404, "not_found", None),
        (test::TestRequest::get().uri("/predictions/tiny-0001/extra?text=hi"), 404, "not_found", None),
        (test::TestRequest::put().uri("/predictions/tiny-0001"), 405, "method_not_allowed", Some("GET, POST")),
        (test::TestRequest::delete().uri("/models/tiny-0001"), 405, "method_not_allowed", Some("GET")),
        (test::TestRequest::post().uri("/ping"), 405, "method_not_allowed", Some("GET, HEAD")),
        (test::TestRequest::post().uri("/metrics"), 405, "method_not_allowed", Some("GET")),
    ];
    for (req, want, code, allow) in cases {
        let resp = test::call_service(&app, req.to_request()).await;
        let status = resp.status().as_u16();
        let allowed = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(resp.headers().get("content-type").unwrap(), "application/json");
        let body: Value = serde_json::from_slice(&test::read_body(resp).await).unwrap();
        assert_eq!((status, body["code"].as_str(), allowed.as_deref()), (want, Some(code), allow), "{body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
}

#[actix_web::test]
async fn overload_answers_429_with_retry_after() {
    let s = state_with(&["tiny-0001"], one(0, 1), ServeConfig::default(), true).await;
    let app = app!(s);
    let entry = s.node.registry.get("tiny-0001").unwrap();
    let held = entry.admission.enter(0).await.unwrap();
    let asked = std::time::Instant::now();
    let (status, body, retry) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!((status, body["code"].as_str()), (429, Some("queue_full")));
    assert_eq!(retry.as_deref(), Some("1"));
    // The refusal comes after --reject-delay-ms (100), so that clients deaf to Retry-After
    // cannot spend the cores on refusals.
    let waited = asked.elapsed();
    assert!(waited >= std::time::Duration::from_millis(100), "{waited:?}");
    drop(held);
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn a_request_that_waits_past_the_queue_timeout_gets_503_and_never_runs() {
    let limit = std::time::Duration::from_millis(100);
    let config = ServeConfig {
        node: Config { inference_threads: 1, queue_timeout: Some(limit), ..Config::default() },
        ..ServeConfig::default()
    };
    // Waiting for admission: the model's only slot is held.
    let s = state_with(&["tiny-0001"], one(4, 1), config.clone(), true).await;
    let app = app!(s);
    let first = s.node.registry.get("tiny-0001").unwrap();
    let held = first.admission.enter(0).await.unwrap();
    let t = std::time::Instant::now();
    let (status, body, retry) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!((status, body["code"].as_str(), retry.as_deref()), (503, Some("queue_timeout"), Some("1")), "{body}");
    assert!(t.elapsed() >= limit);
    drop(held);
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!(status, 200);

    // Admitted, then waiting in the model's batch queue: the only inference thread is held past
    // the limit, so both requests are answered 503 when their call comes, without running.
    let s = state_with(&["tiny-0002"], one(0, 4), config, true).await;
    let app = app!(s);
    let opener = hold_inference_until_pending(&s, "tiny-0002", 2, limit + std::time::Duration::from_millis(20));
    let requests = futures_util::future::join_all(["good", "bad"].map(|t| {
        let (app, req) = (&app, post("/predictions/tiny-0002", &json!({"inputs": t}).to_string()));
        async move { call!(app, req) }
    }));
    let (answers, ()) = futures_util::join!(requests, opener);
    for (status, body, _) in &answers {
        assert_eq!((*status, body["code"].as_str()), (503, Some("queue_timeout")), "{body}");
    }
    // The model still serves: its call ended and gave back its place.
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0002?text=hi"));
    assert_eq!(status, 200);
    let text = metrics_text!(&app);
    let m = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(m(r#"stowage_rejected_total{model="tiny-0001",reason="queue_timeout"}"#), 1.0);
    assert_eq!(m(r#"stowage_rejected_total{model="tiny-0002",reason="queue_timeout"}"#), 2.0);
    assert_eq!(m(r#"stowage_batches_total{model="tiny-0002"}"#), 1.0, "only the last request ran");
}

#[actix_web::test]
async fn shutdown_answers_503() {
    let s = state().await;
    let app = app!(s);
    s.node.registry.begin_shutdown();
    let (status, body, retry) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!((status, body["code"].as_str()), (503, Some("shutting_down")));
    assert!(retry.is_some());
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/ready"));
    assert_eq!(status, 503);
}

/// A real loaded model whose engine is replaced by one that fails (`Err`) or crashes (panics) on
/// every call: an engine fault cannot be summoned from a sound model on demand.
enum Fault {
    Error,
    Panic,
    /// Answers NaN: logits `[batch, width]`, or hidden states `[batch, seq, width]`.
    NotFinite {
        width: usize,
        per_token: bool,
    },
}

impl stowage_engine::Model for Fault {
    fn backend(&self) -> Engine {
        Engine::Tract
    }

    fn predict(&self, x: &stowage_engine::Inputs) -> Result<stowage_engine::Output, EngineError> {
        match *self {
            Fault::Error => Err(EngineError::Run("simulated engine fault".into())),
            Fault::Panic => panic!("simulated engine crash"),
            Fault::NotFinite { width, per_token } => {
                let shape = if per_token { vec![x.batch, x.seq, width] } else { vec![x.batch, width] };
                let data = vec![f32::NAN; shape.iter().product()];
                Ok(stowage_engine::Output { shape, data })
            }
        }
    }
}

fn break_engine(s: &AppState, id: &str, fault: Fault) {
    let entry = s.node.registry.get(id).unwrap();
    let State::Ready(m) = entry.state() else { panic!("{id} is not ready") };
    let broken = LoadedModel {
        model: Box::new(fault),
        engine_reason: None,
        engine_verdict: None,
        signature: m.signature.clone(),
        text: m.text.clone(),
        labels: m.labels.clone(),
    };
    entry.set_state(State::Ready(Arc::new(broken)));
}

#[actix_web::test]
async fn an_engine_that_fails_or_crashes_answers_500_and_the_node_serves_on() {
    let config = ServeConfig { node: Config { inference_threads: 1, ..Config::default() }, ..ServeConfig::default() };
    let limits = one(1, 1);
    let s = state_with(&["tiny-0001", "tiny-0002", "tiny-0003"], limits, config, true).await;
    break_engine(&s, "tiny-0001", Fault::Error);
    break_engine(&s, "tiny-0002", Fault::Panic);
    let app = app!(s);
    // The operator sees what the client sees: the handler logs each 500 (on this thread).
    let logs = Logs::default();
    let _logging =
        tracing::subscriber::set_default(tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).finish());
    for (id, says) in [("tiny-0001", "simulated engine fault"), ("tiny-0002", "gave no answer")] {
        for _ in 0..2 {
            let (status, body, _) = call!(&app, post(&format!("/predictions/{id}"), r#"{"inputs": "hi"}"#));
            assert_eq!((status, body["code"].as_str()), (500, Some("inference_failed")), "{body}");
            assert!(body["error"].as_str().unwrap().contains(says), "{body}");
        }
    }
    // The node's only inference thread survived the crash, and each model's place was given back.
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0003?text=hi"));
    assert_eq!(status, 200);
    let text = metrics_text!(&app);
    let m = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(m(r#"stowage_requests_total{model="tiny-0001",code="500"}"#), 2.0);
    assert_eq!(m(r#"stowage_requests_total{model="tiny-0002",code="500"}"#), 2.0);
    assert_eq!(m(r#"stowage_inflight_requests{model="tiny-0002"}"#), 0.0);
    let logs = logs.text();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains("ERROR") && l.contains("inference failed")).collect();
    assert_eq!(errors.len(), 4, "{logs}");
    assert!(errors[0].contains("tiny-0001") && errors[0].contains("simulated engine fault"), "{logs}");
    assert!(errors[2].contains("tiny-0002"), "{logs}");
}

#[actix_web::test]
async fn non_finite_outputs_answer_500_not_null_scores() {
    let limits = one(1, 1);
    let s = state_with(&["tiny-0001", "tiny-0003"], limits, ServeConfig::default(), true).await;
    break_engine(&s, "tiny-0001", Fault::NotFinite { width: 2, per_token: false });
    break_engine(&s, "tiny-0003", Fault::NotFinite { width: 64, per_token: true });
    let app = app!(s);
    for id in ["tiny-0001", "tiny-0003"] {
        let (status, body, _) = call!(&app, post(&format!("/predictions/{id}"), r#"{"inputs": ["a", "b"]}"#));
        assert_eq!((status, body["code"].as_str()), (500, Some("inference_failed")), "{id}: {body}");
        assert!(body["error"].as_str().unwrap().contains("not finite"), "{body}");
    }
}

/// Log lines written by a `tracing` subscriber, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

#[actix_web::test]
async fn a_broken_model_fails_alone() {
    let s = state_with(&["tiny-0001", "broken"], one(1, 1), ServeConfig::default(), true).await;
    let app = app!(s);
    let (status, body, _) = call!(&app, test::TestRequest::get().uri("/predictions/broken?text=hi"));
    assert_eq!((status, body["code"].as_str()), (503, Some("model_failed")));
    assert!(body["error"].as_str().unwrap().contains("model.onnx: not a readable ONNX model"), "{body}");
    // Clients learn the file, not where the node keeps it.
    let root = fixture().root.display().to_string();
    assert!(!body.to_string().contains(&root), "{body}");
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!(status, 200);
    let (_, models, _) = call!(&app, test::TestRequest::get().uri("/models"));
    let states: Vec<(&str, &str)> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("tiny-0001", "ready"), ("broken", "failed")]);
    let why = models["models"][1]["error"].as_str().unwrap();
    assert!(why.contains("model.onnx: not a readable ONNX model") && !why.contains(&root), "{why}");
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/ready"));
    assert_eq!(status, 503, "all models must be ready by default");
}

#[actix_web::test]
async fn a_model_with_the_tokenizer_of_a_larger_vocabulary_fails_to_load() {
    // The fixture's tokenizer has 1000 tokens; this model's word embeddings only 500 rows.
    let dir = tempfile::tempdir().unwrap();
    let shape = synth::BertShape { vocab: 500, ..Preset::Tiny.shape(2) };
    let (profile, prefix) = ("synth-tiny".into(), "small".into());
    let small = SynthSpec {
        out: dir.path().into(),
        count: 1,
        shape,
        profile,
        prefix,
        embedding_every: 0,
        seed: 9,
        peak_rps: 1.0,
        local_per_node: None,
    };
    synth::write(&small).unwrap();
    let small = |tokenizer: PathBuf| ModelSpec {
        id: "small-0001".into(),
        artifact: dir.path().join("small-0001/model.onnx").into(),
        tokenizer: tokenizer.into(),
        config: None,
        ..spec("tiny-0001")
    };
    let node = |specs| state_of(specs, one(1, 1), ServeConfig::default(), true);

    let s = node(vec![spec("tiny-0001"), small(fixture().root.join("tiny-0001/tokenizer.json"))]).await;
    let app = app!(s);
    let (status, body, _) = call!(&app, test::TestRequest::get().uri("/predictions/small-0001?text=hi"));
    assert_eq!((status, body["code"].as_str()), (503, Some("model_failed")), "{body}");
    let why = body["error"].as_str().unwrap();
    assert!(why.contains("1000 tokens") && why.contains("500 rows") && why.contains("model.onnx's"), "{why}");
    assert!(!why.contains(&dir.path().display().to_string()), "no local path for clients: {why}");
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!(status, 200);

    // With its own tokenizer the same model loads, and /models shows the rows read from the file.
    let s = node(vec![small(dir.path().join("small-0001/tokenizer.json"))]).await;
    let app = app!(s);
    let (status, body, _) = call!(&app, test::TestRequest::get().uri("/models/small-0001"));
    assert_eq!((status, body["state"].as_str()), (200, Some("ready")), "{body}");
    assert_eq!(body["signature"]["vocab_rows"], json!(500), "{body}");
}

#[actix_web::test]
async fn ort_engine_serves_the_same_api() {
    if !crate::common::ort_available("this test") {
        return;
    }
    let specs = vec![
        ModelSpec { engine: Engine::Ort, ..spec("tiny-0001") },
        ModelSpec { engine: Engine::Ort, ..spec("tiny-0003") },
    ];
    let s = state_of(
        specs,
        Limits { concurrency: 2, queue: Some(4), batch: 4, batch_tokens: 512 },
        ServeConfig::default(),
        true,
    )
    .await;
    let app = app!(s);
    // A session runs one engine call at a time, so the model makes one whatever the flag says (a
    // second would only hold an inference thread while it waits for the session); requests that
    // arrive meanwhile are batched into its next call.
    let (_, listed, _) = call!(&app, test::TestRequest::get().uri("/models/tiny-0001"));
    assert_eq!((listed["concurrency"].as_u64(), listed["batch_inputs"].as_u64()), (Some(1), Some(4)), "{listed}");
    let (code, body, _) = call!(&app, post("/predictions/tiny-0001", r#"{"inputs": ["I love this product", "bad"]}"#));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["backend"], "ort");
    // Same answer as tract on the same model.
    let t = state_with(
        &["tiny-0001"],
        Limits { concurrency: 2, queue: Some(1), batch: 1, batch_tokens: 512 },
        ServeConfig::default(),
        true,
    )
    .await;
    let tapp = app!(t);
    let (_, listed, _) = call!(&tapp, test::TestRequest::get().uri("/models/tiny-0001"));
    assert_eq!(listed["concurrency"], 2, "tract runs calls in parallel: {listed}");
    let (_, tb, _) = call!(&tapp, post("/predictions/tiny-0001", r#"{"inputs": ["I love this product", "bad"]}"#));
    for k in 0..2 {
        let (a, b) = (
            body["predictions"][k]["scores"]["positive"].as_f64().unwrap(),
            tb["predictions"][k]["scores"]["positive"].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let (code, emb, _) = call!(&app, post("/predictions/tiny-0003", r#"{"inputs": "hello"}"#));
    assert_eq!(code, 200, "{emb}");
    assert_eq!(emb["predictions"][0]["embedding"].as_array().unwrap().len(), 64);
}

/// Requests that wait for the same model run as one engine call, padded to the longest, and each
/// gets exactly the answer it gets alone: labels, and embeddings pooled over its own tokens only.
async fn batched_answers_equal_answers_alone(engine: Engine) {
    let config = ServeConfig { node: Config { inference_threads: 1, ..Config::default() }, ..ServeConfig::default() };
    let specs = ["tiny-0001", "tiny-0003"].map(|id| ModelSpec { engine, ..spec(id) }).to_vec();
    let s = state_of(specs, one(0, 4), config, true).await;
    let app = app!(s);
    let texts = ["love", "I love this product so much", "bad service", "the delivery was late and the box was broken"];
    for model in ["tiny-0001", "tiny-0003"] {
        let path = format!("/predictions/{model}");
        let mut alone = Vec::new();
        for t in texts {
            let (code, body, _) = call!(&app, post(&path, &json!({"inputs": t}).to_string()));
            assert_eq!(code, 200, "{body}");
            alone.push(body["predictions"][0].clone());
        }
        // Hold the only inference thread until all four requests wait for the model.
        let opener = hold_inference_until_pending(&s, model, texts.len(), std::time::Duration::ZERO);
        let requests = futures_util::future::join_all(texts.iter().map(|t| {
            let (app, req) = (&app, post(&path, &json!({"inputs": t}).to_string()));
            async move { call!(app, req) }
        }));
        let (answers, ()) = futures_util::join!(requests, opener);
        for ((code, body, _), want) in answers.iter().zip(&alone) {
            assert_eq!(*code, 200, "{body}");
            let got = &body["predictions"][0];
            if let Some(e) = want["embedding"].as_array() {
                let g = got["embedding"].as_array().unwrap();
                let diff =
                    e.iter().zip(g).map(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs()).fold(0.0, f64::max);
                assert!(diff < 1e-5, "{engine} {model}: embedding differs by {diff} when batched");
            } else {
                assert_eq!(got["label"], want["label"]);
                assert!((got["score"].as_f64().unwrap() - want["score"].as_f64().unwrap()).abs() < 1e-5);
            }
        }
    }
    let text = metrics_text!(&app);
    for model in ["tiny-0001", "tiny-0003"] {
        // Four calls alone, then one call for the four that waited.
        assert!(text.contains(&format!("stowage_batches_total{{model=\"{model}\"}} 5")), "{text}");
        assert!(text.contains(&format!("stowage_batched_inputs_total{{model=\"{model}\"}} 8")), "{text}");
    }
}

#[actix_web::test]
async fn long_and_short_texts_that_wait_together_run_in_separate_calls() {
    let config = ServeConfig { node: Config { inference_threads: 1, ..Config::default() }, ..ServeConfig::default() };
    let s = state_with(&["tiny-0001"], one(0, 4), config, true).await;
    let app = app!(s);
    let long = |w: &str| vec![w; 90].join(" ");
    let texts = [long("love"), "bad".to_string(), long("slow"), "great".to_string()];
    let path = "/predictions/tiny-0001";
    let mut alone = Vec::new();
    for t in &texts {
        let (code, body, _) = call!(&app, post(path, &json!({"inputs": t}).to_string()));
        assert_eq!(code, 200, "{body}");
        alone.push(body["predictions"][0]["score"].as_f64().unwrap());
    }
    let opener = hold_inference_until_pending(&s, "tiny-0001", texts.len(), std::time::Duration::ZERO);
    let requests = futures_util::future::join_all(texts.iter().map(|t| {
        let (app, req) = (&app, post(path, &json!({"inputs": t}).to_string()));
        async move { call!(app, req) }
    }));
    let (answers, ()) = futures_util::join!(requests, opener);
    for ((code, body, _), want) in answers.iter().zip(&alone) {
        assert_eq!(*code, 200, "{body}");
        assert!((body["predictions"][0]["score"].as_f64().unwrap() - want).abs() < 1e-5, "{body}");
    }
    let text = metrics_text!(&app);
    // Four calls alone; then the two long texts in one call and the two short ones in another,
    // not one call that pads the short texts to the long ones' length.
    assert_eq!(sample(&text, r#"stowage_batches_total{model="tiny-0001"}"#), Some(6.0), "{text}");
    assert_eq!(sample(&text, r#"stowage_batched_inputs_total{model="tiny-0001"}"#), Some(8.0), "{text}");
}

#[actix_web::test]
async fn waiting_requests_are_batched_with_the_answers_they_get_alone_tract() {
    batched_answers_equal_answers_alone(Engine::Tract).await;
}

#[actix_web::test]
async fn waiting_requests_are_batched_with_the_answers_they_get_alone_ort() {
    if !crate::common::ort_available("this test") {
        return;
    }
    batched_answers_equal_answers_alone(Engine::Ort).await;
}

#[actix_web::test]
async fn models_and_metrics() {
    let s = state().await;
    let app = app!(s);
    let (status, one, _) = call!(&app, test::TestRequest::get().uri("/models/tiny-0003"));
    assert_eq!(status, 200);
    assert_eq!(one["state"], "ready");
    assert_eq!(one["signature"]["kind"], "last_hidden_state");
    assert!(one["weights_bytes"].as_u64().unwrap() > 100_000);
    let (status, body, _) = call!(&app, test::TestRequest::get().uri("/models/nope"));
    assert_eq!((status, body["code"].as_str()), (404, Some("unknown_model")));

    call!(&app, test::TestRequest::get().uri("/predictions/tiny-0002?text=hi"));
    let text = metrics_text!(&app);
    for name in [
        "stowage_requests_total{model=\"tiny-0002\",code=\"200\"}",
        "stowage_request_duration_seconds_bucket",
        "stowage_inference_duration_seconds_bucket",
        "stowage_queue_wait_seconds_bucket",
        "stowage_inflight_requests",
        "stowage_model_load_duration_seconds_bucket",
        "stowage_model_memory_bytes",
        "stowage_models{state=\"ready\"}",
        "# HELP stowage_requests_total",
        "stowage_inference_threads_busy ",
        "stowage_inference_backlog ",
        "stowage_tokenization_duration_seconds_bucket",
        "stowage_batch_wait_seconds_bucket",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
}

/// The value of the sample `series` (name and labels as Prometheus prints them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[actix_web::test]
async fn per_model_metrics_count_each_request_once() {
    // nextest runs each test in its own process, so this one's counts start at zero.
    let s = state().await;
    let app = app!(s);
    call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    call!(&app, post("/predictions/tiny-0001", r#"{"inputs": ["good", "bad"]}"#));
    let (status, _, _) = call!(&app, post("/predictions/tiny-0001", r#"{"inputs": ""}"#));
    assert_eq!(status, 422);
    call!(&app, test::TestRequest::get().uri("/predictions/nope?text=hi"));
    let text = metrics_text!(&app);
    let m = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(m(r#"stowage_requests_total{model="tiny-0001",code="200"}"#), 2.0);
    assert_eq!(m(r#"stowage_requests_total{model="tiny-0001",code="422"}"#), 1.0);
    assert_eq!(m(r#"stowage_requests_total{model="_unknown",code="404"}"#), 1.0);
    assert_eq!(m(r#"stowage_request_duration_seconds_count{model="tiny-0001"}"#), 3.0);
    // The empty text is refused before admission: only the two admitted requests were
    // tokenized, waited for their engine call and ran (node-wide histograms: one model ran).
    for name in ["stowage_tokenization_duration_seconds", "stowage_batch_wait_seconds", "stowage_queue_wait_seconds"] {
        assert_eq!(m(&format!("{name}_count")), 2.0, "{name}");
    }
    assert_eq!(m(r#"stowage_inference_duration_seconds_count{backend="tract"}"#), 2.0);
    assert_eq!(m(r#"stowage_batched_inputs_total{model="tiny-0001"}"#), 3.0);
    assert_eq!(m(r#"stowage_inflight_requests{model="tiny-0001"}"#), 0.0);
    // A model without requests has its series from start-up, at zero.
    assert_eq!(m(r#"stowage_requests_total{model="tiny-0002",code="200"}"#), 0.0);
    assert_eq!(m(r#"stowage_request_duration_seconds_count{model="tiny-0002"}"#), 0.0);
    let tokenization = m("stowage_tokenization_duration_seconds_sum");
    assert!(tokenization > 0.0 && tokenization < m(r#"stowage_request_duration_seconds_sum{model="tiny-0001"}"#));
    // Tokenization has buckets below a millisecond (the default ones start there).
    assert!(
        text.lines().any(|l| l.starts_with(r#"stowage_tokenization_duration_seconds_bucket{le="0.00001"}"#)),
        "no 10 µs bucket in\n{text}"
    );
}

#[actix_web::test]
async fn fixed_padding_in_tokenizer_json_is_switched_off() {
    // Many exported tokenizer.json files pad every input to 128 tokens; the server must not.
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(fixture().root.join("tiny-0001/tokenizer.json")).unwrap();
    let mut tok: Value = serde_json::from_str(&src).unwrap();
    tok["padding"] = json!({"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"});
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tok.to_string()).unwrap();
    let spec = ModelSpec { tokenizer: path.into(), ..spec("tiny-0001") };
    let loaded = load::load(&spec, &EngineOptions::default()).unwrap();
    let x = loaded.model.text.encode(&["love".to_string()], None).unwrap();
    assert_eq!(x.seq, 3, "[CLS] love [SEP], not 128");
    let x = loaded.model.text.encode(&["love".to_string(), "love this product".to_string()], None).unwrap();
    assert_eq!(x.seq, 5, "a batch pads to its longest input");
    assert_eq!(&x.attention_mask[..5], &[1, 1, 1, 0, 0]);
}

#[actix_web::test]
async fn cuda_without_a_gpu_library_fails_the_model_clearly() {
    if !crate::common::ort_available("this test") {
        return;
    }
    // The CPU wheel has no CUDA provider: the model must fail with the reason, not run on the CPU.
    let spec = ModelSpec { engine: Engine::Ort, ..spec("tiny-0001") };
    let opts = EngineOptions { ort_cuda_device: Some(0), ..EngineOptions::default() };
    let err = load::load(&spec, &opts).err().expect("CUDA must not silently fall back").to_string();
    assert!(err.contains("CUDA execution provider on device 0 is not available"), "{err}");
}

#[actix_web::test]
async fn long_text_is_cut_at_the_models_positions_even_without_tokenizer_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read_to_string(fixture().root.join("tiny-0001/tokenizer.json")).unwrap();
    let mut tok: Value = serde_json::from_str(&src).unwrap();
    tok["truncation"] = Value::Null;
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, tok.to_string()).unwrap();
    // The model's position table has 128 rows: config.json says so, and without a config.json
    // the table read from the ONNX file does.
    for config in [spec("tiny-0001").config, None] {
        let specs = vec![ModelSpec { tokenizer: path.clone().into(), config: config.clone(), ..spec("tiny-0001") }];
        let s = state_of(specs, one(1, 1), ServeConfig::default(), true).await;
        let app = app!(s);
        let (code, body, _) =
            call!(&app, post("/predictions/tiny-0001", &format!(r#"{{"inputs": "{}"}}"#, "love ".repeat(600))));
        assert_eq!(code, 200, "{body}");
        let (_, models, _) = call!(&app, test::TestRequest::get().uri("/models/tiny-0001"));
        assert_eq!(models["max_length"], 128, "config {config:?}");
        assert_eq!(models["signature"]["position_rows"], 128);
    }
}

#[actix_web::test]
async fn a_model_whose_outputs_are_not_finite_fails_at_warm_up() {
    use prost::Message;
    // tiny-0001 with a classifier of huge but finite weights (3e38): the weights' check passes,
    // it loads, and its logits overflow to ±inf or NaN: it would answer 500 to everything.
    let dir = tempfile::tempdir().unwrap();
    let src = fixture().root.join("tiny-0001");
    let bytes = std::fs::read(src.join("model.onnx")).unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let w = graph.initializer.iter_mut().find(|t| t.name == "classifier.weight").expect("classifier weight");
    for c in w.raw_data.chunks_exact_mut(4) {
        c.copy_from_slice(&3.0e38f32.to_le_bytes());
    }
    std::fs::write(dir.path().join("model.onnx"), model.encode_to_vec()).unwrap();
    let nan = ModelSpec { id: "nan".into(), artifact: dir.path().join("model.onnx").into(), ..spec("tiny-0001") };
    let s = state_of(vec![nan, spec("tiny-0002")], one(1, 1), ServeConfig::default(), true).await;
    let app = app!(s);
    let (_, m, _) = call!(&app, test::TestRequest::get().uri("/models/nan"));
    assert_eq!(m["state"], "failed", "{m}");
    assert!(m["error"].as_str().unwrap().contains("not finite"), "{m}");
    let (status, body, _) = call!(&app, test::TestRequest::get().uri("/predictions/nan?text=hi"));
    assert_eq!((status, body["code"].as_str()), (503, Some("model_failed")), "{body}");
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0002?text=hi"));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn poisoned_weights_fail_the_model_with_their_reason() {
    use prost::Message;
    // tiny-0001 with one NaN or +inf where tract would still load it and answer the same scores
    // to every input: the word embeddings, a query weight, an intermediate weight, a LayerNorm
    // gamma, the pooler.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture().root.join("tiny-0001/model.onnx")).unwrap();
    let poisons = [
        ("embeddings.word", f32::NAN),
        ("layer0.query.weight", f32::INFINITY),
        ("layer1.intermediate.weight", f32::NAN),
        ("embeddings.norm.gamma", f32::INFINITY),
        ("pooler.weight", f32::NAN),
    ];
    let mut specs = vec![spec("tiny-0002")];
    for (k, (name, value)) in poisons.iter().enumerate() {
        let mut model = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
        let graph = model.graph.as_mut().unwrap();
        let t = graph.initializer.iter_mut().find(|t| t.name == *name).unwrap_or_else(|| panic!("no {name}"));
        t.raw_data[8..12].copy_from_slice(&value.to_le_bytes());
        let path = dir.path().join(format!("poisoned-{k}.onnx"));
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        specs.push(ModelSpec { id: format!("poisoned-{k}"), artifact: path.into(), ..spec("tiny-0001") });
    }
    let s = state_of(specs, one(1, 1), ServeConfig::default(), true).await;
    let app = app!(s);
    for (k, (name, value)) in poisons.iter().enumerate() {
        let (_, m, _) = call!(&app, test::TestRequest::get().uri(&format!("/models/poisoned-{k}")));
        assert_eq!(m["state"], "failed", "{name}: {m}");
        let error = m["error"].as_str().unwrap();
        let what = if value.is_nan() { "NaN" } else { "an infinite value" };
        assert!(error.contains("weights not finite") && error.contains(name) && error.contains(what), "{error}");
    }
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0002?text=hi"));
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn models_take_the_cuda_devices_in_turn() {
    if !crate::common::ort_available("this test") {
        return;
    }
    // The CPU library has no CUDA provider, so each model fails naming the device it was given:
    // with two devices, the first model gets 0, the second 1, the third 0 again.
    let specs: Vec<ModelSpec> = ["tiny-0001", "tiny-0002", "tiny-0003"]
        .iter()
        .map(|id| ModelSpec { engine: Engine::Ort, ..spec(id) })
        .collect();
    let reg = Arc::new(Registry::new(specs, one(1, 1)));
    load_all(reg.clone(), LoadOptions { cuda_devices: vec![0, 1], ..LoadOptions::default() }).await;
    for (id, device) in [("tiny-0001", 0), ("tiny-0002", 1), ("tiny-0003", 0)] {
        let State::Failed(why) = reg.get(id).unwrap().state() else { panic!("{id} loaded on a GPU it cannot have") };
        assert!(why.contains(&format!("CUDA execution provider on device {device} is not available")), "{id}: {why}");
    }
}

#[actix_web::test]
async fn a_scrape_after_mixed_traffic_passes_promtool_has_the_process_metrics_and_few_series_per_model() {
    let config = ServeConfig { max_body_bytes: 4096, ..ServeConfig::default() };
    let s = state_with(&["tiny-0001", "tiny-0002", "tiny-0003"], one(0, 1), config, true).await;
    let app = app!(s);
    // Every outcome a model's series can count: 200, 400, 413, 422, 429, and a model not here.
    for uri in ["/predictions/tiny-0001?text=hi", "/predictions/tiny-0001?text=", "/predictions/nope?text=a"] {
        call!(&app, test::TestRequest::get().uri(uri));
    }
    call!(&app, post("/predictions/tiny-0003", "{not json"));
    call!(&app, post("/predictions/tiny-0001", &format!(r#"{{"inputs": "{}"}}"#, "a ".repeat(4000))));
    let entry = s.node.registry.get("tiny-0001").unwrap();
    let held = entry.admission.enter(0).await.unwrap();
    let (status, _, _) = call!(&app, test::TestRequest::get().uri("/predictions/tiny-0001?text=hi"));
    assert_eq!(status, 429);
    drop(held);
    for _ in 0..20 {
        call!(&app, post("/predictions/tiny-0001", r#"{"inputs": ["good", "bad"]}"#));
    }
    let text = metrics_text!(&app);
    // At most 25 series per model, whatever the traffic (the request histogram has few buckets;
    // where the time went is node-wide).
    for model in ["tiny-0001", "tiny-0002", "tiny-0003"] {
        let label = format!("model=\"{model}\"");
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && l.contains(&label)).collect();
        assert!(series.len() <= 25, "{model}: {} series\n{}", series.len(), series.join("\n"));
        if model == "tiny-0001" {
            for code in ["200", "400", "413", "422", "429"] {
                let want = format!("stowage_requests_total{{model=\"tiny-0001\",code=\"{code}\"}}");
                assert!(series.iter().any(|l| l.starts_with(&want)) || code == "400", "no {want}");
            }
            eprintln!("tiny-0001 after mixed traffic: {} series", series.len());
        }
    }
    for want in
        ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds", "process_cpu_seconds_total"]
    {
        assert!(text.contains(&format!("\n{want} ")), "no {want} in\n{text}");
    }
    assert!(text.contains("stowage_build_info{version=\""), "{text}");
    // Prometheus's own linter (promtool, Debian's prometheus package, installed by scripts/setup.sh).
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match child {
        Ok(mut child) => {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "promtool check metrics:\n{said}");
        }
        Err(e) => {
            assert!(std::env::var("CI").is_err(), "promtool required in CI (scripts/setup.sh installs it): {e}");
            eprintln!("skipped promtool: {e}");
        }
    }
}

#[actix_web::test]
async fn asynchronous_requests_need_an_async_dir() {
    let s = state().await;
    let app = app!(s);
    let (code, body, _) = call!(&app, post("/async/predictions/tiny-0001", r#"{"inputs": "hi"}"#));
    assert_eq!((code, body["code"].as_str()), (501, Some("async_disabled")), "{body}");
    let (code, body, _) = call!(&app, test::TestRequest::get().uri("/async/results/tiny-0001.00"));
    assert_eq!((code, body["code"].as_str()), (501, Some("async_disabled")), "{body}");
}

/// A job waits while a synchronous request waits for the node's only inference thread, and runs
/// once it has gone through.
#[actix_web::test]
async fn asynchronous_jobs_wait_for_synchronous_requests() {
    let config = ServeConfig {
        node: stowage_node::Config { inference_threads: 1, ..stowage_node::Config::default() },
        ..ServeConfig::default()
    };
    let s = state_with(&["tiny-0001"], one(8, 1), config, true).await;
    let dir = tempfile::tempdir().unwrap();
    let jobs = stowage_node::jobs::Jobs::open(
        stowage_node::jobs::JobOptions::new(stowage_node::jobs::Place::Dir(dir.path().into())),
        s.node.clone(),
    )
    .await
    .unwrap();
    let s = Arc::new(AppState::new(s.node.clone(), s.config.clone()).with_jobs(Some(jobs.clone())));
    jobs.start(&tokio::runtime::Handle::current(), stowage::http::jobs::runner(s.clone()));
    let app = app!(s);
    let hold = hold_inference_until_pending(&s, "tiny-0001", 1, std::time::Duration::from_millis(300));
    let entry = s.node.registry.get("tiny-0001").unwrap();
    let sync = async { call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "now"}"#)) };
    let submit = async {
        while entry.batcher.pending() < 1 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let (code, body, _) = call!(&app, post("/async/predictions/tiny-0001", r#"{"inputs": "later"}"#));
        assert_eq!(code, 202, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let url = body["status_url"].as_str().unwrap().to_string();
        let (_, job, _) = call!(&app, test::TestRequest::get().uri(&url));
        (url, job)
    };
    let ((code, _, _), (url, job), ()) = tokio::join!(sync, submit, hold);
    assert_eq!(code, 200);
    assert_eq!(job["status"], "queued", "the job started while a request waited: {job}");
    for _ in 0..200 {
        let (_, job, _) = call!(&app, test::TestRequest::get().uri(&url));
        if job["status"] == "done" {
            assert_eq!(job["result"]["model"], "tiny-0001");
            assert_eq!(job["attempts"], 1);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the job did not run once the request had gone through");
}

/// With a queue-delay bound, a request that would wait past it is refused at once (429), not
/// after the wait: while the node's only inference thread is held, every refusal arrives.
#[actix_web::test]
async fn requests_that_would_wait_past_the_bound_are_refused_at_once() {
    let s = bounded_node(std::time::Duration::from_millis(1)).await;
    let app = app!(s);
    // What a request costs, measured by the node on real ones.
    warm!(&app, "tiny-0001");
    let per_request = s.node.pool.per_request();
    assert!(per_request > 0.0);
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    s.node.pool.submit(move || blocked.recv().unwrap_or_default()).unwrap();
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let n = 40;
    let requests = futures_util::future::join_all((0..n).map(|_| async {
        let r = call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "now"}"#));
        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        r
    }));
    let control = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let before = answered.load(std::sync::atomic::Ordering::SeqCst);
        release.send(()).unwrap();
        before
    };
    let (results, before_release) = tokio::join!(requests, control);
    let refused: Vec<&Value> = results.iter().filter(|r| r.0 == 429).map(|r| &r.1).collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(ok + refused.len(), n, "only answers and refusals: {results:?}");
    // Admitted: what fits in the bound (at least the first), plus one the estimate lets in at
    // its edge; everyone else was told while the thread was still held.
    let fits = (0.001 / per_request).floor() as usize + 1;
    assert!(ok >= 1 && ok <= fits + 1, "{ok} admitted, {fits} fit in 1 ms at {per_request} s each");
    assert_eq!(before_release, refused.len(), "every refusal came before the thread was free");
    for body in refused {
        assert_eq!(body["code"], "queue_full");
        assert!(body["error"].as_str().unwrap().contains("1 ms bound"), "{body}");
    }
    let metrics = metrics_text!(&app);
    assert!(metrics.contains("reason=\"expected_wait\""), "counted by reason");
}

/// Without `--queue-size`, a model whose requests have a wait bound (`TARGET_WAIT_MULTIPLE` times
/// its latency target here) queues as many as the node answers within that bound: a burst the
/// bound admits is not refused by a count of 64, as a model of much traffic would be in a slow
/// second at its planned peak. A model without a bound queues 64; a set length stays as set.
/// `/models` says each.
#[actix_web::test]
async fn a_wait_bound_not_a_count_refuses_the_requests_of_a_model_with_a_target() {
    let config = ServeConfig {
        node: stowage_node::Config { inference_threads: 1, ..stowage_node::Config::default() },
        ..ServeConfig::default()
    };
    let targeted = || ModelSpec { slo_p90_ms: Some(200.0), ..spec("tiny-0001") };
    let s = state_of(
        vec![targeted(), spec("tiny-0002")],
        Limits { concurrency: 1, queue: None, batch: 1, batch_tokens: 512 },
        config.clone(),
        true,
    )
    .await;
    let app = app!(s);
    warm!(&app, "tiny-0001");
    let per_request = s.node.pool.per_request();
    let (_, list, _) = call!(&app, test::TestRequest::get().uri("/models"));
    let size = |id: &str| {
        list["models"].as_array().unwrap().iter().find(|m| m["id"] == id).unwrap()["queue_size"].as_u64().unwrap()
    };
    let bound = stowage_node::serve::predict::TARGET_WAIT_MULTIPLE * 0.2;
    let want = ((bound / per_request).ceil() as u64).clamp(64, 4096);
    assert_eq!(size("tiny-0001"), want, "{bound} s at {per_request} s a request");
    assert!(want > 64, "{per_request}");
    assert_eq!(size("tiny-0002"), 64);

    // 150 requests while the only inference thread is held: one holds the model's slot, the rest
    // wait, well within the bound (150 × a request's time), and every one is answered.
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    s.node.pool.submit(move || blocked.recv().unwrap_or_default()).unwrap();
    let n = 150;
    let requests = futures_util::future::join_all(
        (0..n).map(|_| async { call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "now"}"#)) }),
    );
    let control = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        release.send(()).unwrap();
    };
    let (results, ()) = tokio::join!(requests, control);
    let codes: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert!(codes.iter().all(|&c| c == 200), "{codes:?}");

    // A set length is kept whatever the bound.
    let s = state_of(vec![targeted()], one(5, 1), config, true).await;
    let app = app!(s);
    let (_, list, _) = call!(&app, test::TestRequest::get().uri("/models"));
    assert_eq!(list["models"][0]["queue_size"], 5, "{list}");
}

/// A model's waiting requests drain at its own pace, not the node's: where its answers have come
/// 100 ms apart while its requests waited (its turns among the node's other models), ten waiting
/// requests are a second of wait, and a request past a 500 ms bound is refused at once, though
/// what a request costs the threads alone would put them well within it. (The bound is wide so
/// that a loaded test machine, where a tiny model's request costs 10 ms, still admits on cost.)
#[actix_web::test]
async fn a_busy_model_is_judged_by_the_pace_of_its_own_answers() {
    let bound = std::time::Duration::from_millis(500);
    let s = bounded_node(bound).await;
    let app = app!(s);
    warm!(&app, "tiny-0001");
    let per_request = s.node.pool.per_request();
    assert!(10.0 * per_request < 0.25, "{per_request}");
    let entry = s.node.registry.get("tiny-0001").unwrap();
    // The model's slot held and ten requests waiting for it.
    let held = entry.admission.enter(0).await.unwrap();
    let waiters: Vec<_> = (0..10).map(|_| Box::pin(entry.admission.enter(0))).collect();
    let mut waiters = waiters;
    for w in &mut waiters {
        assert!(tokio::time::timeout(std::time::Duration::from_millis(1), w).await.is_err());
    }
    assert_eq!(entry.admission.waiting(), 10);
    // Without a pace of its own, the model's queue is reckoned at the threads' cost: admitted.
    let admitted = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "in"}"#))
    })
    .await;
    assert!(admitted.is_err(), "admitted, it waits behind the held slot");
    // Its answers came 100 ms apart while requests waited.
    {
        let mut pace = entry.pace.lock().unwrap();
        let t0 = std::time::Instant::now() - std::time::Duration::from_millis(300);
        for i in 0..3 {
            pace.answered(t0 + std::time::Duration::from_millis(100 * i), true);
        }
    }
    let asked = std::time::Instant::now();
    let refused = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        call!(&app, post("/predictions/tiny-0001", r#"{"inputs": "out"}"#))
    })
    .await;
    let (code, body, _) = refused.expect("refused at once, not admitted to wait behind the held slot");
    assert_eq!((code, body["code"].as_str()), (429, Some("queue_full")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("500 ms bound"), "{body}");
    assert!(asked.elapsed() < bound, "refused at once: {:?}", asked.elapsed());
    drop(waiters);
    drop(held);
}
