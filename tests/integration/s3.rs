//! Model files in S3, against a real S3-protocol server on loopback: moto's server mode (PyPI
//! `moto[server]`, installed by scripts/test.sh), no mocked SDK. `stowage upload` puts synthetic
//! models into a bucket; `stowage serve` fetches them into its cache, restarts from the cache,
//! isolates bad models (missing object, wrong checksum, corrupt ONNX, missing tokenizer, access
//! denied, no credentials), and retries while the server is down at start. Without moto_server
//! the tests are skipped with a message, unless STOWAGE_REQUIRE_S3=1 (CI sets it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, run, stowage, wait_ok, Proc};
use serde_json::Value;

pub(crate) struct S3Server {
    _proc: Proc,
    port: u16,
}

impl S3Server {
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts moto's S3 server on a free port, or says why the test is skipped.
pub(crate) fn s3_server() -> Option<S3Server> {
    s3_server_with(&[])
}

fn s3_server_with(env: &[(&str, &str)]) -> Option<S3Server> {
    let port = free_port();
    let child = Command::new("moto_server")
        .envs(env.iter().copied())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut proc = match child {
        Ok(c) => Proc(c),
        Err(e) => {
            let required = std::env::var("STOWAGE_REQUIRE_S3").is_ok_and(|v| v == "1");
            assert!(!required, "moto_server required (pip install 'moto[server]'): {e}");
            eprintln!("skipped: no moto_server ({e}); pip install 'moto[server]'");
            return None;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        proc.assert_running();
        assert!(Instant::now() < deadline, "moto_server did not start in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(S3Server { _proc: proc, port })
}

/// The stowage binary with throw-away credentials and no instance-metadata lookups.
pub(crate) fn stowage_s3() -> Command {
    let mut c = stowage();
    c.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    c
}

/// Synthesizes `n` tiny models in `dir` and uploads them; returns the S3 catalog.
fn uploaded(dir: &Path, s3: &S3Server, n: usize) -> PathBuf {
    run(stowage().args(["synth", "--count", &n.to_string(), "--out"]).arg(dir.join("synth")));
    upload(&dir.join("synth/models.toml"), s3, "models", &dir.join("s3.toml"));
    dir.join("s3.toml")
}

fn upload(catalog: &Path, s3: &S3Server, prefix: &str, out: &Path) {
    run(stowage_s3()
        .args(["upload", "--bucket", "models", "--create-bucket", "--prefix", prefix, "--s3-endpoint", &s3.url()])
        .arg("--catalog")
        .arg(catalog)
        .arg("--out")
        .arg(out));
}

struct Node {
    proc: Proc,
    base: String,
    log: PathBuf,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `/models` once no model is loading any more (at most 60 s).
    fn settled(&mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut r) = ureq::get(&format!("{}/models", self.base)).call() {
                let v: Value = r.body_mut().read_json().unwrap();
                let models = v["models"].as_array().unwrap().clone();
                if models.iter().all(|m| m["state"] != "loading") {
                    return models;
                }
            }
            self.proc.assert_running();
            assert!(Instant::now() < deadline, "models still loading after 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn serve(catalog: &Path, cache: &Path, endpoint: &str, extra: &[&str]) -> Node {
    serve_with(stowage_s3(), catalog, cache, endpoint, extra)
}

/// `serve` from a prepared command (its environment, say).
fn serve_with(mut cmd: Command, catalog: &Path, cache: &Path, endpoint: &str, extra: &[&str]) -> Node {
    let port = free_port();
    let log = cache.with_extension(format!("{port}.log"));
    let child = cmd
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--s3-endpoint", endpoint])
        .arg("--catalog")
        .arg(catalog)
        .arg("--cache-dir")
        .arg(cache)
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Node { proc: Proc(child), base: format!("http://127.0.0.1:{port}"), log }
}

fn predict(base: &str, model: &str) -> (u16, Value) {
    let r = ureq::get(&format!("{base}/predictions/{model}?text=hello+there"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.into_body().read_json().unwrap())
}

fn by_id<'a>(models: &'a [Value], id: &str) -> &'a Value {
    models.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("no {id} in {models:?}"))
}

#[test]
fn models_come_from_s3_and_a_restart_reuses_the_cache() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = uploaded(dir.path(), &s3, 3);
    let text = std::fs::read_to_string(&catalog).unwrap();
    assert!(text.contains("artifact = \"s3://models/models/tiny-0001/model.onnx\""), "{text}");
    assert_eq!(text.matches("sha256 = ").count(), 3, "upload records every artifact's sha256");
    let cache = dir.path().join("cache");

    let mut node = serve(&catalog, &cache, &s3.url(), &[]);
    let models = node.settled();
    for m in &models {
        assert_eq!(m["state"], "ready", "{m}\n{}", node.log());
        assert!(m["fetched_bytes"].as_u64().unwrap() > 500_000, "{m}");
        assert_eq!(m["cached_bytes"], 0);
        let (status, body) = predict(&node.base, m["id"].as_str().unwrap());
        assert_eq!(status, 200, "{body}");
    }
    assert!(cache.join("models/models/tiny-0002/model.onnx").is_file());
    let log = node.log();
    assert!(log.contains("fetched") && log.contains("start-up finished"), "{log}");
    assert_eq!(node.proc.terminate().code(), Some(0));

    // `stowage profile` reads the same catalog through the same cache.
    let measured = dir.path().join("measured.toml");
    run(stowage_s3()
        .args(["profile", "--models", "tiny-0001", "--iterations", "2", "--s3-endpoint", &s3.url(), "--catalog"])
        .arg(&catalog)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--out")
        .arg(&measured));
    let measured = std::fs::read_to_string(&measured).unwrap();
    assert!(measured.contains("[models.footprint.c5]") && measured.contains("s3://models/models/tiny-0001"));

    // The S3 server goes away: the catalog's checksums vouch for the cached copies.
    drop(s3);
    let mut node = serve(&catalog, &cache, "http://127.0.0.1:9", &["--fetch-retries", "0"]);
    for m in node.settled() {
        assert_eq!(m["state"], "ready", "{m}\n{}", node.log());
        assert_eq!(m["fetched_bytes"], 0, "{m}");
        assert!(m["cached_bytes"].as_u64().unwrap() > 500_000, "{m}");
    }
    assert_eq!(node.proc.terminate().code(), Some(0));

    // Without checksums a cached copy is confirmed with S3; when S3 cannot be reached, the copy
    // checked at download is used, and the log says so.
    let no_sha: String = text.lines().filter(|l| !l.starts_with("sha256")).collect::<Vec<_>>().join("\n");
    let catalog = dir.path().join("no-sha.toml");
    std::fs::write(&catalog, no_sha).unwrap();
    // With the default retries: one question to S3, not five retries, as the copy is at hand.
    let started = Instant::now();
    let mut node = serve(&catalog, &cache, "http://127.0.0.1:9", &[]);
    assert!(node.settled().iter().all(|m| m["state"] == "ready"), "{}", node.log());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert!(node.log().contains("cannot confirm the cached copy with S3; using it"), "{}", node.log());
    assert!(!node.log().contains("retrying"), "{}", node.log());
}

#[test]
fn an_endpoint_that_never_answers_fails_its_models_in_bounded_time() {
    let endpoint = black_hole();
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--out"]).arg(dir.path()));
    let text = std::fs::read_to_string(dir.path().join("models.toml")).unwrap();
    let catalog = dir.path().join("hole.toml");
    std::fs::write(
        &catalog,
        format!("{text}\n[[models]]\nid = \"far\"\nprofile = \"synth-tiny\"\nartifact = \"s3://models/far/model.onnx\"\npeak_rps = 1\n"),
    )
    .unwrap();
    // Bound: (retries + 1) × the read timeout, plus the backoff: 2 × 1 s + 0.1 s here.
    let args = [
        "--fetch-retries",
        "1",
        "--fetch-backoff-ms",
        "100",
        "--s3-read-timeout-seconds",
        "1",
        "--ready-fraction",
        "0.5",
    ];
    let started = Instant::now();
    let mut node = serve(&catalog, &dir.path().join("cache"), &endpoint, &args);
    let models = node.settled();
    let took = started.elapsed();
    let far = by_id(&models, "far");
    assert_eq!(far["state"], "failed", "{far}");
    assert!(far["error"].as_str().unwrap().contains("could not be reached"), "{far}");
    assert!(took < Duration::from_secs(8), "failed after {took:?}, bound 2.1 s");
    for local in ["tiny-0001", "tiny-0002"] {
        assert_eq!(predict(&node.base, local).0, 200);
    }
    // Each retry is logged at WARN with its model and why.
    let log = node.log();
    let retry = log.lines().find(|l| l.contains("retrying")).unwrap_or_else(|| panic!("no retry logged:\n{log}"));
    assert!(retry.contains("WARN") && retry.contains("model=far") && retry.contains("timeout"), "{retry}");
}

#[test]
fn a_changed_object_is_downloaded_again() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = uploaded(dir.path(), &s3, 2);
    // No checksums in the catalog: the cache compares ETags with S3.
    let text = std::fs::read_to_string(&catalog).unwrap();
    let no_sha: String = text.lines().filter(|l| !l.starts_with("sha256")).collect::<Vec<_>>().join("\n");
    std::fs::write(&catalog, no_sha).unwrap();
    let cache = dir.path().join("cache");
    let mut node = serve(&catalog, &cache, &s3.url(), &[]);
    assert!(node.settled().iter().all(|m| m["state"] == "ready"), "{}", node.log());
    let (_, before) = predict(&node.base, "tiny-0002");
    node.proc.terminate();

    // Replace tiny-0002's weights in the bucket with tiny-0001's.
    let synth = dir.path().join("synth");
    let local = std::fs::read_to_string(synth.join("models.toml")).unwrap();
    let swapped = local.replace("tiny-0002/model.onnx", "tiny-0001/model.onnx");
    std::fs::write(synth.join("swapped.toml"), swapped).unwrap();
    upload(&synth.join("swapped.toml"), &s3, "models", &dir.path().join("ignored.toml"));

    let mut node = serve(&catalog, &cache, &s3.url(), &[]);
    let models = node.settled();
    let changed = by_id(&models, "tiny-0002");
    assert!(changed["fetched_bytes"].as_u64().unwrap() > 500_000, "{changed}");
    let same = by_id(&models, "tiny-0001");
    assert_eq!(same["fetched_bytes"], 0, "{same}");
    let (_, after) = predict(&node.base, "tiny-0002");
    let (_, one) = predict(&node.base, "tiny-0001");
    assert_ne!(before["predictions"], after["predictions"]);
    assert_eq!(after["predictions"], one["predictions"], "tiny-0002 now has tiny-0001's weights");
}

#[test]
fn a_bad_model_fails_alone_and_says_why() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = uploaded(dir.path(), &s3, 2);

