//! Prometheus metrics (docs/metrics.md is the list): each described once, here, with its unit and
//! help; the recorder is installed once per process, with its upkeep on a timer.

use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS: &str = "stowage_requests_total";
pub const REQUEST_DURATION: &str = "stowage_request_duration_seconds";
pub const INFERENCE_DURATION: &str = "stowage_inference_duration_seconds";
pub const QUEUE_WAIT: &str = "stowage_queue_wait_seconds";
pub const INFLIGHT: &str = "stowage_inflight_requests";
pub const REJECTED: &str = "stowage_rejected_total";
pub const LOAD_DURATION: &str = "stowage_model_load_duration_seconds";
pub const MODEL_MEMORY: &str = "stowage_model_memory_bytes";
pub const MODELS: &str = "stowage_models";
pub const FETCHED_BYTES: &str = "stowage_fetched_bytes_total";
pub const STARTUP: &str = "stowage_startup_seconds";
pub const BATCHES: &str = "stowage_batches_total";
pub const BATCHED_ROWS: &str = "stowage_batched_inputs_total";
pub const INFERENCE_BUSY: &str = "stowage_inference_threads_busy";
pub const INFERENCE_BACKLOG: &str = "stowage_inference_backlog";
pub const TOKENIZATION_DURATION: &str = "stowage_tokenization_duration_seconds";
pub const BATCH_WAIT: &str = "stowage_batch_wait_seconds";
pub const MALFORMED: &str = "stowage_malformed_requests_total";
pub const BUILD_INFO: &str = "stowage_build_info";
pub const RELOADS: &str = "stowage_reloads_total";
pub const COLD_LOADS: &str = "stowage_cold_loads_total";
pub const COLD_LOAD_DURATION: &str = "stowage_cold_load_duration_seconds";
pub const COLD_EVICTIONS: &str = "stowage_cold_evictions_total";
pub const COLD_RESIDENT_BYTES: &str = "stowage_cold_resident_bytes";
pub const COLD_POOL_BYTES: &str = "stowage_cold_pool_bytes";
pub const PLAN_INFO: &str = "stowage_plan_info";
pub const GATEWAY_REQUESTS: &str = "stowage_gateway_requests_total";
pub const GATEWAY_UPSTREAM_DURATION: &str = "stowage_gateway_upstream_duration_seconds";
pub const GATEWAY_UPSTREAM_ERRORS: &str = "stowage_gateway_upstream_errors_total";
pub const GATEWAY_WAITING: &str = "stowage_gateway_waiting_requests";
pub const GATEWAY_HOLD_DURATION: &str = "stowage_gateway_hold_duration_seconds";
pub const ASYNC_SUBMITTED: &str = "stowage_async_submitted_total";
pub const ASYNC_JOBS: &str = "stowage_async_jobs";
pub const ASYNC_COMPLETED: &str = "stowage_async_completed_total";
pub const ASYNC_RETRIES: &str = "stowage_async_retries_total";
pub const ASYNC_OLDEST: &str = "stowage_async_oldest_queued_seconds";
pub const ASYNC_CALLBACKS: &str = "stowage_async_callbacks_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Reads the process's `process_*` metrics (CPU seconds, resident memory, open file descriptors,
/// start time and more, from /proc) into the recorder: call before each scrape renders.
pub fn collect_process() {
    PROCESS
        .get_or_init(|| {
            let c = metrics_process::Collector::default();
            c.describe();
            c
        })
        .collect();
}

/// Label pairs whose series leave `/metrics`: those of models the node no longer serves, and of
/// plans it no longer runs. The exporter cannot delete a series, so `render` leaves them out (a
/// model that comes back carries on from its old counts, as a Prometheus counter may).
static RETIRED: RwLock<Option<HashSet<String>>> = RwLock::new(None);

/// The text a series of a retired `label=value` pair carries, after `{` or `,`.
fn pair(label: &str, value: &str) -> String {
    format!("{label}=\"{value}\"")
}

/// Leaves every series labelled `label=value` out of `/metrics` from now on.
pub fn retire(label: &str, value: &str) {
    if let Ok(mut r) = RETIRED.write() {
        r.get_or_insert_with(HashSet::new).insert(pair(label, value));
    }
}

/// Shows the series labelled `label=value` again (a model served again).
pub fn revive(label: &str, value: &str) {
    if let Ok(mut r) = RETIRED.write() {
        if let Some(set) = r.as_mut() {
            set.remove(&pair(label, value));
        }
    }
}

