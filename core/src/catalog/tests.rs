use super::*;

const GOOD: &str = r#"
[limits]
max_memory = 0.9
max_utilization = 0.83

[instance_types."inf1.xlarge"]
family = "inf1"
price_per_hour = 0.228
memory_gib = 7
compute = 4

[instance_types."c5.xlarge"]
family = "c5"
price_per_hour = 0.17
memory_gib = 7
compute = 4
max_count = 3

[profiles."bert-base".inf1]
memory_mib = 565
service_ms = 6.0

[[models]]
id = "bert-0001"
profile = "bert-base"
artifact = "models/bert-0001/model.onnx"
peak_rps = 2.0

[[models]]
id = "custom"
artifact = "s3://b/custom.onnx"
tokenizer = "s3://b/tokenizer.json"
peak_rps = 0
engine = "tract"
[models.footprint.c5]
memory_mib = 300
service_ms = 20
"#;

fn errors(text: &str) -> Vec<String> {
    match Catalog::parse("models.toml", text) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
    }
}

fn with_model(extra: &str) -> String {
    format!("{GOOD}\n[[models]]\n{extra}\n")
}

#[test]
fn parses_a_good_catalog() {
    let c = Catalog::parse("models.toml", GOOD).unwrap();
    assert_eq!(c.instance_types.len(), 2);
    assert_eq!(c.instance_types[0].name, "c5.xlarge");
    assert_eq!(c.instance_types[0].max_count, Some(3));
    assert_eq!(c.models.len(), 2);
    assert_eq!(c.models[0].footprints["inf1"].memory_mib, 565.0);
    assert_eq!(c.models[1].engine, Some(Engine::Tract));
    assert_eq!(c.sha256.len(), 64);
    let it = c.instance_type("inf1.xlarge").unwrap();
    let d = c.demand(&c.models[0], it).unwrap();
    assert!((d.memory - 565.0 / (7.0 * 1024.0 * 0.9)).abs() < 1e-12);
    assert!((d.utilization - 2.0 * 6.0 / 1000.0 / 4.0 / 0.83).abs() < 1e-12);
    assert!(c.demand(&c.models[0], c.instance_type("c5.xlarge").unwrap()).is_none());
}

#[test]
fn inline_footprint_overrides_profile() {
    let c = Catalog::parse(
        "m.toml",
        &with_model("id = \"x\"\nprofile = \"bert-base\"\nartifact = \"a\"\npeak_rps = 1\n[models.footprint.inf1]\nmemory_mib = 100\nservice_ms = 1"),
    )
    .unwrap();
    assert_eq!(c.model("x").unwrap().footprints["inf1"].memory_mib, 100.0);
}

#[test]
fn limits_default_when_absent() {
    let text = GOOD.replace("[limits]\nmax_memory = 0.9\nmax_utilization = 0.83\n", "");
    let c = Catalog::parse("m.toml", &text).unwrap();
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn syntax_error_names_line() {
    let e = errors("[limits\nmax_memory = 1");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("models.toml:1:"), "{e:?}");
}

#[test]
fn unknown_field_is_an_error() {
    let e = errors(&with_model("id = \"x\"\nprofile = \"bert-base\"\nartifact = \"a\"\npeak_rps = 1\npeak_rsp = 2"));
    assert!(e[0].contains("unknown field `peak_rsp`"), "{e:?}");
}