    // A corrupt (truncated) ONNX file, uploaded like any other.
    let synth = dir.path().join("synth");
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir_all(corrupt.join("broken")).unwrap();
    let bytes = std::fs::read(synth.join("tiny-0001/model.onnx")).unwrap();
    std::fs::write(corrupt.join("broken/model.onnx"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::copy(synth.join("tiny-0001/tokenizer.json"), corrupt.join("broken/tokenizer.json")).unwrap();
    let local = std::fs::read_to_string(synth.join("models.toml")).unwrap();
    let head = &local[..local.find("[[models]]").unwrap()];
    std::fs::write(
        corrupt.join("models.toml"),
        format!("{head}[[models]]\nid = \"broken\"\nprofile = \"synth-tiny\"\nartifact = \"broken/model.onnx\"\npeak_rps = 1\n"),
    )
    .unwrap();
    upload(&corrupt.join("models.toml"), &s3, "bad", &corrupt.join("s3.toml"));

    let tok = "s3://models/models/tiny-0001/tokenizer.json";
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    let model = |id: &str, artifact: &str, tokenizer: &str, extra: &str| {
        format!("\n[[models]]\nid = \"{id}\"\nprofile = \"synth-tiny\"\nartifact = \"{artifact}\"\ntokenizer = \"{tokenizer}\"\npeak_rps = 1\n{extra}")
    };
    text += &model("missing", "s3://models/nowhere/model.onnx", tok, "");
    text += &model(
        "bad-sha",
        "s3://models/models/tiny-0001/model.onnx",
        tok,
        &format!("sha256 = \"{}\"\n", "0".repeat(64)),
    );
    text += &model("broken", "s3://models/bad/broken/model.onnx", tok, "");
    text += &model("no-tokenizer", "s3://models/models/tiny-0002/model.onnx", "s3://models/nowhere/tokenizer.json", "");
    std::fs::write(&catalog, text).unwrap();

    let mut node = serve(&catalog, &dir.path().join("cache"), &s3.url(), &["--ready-fraction", "0.3"]);
    let models = node.settled();
    let reason = |id: &str| {
        let m = by_id(&models, id);
        assert_eq!(m["state"], "failed", "{m}");
        m["error"].as_str().unwrap().to_string()
    };
    // Clients learn which file and what happened; the log has the whole sentence, object included.
    assert!(reason("missing").contains("model.onnx: no such object"), "{}", reason("missing"));
    assert!(
        reason("bad-sha").contains("model.onnx: the bytes do not match the catalog's sha256"),
        "{}",
        reason("bad-sha")
    );
    assert!(reason("broken").contains("model.onnx: not a readable ONNX model"), "{}", reason("broken"));
    assert!(reason("no-tokenizer").contains("tokenizer.json: no such object"), "{}", reason("no-tokenizer"));
    for id in ["missing", "bad-sha", "broken", "no-tokenizer"] {
        assert!(!reason(id).contains("s3://") && !reason(id).contains("models/"), "{}", reason(id));
    }
    let log = node.log();
    for full in [
        "s3://models/nowhere/model.onnx: no such object",
        "sha256 is ",
        "s3://models/bad/broken/model.onnx",
        "s3://models/nowhere/tokenizer.json: no such object",
    ] {
        assert!(log.contains(full), "the log lacks {full:?}:\n{log}");
    }
    for good in ["tiny-0001", "tiny-0002"] {
        assert_eq!(by_id(&models, good)["state"], "ready");
        assert_eq!(predict(&node.base, good).0, 200);
    }
    let (status, body) = predict(&node.base, "missing");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "model_failed");
    assert!(body["error"].as_str().unwrap().contains("no such object"), "{body}");
    // 2 of 6 ready is over the 0.3 asked for: the node is ready, and still running.
    wait_ok(&format!("{}/ready", node.base), &mut node.proc);
    // Permanent failures are not retried.
    assert!(!node.log().contains("retrying"), "{}", node.log());
}

#[test]
fn no_credentials_fail_at_once_and_say_so() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = uploaded(dir.path(), &s3, 1);
    let mut serve = stowage_s3();
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE"] {
        serve.env_remove(var);
    }
    for var in ["AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"] {
        serve.env_remove(var);
    }
    serve.env("HOME", dir.path());
    let mut node = serve_with(serve, &catalog, &dir.path().join("cache"), &s3.url(), &[]);
    let started = Instant::now();
    let models = node.settled();
    let m = by_id(&models, "tiny-0001");
    assert_eq!(m["state"], "failed");
    assert!(m["error"].as_str().unwrap().contains("no AWS credentials"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(10), "not retried: {:?}", started.elapsed());
}

