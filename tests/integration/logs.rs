//! Logs as files and collectors read them: no terminal colours when stderr is not a terminal
//! (whatever NO_COLOR says), `--json-logs` lines with the message at the top level, and a W3C
//! trace carried from a client through the gateway to the node, in both logs and, with
//! `--otlp-endpoint`, in the spans both send to an OTLP receiver on loopback.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

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
            // Spans (with --otlp-endpoint) sent every 100 ms, not every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
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

/// A traced node serving one synthesized model, and a traced gateway in front of it, each with
/// `flags` of its own; `route` makes the model's route-map entry from the node's URL.
struct Pair {
    _dir: tempfile::TempDir,
    _node: Proc,
    _gw: Proc,
    node_url: String,
    gw_url: String,
    node_log: std::path::PathBuf,
    gw_log: std::path::PathBuf,
}

fn traced_pair(node_flags: &[&str], gw_flags: &[&str], route: impl FnOnce(&str) -> serde_json::Value) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let (node_port, gw_port) = (free_port().to_string(), free_port().to_string());
    let (node_url, gw_url) = (format!("http://127.0.0.1:{node_port}"), format!("http://127.0.0.1:{gw_port}"));
    let (node_log, gw_log) = (dir.path().join("node.log"), dir.path().join("gateway.log"));
    let catalog = dir.path().join("models.toml");
    let mut args = vec!["serve", "--host", "127.0.0.1", "--port", &node_port, "--catalog", catalog.to_str().unwrap()];
    args.extend(node_flags);
    let node = traced(&args, &node_log, &format!("{node_url}/ready"));
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, serde_json::json!({"tiny-0001": route(&node_url)}).to_string()).unwrap();
    let mut args = vec!["gateway", "--host", "127.0.0.1", "--port", &gw_port, "--routes", routes.to_str().unwrap()];
    args.extend(gw_flags);
    let gw = traced(&args, &gw_log, &format!("{gw_url}/ready"));
    Pair { _dir: dir, _node: node, _gw: gw, node_url, gw_url, node_log, gw_log }
}

#[test]
fn a_trace_crosses_the_gateway_to_the_node_and_both_log_it() {
    let Pair { node_url, gw_url, node_log, gw_log, .. } = &traced_pair(&[], &[], |url| url.into());
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
    let (gw, node) = (spans_of(gw_log, trace_id), spans_of(node_log, trace_id));
    assert_eq!((gw.len(), node.len()), (1, 1), "gateway {gw:?}, node {node:?}");
    // The client's span is the gateway's parent; the gateway's span is the node's parent.
    assert_eq!(gw[0]["parent_span_id"], "00f067aa0ba902b7", "{gw:?}");
    assert_eq!(node[0]["parent_span_id"], gw[0]["span_id"], "gateway {gw:?}, node {node:?}");
    assert_ne!(node[0]["span_id"], gw[0]["span_id"]);
    assert_eq!(node[0]["path"], "/predictions/tiny-0001");
    let own: Vec<serde_json::Value> = request_spans(node_log)
        .into_iter()
        .filter(|s| s["path"] == "/predictions/tiny-0001" && s["trace_id"] != trace_id)
        .collect();
    assert_eq!(own.len(), 2, "{own:?}");
    assert!(own.iter().all(|s| s["parent_span_id"].is_null() && s["trace_id"].as_str().unwrap().len() == 32));
    assert_ne!(own[0]["trace_id"], own[1]["trace_id"]);
}

/// One exported span, as the tests look at it.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: HashMap<String, String>,
    micros: u64,
}