#[test]
fn reports_every_problem_with_line_and_field() {
    let text = with_model("id = \"Bad_Id\"\nprofile = \"nope\"\nartifact = \"a\"\npeak_rps = -1")
        + "[[models]]\nid = \"bert-0001\"\nprofile = \"bert-base\"\nartifact = \"a\"\npeak_rps = 1\n"
        + "[[models]]\nid = \"y\"\nartifact = \"a\"\npeak_rps = 1\n[models.footprint.tpu]\nmemory_mib = 1\nservice_ms = 1\n";
    let e = errors(&text);
    let joined = e.join("\n");
    for want in [
        "models[2].id: \"Bad_Id\" is not a DNS label",
        "models[2].profile: unknown profile \"nope\" (known: bert-base)",
        "models[2].peak_rps: must be a number >= 0, got -1",
        "models[3].id: duplicate model id \"bert-0001\" (first defined on line 24)",
        "models[4].footprint.tpu: unknown family \"tpu\"",
    ] {
        assert!(joined.contains(want), "missing {want:?} in\n{joined}");
    }
    assert!(e.iter().all(|l| l.starts_with("models.toml:")), "{joined}");
    // Errors come in file order with real line numbers.
    let line_of = |needle: &str| -> usize {
        let l = e.iter().find(|l| l.contains(needle)).unwrap();
        l.split(':').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(line_of("Bad_Id"), text.lines().position(|l| l.contains("Bad_Id")).unwrap() + 1);
    assert_eq!(line_of("\"tpu\""), text.lines().position(|l| l.contains("footprint.tpu")).unwrap() + 1);
}

#[test]
fn model_that_fits_nowhere_is_named() {
    let e = errors(&with_model(
        "id = \"huge\"\nartifact = \"a\"\npeak_rps = 1\n[models.footprint.inf1]\nmemory_mib = 99999\nservice_ms = 1",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("model \"huge\" fits no instance type: inf1.xlarge: needs 99999 MiB of 6451 MiB"), "{e:?}");
    // More traffic than a node serves is no error: the model is split into replicas.
    let hot =
        "id = \"hot\"\nartifact = \"a\"\npeak_rps = 1000\n[models.footprint.c5]\nmemory_mib = 1\nservice_ms = 100";
    let c = Catalog::parse("models.toml", &with_model(hot)).unwrap();
    // 1000 rps × 100 ms on 4 vCPUs = 2500 %, at most 83 % a node: 31 replicas.
    assert_eq!(c.model("hot").unwrap().replicas(&c.limits, &c.instance_types), 31);
    let e = errors(&with_model(&hot.replace("peak_rps = 1000", "peak_rps = 100000")));
    assert!(e[0].contains("model \"hot\" needs 3013 replicas"), "{e:?}");
    let e = errors(&with_model(&hot.replace("peak_rps = 1000", "peak_rps = 1000\nmin_replicas = 0")));
    assert!(e[0].contains("min_replicas: must be a whole number from 1 to 1000, got 0"), "{e:?}");
}

#[test]
fn bad_instance_types_and_profiles() {
    let text = GOOD
        .replace("price_per_hour = 0.228", "price_per_hour = 0")
        .replace("max_count = 3", "max_count = -1")
        .replace("memory_mib = 565", "memory_mib = -5")
        .replace("family = \"c5\"\n", "");
    let e = errors(&text).join("\n");
    for want in [
        "instance_types.\"inf1.xlarge\".price_per_hour: must be a number > 0, got 0",
        "instance_types.\"c5.xlarge\".family: missing family",
        "instance_types.\"c5.xlarge\".max_count: must be an integer >= 0, got -1",
        "profiles.bert-base.inf1.memory_mib: must be a number > 0, got -5",
    ] {
        assert!(e.contains(want), "missing {want:?} in\n{e}");
    }
}

#[test]
fn missing_fields_and_bad_values() {
    let e = errors(&with_model("profile = \"bert-base\"\nengine = \"onnx\"\nsha256 = \"abc\"")).join("\n");
    for want in [
        "models[2].id: missing model id",
        "models[2].artifact: missing",
        "models[2].peak_rps: missing number",
        "models[2].engine: unknown engine \"onnx\"",
        "models[2].sha256: must be 64 hexadecimal digits",
    ] {
        assert!(e.contains(want), "missing {want:?} in\n{e}");
    }
    let e = errors("[limits]\nmax_memory = 1.5\n").join("\n");
    assert!(e.contains("models.toml:2:14: limits.max_memory: must be a fraction in (0, 1], got 1.5"), "{e}");
    assert!(e.contains("instance_types: the catalog has no"), "{e}");
    assert!(e.contains("models: the catalog has no [[models]]"), "{e}");
}

#[test]
fn load_names_a_missing_file() {
    let err = Catalog::load("/nonexistent/models.toml").unwrap_err().to_string();
    assert!(err.contains("/nonexistent/models.toml"), "{err}");
}

#[test]
fn residency_is_auto_hot_or_cold_and_auto_follows_the_traffic() {
    let base =
        "[instance_types.\"c5.xlarge\"]\nfamily = \"c5\"\nprice_per_hour = 0.17\nmemory_gib = 7\ncompute = 4\n\n\
                [limits]\ncold_below_rps = 0.1\n\n";
    let model = |id: &str, rps: f64, residency: &str| {
        format!("[[models]]\nid = \"{id}\"\nartifact = \"{id}.onnx\"\npeak_rps = {rps}\n{residency}\n[models.footprint.c5]\nmemory_mib = 100\nservice_ms = 5\nload_ms = 250\n\n")
    };
    let text = format!(
        "{base}{}{}{}{}",
        model("quiet", 0.05, ""),
        model("busy", 2.0, ""),
        model("pinned-hot", 0.01, "residency = \"hot\""),
        model("pinned-cold", 5.0, "residency = \"cold\"")
    );
    let c = Catalog::parse("models.toml", &text).unwrap();
    let cold: Vec<bool> = ["quiet", "busy", "pinned-hot", "pinned-cold"]
        .iter()
        .map(|id| c.model(id).unwrap().is_cold(&c.limits))
        .collect();
    assert_eq!(cold, [true, false, false, true]);
    assert_eq!(c.model("quiet").unwrap().footprints["c5"].load_ms(), 250.0);
    let bad = format!("{base}{}", model("x", 1.0, "residency = \"lukewarm\""));
    let err = Catalog::parse("models.toml", &bad).unwrap_err().to_string();
    assert!(err.contains("models[0].residency") && err.contains("lukewarm"), "{err}");
}

#[test]
fn cold_pool_margin_defaults_to_a_quarter_and_refuses_a_negative_one() {
    let base = "[instance_types.\"c5.xlarge\"]\nfamily = \"c5\"\nprice_per_hour = 0.17\nmemory_gib = 7\ncompute = 4\n\n\
                [[models]]\nid = \"m\"\nartifact = \"m.onnx\"\npeak_rps = 1\n[models.footprint.c5]\nmemory_mib = 100\nservice_ms = 5\n\n";
    let c = Catalog::parse("models.toml", &format!("{base}[limits]\ncold_below_rps = 0.1\n")).unwrap();
    assert_eq!(c.limits.cold_pool_margin, 0.25);
    let c = Catalog::parse("models.toml", &format!("{base}[limits]\ncold_pool_margin = 0.5\n")).unwrap();
    assert_eq!(c.limits.cold_pool_margin, 0.5);
    let err =
        Catalog::parse("models.toml", &format!("{base}[limits]\ncold_pool_margin = -0.1\n")).unwrap_err().to_string();
    assert!(
        err.contains("models.toml:16:20") && err.contains("limits.cold_pool_margin") && err.contains(">= 0"),
        "{err}"
    );
}

#[test]
fn a_catalog_not_measured_yet_loads_for_profiling_only() {
    let unmeasured = with_model("id = \"new\"\nartifact = \"new/model.onnx\"\npeak_rps = 1");
    assert!(errors(&unmeasured).iter().any(|e| e.contains("no footprint")));
    let dir = tempfile_dir();
    let path = dir.join("models.toml");
    std::fs::write(&path, &unmeasured).unwrap();
    let c = Catalog::load_unmeasured(&path).unwrap();
    assert!(c.model("new").unwrap().footprints.is_empty());
    // Everything else is still checked.
    std::fs::write(&path, with_model("id = \"New\"\nartifact = \"new/model.onnx\"\npeak_rps = 1")).unwrap();
    assert!(Catalog::load_unmeasured(&path).unwrap_err().to_string().contains("not a DNS label"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A fresh folder under the system's temporary directory (core has no tempfile dependency).
fn tempfile_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("stowage-core-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn light_service_time_defaults_to_the_service_time_and_must_be_positive() {
    let c = Catalog::parse("models.toml", GOOD).unwrap();
    let fp = c.models[1].footprints["c5"];
    assert_eq!((fp.light_service_ms, fp.light_service_ms()), (None, 20.0));
    let light = with_model(
        "id = \"l\"\nartifact = \"a\"\npeak_rps = 1\n[models.footprint.c5]\nmemory_mib = 10\nservice_ms = 2\nlight_service_ms = 2.8",
    );
    let c = Catalog::parse("models.toml", &light).unwrap();
    assert_eq!(c.model("l").unwrap().footprints["c5"].light_service_ms(), 2.8);
    let e = errors(&light.replace("light_service_ms = 2.8", "light_service_ms = -1"));
    assert!(e.iter().any(|e| e.contains("light_service_ms") && e.contains("must be")), "{e:?}");
}
