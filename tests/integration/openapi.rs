//! `GET /openapi.json` on a node and a gateway: tests/clients/openapi_check.py validates both
//! documents (openapi-spec-validator, installed by scripts/test.sh), the real answers of both
//! processes against their operations' schemas, and the documents' routes and statuses against
//! docs/http-api.md.

use std::process::{Command, Stdio};

use crate::common::{client_present, free_port, run, stowage, wait_ok, Proc};

#[test]
fn openapi_documents_are_valid_and_match_the_answers_and_the_docs() {
    if !client_present("openapi_spec_validator, jsonschema") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "2", "--embedding-every", "2", "--out"]).arg(dir.path()));
    let (port, gw_port) = (free_port(), free_port());
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.path().join("models.toml"))
            .arg("--async-dir")
            .arg(dir.path().join("jobs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    let routes = dir.path().join("routes.json");
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(&routes, serde_json::json!({"tiny-0001": base, "tiny-0002": base}).to_string()).unwrap();
    let mut gw = Proc(
        stowage()
            .args(["gateway", "--host", "127.0.0.1", "--port", &gw_port.to_string(), "--routes"])
            .arg(&routes)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{gw_port}/ready"), &mut gw);
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/openapi_check.py"))
        .args([&base, &format!("http://127.0.0.1:{gw_port}")])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/http-api.md"))
        .args(["tiny-0001", "tiny-0002"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("openapi: ok"), "{text}");
}
