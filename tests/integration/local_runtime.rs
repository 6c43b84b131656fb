//! The local runtime end to end, through the scripts a user runs: synth models → a plan with
//! several nodes → scripts/deploy.sh --runtime local → one prediction per model through the route
//! map → scripts/status.sh → a short scripts/loadtest.sh sweep (the CI smoke run: report files) →
//! a second plan deployed in place under load through the gateway → scripts/stop.sh → no node
//! process left behind. And a node that scales to zero: not started by the deployment, started by
//! its first request through the gateway, stopped when idle, started again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs a command that must succeed, with the scripts pointed at this build's binary.
fn run(cmd: &mut Command) -> String {
    crate::common::run(cmd.env("STOWAGE_BIN", env!("CARGO_BIN_EXE_stowage")))
}

fn alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// One `ModelInfer` per model at the gRPC address `addr` (host:port): each model's output names.
fn grpc_infer<'a>(addr: &str, models: impl Iterator<Item = &'a String>) -> Vec<(String, Vec<String>)> {
    use stowage::grpc::pb;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client =
            pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
        let mut answers = Vec::new();
        for model in models {
            let text = pb::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(pb::InferTensorContents {
                    bytes_contents: vec![b"thanks for the fast delivery".to_vec().into()],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let req = pb::ModelInferRequest { model_name: model.clone(), inputs: vec![text], ..Default::default() };
            let r = client.model_infer(req).await.unwrap_or_else(|e| panic!("{model}: {e}")).into_inner();
            assert_eq!(r.model_name, *model);
            answers.push((model.clone(), r.outputs.into_iter().map(|o| o.name).collect()));
        }
        answers
    })
}

