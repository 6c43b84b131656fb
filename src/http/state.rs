//! What every handler can reach: the node, the metrics handle, the HTTP settings.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use stowage_node::jobs::Jobs;
use stowage_node::{Config, Node};

/// Default of `--max-body-bytes`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default of `--body-timeout-ms`.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;

/// Settings of a serving node: the HTTP side's and the node's request path.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Largest request body; beyond, 413.
    pub max_body_bytes: usize,
    /// Longest a request body may take to arrive once its head has; beyond, 408.
    pub body_timeout: Duration,
    pub node: Config,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout: Duration::from_millis(DEFAULT_BODY_TIMEOUT_MS),
            node: Config::default(),
        }
    }
}

pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: PrometheusHandle,
    pub config: ServeConfig,
    /// Asynchronous requests, where the node takes them (`--async-dir`).
    pub jobs: Option<Arc<Jobs>>,
}

impl AppState {
    /// The handlers' view of `node` (assembled by `stowage_node::start`, or by a test).
    pub fn new(node: Arc<Node>, config: ServeConfig) -> Self {
        Self { node, metrics: stowage_node::metrics::install(), config, jobs: None }
    }

    /// With the node's asynchronous requests (opened by `stowage_node::start`).
    pub fn with_jobs(mut self, jobs: Option<Arc<Jobs>>) -> Self {
        self.jobs = jobs;
        self
    }
}
