//! Live nodes on real processes: a node takes a new plan written over its files without a restart
//! and without a failed request on the models it keeps; bad changes change nothing; SIGHUP and
//! the admin API (on its own loopback port, behind a bearer token) reload too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{free_port, rss_kib, run, stowage, wait_ok, Proc};

/// Eight synthetic tiny models and their catalog in `dir` (models.toml).
fn models(dir: &Path) {
    run(stowage().args(["synth", "--count", "8", "--out"]).arg(dir));
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Writes `text` to `path` the way editors, `mv` and the kubelet do: a new file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A one-node plan of catalog `catalog` for node `node` with `ids`.
fn plan<S: AsRef<str>>(catalog_sha256: &str, node: &str, ids: &[S]) -> String {
    let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    json!({
        "format": "stowage-plan/v1",
        "catalog_sha256": catalog_sha256,
        "cost_per_hour": 0.1,
        "lower_bound_per_hour": 0.1,
        "solver": {"method": "hand", "seconds": 0.0, "proven_optimal": false, "gap": 0.0},
        "nodes": [{"id": node, "instance_type": "local.small", "family": "local", "price_per_hour": 0.1,
                   "models": ids, "usage": {"memory": 0.1, "utilization": 0.1}}],
    })
    .to_string()
}

fn tiny(i: usize) -> String {
    format!("tiny-{i:04}")
}

struct Node {
    proc: Proc,
    base: String,
    admin: Option<String>,
    log: PathBuf,
}

fn serve(dir: &Path, plan: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let port = free_port();
    let log = dir.join(format!("node-{port}.log"));
    let mut cmd = stowage();
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--node", "n1", "--plan"])
        .arg(plan)
        .arg("--catalog")
        .arg(dir.join("models.toml"))
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let admin = extra.iter().position(|a| *a == "--admin-port").map(|i| format!("http://127.0.0.1:{}", extra[i + 1]));
    let mut proc = Proc(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), &mut proc);
    Node { proc, base, admin, log }
}

