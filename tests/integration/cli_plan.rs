//! `stowage plan` as a user runs it: the real binary, real files.

use crate::common::stowage;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stowage-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn plans_the_repository_catalog() {
    let dir = tmp("plan");
    let (plan, svg) = (dir.join("plan.json"), dir.join("plan.svg"));
    let out = stowage()
        .args(["plan", "--catalog", concat!(env!("CARGO_MANIFEST_DIR"), "/models.toml"), "--out"])
        .arg(&plan)
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("instance type") && stdout.contains("total") && stdout.contains("lower bound $"),
        "{stdout}"
    );
    let p = stowage_core::Plan::load(&plan).unwrap();
    assert_eq!(p.model_count(), 300);
    assert!(p.cost_per_hour >= p.lower_bound_per_hour);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert_eq!(picture.matches("% memory</title>").count(), 300, "one memory segment per model");
    assert_eq!(picture.matches("% utilization</title>").count(), 300, "one utilization segment per model");
}

#[test]
fn bad_catalog_fails_with_file_line_and_field() {
    let dir = tmp("bad");
    let catalog = dir.join("bad.toml");
    std::fs::write(
        &catalog,
        "[instance_types.\"c5.xlarge\"]\nfamily = \"c5\"\nprice_per_hour = -1\nmemory_gib = 7\ncompute = 4\n\n[[models]]\nid = \"x\"\nartifact = \"a\"\npeak_rps = 1\n",
    )
    .unwrap();
    let out =
        stowage().arg("plan").env("STOWAGE_CATALOG", &catalog).arg("--out").arg(dir.join("p.json")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.toml:3:18: instance_types.\"c5.xlarge\".price_per_hour: must be a number > 0, got -1"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml:7:1: models[0].profile: no footprint"), "{stderr}");
    assert!(stderr.contains("2 errors"), "{stderr}");
    assert_eq!(stderr.matches("models[0].profile").count(), 1, "each error said once: {stderr}");
    assert!(!dir.join("p.json").exists(), "no plan is written for a bad catalog");
}

#[test]
fn missing_catalog_is_named() {
    let out = stowage().args(["plan", "--catalog", "/nonexistent/models.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read catalog /nonexistent/models.toml: No such file"), "{stderr}");
    assert_eq!(stderr.matches("No such file").count(), 1, "the reason said once: {stderr}");
}
