//! Holding requests for a node that scales to zero (a plan node with `min_replicas: 0`, a route
//! map entry with `"min_replicas": 0`) while it has no ready replica, as Knative's activator and
//! KEDA's HTTP interceptor do: the request waits, counted in `stowage_gateway_waiting_requests`
//! (what KEDA reads to start the node), until the node answers its `/ready`, then goes on; after
//! `--hold-timeout-ms` it gets 503 `node_starting` with Retry-After. One probe per node polls
//! `/ready` while requests wait; a node is taken for gone again when a connection to it cannot be
//! opened. Nodes that do not scale to zero are never held: their failures answer at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stowage_node::metrics as m;
use tokio::sync::watch;
use tracing::{info, warn};

use super::routes::Upstream;
use crate::http::error::{ApiError, Code};

/// Default of `--hold-timeout-ms`: a node that loads its models from S3 may take tens of seconds.
pub const DEFAULT_HOLD_TIMEOUT_MS: u64 = 60_000;
/// How often a waiting node's `/ready` is asked.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes that scale to zero, as the gateway last saw them.
pub struct Waker {
    hold: Duration,
    nodes: Mutex<HashMap<String, Arc<Sleeper>>>,
}

/// One node that scales to zero.
struct Sleeper {
    node: String,
    base: String,
    /// Whether the node answered its readiness probe since it was last found gone. A node is
    /// taken for ready until a request finds it is not.
    ready: watch::Sender<bool>,
    waiting: AtomicUsize,
    probing: AtomicBool,
}

/// One held request: counted in the gauge until it is dropped (answered, timed out, or its
/// client gone).
struct Held<'a>(&'a Sleeper);

impl<'a> Held<'a> {
    fn new(s: &'a Sleeper) -> Self {
        let n = s.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(m::GATEWAY_WAITING, "node" => s.node.clone()).set(n as f64);
        Held(s)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let n = self.0.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!(m::GATEWAY_WAITING, "node" => self.0.node.clone()).set(n as f64);
    }
}

impl Waker {
    pub fn new(hold: Duration) -> Self {
        Self { hold, nodes: Mutex::new(HashMap::new()) }
    }

    fn sleeper(&self, up: &Upstream) -> Arc<Sleeper> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(up.base.clone())
            .or_insert_with(|| {
                metrics::gauge!(m::GATEWAY_WAITING, "node" => up.node.clone()).set(0.0);
                Arc::new(Sleeper {
                    node: up.node.clone(),
                    base: up.base.clone(),
                    ready: watch::Sender::new(true),
                    waiting: AtomicUsize::new(0),
                    probing: AtomicBool::new(false),
                })
            })
            .clone()
    }

    /// Waits until `up`'s node is ready, where it scales to zero and was found gone: `Ok(None)`
    /// at once for a node that is taken for ready (or never held), `Ok(Some(waited))` after a
    /// wait, `node_starting` after the hold timeout.
    pub async fn ready(&self, up: &Upstream) -> Result<Option<Duration>, ApiError> {
        if !up.scales_to_zero {
            return Ok(None);
        }
        let s = self.sleeper(up);
        let mut rx = s.ready.subscribe();
        if *rx.borrow_and_update() {
            return Ok(None);
        }
        let started = Instant::now();
        let held = Held::new(&s);
        probe(&s);
        let woke = tokio::time::timeout(self.hold, rx.wait_for(|ready| *ready)).await;
        drop(held);
        let waited = started.elapsed();
        metrics::histogram!(m::GATEWAY_HOLD_DURATION, "node" => s.node.clone()).record(waited.as_secs_f64());
        match woke {
            Ok(Ok(_)) => Ok(Some(waited)),
            _ => Err(ApiError::new(
                Code::NodeStarting,
                format!(
                    "{} was not ready within the gateway's hold timeout ({} ms)",
                    up.shown(),
                    self.hold.as_millis()
                ),
            )),
        }
    }

    /// A connection to `up`'s node could not be opened: where it scales to zero, it has no
    /// replica now, and requests wait for it from here on (the caller's too: `ready` again).
    /// Whether it does.
    pub fn gone(&self, up: &Upstream) -> bool {
        if !up.scales_to_zero {
            return false;
        }
        let s = self.sleeper(up);
        if s.ready.send_replace(false) {
            info!(node = %s.node, "node has no ready replica: holding its requests until it starts");
        }
        true
    }
}

/// Starts the node's probe unless one runs: a thread that asks `/ready` every `PROBE_EVERY`
/// while requests wait, and wakes them when it answers 200.
fn probe(s: &Arc<Sleeper>) {
    if s.probing.swap(true, Ordering::SeqCst) {
        return;
    }
    let s = s.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(PROBE_TIMEOUT)).build().into();
    let url = format!("{}/ready", s.base);
    let spawned = std::thread::Builder::new().name("stowage-wake".into()).spawn({
        let s = s.clone();
        move || loop {
            if matches!(agent.get(&url).call(), Ok(r) if r.status() == 200) {
                info!(node = %s.node, "node ready: forwarding its held requests");
                s.ready.send_replace(true);
            }
            if *s.ready.borrow() || s.waiting.load(Ordering::SeqCst) == 0 {
                s.probing.store(false, Ordering::SeqCst);
                // A request that came after the check above and found no probe running.
                if s.waiting.load(Ordering::SeqCst) == 0 || *s.ready.borrow() || s.probing.swap(true, Ordering::SeqCst)
                {
                    return;
                }
            }
            std::thread::sleep(PROBE_EVERY);
        }
    });
    if let Err(e) = spawned {
        s.probing.store(false, Ordering::SeqCst);
        warn!(node = %s.node, error = %e, "cannot start a readiness probe: held requests wait for their timeout");
    }
}
