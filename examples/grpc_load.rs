//! A closed-loop load generator for KServe v2 over gRPC (`scripts/bench-grpc.sh`): CONCURRENCY
//! callers, each sending the next `ModelInfer` (one text, as `tritonclient.grpc` sends it: raw
//! contents) as soon as its last answer came, for SECONDS, over one HTTP/2 connection per caller
//! (as wrk holds one per connection). Prints one JSON line as scripts/wrk-report.lua does:
//! requests, rate, errors, p50/p90/p99 and mean in milliseconds. One runtime thread: pin it with
//! taskset like wrk.
//!   cargo run --release --example grpc_load -- http://127.0.0.1:8001 MODEL CONCURRENCY SECONDS [TEXT]

use std::time::{Duration, Instant};

use stowage::grpc::pb;
use stowage::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, model, concurrency, seconds, rest @ ..] = args.as_slice() else {
        eprintln!("usage: grpc_load ADDRESS MODEL CONCURRENCY SECONDS [TEXT]");
        std::process::exit(2);
    };
    let text = rest.first().cloned().unwrap_or_else(|| "I love this product".into());
    let (concurrency, seconds): (usize, f64) = (concurrency.parse()?, seconds.parse()?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut raw = (text.len() as u32).to_le_bytes().to_vec();
        raw.extend_from_slice(text.as_bytes());
        let request = pb::ModelInferRequest {
            model_name: model.clone(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![raw.into()],
            ..Default::default()
        };
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut callers = Vec::new();
        for _ in 0..concurrency {
            let channel = tonic::transport::Endpoint::from_shared(addr.clone())?.tcp_nodelay(true).connect().await?;
            let (mut client, request) = (GrpcInferenceServiceClient::new(channel), request.clone());
            callers.push(tokio::spawn(async move {
                let (mut ms, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < end {
                    let t = Instant::now();
                    match client.model_infer(request.clone()).await {
                        Ok(_) => ms.push(t.elapsed().as_secs_f64() * 1e3),
                        Err(_) => errors += 1,
                    }
                }
                (ms, errors)
            }));
        }
        let started = Instant::now();
        let (mut ms, mut errors) = (Vec::new(), 0);
        for c in callers {
            let (m, e) = c.await?;
            ms.extend(m);
            errors += e;
        }
        let elapsed = started.elapsed().as_secs_f64();
        ms.sort_by(f64::total_cmp);
        let pct = |p: f64| ms.get(((ms.len() as f64 * p) as usize).min(ms.len().saturating_sub(1))).copied().unwrap_or(0.0);
        let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        println!(
            "{{\"requests\": {}, \"rps\": {:.3}, \"errors\": {errors}, \"p50_ms\": {:.3}, \"p90_ms\": {:.3}, \"p99_ms\": {:.3}, \"mean_ms\": {mean:.3}}}",
            ms.len() + errors,
            ms.len() as f64 / elapsed,
            pct(0.5),
            pct(0.9),
            pct(0.99)
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
