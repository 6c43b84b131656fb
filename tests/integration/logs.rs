//! Logs as files and collectors read them: no terminal colours when stderr is not a terminal
//! (whatever NO_COLOR says), and `--json-logs` lines with the message at the top level.

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
