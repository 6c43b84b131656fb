//! The node against clients that misbehave, on a real process over real sockets: bodies that
//! stall half-way (declared length or chunked) are cut at the body deadline and their connections
//! closed, by the node and the gateway, while `/ping` answers every probe, a stalled body
//! does not hold the SIGTERM drain, malformed requests are counted instead of logged as errors,
//! and the open-file limit is raised to what the system allows.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{free_port, run, stowage, wait_ok, Proc};

struct Node {
    proc: Proc,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn node(extra: &[&str]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let port = free_port();
    let log = dir.path().join("node.log");
    let child = stowage()
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
        .arg(dir.path().join("models.toml"))
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut proc);
    Node { proc, port, log, _dir: dir }
}

fn metrics(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().into_body().read_to_string().unwrap()
}

/// A connection that sent a request head promising 100 bytes of body, and 5 of them.
fn stalled(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /predictions/tiny-0001 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inp",
    )
    .unwrap();
    s
}

/// The same with a chunked body: one chunk of 5 bytes, then nothing (not even the last chunk).
fn stalled_chunked(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /predictions/tiny-0001 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"inp\r\n",
    )
    .unwrap();
    s
}

/// What the node sent on `s` until it closed the connection (at most `within`).
fn answer(s: &mut TcpStream, within: Duration) -> String {
    answer_and_close(s, within).0
}

