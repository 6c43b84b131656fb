//! End to end over real sockets with real processes: synth → plan → serve two nodes on free
//! ports → a prediction from every model on its node → SIGTERM → each node exits 0.

use std::process::Stdio;

use crate::common::{free_port, local_catalog, stowage, wait_ok, Proc};
use stowage_core::Plan;

#[test]
fn two_nodes_serve_every_planned_model() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        stowage().args(["synth", "--count", "6", "--embedding-every", "3", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A catalog whose one instance type holds three of these models, so the plan has two nodes.
    local_catalog(dir.path());
    let plan_path = dir.path().join("plan.json");
    let out = stowage()
        .arg("plan")
        .arg("--catalog")
        .arg(dir.path().join("models.toml"))
        .arg("--out")
        .arg(&plan_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan = Plan::load(&plan_path).unwrap();
    assert_eq!(plan.nodes.len(), 2, "{plan:?}");

    let mut nodes = Vec::new();
    for n in &plan.nodes {
        let port = free_port();
        let child = stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--node", &n.id, "--plan"])
            .arg(&plan_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        nodes.push((n.clone(), format!("http://127.0.0.1:{port}"), Proc(child)));
    }
    for (n, base, child) in &mut nodes {
        wait_ok(&format!("{base}/ready"), child);
        for m in &n.models {
            let mut r = ureq::get(&format!("{base}/predictions/{m}?text=hello+there")).call().unwrap();
            let body: serde_json::Value = r.body_mut().read_json().unwrap();
            assert_eq!(body["model"], m.as_str());
            let p = &body["predictions"][0];
            assert!(p.get("label").is_some() || p.get("embedding").is_some(), "{body}");
        }
        // Metric samples are folded on a timer, scraped or not: the upkeep thread runs.
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.0.id()))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .collect();
        assert!(threads.iter().any(|t| t == "stowage-metrics"), "{threads:?}");
        // A model of the other node is not here.
        let other = plan.nodes.iter().find(|o| o.id != n.id).unwrap().models[0].clone();
        let err = ureq::get(&format!("{base}/predictions/{other}?text=hi")).call().unwrap_err();
        assert!(matches!(err, ureq::Error::StatusCode(404)), "{err:?}");
    }
    for (_, _, child) in &mut nodes {
        assert_eq!(child.terminate().code(), Some(0), "a drained node exits 0");
    }
}
