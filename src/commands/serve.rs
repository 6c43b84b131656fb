//! `stowage serve`: flags → server options.

use std::time::Duration;

use anyhow::{ensure, Result};
use stowage_node::predict::default_inference_threads;
use stowage_node::registry::Limits;
use stowage_node::spec::node_models;
use stowage_node::startup::LoadOptions;
use stowage_node::Config;

use crate::cli::ServeArgs;
use crate::http::server::{self, ServeOptions};
use crate::http::state::ServeConfig;

pub fn run(args: &ServeArgs) -> Result<()> {
    ensure!(args.ready_fraction > 0.0 && args.ready_fraction <= 1.0, "--ready-fraction must be in (0, 1]");
    let specs = node_models(
        args.plan.as_deref(),
        args.node.as_deref(),
        args.catalog.as_deref(),
        &args.models,
        args.engine.engine,
    )?;
    let threads = args.inference_threads.unwrap_or_else(default_inference_threads);
    server::run(ServeOptions {
        host: args.host.clone(),
        port: args.port,
        workers: args.workers.unwrap_or_else(default_inference_threads),
        max_connections: args.max_connections,
        specs,
        limits: Limits {
            concurrency: args.model_concurrency.unwrap_or(threads),
            queue: args.queue_size,
            batch: args.batch_inputs,
        },
        config: ServeConfig {
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_millis(args.body_timeout_ms),
            node: Config {
                max_batch: args.max_batch,
                ready_fraction: args.ready_fraction,
                inference_threads: threads,
                queue_timeout: (args.queue_timeout_ms > 0).then(|| Duration::from_millis(args.queue_timeout_ms)),
                reject_delay: Duration::from_millis(args.reject_delay_ms),
            },
        },
        load: LoadOptions {
            engine: args.engine.options(),
            cuda_devices: args.engine.ort_cuda_device.clone(),
            parallelism: args.load_parallelism,
            fetch_parallelism: args.s3.fetch_parallelism,
            fetch: args.s3.fetch_options(),
        },
        ort_library: args.engine.ort_library.clone(),
        drain: Duration::from_secs(args.drain_seconds),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
    })
}