/// What the node sent on `s`, and whether it closed the connection within `within`.
fn answer_and_close(s: &mut TcpStream, within: Duration) -> (String, bool) {
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let closed = s.read_to_end(&mut got).is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn the_gateway_closes_stalled_bodies_answers_json_hides_addresses_and_leaves_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    // The body is read before the request is forwarded: the route's node need not exist.
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, r#"{"tiny-0001": "http://127.0.0.1:9"}"#).unwrap();
    let port = free_port();
    let log = dir.path().join("gateway.log");
    let mut gateway = Proc(
        stowage()
            .args(["gateway", "--host", "127.0.0.1", "--port", &port.to_string(), "--body-timeout-ms", "1000"])
            .args(["--shutdown-delay-seconds", "2"])
            .arg("--routes")
            .arg(&routes)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ping"), &mut gateway);
    let opened = Instant::now();
    let mut held: Vec<TcpStream> =
        (0..50).map(|i| if i % 2 == 0 { stalled_chunked(port) } else { stalled(port) }).collect();
    for s in &mut held {
        let (got, closed) = answer_and_close(s, Duration::from_secs(4));
        assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
        assert!(closed, "the connection stayed open after the 408 ({:?})", opened.elapsed());
    }
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());
    assert_eq!(ureq::get(&format!("http://127.0.0.1:{port}/ping")).call().unwrap().status(), 200);
    // As the node: its open-file limit raised to the hard one, and its connections capped below it.
    assert_files_raised_and_connections_capped(gateway.0.id(), &log);

    // Its own routes answer other methods with the node's JSON 405.
    let base = format!("http://127.0.0.1:{port}");
    let call = |method: &str, path: &str| {
        let mut r = ureq::http::Request::builder().method(method).uri(format!("{base}{path}")).body(()).unwrap();
        r.headers_mut().insert("content-length", "0".parse().unwrap());
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent.run(r).unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };
    for (method, path) in [("POST", "/ping"), ("DELETE", "/ready"), ("PUT", "/metrics"), ("POST", "/v2/health/live")] {
        let (status, body) = call(method, path);
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert!(body.contains("\"code\":\"method_not_allowed\""), "{method} {path}: {body}");
    }
    // A node that is down: 503 naming the node, never its address; one warning, every failure counted.
    for _ in 0..20 {
        let (status, body) = call("GET", "/predictions/tiny-0001?text=hi");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("node_unavailable") && !body.contains("127.0.0.1") && !body.contains(":9"), "{body}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("upstream failed").count(), 1, "{text}");
    let (_, metrics) = call("GET", "/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("stowage_gateway_upstream_errors_total{") && l.ends_with(" 20")),
        "{metrics}"
    );

    // SIGTERM: not ready at once, forwarding on through the delay, then it stops cleanly.
    let signalled = Instant::now();
    gateway.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = call("GET", "/ready");
    assert_eq!(status, 503, "{body}");
    assert_eq!(call("GET", "/ping").0, 200);
    assert_eq!(gateway.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(signalled.elapsed() >= Duration::from_secs(2), "{:?}", signalled.elapsed());
}

#[test]
fn stalled_chunked_bodies_get_408_and_their_connections_closed() {
    let n = node(&["--body-timeout-ms", "1000"]);
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..50).map(|_| stalled_chunked(n.port)).collect();
    for s in &mut held {
        let (got, closed) = answer_and_close(s, Duration::from_secs(4));
        assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
        assert!(closed, "the connection stayed open after the 408 ({:?})", opened.elapsed());
    }
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());
    assert_eq!(ureq::get(&format!("http://127.0.0.1:{}/ping", n.port)).call().unwrap().status(), 200);
}

#[test]
fn stalled_bodies_are_cut_at_the_deadline_while_ping_answers() {
    let n = node(&["--body-timeout-ms", "1000"]);
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..300).map(|_| stalled(n.port)).collect();
    // Probes meanwhile: every one answered, and fast.
    let ping = format!("http://127.0.0.1:{}/ping", n.port);
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).build().new_agent();
    let mut probes = 0;
    while opened.elapsed() < Duration::from_millis(1500) {
        let r = agent.get(&ping).call();
        assert!(
            r.is_ok_and(|r| r.status() == 200),
            "a probe failed {:?} after the stalled clients came",
            opened.elapsed()
        );
        probes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probes >= 20, "{probes} probes");
    // Each stalled client got 408 and its connection closed, within the deadline and a margin.
    for s in &mut held {
        let (got, closed) = answer_and_close(s, Duration::from_secs(3));
        assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
        assert!(got.contains("body_timeout"), "{got}");
        assert!(closed, "the connection stayed open after the 408");
    }
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());
    let metrics = metrics(n.port);
    assert!(metrics.contains(r#"stowage_rejected_total{model="tiny-0001",reason="body_timeout"} 300"#), "{metrics}");
}

#[test]
fn a_stalled_body_does_not_hold_the_drain() {
    let mut n = node(&["--body-timeout-ms", "1500", "--drain-seconds", "30"]);
    let _held: Vec<TcpStream> = (0..5).map(|_| stalled(n.port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    assert_eq!(n.proc.terminate().code(), Some(0));
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(6), "the drain waited {took:?} for stalled bodies (deadline 1.5 s, drain 30 s)");
}

#[test]
fn malformed_requests_are_counted_not_logged_as_errors() {
    let n = node(&[]);
    for garbage in [&b"GARBAGE \x00\x01 HTTP/9.9\r\n\r\n"[..], b"POST /ping HTTP/1.1\r\nContent-Length: abc\r\n\r\n"] {
        let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
        s.write_all(garbage).unwrap();
        let got = answer(&mut s, Duration::from_secs(3));
        assert!(got.starts_with("HTTP/1.1 400"), "{got:?}");
    }
    let metrics = metrics(n.port);
    assert!(metrics.contains("stowage_malformed_requests_total 2"), "{metrics}");
    let log = std::fs::read_to_string(&n.log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let n = node(&[]);
    assert_files_raised_and_connections_capped(n.proc.0.id(), &n.log);
}

/// Process `pid`'s soft open-file limit is its hard one, and its log (`log`) states its
/// connection cap.
fn assert_files_raised_and_connections_capped(pid: u32, log: &std::path::Path) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let v: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(v[3], v[4], "soft limit not raised to the hard one: {line}");
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("connection limit") && text.contains("max_connections="), "{text}");
}

#[test]
fn a_fuzzed_node_answers_everything_and_lives() {
    // scripts/fuzz.py: mutated methods, paths, queries, JSON bodies and raw bytes over raw sockets.
    let n = node(&["--body-timeout-ms", "2000"]);
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/fuzz.py"))
        .args([format!("127.0.0.1:{}", n.port).as_str(), "tiny-0001", "1500", "3"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("200: ") && report.contains("problems: 0"), "{report}");
    let log = std::fs::read_to_string(&n.log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn probes_on_their_own_port_answer_while_clients_hold_every_connection() {
    let probe_port = free_port();
    let n = node(&["--max-connections", "8", "--body-timeout-ms", "6000", "--probe-port", &probe_port.to_string()]);
    let held: Vec<TcpStream> = (0..30).map(|_| stalled(n.port)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).build().new_agent();
    // The serving port's connections are all taken: a probe there waits for a stalled body's
    // deadline.
    assert!(agent.get(&format!("http://127.0.0.1:{}/ping", n.port)).call().is_err(), "the serving port had room");
    // The probe port answers meanwhile, every check, with the node's own answers.
    for path in ["/ping", "/ready", "/v2/health/live", "/v2/health/ready", "/ping", "/ready"] {
        let r = agent.get(&format!("http://127.0.0.1:{probe_port}{path}")).call();
        assert!(r.is_ok_and(|r| r.status() == 200), "{path} on the probe port");
    }
    let r = ureq::get(&format!("http://127.0.0.1:{probe_port}/predictions/tiny-0001?text=x"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404, "the probe port serves probes only");
    drop(held);
}
