//! Cold models on a real process: a pool that holds three models serves eight cold ones in
//! rotation (every request 200, evictions counted, the pool never over its size), a hot model
//! answers throughout, concurrent first requests load a model once, and a model the pool cannot
//! hold answers 503 `cold_pool_full` with Retry-After.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::common::{free_port, run, stowage, wait_ok, Proc};

/// Eight synthetic tiny models, all cold but tiny-0008 (hot), in `dir`.
fn catalog(dir: &Path) {
    run(stowage().args(["synth", "--count", "8", "--out"]).arg(dir));
    let text = std::fs::read_to_string(dir.join("models.toml")).unwrap();
    let text = text.replace("[[models]]\nid = \"tiny-0008\"", "[[models]]\nresidency = \"hot\"\nid = \"tiny-0008\"");
    let text = text.replace("[[models]]\nid = ", "[[models]]\nresidency = \"cold\"\nid = ");
    assert_eq!(text.matches("residency = \"cold\"").count(), 7);
    std::fs::write(dir.join("models.toml"), text).unwrap();
}

fn serve(dir: &Path, pool_mib: &str) -> (Proc, String) {
    let port = free_port();
    let mut node = Proc(
        stowage()
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--catalog"])
            .arg(dir.join("models.toml"))
            .args(["--cold-pool-mib", pool_mib])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/ready"), &mut node);
    (node, base)
}

fn get(url: &str) -> (u16, Option<String>, Value) {
    let mut r = ureq::get(url).config().http_status_as_error(false).build().call().unwrap();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn metric(base: &str, series: &str) -> f64 {
    let text = ureq::get(&format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[test]
fn a_pool_of_three_serves_seven_cold_models_in_rotation_and_loads_each_once_per_miss() {
    let dir = tempfile::tempdir().unwrap();
    catalog(dir.path());
    // Three tiny models' worth: 1.15 × 582 KB each.
    let weights = std::fs::metadata(dir.path().join("tiny-0001/model.onnx")).unwrap().len() as f64;
    let pool = format!("{:.3}", 3.2 * 1.15 * weights / 1048576.0);
    let (_node, base) = serve(dir.path(), &pool);

    let (_, _, models) = get(&format!("{base}/models"));
    for m in models["models"].as_array().unwrap() {
        let cold = m["id"] != "tiny-0008";
        assert_eq!(m["residency"], if cold { "cold" } else { "hot" }, "{m}");
        assert_eq!(m["state"], if cold { "cold" } else { "ready" }, "{m}");
    }

    // Concurrent first requests to one cold model load it once.
    let first: Vec<_> = (0..6)
        .map(|_| {
            let url = format!("{base}/predictions/tiny-0001?text=first");
            std::thread::spawn(move || get(&url).0)
        })
        .collect();
    for t in first {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(metric(&base, r#"stowage_cold_loads_total{result="loaded"}"#), 1.0);

    // Seven cold models in rotation through a pool of three, the hot one between them.
    let pool_bytes = metric(&base, "stowage_cold_pool_bytes");
    let rss_before = metric(&base, "process_resident_memory_bytes");
    for round in 0..3 {
        for i in 1..=7 {
            let (status, _, body) = get(&format!("{base}/predictions/tiny-000{i}?text=round+{round}"));
            assert_eq!(status, 200, "tiny-000{i} round {round}: {body}");
            assert!(metric(&base, "stowage_cold_resident_bytes") <= pool_bytes);
            assert_eq!(get(&format!("{base}/predictions/tiny-0008?text=hot")).0, 200);
        }
    }
    // Resident memory stays within the pool, beside the process, the hot model and the one cold
    // model loaded before (a stated 32 MiB for allocator slack and the metrics' own growth).
    let rss_after = metric(&base, "process_resident_memory_bytes");
    assert!(
        rss_after <= rss_before + pool_bytes + 32.0 * 1048576.0,
        "RSS {rss_before} → {rss_after} with a pool of {pool_bytes} bytes"
    );
    let evictions = metric(&base, "stowage_cold_evictions_total");
    let loads = metric(&base, r#"stowage_cold_loads_total{result="loaded"}"#);
    assert!(evictions >= 15.0 && loads >= 18.0, "{evictions} evictions, {loads} loads");
    let (_, _, models) = get(&format!("{base}/models"));
    let resident = models["models"].as_array().unwrap().iter().filter(|m| m["resident"] == true).count();
    assert_eq!(resident, 3, "{models}");
}

#[test]
fn a_cold_model_the_pool_cannot_hold_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    catalog(dir.path());
    let (_node, base) = serve(dir.path(), "0.1");
    let (status, retry, body) = get(&format!("{base}/predictions/tiny-0002?text=hi"));
    assert_eq!((status, body["code"].as_str()), (503, Some("cold_pool_full")), "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    // The hot model is untouched by it.
    assert_eq!(get(&format!("{base}/predictions/tiny-0008?text=hi")).0, 200);
    assert_eq!(metric(&base, r#"stowage_rejected_total{model="tiny-0002",reason="cold_pool_full"}"#), 1.0);
}
