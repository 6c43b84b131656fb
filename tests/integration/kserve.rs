//! The Open Inference Protocol (KServe v2) with a real client: `tritonclient[http,grpc]` from
//! PyPI (installed by scripts/test.sh) runs tests/clients/kserve_v2.py (REST) and
//! tests/clients/kserve_v2_grpc.py (gRPC, `--grpc-port`) against a node serving a classifier and
//! an embedding model. Without the client the tests are skipped with a message, unless
//! STOWAGE_REQUIRE_TRITONCLIENT=1 (CI sets it). Shapes that are no size are refused (400).

use std::process::{Command, Stdio};

use crate::common::{client_present, free_port, run, stowage, wait_ok, Proc};

/// A node serving the catalog in `dir`, ready, and its port.
fn serve(dir: &std::path::Path) -> (Proc, u16) {
    serve_with(dir, &[])
}

fn serve_with(dir: &std::path::Path, flags: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.join("models.toml"))
            .args(flags)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    (node, port)
}

/// Runs a client script of tests/clients with `args`; asserts it ends with `ok`.
pub fn run_client(script: &str, args: &[&str], ok: &str) {
    let out = Command::new("python3")
        .arg(format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains(ok), "{text}");
}

#[test]
fn tritonclient_grpc_speaks_to_a_node() {
    if !client_present("tritonclient.grpc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--embedding-every", "2", "--out"]).arg(dir.path()));
    let grpc = free_port();
    let (_node, port) = serve_with(dir.path(), &["--grpc-port", &grpc.to_string()]);
    let (grpc, http) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{port}"));
    run_client("kserve_v2_grpc.py", &[&grpc, &http, "tiny-0001", "tiny-0002"], "kserve v2 grpc: ok");
    // gRPC calls count in the node's metrics like REST's, under the status REST would answer.
    let metrics = ureq::get(&format!("http://{http}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    let line = |status: &str| {
        metrics.lines().any(|l| {
            l.starts_with("stowage_requests_total{")
                && l.contains("model=\"tiny-0001\"")
                && l.contains(&format!("code=\"{status}\""))
        })
    };
    assert!(line("200") && line("422") && line("400"), "{metrics}");
}

/// A gateway on `--routes` (written from `routes`), with its gRPC port; its HTTP and gRPC ports.
fn gateway(dir: &std::path::Path, routes: serde_json::Value) -> (Proc, u16, u16) {
    let path = dir.join("routes.json");
    std::fs::write(&path, routes.to_string()).unwrap();
    let (port, grpc) = (free_port(), free_port());
    let mut gw = Proc(
        stowage()
            .args(["gateway", "--host", "127.0.0.1", "--port", &port.to_string(), "--grpc-port", &grpc.to_string()])
            .arg("--routes")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut gw);
    (gw, port, grpc)
}

#[test]
fn tritonclient_grpc_speaks_through_the_gateway() {
    if !client_present("tritonclient.grpc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "3", "--embedding-every", "2", "--out"]).arg(dir.path()));
    let node_grpc = free_port();
    let (_node, node_port) = serve_with(dir.path(), &["--grpc-port", &node_grpc.to_string()]);
    let node = |grpc: u16| serde_json::json!({"url": format!("http://127.0.0.1:{node_port}"), "grpc": format!("http://127.0.0.1:{grpc}")});
    // tiny-0003's node has no gRPC address in the routes; no-node's node is not there at all.
    let routes = serde_json::json!({
        "tiny-0001": node(node_grpc),
        "tiny-0002": node(node_grpc),
        "tiny-0003": format!("http://localhost:{node_port}"),
        "no-node": {"url": format!("http://127.0.0.1:{}", free_port()), "grpc": format!("http://127.0.0.1:{}", free_port())},
    });
    let (_gw, port, grpc) = gateway(dir.path(), routes);
    let (grpc, http) = (format!("127.0.0.1:{grpc}"), format!("127.0.0.1:{port}"));
    run_client("kserve_v2_grpc.py", &[&grpc, &http, "tiny-0001", "tiny-0002"], "kserve v2 grpc: ok");
    let check = format!(
        r#"
import numpy as np, tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
c = g.InferenceServerClient("{grpc}")
t = g.InferInput("text", [1], "BYTES")
t.set_data_from_numpy(np.array([b"fine"], dtype=np.object_))
for model, name in [("tiny-0003", "node_unavailable"), ("no-node", "node_unavailable")]:
    try:
        c.infer(model, [t])
        raise AssertionError(model)
    except InferenceServerException as e:
        assert e.status() == "StatusCode.UNAVAILABLE" and e.message().startswith(name + ":"), (model, e.status(), e.message())
print("gateway errors: ok")
"#
    );
    let out = Command::new("python3").args(["-c", &check]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("gateway errors: ok"), "{text}");
    // The gateway counts what it answered, as for REST.
    let metrics = ureq::get(&format!("http://{http}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("stowage_gateway_requests_total{code=\"503\"}"), "{metrics}");
    assert!(metrics.contains("stowage_gateway_upstream_errors_total{"), "{metrics}");
}

#[test]
fn tritonclient_speaks_to_a_node() {
    if !client_present("tritonclient.http") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--embedding-every", "2", "--out"]).arg(dir.path()));
    let (_node, port) = serve(dir.path());
    run_client("kserve_v2.py", &[&format!("127.0.0.1:{port}"), "tiny-0001", "tiny-0002"], "kserve v2: ok");
}

#[test]
fn shapes_that_are_no_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let (mut node, port) = serve(dir.path());
    let infer = |shape: serde_json::Value| {
        let body =
            serde_json::json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape, "data": ["a", "b"]}]});
        let mut r = ureq::post(&format!("http://127.0.0.1:{port}/v2/models/tiny-0001/infer"))
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(&body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json::<serde_json::Value>().unwrap())
    };
    assert_eq!(infer(serde_json::json!([2])).0, 200);
    // A product that wraps to 2 in i64, negative dimensions, and an overflow.
    for shape in [
        serde_json::json!([2, -9223372036854775807i64]),
        serde_json::json!([-1, -2]),
        serde_json::json!([4611686018427387904i64, 4]),
    ] {
        let (status, body) = infer(shape.clone());
        // KServe v2's error body: {"error": …}.
        assert_eq!(status, 400, "{shape}: {body}");
        assert!(body["error"].as_str().unwrap().contains("is not a size"), "{body}");
    }
    node.assert_running();
}
