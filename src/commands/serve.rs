//! `stowage serve`: flags → server options.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use stowage_node::jobs::{AwsQueue, JobOptions, Place};
use stowage_node::lifecycle::registry::Limits;
use stowage_node::lifecycle::spec::SpecSource;
use stowage_node::lifecycle::startup::LoadOptions;
use stowage_node::serve::predict::default_inference_threads;
use stowage_node::{Config, NodeOptions};

use crate::cli::{ServeArgs, ADMIN_TOKEN_ENV};
use crate::http::server::{self, AdminOptions, ServeOptions};
use crate::http::state::ServeConfig;

pub fn run(args: &ServeArgs) -> Result<()> {
    ensure!(args.ready_fraction > 0.0 && args.ready_fraction <= 1.0, "--ready-fraction must be in (0, 1]");
    let source = SpecSource {
        plan: args.plan.clone(),
        node: args.node.clone(),
        catalog: args.catalog.clone(),
        models: args.models.clone(),
        engine: args.engine.engine,
        cold_pool_mib: args.cold_pool_mib,
    };
    if let Some(mib) = args.cold_pool_mib {
        ensure!(mib.is_finite() && mib >= 0.0, "--cold-pool-mib must be a number of MiB, at least 0");
    }
    let initial = source.read()?;
    let admin = match args.admin_port {
        Some(port) => Some(AdminOptions { host: args.admin_host.clone(), port, token: admin_token(args)? }),
        None => None,
    };
    let threads = args.inference_threads.unwrap_or_else(default_inference_threads);
    let config = Config {
        max_batch: args.max_batch,
        ready_fraction: args.ready_fraction,
        inference_threads: threads,
        queue_timeout: (args.queue_timeout_ms > 0).then(|| Duration::from_millis(args.queue_timeout_ms)),
        reject_delay: Duration::from_millis(args.reject_delay_ms),
        max_queue_delay: args.max_queue_delay_ms.map(Duration::from_millis),
    };
    let drain = Duration::from_secs(args.drain_seconds);
    server::run(ServeOptions {
        host: args.host.clone(),
        port: args.port,
        probe_port: args.probe_port,
        grpc_port: args.grpc_port,
        workers: args.workers.unwrap_or_else(default_inference_threads),
        max_connections: args.max_connections,
        admin,
        config: ServeConfig {
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_millis(args.body_timeout_ms),
            node: config.clone(),
        },
        node: NodeOptions {
            source,
            initial,
            watch: !args.no_watch,
            limits: Limits {
                concurrency: args.model_concurrency.unwrap_or(threads),
                queue: args.queue_size,
                batch: args.batch_inputs,
                batch_tokens: args.max_batch_tokens,
            },
            config,
            load: LoadOptions {
                engine: args.engine.options(),
                cuda_devices: args.engine.ort_cuda_device.clone(),
                parallelism: args.load_parallelism,
                cold_parallelism: args.cold_load_parallelism,
                fetch_parallelism: args.s3.fetch_parallelism,
                fetch: args.s3.fetch_options(),
            },
            ort_library: args.engine.ort_library.clone(),
            drain,
            jobs: jobs(args)?,
        },
        drain,
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
    })
}

/// Asynchronous requests' settings; `None` without `--async-dir` or `--async-queue-url`.
fn jobs(args: &ServeArgs) -> Result<Option<JobOptions>> {
    let place = match (&args.async_dir, &args.async_queue_url, &args.async_results) {
        (Some(dir), None, None) => Place::Dir(dir.clone()),
        (None, Some(url), Some(results)) => Place::Aws(AwsQueue {
            queue_url: url.clone(),
            results: results.clone(),
            endpoint: args.s3.s3_endpoint.clone(),
            visibility: Duration::from_secs(args.async_visibility_timeout_seconds),
        }),
        (None, None, None) => return Ok(None),
        (Some(_), _, _) => bail!("--async-dir and --async-queue-url are two places for one queue: give one"),
        (None, _, _) => bail!("--async-queue-url and --async-results go together: the queue and where its results go"),
    };
    ensure!(args.async_max_attempts >= 1, "--async-max-attempts must be at least 1");
    ensure!(args.async_result_ttl_seconds >= 1, "--async-result-ttl-seconds must be at least 1");
    ensure!(args.async_concurrency != Some(0), "--async-concurrency must be at least 1");
    ensure!(args.async_visibility_timeout_seconds >= 1, "--async-visibility-timeout-seconds must be at least 1");
    if let Some(url) = &args.async_callback_url {
        crate::http::jobs::check_callback_url(url).map_err(|e| anyhow::anyhow!("--async-callback-url: {e}"))?;
    }
    Ok(Some(JobOptions {
        place,
        max_attempts: args.async_max_attempts,
        result_ttl: Duration::from_secs(args.async_result_ttl_seconds),
        concurrency: args.async_concurrency,
        callback_url: args.async_callback_url.clone(),
        request_callbacks: args.async_request_callbacks,
    }))
}

/// The admin API's bearer token: the first line of --admin-token-file, else $STOWAGE_ADMIN_TOKEN.
/// An admin API on an address other than loopback must have one.
fn admin_token(args: &ServeArgs) -> Result<Option<String>> {
    let token = match &args.admin_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --admin-token-file {}", path.display()))?;
            let t = text.lines().next().unwrap_or("").trim().to_string();
            ensure!(!t.is_empty(), "--admin-token-file {}: the first line is empty", path.display());
            Some(t)
        }
        None => std::env::var(ADMIN_TOKEN_ENV).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
    };
    let loopback =
        args.admin_host == "localhost" || args.admin_host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if token.is_none() && !loopback {
        bail!(
            "--admin-host {} is not a loopback address: the admin API needs a bearer token there (--admin-token-file, or {ADMIN_TOKEN_ENV})",
            args.admin_host
        );
    }
    Ok(token)
}
