//! The node's fast path on a real process: a request whose client hung up while it waited is
//! dropped before its engine call (and counted), never run for nobody.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{free_port, run, stowage, wait_ok, Proc};

/// A counter's value in a node's /metrics (0 when absent).
fn counter(base: &str, series: &str) -> f64 {
    let text = ureq::get(&format!("{base}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn requests_of_clients_that_hung_up_never_reach_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let port = free_port();
    // One engine call at a time, one input each: what arrives meanwhile waits in the queue.
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--engine", "tract"])
            .args(["--inference-threads", "1", "--model-concurrency", "1", "--batch-inputs", "1"])
            .arg("--catalog")
            .arg(dir.path().join("models.toml"))
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), &mut node);
    // A long first call holds the engine: 32 texts of the model's full length.
    let long: Vec<String> = (0..32).map(|i| format!("{i} {}", "word ".repeat(200))).collect();
    let busy = {
        let url = format!("{base}/predictions/tiny-0001");
        let body = serde_json::json!({ "inputs": long });
        std::thread::spawn(move || ureq::post(&url).send_json(body).unwrap().status().as_u16())
    };
    std::thread::sleep(Duration::from_millis(50));
    // Eight clients send a request and hang up while it waits.
    let body = r#"{"inputs": "I will not wait for this"}"#;
    let request = format!(
        "POST /predictions/tiny-0001 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let waiting: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // They hang up once the node has read them and they wait in its queue (dropped at once, a
    // connection can close before the request is parsed: it never reaches the queue, and is
    // neither run nor counted; under load that was 2 of 8).
    std::thread::sleep(Duration::from_millis(300));
    drop(waiting);
    // One client that waits is answered.
    let started = Instant::now();
    let waited = ureq::get(&format!("{base}/predictions/tiny-0001?text=I+wait")).call().unwrap().status().as_u16();
    assert_eq!((busy.join().unwrap(), waited), (200, 200));
    let gone = counter(&base, r#"stowage_rejected_total{model="tiny-0001",reason="client_gone"}"#);
    let inputs = counter(&base, r#"stowage_batched_inputs_total{model="tiny-0001"}"#);
    // The warm-up is not a request; the 32 long texts and the one that waited are.
    assert_eq!(gone, 8.0, "the hung-up requests are counted (waited {:?})", started.elapsed());
    assert_eq!(inputs, 33.0, "the engine ran only for clients that waited");
    assert_eq!(node.terminate().code(), Some(0));
}
