//! The engine alone under load, for comparison with the same model through HTTP:
//! `cargo run --release --example engine_load -- MODEL_DIR tract|ort CONCURRENCY SECONDS [TEXT]`
//! Tokenizes TEXT once, then CONCURRENCY threads call `predict` in a loop for SECONDS.
//! Prints one JSON line: calls/s and latency percentiles in milliseconds. With BATCH=N in the
//! environment each call runs N copies of TEXT (what the node's batcher does under load);
//! `rps` then counts calls, `inputs_per_s` inputs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage_engine::EngineOptions;
use stowage_node::lifecycle::load;
use stowage_node::lifecycle::spec::ModelSpec;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(a.len() >= 4, "usage: engine_load MODEL_DIR tract|ort CONCURRENCY SECONDS [TEXT]");
    let dir = PathBuf::from(&a[0]);
    let engine: stowage_core::Engine = a[1].parse()?;
    let concurrency: usize = a[2].parse()?;
    let seconds: f64 = a[3].parse()?;
    let text = a
        .get(4)
        .cloned()
        .unwrap_or_else(|| "I love this product, the delivery was fast and the support team was very helpful".into());
    if engine == stowage_core::Engine::Ort {
        stowage_engine::ort::init(None, stowage_engine::default_ort_intra_threads())?;
    }
    let spec = ModelSpec {
        id: "bench".into(),
        engine,
        artifact: dir.join("model.onnx").into(),
        tokenizer: dir.join("tokenizer.json").into(),
        config: Some(dir.join("config.json").into()),
        config_optional: true,
        sha256: None,
        cold: false,
        request_tokens: stowage_core::catalog::DEFAULT_REQUEST_TOKENS,
        slo_p90_ms: None,
    };
    let loaded = Arc::new(load::load(&spec, &EngineOptions::default())?.model);
    let batch: usize = std::env::var("BATCH").ok().map(|b| b.parse()).transpose()?.unwrap_or(1);
    let inputs = Arc::new(loaded.text.encode(&vec![text; batch.max(1)], None)?);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|_| {
            let (m, x) = (loaded.clone(), inputs.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    m.model.predict(&x).expect("predict");
                    lat.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{{\"engine\": \"{}\", \"concurrency\": {concurrency}, \"requests\": {}, \"rps\": {:.2}, \"p50_ms\": {:.2}, \"p90_ms\": {:.2}, \"p99_ms\": {:.2}, \"mean_ms\": {:.3}, \"tokens\": {}, \"batch\": {}, \"inputs_per_s\": {:.2}}}",
        a[1],
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.iter().sum::<f64>() / lat.len() as f64,
        inputs.seq,
        inputs.batch,
        (lat.len() * inputs.batch) as f64 / elapsed
    );
    Ok(())
}