#[test]
fn access_denied_fails_the_model_at_once() {
    // moto checks credentials from the first request on: ours are unknown to it (403).
    let Some(s3) = s3_server_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else { return };
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let local = std::fs::read_to_string(dir.path().join("models.toml")).unwrap();
    let head = &local[..local.find("[[models]]").unwrap()];
    let catalog = dir.path().join("s3.toml");
    std::fs::write(
        &catalog,
        format!("{head}[[models]]\nid = \"locked\"\nprofile = \"synth-tiny\"\nartifact = \"s3://models/locked/model.onnx\"\npeak_rps = 1\n"),
    )
    .unwrap();
    let mut node = serve(&catalog, &dir.path().join("cache"), &s3.url(), &[]);
    let models = node.settled();
    let m = by_id(&models, "locked");
    assert_eq!(m["state"], "failed");
    assert!(m["error"].as_str().unwrap().contains("model.onnx: access denied"), "{m}");
    assert!(node.log().contains("s3://models/locked/model.onnx: access denied"), "{}", node.log());
    assert!(!node.log().contains("retrying"), "{}", node.log());
}

/// An endpoint that accepts connections and never says a word (held until the test ends).
fn black_hole() -> String {
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hole.incoming().flatten() {
            held.push(c);
        }
    });
    endpoint
}

