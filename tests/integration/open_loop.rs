//! `stowage attack --rate`: requests leave on schedule whatever the server does, and latency is
//! counted from the scheduled time — against a server that is slow on purpose (one request at a
//! time, 30 ms each: 33 a second) offered 50 a second, the queue that builds shows in the
//! latencies, where a closed-loop client would slow down with the server and see 30 ms.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{run, stowage};

/// Answers every request 200 after holding one global lock for `service`.
fn slow_server(service: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lock = Arc::new(Mutex::new(()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let lock = lock.clone();
            std::thread::spawn(move || serve(stream, &lock, service));
        }
    });
    port
}

fn serve(stream: TcpStream, lock: &Mutex<()>, service: Duration) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        {
            let _one = lock.lock().unwrap();
            std::thread::sleep(service);
        }
        let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn attack_rate_keeps_its_schedule_and_counts_latency_from_it() {
    let port = slow_server(Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.json");
    let body = base64_encode(br#"{"inputs": "hello"}"#);
    std::fs::write(
        &targets,
        format!("{{\"method\":\"POST\",\"url\":\"http://127.0.0.1:{port}/predictions/m\",\"header\":{{}},\"body\":\"{body}\"}}\n"),
    )
    .unwrap();
    let csv = dir.path().join("results.csv");
    let out = run(stowage()
        .args(["attack", "--rate", "50", "--duration", "3", "--connections", "128", "--targets"])
        .arg(&targets)
        .arg("--vegeta-results")
        .arg(&csv));
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let sent = r["sent_rps"].as_f64().unwrap();
    assert!((sent - 50.0).abs() <= 0.02 * 50.0, "sent {sent}/s, asked 50/s: {r}");
    assert_eq!(r["requests"], 150, "{r}");
    assert_eq!(r["status_codes"]["200"], 150, "every request answered: {r}");
    // 33 a second served out of 50 sent: by the end, ~50 requests wait 30 ms each. From its
    // scheduled time the last ones took over a second; a closed-loop client would see 30 ms.
    let p90 = r["latency_ms"]["p90"].as_f64().unwrap();
    assert!(p90 > 500.0, "latency counted from the schedule: P90 {p90} ms: {r}");
    // 128 connections hold the backlog: at most a request or two leave late (a timer's jitter).
    assert!(r["client"]["behind"].as_u64().unwrap() <= 2, "{r}");
    // vegeta's CSV results: due times a fiftieth of a second apart.
    let due: Vec<u128> =
        std::fs::read_to_string(&csv).unwrap().lines().map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(due.len(), 150);
    let gap = (due[149] - due[0]) as f64 / 149.0 / 1e6;
    assert!((gap - 20.0).abs() < 0.01, "{gap} ms between due times");
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn verify_sends_each_model_its_peak_and_reports_each_node_against_its_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(stowage().args(["synth", "--count", "3", "--per-node", "3", "--peak-rps", "5", "--out"]).arg(d));
    // A latency target: the node must keep a P90 of 2 s at its peak (a debug build is slow).
    let catalog = std::fs::read_to_string(d.join("models.toml")).unwrap();
    std::fs::write(d.join("models.toml"), catalog.replace("[limits]\n", "[limits]\nslo_p90_ms = 2000\n")).unwrap();
    let plan = d.join("plan.json");
    run(stowage().arg("plan").arg("--catalog").arg(d.join("models.toml")).arg("--out").arg(&plan));
    let p = stowage_core::Plan::load(&plan).unwrap();
    assert_eq!(p.nodes.len(), 1);
    assert_eq!(p.nodes[0].slo_p90_ms, Some(2000.0));
    let port = crate::common::free_port();
    let mut node = crate::common::Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--node", &p.nodes[0].id, "--plan"])
            .arg(&plan)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    crate::common::wait_ok(&format!("{base}/ready"), &mut node);
    let out = d.join("verify");
    let table =
        run(stowage().args(["verify", "--url", &base, "--duration", "3", "--plan"]).arg(&plan).arg("--out").arg(&out));
    assert!(table.contains(&p.nodes[0].id) && table.contains("every node held its target"), "{table}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("verify.json")).unwrap()).unwrap();
    let n = &v["nodes"][0];
    assert_eq!((n["held"].as_bool(), n["offered_rps"].as_f64()), (Some(true), Some(15.0)), "{v}");
    let sent = n["measured"]["requests"].as_u64().unwrap();
    assert!((20..=75).contains(&sent), "about 3 s × 15 requests a second (Poisson): {sent}");
    assert!(n["predicted"]["p90_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(std::fs::read_to_string(out.join("results.csv")).unwrap().lines().count() as u64, sent);
    assert!(std::fs::read_to_string(out.join("verify.svg")).unwrap().contains("measured"));
    // The same node against a target no node keeps: the check fails, and says so.
    let tight = d.join("tight.json");
    std::fs::write(
        &tight,
        std::fs::read_to_string(&plan).unwrap().replace("\"slo_p90_ms\": 2000.0", "\"slo_p90_ms\": 0.01"),
    )
    .unwrap();
    assert_eq!(stowage_core::Plan::load(&tight).unwrap().nodes[0].slo_p90_ms, Some(0.01));
    let missed = stowage()
        .args(["verify", "--url", &base, "--duration", "1", "--catalog"])
        .arg(d.join("models.toml"))
        .arg("--plan")
        .arg(&tight)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missed.stderr);
    assert_eq!(missed.status.code(), Some(1), "{err}");
    assert!(err.contains("1 of 1 nodes did not hold at 1 × peak"), "{err}");
}
