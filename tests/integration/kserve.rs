//! The Open Inference Protocol (KServe v2) with a real client: `tritonclient[http]` from PyPI
//! (installed by scripts/test.sh) runs tests/clients/kserve_v2.py against a node serving a
//! classifier and an embedding model. Without the client the test is skipped with a message,
//! unless STOWAGE_REQUIRE_TRITONCLIENT=1 (CI sets it). Shapes that are no size are refused (400).

use std::process::{Command, Stdio};

use crate::common::{free_port, run, stowage, wait_ok, Proc};

/// A node serving the catalog in `dir`, ready, and its port.
fn serve(dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.join("models.toml"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    (node, port)
}

#[test]
fn tritonclient_speaks_to_a_node() {
    let probe = Command::new("python3").args(["-c", "import tritonclient.http"]).output().unwrap();
    if !probe.status.success() {
        let required = std::env::var("STOWAGE_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1");
        assert!(!required, "tritonclient[http] required: {}", String::from_utf8_lossy(&probe.stderr));
        eprintln!("skipped: no tritonclient (pip install 'tritonclient[http]')");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--embedding-every", "2", "--out"]).arg(dir.path()));
    let (_node, port) = serve(dir.path());
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kserve_v2.py"))
        .args([format!("127.0.0.1:{port}").as_str(), "tiny-0001", "tiny-0002"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("kserve v2: ok"), "{text}");
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
