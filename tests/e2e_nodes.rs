//! End to end over real sockets with real processes: synth → plan → serve two nodes on free
//! ports → a prediction from every model on its node → SIGTERM → each node exits 0.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stowage_core::Plan;

fn stowage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Stops the node on drop, so a failing test leaves no process behind.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_ready(base: &str, node: &mut Node) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = ureq::get(&format!("{base}/ready")).call() {
            if r.status() == 200 {
                return;
            }
        }
        if let Ok(Some(status)) = node.0.try_wait() {
            panic!("node exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{base} not ready in 60 s");
}

#[test]
fn two_nodes_serve_every_planned_model() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        stowage().args(["synth", "--count", "6", "--embedding-every", "3", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A catalog whose one instance type holds three of these models, so the plan has two nodes.
    let generated = std::fs::read_to_string(dir.path().join("models.toml")).unwrap();
    let models = &generated[generated.find("[[models]]").unwrap()..];
    let catalog = format!(
        "[instance_types.\"local.small\"]\nfamily = \"local\"\nprice_per_hour = 0.1\nmemory_gib = 1\ncompute = 2\n\n\
         [profiles.\"synth-tiny\".local]\nmemory_mib = 300\nservice_ms = 5\n\n{models}"
    );
    std::fs::write(dir.path().join("models.toml"), catalog).unwrap();
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
        nodes.push((n.clone(), format!("http://127.0.0.1:{port}"), Node(child)));
    }
    for (n, base, child) in &mut nodes {
        wait_ready(base, child);
        for m in &n.models {
            let mut r = ureq::get(&format!("{base}/predictions/{m}?text=hello+there")).call().unwrap();
            let body: serde_json::Value = r.body_mut().read_json().unwrap();
            assert_eq!(body["model"], m.as_str());
            let p = &body["predictions"][0];
            assert!(p.get("label").is_some() || p.get("embedding").is_some(), "{body}");
        }
        // A model of the other node is not here.
        let other = plan.nodes.iter().find(|o| o.id != n.id).unwrap().models[0].clone();
        let err = ureq::get(&format!("{base}/predictions/{other}?text=hi")).call().unwrap_err();
        assert!(matches!(err, ureq::Error::StatusCode(404)), "{err:?}");
    }
    for (_, _, child) in &mut nodes {
        let pid = child.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(0), "a drained node exits 0");
    }
}
