//! `stowage gateway` in front of two real nodes: every model answers through it as it does from
//! its node, Triton's client speaks to it, a stopped node's models are 503 while the others
//! answer, and a new route file re-routes without a restart (a broken one changes nothing).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stowage_core::Plan;

use crate::common::{free_port, local_catalog, run, stowage, wait_ok, Proc};

fn get(url: &str) -> (u16, Value) {
    let r = ureq::get(url).config().http_status_as_error(false).build().call().unwrap();
    let status = r.status().as_u16();
    (status, r.into_body().read_json().unwrap_or(Value::Null))
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let r = ureq::post(url).config().http_status_as_error(false).build().send_json(body).unwrap();
    let status = r.status().as_u16();
    (status, r.into_body().read_json().unwrap_or(Value::Null))
}

/// Waits (at most 10 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_address_for_every_model_of_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "6", "--embedding-every", "3", "--out"]).arg(dir.path()));
    local_catalog(dir.path());
    let plan_path = dir.path().join("plan.json");
    run(stowage().arg("plan").arg("--catalog").arg(dir.path().join("models.toml")).arg("--out").arg(&plan_path));
    let plan = Plan::load(&plan_path).unwrap();
    assert_eq!(plan.nodes.len(), 2);
    let mut nodes = Vec::new();
    let mut routes = BTreeMap::new();
    for n in &plan.nodes {
        let port = free_port();
        let mut child = Proc(
            stowage()
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--node", &n.id, "--plan"])
                .arg(&plan_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let base = format!("http://127.0.0.1:{port}");
        wait_ok(&format!("{base}/ready"), &mut child);
        for m in &n.models {
            routes.insert(m.clone(), base.clone());
        }
        nodes.push((n.clone(), base, child));
    }
    let routes_path = dir.path().join("routes.json");
    std::fs::write(&routes_path, serde_json::to_string(&routes).unwrap()).unwrap();
    let port = free_port();
    let log = dir.path().join("gateway.log");
    let mut gateway = Proc(
        stowage()
            .args(["gateway", "--host", "127.0.0.1", "--port", &port.to_string(), "--reload-interval-ms", "100"])
            .arg("--routes")
            .arg(&routes_path)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let gw = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{gw}/ready"), &mut gateway);

    // Health bodies are the node's (docs/http-api.md): the same liveness and KServe v2 answers, and
    // a /ready of the same status with what the gateway routes.
    let node_base = &nodes[0].1;
    for path in ["/ping", "/v2/health/live", "/v2/health/ready"] {
        assert_eq!(get(&format!("{gw}{path}")), get(&format!("{node_base}{path}")), "{path}");
    }
    let (status, ready) = get(&format!("{gw}/ready"));
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")), "{ready}");
    assert_eq!(ready["routes"]["models"], routes.len(), "{ready}");
    assert_eq!(ready["routes"]["nodes"], nodes.len(), "{ready}");

    // Every model, through the gateway, answers what its node answers.
    let body = serde_json::json!({"inputs": ["I love this product", "slow delivery"]});
    for (n, base, _) in &nodes {
        for m in &n.models {
            let direct = post(&format!("{base}/predictions/{m}"), &body);
            let through = post(&format!("{gw}/predictions/{m}"), &body);
            assert_eq!(direct.0, 200);
            assert_eq!(through, direct, "{m}");
            assert_eq!(get(&format!("{gw}/predictions/{m}?text=hello")).0, 200);
        }
    }
    let (status, err) = get(&format!("{gw}/predictions/nope?text=hi"));
    assert_eq!((status, err["code"].as_str()), (404, Some("unknown_model")), "{err}");

    // Triton's client, through the gateway.
    if Command::new("python3").args(["-c", "import tritonclient.http"]).output().unwrap().status.success() {
        let classifier = &plan.nodes[0].models.iter().find(|m| !m.ends_with('3') && !m.ends_with('6')).unwrap();
        let embedder = plan.nodes.iter().flat_map(|n| &n.models).find(|m| m.ends_with('3')).unwrap();
        let out = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kserve_v2.py"))
            .args([format!("127.0.0.1:{port}").as_str(), classifier, embedder])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("kserve v2: ok"), "{text}");
    } else {
        assert!(std::env::var("STOWAGE_REQUIRE_TRITONCLIENT").map_or(true, |v| v != "1"), "tritonclient required");
    }

    // One node stops: its models are 503 at the gateway, the other node's answer on.
    let (stopped, _, mut child) = nodes.pop().unwrap();
    assert_eq!(child.terminate().code(), Some(0));
    for m in &stopped.models {
        let (status, err) = post(&format!("{gw}/predictions/{m}"), &body);
        assert_eq!((status, err["code"].as_str()), (503, Some("node_unavailable")), "{m}: {err}");
    }
    for m in &nodes[0].0.models {
        assert_eq!(post(&format!("{gw}/predictions/{m}"), &body).0, 200, "{m}");
    }
    let metrics = ureq::get(&format!("{gw}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains("stowage_gateway_upstream_errors_total{"), "{metrics}");

    // A broken route file changes nothing; a new one re-routes without a restart.
    std::fs::write(&routes_path, "{ not json").unwrap();
    let first = &nodes[0].0.models[0];
    eventually("the broken file is noticed", || std::fs::read_to_string(&log).unwrap().contains("routes not reloaded"));
    assert_eq!(post(&format!("{gw}/predictions/{first}"), &body).0, 200);
    let kept: BTreeMap<&String, &String> = routes.iter().filter(|(m, _)| !stopped.models.contains(m)).collect();
    std::fs::write(&routes_path, serde_json::to_string(&kept).unwrap()).unwrap();
    let gone = &stopped.models[0];
    eventually("the new routes", || get(&format!("{gw}/predictions/{gone}?text=hi")).0 == 404);
    assert_eq!(post(&format!("{gw}/predictions/{first}"), &body).0, 200);
    gateway.assert_running();
}
