//! `stowage profile` on synthetic models: it measures each model here and writes the footprints
//! into a catalog that `stowage plan` then reads; paths stay valid when the catalog moves.

use stowage_core::{Catalog, Engine};

use crate::common::{ort_available, run, stowage};

#[test]
fn profile_writes_measured_footprints_that_plan_reads() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    run(stowage().args(["synth", "--count", "2", "--out"]).arg(&synth));
    let catalog = synth.join("models.toml");
    let text = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(&catalog, format!("# kept by profile\n{text}")).unwrap();

    // Into another folder: relative paths become absolute.
    let out = dir.path().join("measured.toml");
    let done = stowage()
        .args(["profile", "--family", "c5", "--tokens", "32", "--iterations", "3", "--catalog"])
        .arg(&catalog)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{log}");
    // The loaded passes: over the node's capacity (it refuses some, at its bound), then at half
    // that capacity and at the planned peak; the costs scale the service times, and the spreads
    // are fitted to the P90s measured at the last two.
    assert!(log.contains("profile: saturated (pass "), "{log}");
    assert!(log.contains("% refused (over capacity)"), "{log}");
    // Its capacity: the answers of its slower seconds, counted second by second.
    assert!(log.contains(" in its slower seconds"), "{log}");
    assert!(log.contains("profile: light (pass 1): "), "{log}");
    assert!(log.contains("profile: planned peak (pass 1): "), "{log}");
    assert!(log.contains(" saturated (") && log.contains("service times × ") && log.contains(", light × "), "{log}");
    assert_eq!(log.matches(" ms measured, ").count(), 2, "{log}");
    let measured = Catalog::load(&out).unwrap();
    for m in &measured.models {
        let fp = &m.footprints["c5"];
        assert!(fp.memory_mib >= 1.0 && fp.service_ms > 0.0, "{}: {fp:?}", m.id);
        // The spread of its requests' times through the measuring node.
        assert!(fp.service_scv.is_some_and(|s| s >= 0.0), "{}: {fp:?}", m.id);
        // Its own time on a quiet node.
        assert!(fp.light_service_ms.is_some_and(|ms| ms > 0.0), "{}: {fp:?}", m.id);
        // What a cold model's first request waits for: its load from local disk and warm-up.
        assert!(fp.load_ms.is_some_and(|ms| ms >= 1.0), "{}: {fp:?}", m.id);
        // The default engine is auto: profile measured the engines and wrote the faster one.
        assert!(m.engine.is_some_and(|e| e != Engine::Auto), "{}: {:?}", m.id, m.engine);
        assert!(std::path::Path::new(&m.artifact).is_absolute(), "{}", m.artifact);
        assert!(std::path::Path::new(&m.artifact).is_file());
        // Other families keep the profile's footprints.
        assert_eq!(m.footprints["inf1"], Catalog::load(&catalog).unwrap().model(&m.id).unwrap().footprints["inf1"]);
    }
    run(stowage().arg("plan").arg("--catalog").arg(&out).arg("--out").arg(dir.path().join("plan.json")));

    // In place: comments stay, paths stay relative.
    run(stowage()
        .args(["profile", "--models", "tiny-0002", "--iterations", "1", "--in-place", "--catalog"])
        .arg(&catalog));
    let text = std::fs::read_to_string(&catalog).unwrap();
    assert!(text.starts_with("# kept by profile"), "{text}");
    assert_eq!(text.matches("[models.footprint.c5]").count(), 1, "only tiny-0002 was measured:\n{text}");
    assert!(text.contains("artifact = \"tiny-0001/model.onnx\""), "{text}");
}

#[test]
fn profile_refuses_a_family_the_catalog_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    let out = stowage()
        .args(["profile", "--family", "p4d", "--in-place", "--catalog"])
        .arg(dir.path().join("models.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--family \"p4d\" is not a family") && err.contains("inf1"), "{err}");
    // A capacity quantile that would plan for the node's faster seconds, or none.
    for q in ["0", "0.7", "NaN"] {
        let out = stowage()
            .args(["profile", "--family", "c5", "--in-place", "--capacity-quantile", q, "--catalog"])
            .arg(dir.path().join("models.toml"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--capacity-quantile must be in (0, 0.5]"), "{q}: {err}");
    }
}

#[test]
fn profile_writes_the_engine_that_runs_a_real_export() {
    if !ort_available("profiling a real export") {
        return;
    }
    // tract cannot run this graph: auto measures what can, and says so in the catalog.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/exports/bert-classifier");
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("models.toml");
    std::fs::write(
        &catalog,
        format!(
            "[instance_types.\"c5.large\"]\nfamily = \"c5\"\nprice_per_hour = 0.085\nmemory_gib = 3\ncompute = 2\n\n\
             [[models]]\nid = \"bert-classifier\"\nartifact = \"{}\"\npeak_rps = 1\n\
             [models.footprint.c5]\nmemory_mib = 10\nservice_ms = 1\n",
            fixture.join("model.onnx").display()
        ),
    )
    .unwrap();
    let out =
        stowage().args(["profile", "--iterations", "2", "--in-place", "--catalog"]).arg(&catalog).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("tract") && err.contains("cannot run it") && err.contains("Flatten"), "{err}");
    assert_eq!(Catalog::load(&catalog).unwrap().models[0].engine, Some(Engine::Ort));
}

#[test]
fn profile_measures_a_catalog_that_has_no_footprints_yet() {
    let dir = tempfile::tempdir().unwrap();
    run(stowage().args(["synth", "--count", "1", "--out"]).arg(dir.path()));
    // A catalog as a new user writes it: instance types and models, nothing measured.
    let catalog = dir.path().join("models.toml");
    std::fs::write(
        &catalog,
        "[instance_types.\"c5.large\"]\nfamily = \"c5\"\nprice_per_hour = 0.085\nmemory_gib = 3\ncompute = 2\n\n\
         [[models]]\nid = \"tiny-0001\"\nartifact = \"tiny-0001/model.onnx\"\npeak_rps = 1\n",
    )
    .unwrap();
    let refused = stowage().arg("plan").arg("--catalog").arg(&catalog).output().unwrap();
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no footprint"), "plan needs footprints");
    run(stowage().args(["profile", "--family", "c5", "--iterations", "1", "--in-place", "--catalog"]).arg(&catalog));
    let measured = Catalog::load(&catalog).unwrap();
    assert!(measured.models[0].footprints["c5"].service_ms > 0.0);
    run(stowage().arg("plan").arg("--catalog").arg(&catalog).arg("--out").arg(dir.path().join("plan.json")));
}
