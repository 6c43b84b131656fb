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
    // One memory segment per hot model, one per cold pool (its cold models have none of their
    // own), one utilization segment per model.
    let cold: usize = p.nodes.iter().map(|n| n.cold_models.len()).sum();
    let pools = p.nodes.iter().filter(|n| n.cold_pool_mib > 0.0).count();
    assert!(cold > 0 && pools > 0, "the repository catalog has a few quiet models");
    assert_eq!(picture.matches("% memory</title>").count(), 300 - cold, "one memory segment per hot model");
    assert_eq!(picture.matches(": cold pool ").count(), pools, "one memory segment per cold pool");
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

/// Day 2 as a user runs it: plan, change the catalog (one model retired, one added, one model's
/// traffic doubled), `plan --previous`, `stowage diff`.
#[test]
fn plan_previous_moves_nothing_it_need_not_and_diff_says_what_changed() {
    let dir = tmp("previous");
    let catalog = dir.join("models.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models.toml")).unwrap();
    std::fs::write(&catalog, &text).unwrap();
    let (a, b, again) = (dir.join("a.json"), dir.join("b.json"), dir.join("again.json"));
    let run = |args: &[&std::ffi::OsStr]| {
        let out = stowage().args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{args:?}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[&os("plan"), &os("--catalog"), catalog.as_os_str(), &os("--out"), a.as_os_str()]);
    // `stowage plan --catalog CATALOG --previous A [EXTRA] --out OUT`.
    let replan = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![os("plan"), os("--catalog"), catalog.clone().into(), os("--previous"), a.clone().into()];
        args.extend(extra.iter().map(|e| os(e)));
        args.extend([os("--out"), out.into()]);
        run(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>())
    };
    // Unchanged catalog: nothing moves, same ids, same cost.
    let said = replan(&again, &[]);
    assert!(said.contains("changes: 0 nodes changed") && said.contains("0 models moved (0.0 GiB to reload)"), "{said}");
    let (pa, pagain) = (stowage_core::Plan::load(&a).unwrap(), stowage_core::Plan::load(&again).unwrap());
    assert_eq!(pa.nodes, pagain.nodes);

    // One model retired, one added (a copy of another's entry), one model's traffic doubled.
    let first = stowage_planner::catalogs::churn(&text, 1e-9, 1e-9, 1e-9, 3);
    std::fs::write(&catalog, &first).unwrap();
    let said = replan(&b, &[]);
    assert!(said.contains("1 added, 1 removed") && said.contains("a fresh plan of this catalog: $"), "{said}");
    let pb = stowage_core::Plan::load(&b).unwrap();
    let changes = pb.changes.clone().expect("a changes block");
    assert_eq!((changes.models_added.len(), changes.models_removed.len()), (1, 1));
    // The cost budget (1 % over a fresh plan) is held; the moves it takes stay few.
    let fresh = changes.fresh_cost_per_hour.unwrap();
    assert!(pb.cost_per_hour <= fresh * 1.01 + 1e-9, "{} vs {fresh}", pb.cost_per_hour);
    assert!(changes.models_moved.len() <= 30, "{:?}", changes.models_moved);
    let kept: std::collections::BTreeSet<_> = pa.nodes.iter().map(|n| &n.id).collect();
    assert!(pb.nodes.iter().filter(|n| kept.contains(&n.id)).count() >= pa.nodes.len() - 2, "kept node ids stay");
    // A bigger budget buys no moves at all; --max-moves 0 none either, and says what it costs.
    let (wide, capped) = (dir.join("wide.json"), dir.join("capped.json"));
    replan(&wide, &["--max-cost-increase", "0.05"]);
    let w = stowage_core::Plan::load(&wide).unwrap().changes.unwrap();
    assert!(w.models_moved.is_empty(), "{:?}", w.models_moved);
    let said = replan(&capped, &["--max-moves", "0"]);
    assert!(stowage_core::Plan::load(&capped).unwrap().changes.unwrap().models_moved.is_empty());
    if !changes.models_moved.is_empty() {
        assert!(said.contains("left on the table by --max-moves: $"), "{said}");
    }

    // `stowage diff` says the same, plus a line per node that changed.
    let diff = run(&[&os("diff"), a.as_os_str(), b.as_os_str()]);
    assert!(diff.starts_with(&format!("changes: {}", changes.summary())), "{diff}\n{}", changes.summary());
    let lines = diff.lines().filter(|l| l.starts_with("~ ") || l.starts_with("+ ") || l.starts_with("- ")).count();
    assert_eq!(lines, changes.nodes_changed.len() + changes.nodes_added.len() + changes.nodes_removed.len(), "{diff}");
    let json = run(&[&os("diff"), &os("--json"), a.as_os_str(), b.as_os_str()]);
    let parsed: stowage_core::Changes = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.models_moved, changes.models_moved);
    assert_eq!(parsed.moved_bytes, changes.moved_bytes);
}

#[test]
fn the_cold_line_counts_models_without_traffic_as_never_starting() {
    // A few quiet models, two with no traffic at all: the pool holds them all (they count in
    // full), so none is ever evicted and the plan expects no cold start — a number, not NaN.
    let dir = tmp("cold-line");
    let catalog = dir.join("models.toml");
    let mut text = String::from(
        "[instance_types.\"c5.xlarge\"]\nfamily = \"c5\"\nprice_per_hour = 0.17\nmemory_gib = 7\ncompute = 4\n\n",
    );
    for (i, rps) in [0.0, 0.0, 0.01, 0.02, 5.0].iter().enumerate() {
        text.push_str(&format!(
            "[[models]]\nid = \"m{i}\"\nartifact = \"m{i}.onnx\"\npeak_rps = {rps}\n[models.footprint.c5]\nmemory_mib = 300\nservice_ms = 10\n\n"
        ));
    }
    std::fs::write(&catalog, text).unwrap();
    let out =
        stowage().args(["plan", "--catalog"]).arg(&catalog).arg("--out").arg(dir.join("p.json")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("cold: ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("cold: 4 models on 1 nodes") && line.contains("about 0 cold starts an hour"), "{line}");
    assert!(!stdout.contains("NaN"), "{stdout}");
}

#[test]
fn plan_warns_of_missing_local_files_and_diff_names_a_file_that_is_not_a_plan() {
    let dir = tmp("missing");
    crate::common::run(stowage().args(["synth", "--count", "2", "--out"]).arg(&dir));
    std::fs::remove_file(dir.join("tiny-0002/model.onnx")).unwrap();
    let plan = dir.join("plan.json");
    let out =
        stowage().arg("plan").arg("--catalog").arg(dir.join("models.toml")).arg("--out").arg(&plan).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the plan is made all the same: {err}");
    assert!(
        err.contains("warning:") && err.contains("1 models name local files") && err.contains("tiny-0002"),
        "{err}"
    );
    assert!(!err.contains("tiny-0001:"), "{err}");
    // `stowage diff plan.json models.toml`: the second file is a catalog, and says so.
    let out = stowage().arg("diff").arg(&plan).arg(dir.join("models.toml")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("models.toml: not a plan: it is a catalog (TOML)"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