/// The exposition text without the series of retired label pairs.
pub fn render(handle: &PrometheusHandle) -> String {
    let text = handle.render();
    let Ok(retired) = RETIRED.read() else { return text };
    let Some(set) = retired.as_ref().filter(|s| !s.is_empty()) else { return text };
    let keep = |line: &str| {
        let Some(open) = line.find('{') else { return true };
        let Some(close) = line[open..].find('}') else { return true };
        !line[open + 1..open + close].split(',').any(|p| set.contains(p))
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines().filter(|l| keep(l)) {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Counts a reload by its result (`applied`, `unchanged`, `refused`).
pub fn reload_result(result: &'static str) {
    metrics::counter!(RELOADS, "result" => result).increment(1);
}

/// Counts an asynchronous job accepted for `model` (not an idempotent retry of one).
pub fn async_submitted(model: &str) {
    metrics::counter!(ASYNC_SUBMITTED, "model" => model.to_string()).increment(1);
}

/// Moves `model`'s count of jobs in `status` (`queued` or `running`) by `delta`.
pub fn async_jobs(model: &str, status: &'static str, delta: f64) {
    metrics::gauge!(ASYNC_JOBS, "model" => model.to_string(), "status" => status).increment(delta);
}

/// Counts an asynchronous job that ended (`done` or `failed`).
pub fn async_completed(model: &str, status: &'static str) {
    metrics::counter!(ASYNC_COMPLETED, "model" => model.to_string(), "status" => status).increment(1);
}

/// Counts a job that reached its model, failed, and goes back to the queue.
pub fn async_retried(model: &str) {
    metrics::counter!(ASYNC_RETRIES, "model" => model.to_string()).increment(1);
}

/// Counts a callback by its outcome after its tries (`ok`, `failed`).
pub fn async_callback(ok: bool) {
    metrics::counter!(ASYNC_CALLBACKS, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder once and returns its handle (tests build many apps).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
            // Tokenization takes tens of microseconds; a batch wait is often none at all.
            let fine = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
            let waits =
                [1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            // The one per-model histogram: few buckets, so that a model has at most ~25 series.
            let request = [0.005, 0.01, 0.025, 0.1, 0.5, 2.5];
            let installed = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TOKENIZATION_DURATION.into()), &fine))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_WAIT.into()), &waits))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &request))
                .expect("static buckets are valid")
                .install_recorder();
            let handle = match installed {
                Ok(handle) => {
                    if let Err(e) = spawn_upkeep(handle.clone(), UPKEEP_EVERY) {
                        tracing::warn!(error = %e, "cannot start the metrics upkeep thread: histogram samples wait for a scrape");
                    }
                    handle
                }
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// Folds histogram samples into their buckets every `every`, on a thread of its own. Without it
/// the exporter keeps every sample until `/metrics` is read: a node nobody scrapes grows by
/// about 92 bytes per request.
pub fn spawn_upkeep(handle: PrometheusHandle, every: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("stowage-metrics".into()).spawn(move || loop {
        std::thread::sleep(every);
        handle.run_upkeep();
    })
}

fn describe() {
    describe_counter!(
        ASYNC_SUBMITTED,
        Unit::Count,
        "Asynchronous jobs accepted, per model (an idempotent retry is not counted)"
    );
    describe_gauge!(ASYNC_JOBS, Unit::Count, "Asynchronous jobs per model by status: queued (waiting) or running");
    describe_counter!(ASYNC_COMPLETED, Unit::Count, "Asynchronous jobs ended, per model and status (done, failed)");
    describe_counter!(
        ASYNC_RETRIES,
        Unit::Count,
        "Asynchronous jobs that reached their model, failed and were queued again, per model"
    );
    describe_gauge!(ASYNC_OLDEST, Unit::Seconds, "Age of the oldest queued asynchronous job (0 when none)");
    describe_counter!(
        ASYNC_CALLBACKS,
        Unit::Count,
        "Callbacks of ended asynchronous jobs, by outcome after their tries (ok, failed)"
    );
    describe_gauge!(BUILD_INFO, Unit::Count, "Always 1; its version label is the stowage version this process runs");
    describe_counter!(REQUESTS, Unit::Count, "Prediction requests answered, by model and HTTP status code");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Request received to response written, per model");
    describe_histogram!(
        INFERENCE_DURATION,
        Unit::Seconds,
        "Engine time per request (tokenization excluded), node-wide, by engine"
    );
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Time a request waited for a free slot of its model, node-wide");
    describe_gauge!(INFLIGHT, Unit::Count, "Requests admitted and not yet answered, per model");
    describe_counter!(
        REJECTED,
        Unit::Count,
        "Requests rejected before inference (queue_full, queue_timeout, not_ready, too_large)"
    );
    describe_histogram!(LOAD_DURATION, Unit::Seconds, "Model load time per phase (fetch, load, warmup), node-wide");
    describe_gauge!(MODEL_MEMORY, Unit::Bytes, "Resident memory the model added when it loaded");
    describe_gauge!(MODELS, Unit::Count, "Models by state (loading, ready, failed)");
    describe_counter!(FETCHED_BYTES, Unit::Bytes, "Model file bytes brought to local disk, by source (s3, cache)");
    describe_gauge!(STARTUP, Unit::Seconds, "Time from the start of loading until every model was ready or failed");
    describe_counter!(BATCHES, Unit::Count, "Engine calls, per model (one call may answer several requests)");
    describe_counter!(
        BATCHED_ROWS,
        Unit::Count,
        "Inputs run by those calls: divided by the calls, the mean batch size"
    );
    describe_gauge!(INFERENCE_BUSY, Unit::Count, "Inference threads running a request now (of --inference-threads)");
    describe_gauge!(INFERENCE_BACKLOG, Unit::Count, "Engine calls waiting for a free inference thread (node-wide)");
    describe_histogram!(
        TOKENIZATION_DURATION,
        Unit::Seconds,
        "Tokenization (or the checks of given token ids) per request, on an inference thread"
    );
    describe_counter!(
        MALFORMED,
        Unit::Count,
        "Requests the HTTP server could not parse (bad request line or headers), counted instead of logged"
    );
    describe_counter!(
        RELOADS,
        Unit::Count,
        "Reloads of the node's plan and catalog, by result (applied, unchanged, refused)"
    );
    describe_counter!(
        COLD_LOADS,
        Unit::Count,
        "Loads of cold models on a request, by result (loaded, failed, pool_full)"
    );
    describe_histogram!(
        COLD_LOAD_DURATION,
        Unit::Seconds,
        "A cold model's load on its first request: from local disk to warm"
    );
    describe_counter!(COLD_EVICTIONS, Unit::Count, "Idle cold models unloaded to make room in the cold pool");
    describe_gauge!(COLD_RESIDENT_BYTES, Unit::Bytes, "Cold pool bytes held by the cold models loaded now");
    describe_gauge!(COLD_POOL_BYTES, Unit::Bytes, "The cold pool's size (0 without cold models)");
    describe_gauge!(
        PLAN_INFO,
        Unit::Count,
        "Always 1; its labels are the sha256 of the plan file and of the catalog the node serves now"
    );
    describe_counter!(GATEWAY_REQUESTS, Unit::Count, "Requests the gateway answered, by HTTP status code");
    describe_histogram!(
        GATEWAY_UPSTREAM_DURATION,
        Unit::Seconds,
        "Gateway: from sending a request to a node until its whole answer came back, per node"
    );
    describe_counter!(
        GATEWAY_UPSTREAM_ERRORS,
        Unit::Count,
        "Gateway: requests a node did not answer, per node and kind (connect, timeout, send, body)"
    );
    describe_gauge!(
        GATEWAY_WAITING,
        Unit::Count,
        "Gateway: requests held for a node that scales to zero until it is ready, per node (what wakes it)"
    );
    describe_histogram!(
        GATEWAY_HOLD_DURATION,
        Unit::Seconds,
        "Gateway: how long a request was held for its node to start, per node (the hold timeout when it did not)"
    );
    describe_histogram!(
        BATCH_WAIT,
        Unit::Seconds,
        "Admitted until the request's engine call took it up: waiting for the model's engine and an inference thread"
    );
}

/// One model's request-path metrics, registered once when the node starts: the request path
/// then records without building label sets or looking them up.
pub struct ModelMetrics {
    /// `stowage_requests_total{code="200"}`; other codes are rare and are looked up when they happen.
    pub ok: Counter,
    pub request_duration: Histogram,
    /// Labelled with the engine that runs the model: registered at start-up when the catalog
    /// names the engine, else when the model loads and its engine is chosen (`auto`).
    pub inference_duration: OnceLock<Histogram>,
    pub queue_wait: Histogram,
    pub inflight: Gauge,
    pub tokenization: Histogram,
    pub batch_wait: Histogram,
    pub batches: Counter,
    pub batched_inputs: Counter,
}

impl ModelMetrics {
    pub fn new(model: &str, backend: Option<&str>) -> Self {
        install();
        let m = model.to_string();
        // Per model: requests by code, the request histogram (few buckets), in-flight, batches.
        // Where a request's time went (queue, batch wait, tokenization, engine) is node-wide:
        // per model those would be ~70 series each, and a node holds hundreds of models.
        let handles = Self {
            ok: metrics::counter!(REQUESTS, "model" => m.clone(), "code" => "200"),
            request_duration: metrics::histogram!(REQUEST_DURATION, "model" => m.clone()),
            inference_duration: OnceLock::new(),
            queue_wait: metrics::histogram!(QUEUE_WAIT),
            inflight: metrics::gauge!(INFLIGHT, "model" => m.clone()),
            tokenization: metrics::histogram!(TOKENIZATION_DURATION),
            batch_wait: metrics::histogram!(BATCH_WAIT),
            batches: metrics::counter!(BATCHES, "model" => m.clone()),
            batched_inputs: metrics::counter!(BATCHED_ROWS, "model" => m),
        };
        if let Some(backend) = backend {
            handles.engine_known(model, backend);
        }
        handles
    }

    /// Registers the inference histogram of the engine that runs the model (once).
    pub fn engine_known(&self, _model: &str, backend: &str) {
        self.inference_duration
            .get_or_init(|| metrics::histogram!(INFERENCE_DURATION, "backend" => backend.to_string()));
    }
}

/// Counts a request turned away before inference, in `stowage_rejected_total`.
pub fn rejected(model: &str, reason: &'static str) {
    metrics::counter!(REJECTED, "model" => model.to_string(), "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{Key, Metadata, Recorder};

    fn rss() -> u64 {
        crate::process::rss_bytes()
    }

    /// Resident memory added while `samples` values are recorded into a fresh recorder's histogram.
    fn growth(samples: usize, upkeep: bool) -> u64 {
        let recorder = PrometheusBuilder::new().build_recorder();
        if upkeep {
            spawn_upkeep(recorder.handle(), Duration::from_millis(5)).unwrap();
        }
        let meta = Metadata::new("stowage", metrics::Level::INFO, None);
        let h = recorder.register_histogram(&Key::from_name("unscraped"), &meta);
        let before = rss();
        for i in 0..samples {
            h.record(i as f64 * 1e-6);
            if upkeep && i % 100_000 == 0 {
                // Let the upkeep thread in, as a node's request path does between requests.
                std::thread::sleep(Duration::from_millis(6));
            }
        }
        rss().saturating_sub(before)
    }

    /// Measures in a process of its own (run by the test below), where no other test allocates.
    #[test]
    fn growth_child() {
        if std::env::var_os("STOWAGE_GROWTH_CHILD").is_none() {
            return;
        }
        let samples = 3_000_000;
        let kept = growth(samples, true);
        let piled = growth(samples, false);
        println!("growth: {kept} {piled}");
    }

    #[test]
    fn samples_nobody_scrapes_do_not_pile_up() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "metrics::tests::growth_child", "--nocapture", "--test-threads", "1"])
            .env("STOWAGE_GROWTH_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().find_map(|l| l.split("growth: ").nth(1)).unwrap_or_else(|| panic!("{stdout}"));
        let (kept, piled): (u64, u64) = match line.split_once(' ') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => panic!("{line}"),
        };
        eprintln!("3,000,000 samples: {} KiB with upkeep, {} KiB without", kept >> 10, piled >> 10);
        // The control: without upkeep every sample stays (8 bytes each, and more for blocks).
        assert!(piled > 16 << 20, "without upkeep only {} MiB", piled >> 20);
        assert!(kept < 8 << 20, "with upkeep the histogram still grew by {} MiB", kept >> 20);
    }

    #[test]
    fn every_metric_is_in_the_documented_list() {
        let names: Vec<&str> = include_str!("metrics.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split('"').nth(1))
            .collect();
        assert!(names.len() >= 17, "found only {names:?}");
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
        for name in names {
            assert!(doc.contains(&format!("| `{name}` |")), "docs/metrics.md does not list {name}");
        }
    }
}
