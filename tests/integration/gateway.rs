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
        let mut child = serve_on(&plan_path, &n.id, port);
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

/// Starts `stowage gateway` on a route map with `--hold-timeout-ms hold`; its URL.
fn gateway_on(routes: &std::path::Path, hold: u64) -> (String, Proc) {
    let port = free_port();
    let mut gateway = Proc(
        stowage()
            .args(["gateway", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--hold-timeout-ms", &hold.to_string(), "--routes"])
            .arg(routes)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let gw = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{gw}/ready"), &mut gateway);
    (gw, gateway)
}

/// Node `node` of a plan, served on `port`.
fn serve_on(plan: &std::path::Path, node: &str, port: u16) -> Proc {
    Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--node", node, "--plan"])
            .arg(plan)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_node_that_scales_to_zero_is_waited_for_then_answers() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--out"]).arg(dir.path()));
    local_catalog(dir.path());
    let plan_path = dir.path().join("plan.json");
    run(stowage().arg("plan").arg("--catalog").arg(dir.path().join("models.toml")).arg("--out").arg(&plan_path));
    let plan = Plan::load(&plan_path).unwrap();
    let (node, model) = (plan.nodes[0].id.clone(), plan.nodes[0].models[0].clone());
    // No node listens on `port` yet: the route map says its node scales to zero.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let routes = dir.path().join("routes.json");
    let entry = serde_json::json!({"url": base, "min_replicas": 0});
    std::fs::write(&routes, serde_json::json!({ &model: entry }).to_string()).unwrap();
    let predict = |gw: &str| {
        let r = ureq::get(&format!("{gw}/predictions/{model}?text=hello"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), retry, r.into_body().read_json::<Value>().unwrap_or(Value::Null))
    };

    // Nothing starts it: after the hold timeout, 503 node_starting with Retry-After, never a hang.
    let (short, _short) = gateway_on(&routes, 300);
    let t = Instant::now();
    let (status, retry, err) = predict(&short);
    let held = t.elapsed();
    assert_eq!((status, err["code"].as_str(), retry.as_deref()), (503, Some("node_starting"), Some("5")), "{err}");
    assert!(held >= Duration::from_millis(300) && held < Duration::from_secs(5), "{held:?}");

    // A request waits, counted per node, until the node starts; then it is answered.
    let (gw, _gateway) = gateway_on(&routes, 30_000);
    let waiting = |gw: &str| {
        let metrics = ureq::get(&format!("{gw}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
        let series = format!("stowage_gateway_waiting_requests{{node=\"127.0.0.1:{port}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str()).map(|v| v.trim().to_string()))
    };
    let mut served = std::thread::scope(|s| {
        let held = s.spawn(|| predict(&gw));
        eventually("the request is held", || waiting(&gw).as_deref() == Some("1"));
        let served = serve_on(&plan_path, &node, port);
        let (status, _, answer) = held.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        served
    });
    assert_eq!(waiting(&gw).as_deref(), Some("0"));
    let metrics = ureq::get(&format!("{gw}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains("stowage_gateway_hold_duration_seconds_count{"), "{metrics}");
    assert_eq!(predict(&gw).0, 200);

    // The node goes back to zero: the next request finds it gone, waits, and is answered when a
    // replica is back.
    assert_eq!(served.terminate().code(), Some(0));
    let _served = std::thread::scope(|s| {
        let held = s.spawn(|| predict(&gw));
        eventually("the request is held again", || waiting(&gw).as_deref() == Some("1"));
        let served = serve_on(&plan_path, &node, port);
        let (status, _, answer) = held.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        served
    });
}
