//! Logs as files and collectors read them: no terminal colours when stderr is not a terminal
//! (whatever NO_COLOR says), `--json-logs` lines with the message at the top level, and a W3C
//! trace carried from a client through the gateway to the node, in both logs.

use std::process::Stdio;

use crate::common::{free_port, run, stowage, wait_ok, Proc};

/// The stderr of a node started with `json` logs or not, once it is ready and stopped.
fn node_log(json: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let port = free_port();
    let log = dir.path().join("node.log");
    let mut cmd = stowage();
    if json {
        cmd.arg("--json-logs");
    }
    let mut node = Proc(
        cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.path().join("models.toml"))
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    assert_eq!(node.terminate().code(), Some(0));
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn logs_to_a_file_carry_no_terminal_colours() {
    let log = node_log(false);
    assert!(log.contains("model ready"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file:\n{log}");
}

#[test]
fn json_logs_have_a_flat_message() {
    let log = node_log(true);
    let mut ready = false;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["message"].is_string() && v.get("fields").is_none(), "{line}");
        ready |= v["message"] == "model ready" && v["model"] == "tiny-0001";
    }
    assert!(ready, "{log}");
}

/// A process of `args` logging JSON with each request's end (`stowage::access` at debug) to `log`.
fn traced(args: &[&str], log: &std::path::Path, ready: &str) -> Proc {
    let mut p = Proc(
        stowage()
            .arg("--json-logs")
            .args(args)
            .env("RUST_LOG", "info,stowage::access=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_ok(ready, &mut p);
    p
}

/// The `span` objects of `log`'s `request` lines (the access log).
fn request_spans(log: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(log).unwrap();
    let lines = text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    lines.filter(|v| v["message"] == "request").map(|v| v["span"].clone()).collect()
}

/// Those of trace `trace_id`.
fn spans_of(log: &std::path::Path, trace_id: &str) -> Vec<serde_json::Value> {
    request_spans(log).into_iter().filter(|s| s["trace_id"] == trace_id).collect()
}

#[test]
fn a_trace_crosses_the_gateway_to_the_node_and_both_log_it() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let (node_port, gw_port) = (free_port(), free_port());
    let node_url = format!("http://127.0.0.1:{node_port}");
    let (node_log, gw_log) = (dir.path().join("node.log"), dir.path().join("gateway.log"));
    let catalog = dir.path().join("models.toml");
    let _node = traced(
        &["serve", "--host", "127.0.0.1", "--port", &node_port.to_string(), "--catalog", catalog.to_str().unwrap()],
        &node_log,
        &format!("{node_url}/ready"),
    );
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, format!(r#"{{"tiny-0001": "{node_url}"}}"#)).unwrap();
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    let _gw = traced(
        &["gateway", "--host", "127.0.0.1", "--port", &gw_port.to_string(), "--routes", routes.to_str().unwrap()],
        &gw_log,
        &format!("{gw_url}/ready"),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = ureq::get(&format!("{gw_url}/predictions/tiny-0001?text=traced"))
        .header("traceparent", &format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a traceparent (or with a broken one) a request starts a trace of its own.
    for header in [None, Some("00-zz-00f067aa0ba902b7-01")] {
        let mut get = ureq::get(&format!("{node_url}/predictions/tiny-0001?text=untraced"));
        if let Some(h) = header {
            get = get.header("traceparent", h);
        }
        assert_eq!(get.call().unwrap().status(), 200);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (gw, node) = (spans_of(&gw_log, trace_id), spans_of(&node_log, trace_id));
    assert_eq!((gw.len(), node.len()), (1, 1), "gateway {gw:?}, node {node:?}");
    // The client's span is the gateway's parent; the gateway's span is the node's parent.
    assert_eq!(gw[0]["parent_span_id"], "00f067aa0ba902b7", "{gw:?}");
    assert_eq!(node[0]["parent_span_id"], gw[0]["span_id"], "gateway {gw:?}, node {node:?}");
    assert_ne!(node[0]["span_id"], gw[0]["span_id"]);
    assert_eq!(node[0]["path"], "/predictions/tiny-0001");
    let own: Vec<serde_json::Value> = request_spans(&node_log)
        .into_iter()
        .filter(|s| s["path"] == "/predictions/tiny-0001" && s["trace_id"] != trace_id)
        .collect();
    assert_eq!(own.len(), 2, "{own:?}");
    assert!(own.iter().all(|s| s["parent_span_id"].is_null() && s["trace_id"].as_str().unwrap().len() == 32));
    assert_ne!(own[0]["trace_id"], own[1]["trace_id"]);
}