#[test]
fn deploy_local_predict_every_model_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(crate::common::stowage().args(["synth", "--count", "7", "--embedding-every", "4", "--out"]).arg(d));
    // One small instance type holding three models: a plan of three nodes.
    crate::common::local_catalog(d);
    let plan = d.join("plan.json");
    run(crate::common::stowage().arg("plan").arg("--catalog").arg(d.join("models.toml")).arg("--out").arg(&plan));
    let out = d.join("deploy");
    let said = run(Command::new(Path::new(ROOT).join("scripts/deploy.sh"))
        .args(["--runtime", "local", "--out"])
        .arg(&out)
        .arg(&plan));
    assert!(said.contains("3 nodes ready"), "{said}");

    let nodes = std::fs::read_to_string(out.join("nodes.tsv")).unwrap();
    let pids: Vec<String> = nodes.lines().map(|l| l.split('\t').nth(1).unwrap().to_string()).collect();
    let routes: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("routes.json")).unwrap()).unwrap();
    assert_eq!(routes.len(), 7);
    for (model, base) in &routes {
        let mut r = ureq::post(&format!("{base}/predictions/{model}"))
            .send_json(serde_json::json!({"inputs": "thanks for the fast delivery"}))
            .unwrap();
        let body: serde_json::Value = r.body_mut().read_json().unwrap();
        assert_eq!(body["model"], model.as_str(), "{body}");
    }
    // The gateway: every model at one address.
    let gateway = std::fs::read_to_string(out.join("gateway.url")).unwrap().trim().to_string();
    let gateway_pid = std::fs::read_to_string(out.join("gateway.pid")).unwrap().trim().to_string();
    for model in routes.keys() {
        let mut r = ureq::post(&format!("{gateway}/predictions/{model}"))
            .send_json(serde_json::json!({"inputs": "thanks for the fast delivery"}))
            .unwrap();
        let body: serde_json::Value = r.body_mut().read_json().unwrap();
        assert_eq!(body["model"], model.as_str(), "{body}");
    }
    // And over KServe v2 gRPC, at the address in gateway.grpc: each model's outputs.
    let grpc = std::fs::read_to_string(out.join("gateway.grpc")).unwrap().trim().to_string();
    for (model, outputs) in grpc_infer(&grpc, routes.keys()) {
        let want: &[&str] = if model.ends_with('4') { &["embedding"] } else { &["probabilities", "logits"] };
        assert_eq!(outputs, want, "{model} over gRPC");
    }
    let status = run(Command::new(Path::new(ROOT).join("scripts/status.sh")).arg("--out").arg(&out));
    assert_eq!(status.matches("\"status\":\"ready\"").count(), 3, "{status}");

    // --help prints the usage and touches nothing; an unknown argument is refused (exit 2), and
    // the deployment serves on.
    for script in ["stop", "status"] {
        let path = Path::new(ROOT).join(format!("scripts/{script}.sh"));
        let help = run(Command::new(&path).arg("--help").env("STOWAGE_STOP_TIMEOUT", "1"));
        assert!(help.contains(&format!("scripts/{script}.sh [--out DIR]")), "{script} --help: {help}");
        let refused = Command::new(&path).args(["--bogus", "--out"]).arg(&out).output().unwrap();
        assert_eq!(refused.status.code(), Some(2), "{script} --bogus");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown argument --bogus"));
    }
    for model in routes.keys() {
        let r = ureq::get(&format!("{gateway}/predictions/{model}?text=still+here")).call().unwrap();
        assert_eq!(r.status(), 200, "{model} after stop.sh --help");
    }
    assert!(pids.iter().chain([&gateway_pid]).all(|p| alive(p)), "a process stopped after --help");

    // The CI smoke run of the load test: a short sweep produces the report files.
    let lt = d.join("loadtest");
    let report = run(Command::new(Path::new(ROOT).join("scripts/loadtest.sh"))
        .arg("--routes")
        .arg(out.join("routes.json"))
        .arg("--out")
        .arg(&lt)
        .args(["--steps", "1 4", "--duration", "1"])
        .arg(&plan));
    assert!(report.contains("| 3 × local.small | 7 |"), "{report}");
    assert!(report.contains("| c=1 |") && report.contains("| c=4 |"), "{report}");
    assert!(report.contains("sequential 7/7 OK") && report.contains("random order 7/7 OK"), "{report}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lt.join("report.json")).unwrap()).unwrap();
    assert!(json["steps"][1]["throughput"].as_f64().unwrap() > 0.0);
    assert!(json["steps"][0]["codes"]["200"].as_u64().unwrap() > 0);
    // Each step's results also in vegeta's CSV results format: nine columns (send time ns, code,
    // latency ns, bytes out, bytes in, error, body, attack, seq), one row per request.
    let csv = std::fs::read_to_string(lt.join("steps/c-4.results.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let counted: u64 = json["steps"][1]["codes"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(rows.len() as u64, counted, "one row per request");
    let mut seqs = std::collections::BTreeSet::new();
    for r in &rows {
        assert_eq!(r.len(), 9, "{r:?}");
        assert!(r[0].parse::<u64>().unwrap() > 1_700_000_000_000_000_000, "{r:?}");
        assert_eq!(r[1], "200");
        assert!(r[2].parse::<u64>().unwrap() > 0 && r[4].parse::<u64>().unwrap() > 0, "{r:?}");
        assert_eq!(r[7], "stowage");
        assert!(seqs.insert(r[8].parse::<u64>().unwrap()), "seq {} twice", r[8]);
    }
    let svg = std::fs::read_to_string(lt.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
    // Latency on a log axis, and each step's error rate drawn below it.
    assert!(svg.contains("latency (ms, log scale)") && svg.contains(">errors<") && svg.contains("c=4: "), "{svg}");

    // From another folder, with paths relative to it, and one route that answers nothing: the
    // run goes on and says which.
    let mut dead = routes.clone();
    let ghost = dead.keys().next().unwrap().clone();
    dead.insert(ghost.clone(), "http://127.0.0.1:9".into());
    std::fs::write(d.join("dead-routes.json"), serde_json::to_string(&dead).unwrap()).unwrap();
    let report = run(Command::new(Path::new(ROOT).join("scripts/loadtest.sh")).current_dir(d).args([
        "--routes",
        "dead-routes.json",
        "--out",
        "lt-dead",
        "--steps",
        "2",
        "--duration",
        "1",
        "plan.json",
    ]));
    assert!(report.contains(&format!("No answer from the route of: {ghost}.")), "{report}");
    assert!(d.join("lt-dead/report.md").is_file(), "the report lands in the working directory's lt-dead");

    // Open loop (no vegeta here): `stowage attack --rate` at each rate, Poisson arrivals.
    let report = run(Command::new(Path::new(ROOT).join("scripts/loadtest.sh")).current_dir(d).args([
        "--routes",
        "deploy/routes.json",
        "--out",
        "lt-open",
        "--open-loop",
        "--rates",
        "10 20",
        "--duration",
        "1",
        "plan.json",
    ]));
    assert!(report.contains("| 10/s |") && report.contains("| 20/s |"), "{report}");
    assert!(d.join("lt-open/steps/open-20.results.csv").is_file());

    // Day 2, in place: plan B moves a model between two kept nodes and replaces the third node
    // with a new one, while clients keep asking the gateway for every model.
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let mut b = a.clone();
    let ids = |i: usize| -> Vec<String> {
        a["nodes"][i]["models"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect()
    };
    let (n0, n1, n2) = (ids(0), ids(1), ids(2));
    assert_eq!((n0.len(), n1.len(), n2.len()), (3, 3, 1), "{a}");
    b["nodes"][0]["models"] = serde_json::json!(n0[..2]);
    b["nodes"][1]["models"] = serde_json::json!([n0[2].clone(), n1[0].clone(), n1[1].clone()]);
    b["nodes"][2]["id"] = "local-small-009".into();
    b["nodes"][2]["models"] = serde_json::json!([n1[2].clone(), n2[0].clone()]);
    let plan_b = d.join("plan-b.json");
    std::fs::write(&plan_b, serde_json::to_string_pretty(&b).unwrap()).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = {
        let (stop, gateway, models) = (stop.clone(), gateway.clone(), routes.keys().cloned().collect::<Vec<_>>());
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for m in &models {
                    match agent.get(&format!("{gateway}/predictions/{m}?text=day+two")).call() {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(format!("{m}: {}", r.status())),
                        Err(e) => failed.push(format!("{m}: {e}")),
                    }
                }
            }
            (ok, failed)
        })
    };
    let said = run(Command::new(Path::new(ROOT).join("scripts/deploy.sh"))
        .args(["--runtime", "local", "--out"])
        .arg(&out)
        .arg(&plan_b));
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = clients.join().unwrap();
    assert!(said.contains("in place: 2 nodes reloaded, 1 started, 1 stopped"), "{said}");
    assert!(failed.is_empty() && ok > 20, "{ok} answered; failed through the gateway during the change: {failed:?}");
    let nodes_b = std::fs::read_to_string(out.join("nodes.tsv")).unwrap();
    let pids_b: Vec<String> = nodes_b.lines().map(|l| l.split('\t').nth(1).unwrap().to_string()).collect();
    assert_eq!(pids_b[..2], pids[..2], "the kept nodes were not restarted");
    assert!(!alive(&pids[2]), "the node plan B no longer has was stopped");
    assert!(nodes_b.lines().nth(2).unwrap().starts_with("local-small-009\t"), "{nodes_b}");
    let routes_b: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("routes.json")).unwrap()).unwrap();
    assert_eq!(routes_b[&n0[2]], routes[&n1[0]], "the moved model routes to its new node");
    for (model, base) in &routes_b {
        assert_eq!(ureq::get(&format!("{base}/predictions/{model}?text=hi")).call().unwrap().status(), 200, "{model}");
    }
    // The moved model left its old node.
    let r = ureq::get(&format!("{}/predictions/{}?text=hi", routes[&n0[0]], n0[2]))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status(), 404);

    let said = run(Command::new(Path::new(ROOT).join("scripts/stop.sh")).arg("--out").arg(&out));
    assert!(said.contains("stopped 3 nodes"), "{said}");
    for pid in pids.iter().chain(&pids_b) {
        assert!(!alive(pid), "node pid {pid} still runs after stop.sh");
    }
    assert!(!alive(&gateway_pid), "the gateway still runs after stop.sh");
    assert!(!out.join("gateway.url").exists());
    let logs = std::fs::read_dir(out.join("logs")).unwrap().count();
    assert_eq!(logs, 6, "four nodes, the gateway and the autoscaler");
    // Nothing left to stop.
    assert!(run(Command::new(Path::new(ROOT).join("scripts/stop.sh")).arg("--out").arg(&out)).contains("nothing"));
}