/// An OTLP/HTTP receiver on loopback: takes `POST /v1/traces` (protobuf), answers 200, keeps
/// the spans.
fn otlp_receiver() -> (String, Arc<Mutex<Vec<Exported>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                while let Some((path, body)) = crate::common::read_request(&mut r) {
                    assert_eq!(path, "/v1/traces");
                    let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    let mut got = kept.lock().unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .map(|a| format!("{:?}", a.value.as_ref().unwrap().value.as_ref().unwrap()))
                            .unwrap_or_default();
                        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                            let attributes = span
                                .attributes
                                .iter()
                                .map(|a| {
                                    (a.key.clone(), format!("{:?}", a.value.as_ref().and_then(|v| v.value.as_ref())))
                                })
                                .collect();
                            got.push(Exported {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent: hex(&span.parent_span_id),
                                attributes,
                                micros: (span.end_time_unix_nano - span.start_time_unix_nano) / 1000,
                            });
                        }
                    }
                    drop(got);
                    w.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    )
                    .unwrap();
                }
            });
        }
    });
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn with_otlp_the_gateway_and_node_send_linked_spans_with_the_nodes_steps() {
    let (collector, spans) = otlp_receiver();
    let traces = format!("{collector}/v1/traces");
    let Pair { gw_url, node_log, gw_log, .. } =
        &traced_pair(&["--otlp-endpoint", &collector], &["--otlp-endpoint", &traces], |url| url.into());
    let (trace_id, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = ureq::get(&format!("{gw_url}/predictions/tiny-0001?text=traced"))
        .header("traceparent", &format!("00-{trace_id}-{client_span}-01"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // A caller that does not sample its trace: answered, nothing exported.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let r = ureq::get(&format!("{gw_url}/predictions/tiny-0001?text=quiet"))
        .header("traceparent", &format!("00-{unsampled}-b7ad6b7169203331-00"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    // The gateway's and node's request spans and the node's three steps.
    let deadline = Instant::now() + Duration::from_secs(20);
    let of_trace = |id: &str| spans.lock().unwrap().iter().filter(|s| s.trace_id == id).cloned().collect::<Vec<_>>();
    while of_trace(trace_id).len() < 5 {
        assert!(Instant::now() < deadline, "spans: {:?}", spans.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = of_trace(trace_id);
    let one = |service: &str, name: &str| {
        let found: Vec<&Exported> = got.iter().filter(|s| s.service.contains(service) && s.name == name).collect();
        assert_eq!(found.len(), 1, "{service} {name}: {got:#?}");
        found[0].clone()
    };
    let gw = one("stowage-gateway", "request");
    let node = one("stowage-node", "request");
    assert_eq!(gw.parent, client_span, "{gw:?}");
    assert_eq!(node.parent, gw.span_id, "{node:?}");
    assert_eq!(gw.attributes.get("http.response.status_code").map(String::as_str), Some("Some(IntValue(200))"));
    for step in ["queue", "tokenize", "inference"] {
        let s = one("stowage-node", step);
        assert_eq!(s.parent, node.span_id, "{s:?}");
        assert!(s.micros <= node.micros, "{s:?} within {node:?}");
    }
    assert!(one("stowage-node", "inference").attributes.contains_key("engine"));
    assert_eq!(got.len(), 5, "{got:#?}");
    // The logs name the spans the collector got.
    let (gw_lines, node_lines) = (spans_of(gw_log, trace_id), spans_of(node_log, trace_id));
    assert_eq!(gw_lines.len(), 1, "{gw_lines:?}");
    assert_eq!(
        (gw_lines[0]["span_id"].as_str(), node_lines[0]["span_id"].as_str()),
        (Some(&*gw.span_id), Some(&*node.span_id))
    );
    assert!(of_trace(unsampled).is_empty(), "{:?}", of_trace(unsampled));
}

#[test]
fn an_otlp_endpoint_that_is_not_http_is_refused_with_its_flag() {
    for (bad, why) in [("https://collector:4318", "expected http://"), ("http:///v1/traces", "no host")] {
        let dir = tempfile::tempdir().unwrap();
        let out = stowage()
            .args(["--otlp-endpoint", bad, "synth", "--count", "1", "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--otlp-endpoint") && err.contains(why), "{err}");
        assert!(!dir.path().join("models.toml").exists(), "it ran anyway");
    }
}

#[test]
fn a_grpc_call_through_the_gateway_is_traced_at_both() {
    if !crate::common::client_present("tritonclient.grpc") {
        return;
    }
    let (node_grpc, gw_grpc) = (free_port().to_string(), free_port().to_string());
    let Pair { node_log, gw_log, .. } = &traced_pair(
        &["--grpc-port", &node_grpc],
        &["--grpc-port", &gw_grpc],
        |url| serde_json::json!({"url": url, "grpc": format!("http://127.0.0.1:{node_grpc}")}),
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = format!(
        r#"
import numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient("127.0.0.1:{gw_grpc}")
t = g.InferInput("text", [1], "BYTES")
t.set_data_from_numpy(np.array([b"traced"], dtype=np.object_))
c.infer("tiny-0001", [t], headers={{"traceparent": "00-{trace_id}-00f067aa0ba902b7-01"}})
print("called")
"#
    );
    let out = std::process::Command::new("python3").args(["-c", &call]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let (gw, node) = (spans_of(gw_log, trace_id), spans_of(node_log, trace_id));
    assert_eq!((gw.len(), node.len()), (1, 1), "gateway {gw:?}, node {node:?}");
    assert_eq!(gw[0]["parent_span_id"], "00f067aa0ba902b7", "{gw:?}");
    assert_eq!(node[0]["parent_span_id"], gw[0]["span_id"], "gateway {gw:?}, node {node:?}");
    assert_eq!(node[0]["path"], "/inference.GRPCInferenceService/ModelInfer");
}