fn get(url: &str) -> (u16, Value) {
    let mut r = ureq::get(url).config().http_status_as_error(false).build().call().unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn predict(base: &str, model: &str) -> (u16, Value) {
    get(&format!("{base}/predictions/{model}?text=hello+there"))
}

/// The node's model ids, as `/models` lists them.
fn served(base: &str) -> Vec<String> {
    let (_, v) = get(&format!("{base}/models"));
    v["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

fn metrics(base: &str) -> String {
    ureq::get(&format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap()
}

/// Waits (at most `within`) until `f` holds.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Requests to `models` from `threads` clients until `stop`: (answered, failures with reasons).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    handles: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(base: &str, models: &[String], threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let handles = (0..threads)
            .map(|t| {
                let (stop, ok, base) = (stop.clone(), ok.clone(), base.to_string());
                let model = models[t % models.len()].clone();
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match agent.get(&format!("{base}/predictions/{model}?text=kept+model")).call() {
                            Ok(r) if r.status() == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures.push(format!("{model}: HTTP {}", r.status())),
                            Err(e) => failures.push(format!("{model}: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, handles }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn a_node_takes_a_new_plan_in_place_without_failing_a_kept_request() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    models(dir);
    let catalog_sha = sha256_file(&dir.join("models.toml"));
    std::fs::create_dir(dir.join("n1")).unwrap();
    let plan_path = dir.join("n1/plan.json");
    let (a, b): (Vec<String>, Vec<String>) = ((1..=4).map(tiny).collect(), [1, 2, 5, 6].map(tiny).to_vec());
    replace(&plan_path, &plan(&catalog_sha, "n1", &a));
    // Its own verdict cache: the node times both engines of each model, as the fresh one below.
    let cache = dir.join("cache");
    let mut node = serve(dir, &plan_path, &["--cache-dir", cache.to_str().unwrap()], &[]);
    let pid = node.proc.0.id();
    assert_eq!(served(&node.base), a);

    let kept = vec![tiny(1), tiny(2)];
    let load = Load::start(&node.base, &kept, 4);
    std::thread::sleep(Duration::from_millis(300));

    // Bad changes change nothing: malformed, for another catalog, without this node.
    let refused = |n: &Node| {
        metrics(&n.base)
            .lines()
            .find(|l| l.starts_with("stowage_reloads_total{result=\"refused\"}"))
            .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    let bad = [
        "{\"format\": \"stowage-plan/v1\", \"nodes\": [".to_string(),
        plan(&"0".repeat(64), "n1", &b),
        plan(&catalog_sha, "n2", &b),
    ];
    for (i, text) in bad.iter().enumerate() {
        replace(&plan_path, text);
        eventually(Duration::from_secs(10), "a refused reload", || refused(&node) >= (i + 1) as f64);
        assert_eq!(served(&node.base), a, "after bad change {i}");
        assert_eq!(predict(&node.base, &tiny(3)).0, 200);
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    // A catalog edited in place: the hint says which hash is which and to re-plan.
    let hint = "the plan's catalog_sha256 0000000000000000000000000000000000000000000000000000000000000000); if the catalog was edited, re-plan it (stowage plan --catalog";
    for reason in ["plan.json:1:", "not the catalog", hint, "no node \"n1\""] {
        assert!(log.lines().any(|l| l.contains("reload refused") && l.contains(reason)), "{reason} in\n{log}");
    }

    // Plan B: two kept, two removed, two added.
    let changed = Instant::now();
    replace(&plan_path, &plan(&catalog_sha, "n1", &b));
    let took = eventually(Duration::from_secs(30), "the added models serve", || {
        [5, 6].iter().all(|&i| predict(&node.base, &tiny(i)).0 == 200)
    });
    for i in [3, 4] {
        let (status, body) = predict(&node.base, &tiny(i));
        assert_eq!((status, body["code"].as_str()), (404, Some("unknown_model")), "{body}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (answered, failures) = load.finish();
    assert!(failures.is_empty(), "kept models failed during the change: {failures:?}");
    assert!(answered > 50, "only {answered} requests to the kept models");
    eprintln!("added models served {took:?} after the change ({:?} in all)", changed.elapsed());
    node.proc.assert_running();
    assert_eq!(node.proc.0.id(), pid);
    assert_eq!(served(&node.base), b);

    // The removed models' series are gone; the plan's hash is the new one.
    let text = metrics(&node.base);
    assert!(!text.contains("model=\"tiny-0003\""), "{text}");
    assert!(text.contains("model=\"tiny-0005\""));
    let b_sha = sha256_file(&plan_path);
    let info: Vec<&str> = text.lines().filter(|l| l.starts_with("stowage_plan_info{")).collect();
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(info[0].contains(&b_sha), "{info:?}");
    assert!(text.contains("stowage_reloads_total{result=\"applied\"} 1"), "{text}");

    // Memory: within 10 % of a fresh node on plan B that served the same kind of traffic.
    let warm = |base: &str| {
        let load = Load::start(base, &b, 4);
        std::thread::sleep(Duration::from_secs(1));
        let (_, failures) = load.finish();
        assert!(failures.is_empty(), "{failures:?}");
    };
    warm(&node.base);
    let fresh_plan = dir.join("fresh.json");
    std::fs::write(&fresh_plan, plan(&catalog_sha, "n1", &b)).unwrap();
    // Like with like: the fresh node chooses its engines as the reloaded one did (an empty
    // verdict cache), rather than reading the verdicts the first node kept.
    let fresh_cache = dir.join("fresh-cache");
    let fresh = serve(dir, &fresh_plan, &["--cache-dir", fresh_cache.to_str().unwrap()], &[]);
    warm(&fresh.base);
    std::thread::sleep(Duration::from_millis(500));
    let (reloaded, started) = (rss_kib(pid), rss_kib(fresh.proc.0.id()));
    eprintln!("RSS after the reload {reloaded} KiB, fresh on plan B {started} KiB");
    assert!(reloaded as f64 <= started as f64 * 1.10, "RSS {reloaded} KiB vs {started} KiB fresh");
}

#[test]
fn sighup_and_the_admin_api_reload_and_the_admin_api_needs_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    models(dir);
    let catalog_path = dir.join("models.toml");
    let catalog_sha = sha256_file(&catalog_path);
    let plan_path = dir.join("plan.json");
    replace(&plan_path, &plan(&catalog_sha, "n1", &["tiny-0001", "tiny-0002"]));
    let admin_port = free_port().to_string();
    let node =
        serve(dir, &plan_path, &["--no-watch", "--admin-port", &admin_port], &[("STOWAGE_ADMIN_TOKEN", "s3cret")]);
    let admin = node.admin.clone().unwrap();
    let post = |url: &str, token: Option<&str>| {
        let mut req = ureq::post(url).config().http_status_as_error(false).build();
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.send_empty().unwrap();
        (r.status().as_u16(), r.body_mut().read_json::<Value>().unwrap_or(Value::Null))
    };

    // Without --watch a written plan changes nothing until SIGHUP.
    replace(&plan_path, &plan(&catalog_sha, "n1", &["tiny-0001", "tiny-0003"]));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(served(&node.base), ["tiny-0001", "tiny-0002"]);
    node.proc.signal("HUP");
    eventually(Duration::from_secs(20), "SIGHUP reloads", || served(&node.base) == ["tiny-0001", "tiny-0003"]);
    eventually(Duration::from_secs(20), "tiny-0003 serves", || predict(&node.base, "tiny-0003").0 == 200);

    // The admin API: not on the serving port, never without the token.
    let (status, body) = post(&format!("{}/admin/reload", node.base), Some("s3cret"));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    for token in [None, Some("wrong")] {
        let (status, body) = post(&format!("{admin}/admin/reload"), token);
        assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{token:?}: {body}");
        let r = ureq::get(&format!("{admin}/admin/plan")).config().http_status_as_error(false).build().call();
        assert_eq!(r.unwrap().status(), 401);
    }

    // A reload through the admin API: a new model, and one whose artifact changed loads anew.
    let text = std::fs::read_to_string(&catalog_path).unwrap();
    let moved = text.replace("artifact = \"tiny-0003/model.onnx\"", "artifact = \"tiny-0007/model.onnx\"");
    assert_ne!(moved, text);
    replace(&catalog_path, &moved);
    let sha = sha256_file(&catalog_path);
    replace(&plan_path, &plan(&sha, "n1", &["tiny-0001", "tiny-0003", "tiny-0004"]));
    let (status, out) = post(&format!("{admin}/admin/reload"), Some("s3cret"));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["result"], "applied", "{out}");
    assert_eq!(out["added"], json!(["tiny-0004"]));
    assert_eq!(out["replaced"], json!(["tiny-0003"]));
    assert_eq!(out["removed"], json!([]));
    assert_eq!(out["kept"], 1);
    assert_eq!(predict(&node.base, "tiny-0004").0, 200);
    let (_, again) = post(&format!("{admin}/admin/reload"), Some("s3cret"));
    assert_eq!(again["result"], "unchanged", "{again}");

    // The scheme is case-insensitive; the token is not.
    for (auth, status) in
        [("bearer s3cret", 200), ("BEARER s3cret", 200), ("bearer S3CRET", 401), ("Basic s3cret", 401)]
    {
        let r = ureq::get(&format!("{admin}/admin/plan"))
            .header("Authorization", auth)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        assert_eq!(r.status(), status, "{auth}");
    }
    let mut r = ureq::get(&format!("{admin}/admin/plan")).header("Authorization", "Bearer s3cret").call().unwrap();
    let applied: Value = r.body_mut().read_json().unwrap();
    assert_eq!(applied["models"], json!(["tiny-0001", "tiny-0003", "tiny-0004"]), "{applied}");
    assert_eq!(applied["catalog_sha256"], sha.as_str());
    assert_eq!(applied["node"]["id"], "n1");

    // A refused reload says why, with 409.
    replace(&plan_path, &plan(&catalog_sha, "n1", &["tiny-0001"]));
    let (status, body) = post(&format!("{admin}/admin/reload"), Some("s3cret"));
    assert_eq!((status, body["code"].as_str()), (409, Some("reload_refused")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("not the catalog"), "{body}");
    assert_eq!(served(&node.base), ["tiny-0001", "tiny-0003", "tiny-0004"]);
}

#[test]
fn an_admin_api_off_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    models(dir.path());
    let out = stowage()
        .args(["serve", "--catalog"])
        .arg(dir.path().join("models.toml"))
        .args(["--port", "0", "--admin-port", "0", "--admin-host", "0.0.0.0"])
        .env_remove("STOWAGE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address") && err.contains("STOWAGE_ADMIN_TOKEN"), "{err}");
}
