//! `stowage gateway`: flags → gateway options.

use std::time::Duration;

use anyhow::Result;
use stowage_node::serve::predict::default_inference_threads;

use crate::cli::GatewayArgs;
use crate::gateway::routes::Source;
use crate::gateway::{self, GatewayOptions};

pub fn run(args: &GatewayArgs) -> Result<()> {
    let source = match (&args.plan, &args.routes) {
        (_, Some(map)) => Source::Map(map.clone()),
        (Some(plan), None) => Source::Plan {
            path: plan.clone(),
            template: args.node_url.clone(),
            grpc_template: args.node_grpc_url.clone(),
            namespace: args.namespace.clone(),
        },
        (None, None) => anyhow::bail!("give --plan or --routes"),
    };
    gateway::run(GatewayOptions {
        host: args.host.clone(),
        port: args.port,
        grpc_port: args.grpc_port,
        workers: args.workers.unwrap_or_else(default_inference_threads),
        source,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
        reload_every: Duration::from_millis(args.reload_interval_ms),
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_connections: args.max_connections,
        shutdown_delay: Duration::from_secs(args.shutdown_delay_seconds),
        drain: Duration::from_secs(args.drain_seconds),
        hold_timeout: Duration::from_millis(args.hold_timeout_ms),
    })
}
