//! The Kubernetes termination contract, on a real process over real sockets: on SIGTERM the node
//! stops being ready, serves on for `--shutdown-delay-seconds` (while load balancers let go of
//! it), then refuses new work, finishes every request it holds and exits 0.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{free_port, stowage, wait_ok, Proc};

/// A node serving one synthetic tiny model, started with `flags`; its base URL.
fn node(dir: &std::path::Path, flags: &[&str]) -> (Proc, String) {
    let out = stowage().args(["synth", "--count", "1", "--out"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let child = stowage()
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
        .arg(dir.join("models.toml"))
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Proc(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), &mut node);
    (node, base)
}

/// Status and body of a GET, whatever the status.
fn get(url: &str) -> Result<(u16, serde_json::Value), ureq::Error> {
    let mut r = ureq::get(url).config().http_status_as_error(false).build().call()?;
    let status = r.status().as_u16();
    Ok((status, r.body_mut().read_json().unwrap_or_default()))
}

#[test]
fn after_sigterm_the_node_is_unready_but_serves_until_the_delay_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, base) = node(dir.path(), &["--shutdown-delay-seconds", "4"]);
    let predict = format!("{base}/predictions/tiny-0001?text=hello");
    let signalled = Instant::now();
    node.signal("TERM");
    let deadline = signalled + Duration::from_secs(2);
    let (status, body) = loop {
        let (status, body) = get(&format!("{base}/ready")).unwrap();
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!((status, body["code"].as_str()), (503, Some("shutting_down")), "{body}");
    // Still serving: requests routed here before the load balancers let go are answered.
    let (status, body) = get(&predict).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(signalled.elapsed() < Duration::from_secs(4), "the checks above ran after the delay: too slow a machine");
    assert_eq!(node.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(signalled.elapsed() >= Duration::from_secs(4), "stopped before the delay: {:?}", signalled.elapsed());
    assert!(get(&predict).is_err(), "nothing listens after the exit");
}

#[test]
fn a_second_signal_cuts_the_delay_short() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, _) = node(dir.path(), &["--shutdown-delay-seconds", "600"]);
    node.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    node.signal("INT");
    assert_eq!(node.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[test]
fn sigterm_finishes_every_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // One inference thread, one input per engine call, and room for every request: the node
    // admits them all (its in-flight gauge) and runs them one after another. tract, whose model
    // takes concurrent calls (an ONNX Runtime session takes one at a time, and admits one).
    let flags = [
        "--inference-threads",
        "1",
        "--batch-inputs",
        "1",
        "--model-concurrency",
        "64",
        "--queue-size",
        "64",
        "--engine",
        "tract",
    ];
    let (mut node, base) = node(dir.path(), &flags);
    let n = 48;
    let start = std::sync::Arc::new(std::sync::Barrier::new(n));
    let clients: Vec<_> = (0..n)
        .map(|i| {
            let (url, start) = (format!("{base}/predictions/tiny-0001"), start.clone());
            std::thread::spawn(move || {
                let body = serde_json::json!({"inputs": format!("request {i} ").repeat(60)});
                start.wait();
                ureq::post(&url).send_json(body).map(|r| r.status().as_u16())
            })
        })
        .collect();
    // Signal once the node holds several requests (its in-flight gauge).
    let inflight = || -> f64 {
        let text = ureq::get(&format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        let line = text.lines().find(|l| l.starts_with("stowage_inflight_requests{")).unwrap_or_default();
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = 0.0;
    while held < 4.0 && Instant::now() < deadline {
        held = inflight();
    }
    assert!(held >= 4.0, "the node never held 4 requests at once");
    node.signal("TERM");
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(node.wait_exit(Duration::from_secs(30)).code(), Some(0));
    // Every request the node held was finished. The others, still in the kernel's accept queue or
    // not yet read when it stopped taking work, were refused: 503 (retry elsewhere) or a closed
    // connection, as on any server that stops listening (the shutdown delay is there so that none
    // arrive by then). None failed otherwise.
    let finished = answers.iter().filter(|a| matches!(a, Ok(200))).count();
    assert!(finished as f64 >= held, "{held} held, {finished} finished: {answers:?}");
    for a in &answers {
        let refused =
            matches!(a, Err(ureq::Error::StatusCode(503) | ureq::Error::ConnectionFailed | ureq::Error::Io(_)));
        assert!(matches!(a, Ok(200)) || refused, "{a:?}");
    }
}
