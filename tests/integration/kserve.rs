//! The Open Inference Protocol (KServe v2) with a real client: `tritonclient[http]` from PyPI
//! (installed by scripts/test.sh) runs tests/clients/kserve_v2.py against a node serving a
//! classifier and an embedding model. Without the client the test is skipped with a message,
//! unless STOWAGE_REQUIRE_TRITONCLIENT=1 (CI sets it).

use std::process::{Command, Stdio};

use crate::common::{free_port, run, stowage, wait_ok, Proc};

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
    let port = free_port();
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.path().join("models.toml"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ok(&format!("http://127.0.0.1:{port}/ready"), &mut node);
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/kserve_v2.py"))
        .args([format!("127.0.0.1:{port}").as_str(), "tiny-0001", "tiny-0002"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("kserve v2: ok"), "{text}");
}
