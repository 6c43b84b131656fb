//! Helpers the process-level tests share: the binary, free ports, nodes that stop on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Whether ONNX Runtime can be loaded (ORT_DYLIB_PATH, from scripts/ort-lib.sh). Without it an
/// ort test is skipped with a message, unless STOWAGE_REQUIRE_ORT=1 (CI sets it): then it fails.
pub fn ort_available(what: &str) -> bool {
    match stowage_engine::ort::init(None, stowage_engine::default_ort_intra_threads()) {
        Ok(()) => true,
        Err(e) if std::env::var("STOWAGE_REQUIRE_ORT").is_ok_and(|v| v == "1") => panic!("ONNX Runtime required: {e}"),
        Err(e) => {
            eprintln!("skipping {what}: {e}");
            false
        }
    }
}

pub fn stowage() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stowage"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed on drop, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends SIGTERM and waits (at most 20 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(20))
    }

    /// Sends a signal (`TERM`, `INT`, …) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.0.id().to_string();
        assert!(Command::new("kill").args([format!("-{name}").as_str(), &pid]).status().unwrap().success());
    }

    /// Waits at most `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "process {} did not stop within {within:?}", self.0.id());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("process exited early: {status}");
        }
    }
}

/// Waits until `url` answers 200 (at most 60 s), checking that the process still runs.
pub fn wait_ok(url: &str, node: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(url).call().is_ok_and(|r| r.status() == 200) {
            return;
        }
        node.assert_running();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} did not answer 200 in 60 s");
}

/// A catalog for synthetic tiny models with one small local instance type (three models a node).
pub fn local_catalog(dir: &Path) {
    let generated = std::fs::read_to_string(dir.join("models.toml")).unwrap();
    let models = &generated[generated.find("[[models]]").unwrap()..];
    std::fs::write(
        dir.join("models.toml"),
        format!(
            "[instance_types.\"local.small\"]\nfamily = \"local\"\nprice_per_hour = 0.1\nmemory_gib = 1\ncompute = 2\n\n\
             [profiles.\"synth-tiny\".local]\nmemory_mib = 300\nservice_ms = 5\n\n{models}"
        ),
    )
    .unwrap();
}

/// Reads one HTTP/1.1 request with a Content-Length body from `r`: its path and body; None at
/// the end of the connection (for the small receivers the tests run on loopback).
pub fn read_request(r: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    Some((path, body))
}

/// Whether python3 can `import module` (a client the tests run, from scripts/requirements-test.txt);
/// without it a test skips, unless CI requires the clients (STOWAGE_REQUIRE_TRITONCLIENT=1).
pub fn client_present(module: &str) -> bool {
    let probe = Command::new("python3").args(["-c", &format!("import {module}")]).output().unwrap();
    if probe.status.success() {
        return true;
    }
    let required = std::env::var("STOWAGE_REQUIRE_TRITONCLIENT").is_ok_and(|v| v == "1");
    assert!(!required, "{module} required: {}", String::from_utf8_lossy(&probe.stderr));
    eprintln!("skipped: no {module} (scripts/requirements-test.txt)");
    false
}