/// Forwards connections from `listener` to `to`, both ways, until either side closes.
fn forward(listener: TcpListener, to: u16) {
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 || to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
}

#[test]
fn s3_down_at_start_is_retried_until_it_is_back() {
    let Some(s3) = s3_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let catalog = uploaded(dir.path(), &s3, 2);
    // The node's endpoint: nothing listens there yet (connections are refused).
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cache = dir.path().join("cache");
    let mut node = serve(&catalog, &cache, &endpoint, &["--fetch-retries", "12", "--fetch-backoff-ms", "200"]);
    std::thread::sleep(Duration::from_millis(1500));
    let r = ureq::get(&format!("{}/ready", node.base)).config().http_status_as_error(false).build().call().unwrap();
    assert_eq!(r.status(), 503, "not ready while S3 is down");

    forward(TcpListener::bind(("127.0.0.1", port)).unwrap(), s3.port);
    wait_ok(&format!("{}/ready", node.base), &mut node.proc);
    for m in node.settled() {
        assert_eq!(m["state"], "ready", "{m}");
    }
    let log = node.log();
    assert!(log.contains("S3 request failed; retrying") && log.contains("cannot reach S3"), "{log}");
}

#[test]
fn debug_logs_keep_the_access_key_id_out_unless_the_sdk_is_asked_for() {
    let endpoint = black_hole();
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("s3.toml");
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let text = std::fs::read_to_string(dir.path().join("models.toml")).unwrap();
    std::fs::write(&catalog, text.replace("tiny-0001/model.onnx", "s3://models/k/model.onnx")).unwrap();
    let key = "AKIASTOWAGELOGTEST";
    let log = |rust_log: &str| {
        let mut cmd = stowage_s3();
        cmd.env("AWS_ACCESS_KEY_ID", key).env("RUST_LOG", rust_log);
        let args = ["--fetch-retries", "0", "--s3-read-timeout-seconds", "1"];
        let mut node = serve_with(cmd, &catalog, &dir.path().join("cache"), &endpoint, &args);
        node.settled();
        node.log()
    };
    let debug = log("debug");
    assert!(debug.contains("DEBUG"), "{debug}");
    assert!(!debug.contains(key), "RUST_LOG=debug printed the access key id:\n{debug}");
    // Asked for by name, the SDK's own debug lines are there (and with them the key).
    assert!(log("debug,aws_smithy_runtime=debug").contains(key));
}