#[test]
fn deploy_fails_fast_with_the_nodes_reason_when_a_model_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(crate::common::stowage().args(["synth", "--count", "2", "--out"]).arg(d));
    crate::common::local_catalog(d);
    std::fs::write(d.join("tiny-0002/model.onnx"), b"not a model").unwrap();
    let plan = d.join("plan.json");
    run(crate::common::stowage().arg("plan").arg("--catalog").arg(d.join("models.toml")).arg("--out").arg(&plan));
    // From the plan's folder, with relative paths: they are read there.
    let started = std::time::Instant::now();
    let out = Command::new(Path::new(ROOT).join("scripts/deploy.sh"))
        .current_dir(d)
        .args(["--out", "deploy", "plan.json"])
        .env("STOWAGE_BIN", env!("CARGO_BIN_EXE_stowage"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("model tiny-0002 failed to load: model.onnx: not a readable ONNX model"), "{said}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "it waited for the deadline: {said}");
    assert!(d.join("deploy/logs").is_dir(), "the deployment is in the caller's folder");
    assert!(!d.join("deploy/nodes.tsv").exists(), "everything was stopped");
    // An unknown option and a second plan are refused before anything starts.
    for args in [&["--bogus", "plan.json"][..], &["plan.json", "plan.json"][..]] {
        let out = Command::new(Path::new(ROOT).join("scripts/deploy.sh")).current_dir(d).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The pids of the `stowage serve` processes of node `node` of the deployment in `out` (from
/// /proc: whoever started them).
fn serving(out: &Path, node: &str) -> Vec<String> {
    let needle = format!("\0--plan\0{}\0", out.join("nodes").join(node).join("plan.json").display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().into_string().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).to_string();
            (cmdline.contains("\0serve\0") && cmdline.contains(&needle) && alive(&pid)).then_some(pid)
        })
        .collect()
}

/// Waits (at most `secs`) until `check` holds.
fn within(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `count` synthetic tiny models in `d` on the small local instance type, their catalog edited by
/// `edit`, planned: the plan's path and the plan.
fn planned(d: &Path, count: usize, edit: impl FnOnce(String) -> String) -> (std::path::PathBuf, stowage_core::Plan) {
    run(crate::common::stowage().args(["synth", "--count", &count.to_string(), "--out"]).arg(d));
    crate::common::local_catalog(d);
    let catalog = std::fs::read_to_string(d.join("models.toml")).unwrap();
    std::fs::write(d.join("models.toml"), edit(catalog)).unwrap();
    let plan = d.join("plan.json");
    run(crate::common::stowage().arg("plan").arg("--catalog").arg(d.join("models.toml")).arg("--out").arg(&plan));
    let p = stowage_core::Plan::load(&plan).unwrap();
    (plan, p)
}

#[test]
fn deploy_local_scales_a_node_to_zero_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // tiny-0004 may wait for its node: it gets a node of its own, which scales to zero.
    let (plan, p) = planned(d, 4, |c| c.replace("id = \"tiny-0004\"\n", "id = \"tiny-0004\"\nscale_to_zero = true\n"));
    let zero = p.nodes.iter().find(|n| n.scales_to_zero()).expect("a node that scales to zero");
    assert_eq!(zero.models, ["tiny-0004"]);
    let node = zero.id.clone();

    let out = d.join("deploy");
    let said = run(Command::new(Path::new(ROOT).join("scripts/deploy.sh"))
        .env("STOWAGE_IDLE_SECONDS", "2")
        .env("STOWAGE_HOLD_TIMEOUT_MS", "8000")
        .args(["--runtime", "local", "--out"])
        .arg(&out)
        .arg(&plan));
    assert!(said.contains("1 nodes ready (1 more scaled to zero"), "{said}");
    // After the deployment no process serves that node.
    assert!(serving(&out, &node).is_empty(), "{node} runs before any request");
    let gateway = std::fs::read_to_string(out.join("gateway.url")).unwrap().trim().to_string();
    let status = run(Command::new(Path::new(ROOT).join("scripts/status.sh")).arg("--out").arg(&out));
    assert!(status.lines().any(|l| l.starts_with(&node) && l.contains(" zero ")), "{status}");

    // The first request through the gateway starts it and is answered.
    let t = std::time::Instant::now();
    let r = ureq::get(&format!("{gateway}/predictions/tiny-0004?text=wake+up")).call().unwrap();
    let cold = t.elapsed();
    assert_eq!(r.status(), 200);
    eprintln!("cold start through the gateway: {cold:?}");
    assert_eq!(serving(&out, &node).len(), 1);
    // Idle: stopped again.
    within(20, "the idle node stops", || serving(&out, &node).is_empty());

    // Over gRPC too: the call waits for the node and is answered.
    let grpc = std::fs::read_to_string(out.join("gateway.grpc")).unwrap().trim().to_string();
    let answers = grpc_infer(&grpc, ["tiny-0004".to_string()].iter());
    assert_eq!(answers[0].1, ["probabilities", "logits"]);
    within(20, "the idle node stops again", || serving(&out, &node).is_empty());

    // With nothing to start it (the autoscaler is gone), a request gets 503 with Retry-After after
    // the hold timeout: never a hang.
    let autoscaler = std::fs::read_to_string(out.join("autoscaler.pid")).unwrap().trim().to_string();
    assert!(Command::new("kill").args(["-KILL", &autoscaler]).status().unwrap().success());
    let t = std::time::Instant::now();
    let r = ureq::get(&format!("{gateway}/predictions/tiny-0004?text=anyone"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    let held = t.elapsed();
    assert_eq!((r.status().as_u16(), r.headers().get("retry-after").map(|v| v.to_str().unwrap())), (503, Some("5")));
    assert!(held >= std::time::Duration::from_secs(8) && held < std::time::Duration::from_secs(20), "{held:?}");
    // The other node answered throughout.
    assert_eq!(ureq::get(&format!("{gateway}/predictions/tiny-0001?text=hi")).call().unwrap().status(), 200);

    let said = run(Command::new(Path::new(ROOT).join("scripts/stop.sh")).arg("--out").arg(&out));
    assert!(said.contains("stopped 2 nodes"), "{said}");
    assert!(p.nodes.iter().all(|n| serving(&out, &n.id).is_empty()), "a node runs after stop.sh");
}

#[test]
fn a_model_at_five_times_a_node_spreads_over_its_replicas_and_survives_one_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A node gives tiny models 2 units × 0.83 ÷ 5 ms = 332 rps: tiny-0001's 1600 rps need 5 nodes.
    let (plan, p) = planned(d, 3, |c| {
        let at = c.find("id = \"tiny-0001\"").unwrap();
        let rps = at + c[at..].find("peak_rps = ").unwrap();
        let end = rps + c[rps..].find('\n').unwrap();
        format!("{}peak_rps = 1600{}", &c[..rps], &c[end..])
    });
    let replicas = p.replicas_of("tiny-0001");
    assert_eq!(replicas.len(), 5, "{}", p.to_json());

    let out = d.join("deploy");
    run(Command::new(Path::new(ROOT).join("scripts/deploy.sh"))
        .args(["--runtime", "local", "--out"])
        .arg(&out)
        .arg(&plan));
    let gateway = std::fs::read_to_string(out.join("gateway.url")).unwrap().trim().to_string();
    let nodes: Vec<(String, String, String)> = std::fs::read_to_string(out.join("nodes.tsv"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].to_string(), f[2].to_string())
        })
        .collect();
    let answered = |url: &str| -> f64 {
        let metrics = ureq::get(&format!("{url}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
        let series = "stowage_requests_total{model=\"tiny-0001\",code=\"200\"} ";
        metrics.lines().find_map(|l| l.strip_prefix(series)).map_or(0.0, |v| v.trim().parse().unwrap())
    };
    let hot: Vec<&(String, String, String)> =
        nodes.iter().filter(|(n, _, _)| replicas.iter().any(|(r, _)| &r.id == n)).collect();
    assert_eq!(hot.len(), 5);
    let before: Vec<f64> = hot.iter().map(|(_, _, url)| answered(url)).collect();
    // Four clients through the gateway.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..125 {
                    let r = ureq::get(&format!("{gateway}/predictions/tiny-0001?text=spread")).call().unwrap();
                    assert_eq!(r.status(), 200);
                }
            });
        }
    });
    let counts: Vec<f64> = hot.iter().zip(&before).map(|((_, _, url), b)| answered(url) - b).collect();
    assert_eq!(counts.iter().sum::<f64>(), 500.0, "{counts:?}");
    assert!(counts.iter().all(|&c| (c - 100.0).abs() <= 20.0), "not within ±20 % of an even spread: {counts:?}");

    // One of its nodes stops: every request still answers 200.
    let (_, pid, _) = hot[2];
    assert!(Command::new("kill").args(["-TERM", pid]).status().unwrap().success());
    within(30, "the node stops", || !alive(pid));
    for _ in 0..100 {
        let r = ureq::get(&format!("{gateway}/predictions/tiny-0001?text=failover"))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Over gRPC too: each call that finds the stopped node goes to another replica.
    let grpc = std::fs::read_to_string(out.join("gateway.grpc")).unwrap().trim().to_string();
    // Past the 2 s a node found unreachable is passed over: the stopped node is tried again.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let stopped = hot[2].2.trim_start_matches("http://").to_string();
    let failures = || {
        let metrics = ureq::get(&format!("{gateway}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
        let series = format!("stowage_gateway_upstream_errors_total{{node=\"{stopped}\",kind=\"connect\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = failures();
    let calls = vec!["tiny-0001".to_string(); 20];
    assert_eq!(grpc_infer(&grpc, calls.iter()).len(), 20);
    assert!(failures() > before, "no gRPC call met the stopped node: the failover was not exercised");
    run(Command::new(Path::new(ROOT).join("scripts/stop.sh")).arg("--out").arg(&out));
}
