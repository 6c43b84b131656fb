//! `stowage profile`: what each model of a catalog costs on this machine, measured the way nodes
//! serve, written as `[models.footprint.<family>]` into a catalog so plans come from measurements.
//!
//! 1. **Alone** (in this process, one model at a time): the resident memory a model adds, its load
//!    and warm-up time (what a cold model's first request waits for), and, for `auto`, both
//!    engines timed on a typical request and the faster kept (as a node chooses).
//! 2. **Served** (one `stowage serve` process holding every measured model, pinned to one CPU, one
//!    inference thread, one ONNX Runtime thread — a node of one compute unit): requests of the
//!    typical length (`request_tokens` words of each model's vocabulary, or `--tokens`) sent one at
//!    a time through HTTP, to the models in a random order, as a packed node interleaves them (so
//!    each model's weights have left the caches when its next request comes). Each model's
//!    service time is its mean request time, scaled so that all of them add up to the CPU time the
//!    node process used (HTTP, JSON, tokenization, engine, postprocessing: what a compute unit is
//!    busy with); its spread (`service_scv`) is the variance of its request times over the square
//!    of their mean.
//! 3. **Under load** (the same node, open loop, Poisson arrivals in the catalog's traffic mix): a
//!    request costs a busy node less than one at a time (batches form, threads stay awake). Over
//!    the node's capacity, the CPU per answered request scales the service times to `service_ms`
//!    (the node's capacity: what utilization counts); at half that capacity, to
//!    `light_service_ms` (a request's own time on a lightly loaded node, for the latency model);
//!    and, before that, at the planned peak (`max_utilization` of that capacity; where the node
//!    is saturated there, its cost there is the capacity and the pass is run again). The P90s of
//!    the planned-peak and light passes fix the spread the latency model needs
//!    (`calibrate_spread`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use stowage_core::{Catalog, Engine};
use stowage_engine::EngineOptions;
use stowage_node::lifecycle::choice::Verdicts;
use stowage_node::lifecycle::load::{self, typical_input, typical_text};
use stowage_node::lifecycle::spec::ModelSpec;
use stowage_node::lifecycle::storage::Fetcher;
use stowage_node::process::{release_freed_memory, rss_bytes};
use stowage_planner::latency::Stream;
use stowage_planner::slo::{node_p90, LIGHT_LOAD};

use crate::cli::ProfileArgs;

/// What was measured for one model.
#[derive(Debug, Clone)]
pub struct Measured {
    pub id: String,
    /// The engine it ran on (for `auto`: the faster one).
    pub engine: Engine,
    /// `auto` chose it: written into the catalog as the model's `engine`.
    pub chosen: bool,
    pub weights_bytes: u64,
    pub memory_bytes: u64,
    /// Load from local disk and warm-up.
    pub load_ms: f64,
    /// The engine call alone, median, model alone and warm.
    pub engine_ms: f64,
    /// A request through the node, interleaved with the other models: mean and spread.
    pub service_ms: f64,
    /// The same on a node at half its capacity.
    pub light_service_ms: f64,
    pub service_scv: f64,
    pub tokens: usize,
    /// Its local files and the text of its requests (for the served measurement).
    files: load::Files,
    text: String,
    /// Its share of the catalog's traffic (its peak_rps), for the loaded pass.
    weight: f64,
}

pub fn run(args: &ProfileArgs) -> Result<()> {
    let catalog = Catalog::load_unmeasured(&args.catalog)?;
    let families: Vec<&str> = catalog.instance_types.iter().map(|t| t.family.as_str()).collect();
    if !families.contains(&args.family.as_str()) {
        bail!(
            "{}: --family {:?} is not a family of the catalog's instance types ({})",
            args.catalog.display(),
            args.family,
            families.join(", ")
        );
    }
    if !(args.capacity_quantile > 0.0 && args.capacity_quantile <= 0.5) {
        bail!("--capacity-quantile must be in (0, 0.5], not {}", args.capacity_quantile);
    }
    if args.out.is_none() && !args.in_place {
        bail!("say where to write the measured catalog: --out FILE, or --in-place");
    }
    let ids: Vec<String> = if args.models.is_empty() {
        catalog.models.iter().map(|m| m.id.clone()).collect()
    } else {
        args.models.clone()
    };
    let specs = ids
        .iter()
        .map(|id| ModelSpec::from_catalog(&catalog, id, args.engine.engine))
        .map(|s| s.map(|s| ModelSpec { request_tokens: args.tokens.unwrap_or(s.request_tokens), ..s }))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = args.engine.options();
    if specs.iter().any(|s| s.engine == Engine::Ort) {
        stowage_engine::ort::init(args.engine.ort_library.as_deref(), engine.ort_intra_threads)
            .context("the ort engine is needed")?;
    } else if specs.iter().any(|s| s.engine == Engine::Auto) {
        if let Err(e) = stowage_engine::ort::init(args.engine.ort_library.as_deref(), engine.ort_intra_threads) {
            eprintln!("ONNX Runtime is not available ({e}): auto models are measured on tract only");
        }
    }
    tokenizers::utils::parallelism::set_parallelism(false);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let fetcher = Fetcher::new(args.s3.fetch_options());

    // 1. Each model alone.
    eprintln!("profile: {} models alone (memory, load time, engine)", specs.len());
    let verdicts = Verdicts::new(None);
    let mut measured = Vec::new();
    let mut warm = Vec::new();
    for spec in &specs {
        let files = runtime.block_on(load::fetch(spec, &fetcher)).with_context(|| spec.id.clone())?;
        if !warm.contains(&spec.engine) {
            // An engine's and the tokenizer's one-time set-up (thread pools, lazy tables) is the
            // process's, not the first model's: pay it before measuring.
            drop(load::load_files(spec, &files, &engine, &verdicts).with_context(|| spec.id.clone())?);
            warm.push(spec.engine);
        }
        let mut m = alone(spec, files, &engine, &verdicts, args.iterations).with_context(|| spec.id.clone())?;
        m.weight = catalog.model(&spec.id).map_or(0.0, |c| c.peak_rps.max(0.0));
        measured.push(m);
    }

    // 2. Every model served together, interleaved.
    eprintln!(
        "profile: {} requests through one node on one CPU, the models interleaved at random",
        args.requests * measured.len()
    );
    // Over capacity the measuring node refuses at twice the latency target (200 ms without
    // one), so its queue, and the batches it makes, are about as deep as a node's around its
    // planned peak: no deeper (a deeper queue batches more and would overstate capacity), though
    // a serving node lets requests wait longer before it refuses (`TARGET_WAIT_MULTIPLE`).
    let bound_ms = catalog.limits.slo_p90_ms.map_or(200.0, |t| MEASURING_WAIT_MULTIPLE * t);
    served(args, &mut measured, bound_ms, catalog.limits.max_utilization)?;

    eprintln!(
        "{:<24} {:<6} {:>11} {:>10} {:>9} {:>10} {:>11} {:>6}",
        "model", "engine", "weights MiB", "memory MiB", "load ms", "engine ms", "service ms", "scv"
    );
    for m in &measured {
        let mib = |b: u64| b as f64 / 1048576.0;
        eprintln!(
            "{:<24} {:<6} {:>11.1} {:>10.1} {:>9.0} {:>10.2} {:>11.2} {:>6.2}",
            m.id,
            m.engine.to_string(),
            mib(m.weights_bytes),
            mib(m.memory_bytes),
            m.load_ms,
            m.engine_ms,
            m.service_ms,
            m.service_scv
        );
    }

    let text = std::fs::read_to_string(&args.catalog)?;
    let out = args.out.clone().unwrap_or_else(|| args.catalog.clone());
    let written = write_footprints(&text, &args.catalog, &out, &args.family, &measured)?;
    // Write beside and rename: an interrupted run never leaves half a catalog.
    let tmp = out.with_extension("toml.tmp");
    std::fs::write(&tmp, written).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "wrote {} ({} models measured on {}, requests of {} tokens)",
        out.display(),
        measured.len(),
        args.family,
        measured.first().map_or(0, |m| m.tokens)
    );
    Ok(())
}

/// Loads one model alone: the memory it adds, its load time, its engine (for `auto` the faster,
/// timed as a node times it), and its engine call's median time.
fn alone(
    spec: &ModelSpec,
    files: load::Files,
    engine: &EngineOptions,
    verdicts: &Verdicts,
    iterations: usize,
) -> Result<Measured> {
    release_freed_memory();
    let before = rss_bytes();
    let started = Instant::now();
    let loaded = load::load_files(spec, &files, engine, verdicts)?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    release_freed_memory();
    let memory = rss_bytes().saturating_sub(before);
    let x = typical_input(&loaded.model.text, spec.request_tokens)?;
    let mut times = Vec::new();
    for i in 0..iterations.max(1) + 3 {
        let t = Instant::now();
        loaded.model.model.predict(&x)?;
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let used = loaded.model.model.backend();
    if let Some(v) = &loaded.model.engine_verdict {
        eprintln!("{:<24} {}", spec.id, v.reason());
    }
    Ok(Measured {
        id: spec.id.clone(),
        engine: used,
        chosen: spec.engine == Engine::Auto,
        weights_bytes: loaded.weights_bytes,
        memory_bytes: memory,
        load_ms,
        engine_ms: times[times.len() / 2],
        service_ms: 0.0,
        light_service_ms: 0.0,
        service_scv: 0.0,
        tokens: x.seq,
        text: typical_text(&loaded.model.text.tokenizer, spec.request_tokens),
        files,
        weight: 0.0,
    })
}

/// Serves every measured model from one node process on one CPU and sends them `--requests`
/// requests each, one at a time, in a random order; fills in their service time and spread.
fn served(args: &ProfileArgs, measured: &mut [Measured], bound_ms: f64, planned: f64) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let catalog = dir.path().join("models.toml");
    std::fs::write(&catalog, served_catalog(measured)).context("cannot write the node's catalog")?;
    let log = dir.path().join("node.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe().context("cannot find the stowage binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--no-watch"])
        .args(["--inference-threads", "1", "--ort-intra-threads", "1", "--workers", "1"])
        .args(["--max-queue-delay-ms", &format!("{}", bound_ms.ceil().max(1.0) as u64)])
        .arg("--catalog")
        .arg(&catalog)
        .arg("--cache-dir")
        .arg(&args.s3.fetch_options().cache_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if let Some(lib) = &args.engine.ort_library {
        cmd.env("ORT_DYLIB_PATH", lib);
    }
    let (node_cpu, client_cpus) = cpus();
    // SAFETY: between fork and exec the child only calls sched_setaffinity, which is async-signal
    // safe, on its own process.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            pin(0, &[node_cpu]);
            Ok(())
        });
    }
    let mut node = Node(cmd.spawn().context("cannot start the node")?);
    pin(0, &client_cpus);
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(r) = agent.get(&format!("{base}/ready")).call() {
            if r.status() == 200 {
                break;
            }
            let body = r.into_body().read_to_string().unwrap_or_default();
            if !body.contains(" 0 failed") {
                bail!("a model failed to load in the measuring node ({body}): {}", tail(&log));
            }
        }
        if let Ok(Some(status)) = node.0.try_wait() {
            bail!("the measuring node exited ({status}): {}", tail(&log));
        }
        if Instant::now() > deadline {
            bail!("the measuring node was not ready in 600 s: {}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let post = |m: &Measured| -> Result<f64> {
        let t = Instant::now();
        let r = agent
            .post(&format!("{base}/predictions/{}", m.id))
            .send_json(serde_json::json!({ "inputs": m.text }))
            .with_context(|| format!("{}: the request failed", m.id))?;
        let status = r.status().as_u16();
        let mut body = String::new();
        r.into_body().into_reader().read_to_string(&mut body)?;
        if status != 200 {
            bail!("{}: the node answered {status}: {body}", m.id);
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for m in measured.iter() {
        for _ in 0..3 {
            post(m)?;
        }
    }
    let mut order: Vec<usize> =
        (0..measured.len()).flat_map(|i| std::iter::repeat_n(i, args.requests.max(2))).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); measured.len()];
    let cpu0 = cpu_seconds(node.0.id())?;
    for &i in &order {
        times[i].push(post(&measured[i])?);
    }
    let cpu = cpu_seconds(node.0.id())? - cpu0;
    let wall_ms: f64 = times.iter().flatten().sum();
    // The node's CPU time spread over the requests in proportion to their times: what a compute
    // unit is busy with per request (the client's side of each request is left out).
    let scale = (cpu * 1e3 / wall_ms).min(1.0);
    // Per request, one at a time, in the loaded pass's mix (each model weighted by its traffic).
    let means: Vec<f64> = times.iter().map(|t| t.iter().sum::<f64>() / t.len() as f64 * scale).collect();
    let weights = mix(measured);
    let alone_ms = means.iter().zip(&weights).map(|(m, w)| m * w).sum::<f64>();
    // A request costs less under load than one that finds the node idle (threads already awake,
    // requests of a busy model batched together). The same node, open loop (Poisson), the models
    // in the proportions of their peak_rps (the catalog's own mix), first over its capacity: the
    // CPU per answered request of a saturated node is what a request takes off a busy node's
    // queue (`service_ms`: capacity and utilization count it); then at the planned peak (below);
    // then at half the capacity: a request's own time on a lightly loaded node
    // (`light_service_ms`).
    let mut rate = 1.25 * 1000.0 / alone_ms;
    let mut saturated_ms = alone_ms;
    for pass in 0..4 {
        let load = under_load(&base, measured, rate, order.len(), node.0.id(), SATURATED_SECONDS)?;
        let slow = slow_rate(&load.per_second, args.capacity_quantile);
        report_load("saturated", pass, rate, &load, slow);
        // The capacity is what the node answers in its slower seconds (`--capacity-quantile`): a
        // plan at a share of its mean would break whenever the machine slows down (a VM's speed
        // moves by a fifth from one second to the next).
        saturated_ms = match slow {
            Some(slow) if slow > 0.0 => load.ms.max(1000.0 / slow),
            _ => load.ms,
        };
        // Over capacity the node refuses (its bound): a node busy all the time that still keeps
        // up would batch more, and so cost less a request, at a higher rate. It must refuse a
        // share, not a few: a node that refused 4 % was saturated only in some seconds, and in
        // the others it answered what was sent (a capacity no higher than the rate offered).
        if load.refused > SATURATED_REFUSED {
            break;
        }
        if pass == 3 {
            eprintln!(
                "profile: warning: the node never refused over {:.0} % (busy {:.0} % at {rate:.0} requests a second, the last pass); service times are those of that load",
                SATURATED_REFUSED * 100.0,
                load.busy * 100.0
            );
        }
        rate = rate.max(1000.0 / load.ms) * 1.2;
    }
    // At a full node's planned peak (`max_utilization` of that capacity): its P90, with the light
    // pass's, is what the spread is fitted to (`calibrate_spread`). A node that refuses there, or
    // is busy all the time, is over its capacity: the saturated pass's deeper queue batched more
    // than a node at its peak does. Its cost there is then the capacity, measured again.
    let mut full_rate = planned * 1000.0 / saturated_ms;
    let mut full = under_load(&base, measured, full_rate, order.len(), node.0.id(), PEAK_SECONDS)?;
    report_load("planned peak", 0, full_rate, &full, None);
    for pass in 1..3 {
        if full.refused <= 0.005 && full.busy <= 0.98 {
            break;
        }
        saturated_ms = saturated_ms.max(full.ms);
        full_rate = planned * 1000.0 / saturated_ms;
        full = under_load(&base, measured, full_rate, order.len(), node.0.id(), PEAK_SECONDS)?;
        report_load("planned peak", pass, full_rate, &full, None);
    }
    let rate = LIGHT_LOAD * 1000.0 / saturated_ms;
    let load = under_load(&base, measured, rate, order.len(), node.0.id(), LOADED_SECONDS)?;
    report_load("light", 0, rate, &load, None);
    let light_ms = load.ms;
    let light_p90 = (rate, load.p90_ms);
    let (factor, light) = ((saturated_ms / alone_ms).clamp(0.3, 2.0), (light_ms / alone_ms).clamp(0.3, 3.0));
    eprintln!(
        "profile: {alone_ms:.2} ms of CPU a request one at a time, {light_ms:.2} ms at half the node's capacity, {saturated_ms:.2} ms saturated ({:.0} requests a second): service times × {factor:.2}, light × {light:.2}",
        1000.0 / saturated_ms
    );
    for (m, t) in measured.iter_mut().zip(&times) {
        let mean = t.iter().sum::<f64>() / t.len() as f64;
        let var = t.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (t.len() - 1) as f64;
        m.service_ms = mean * scale * factor;
        m.light_service_ms = mean * scale * light;
        m.service_scv = var / (mean * mean);
    }
    calibrate_spread(measured, &[light_p90, (full_rate, full.p90_ms)]);
    node.stop();
    Ok(())
}

/// Each model's spread, timed one request after another, misses what a node adds under load (its
/// other threads on the same core, the OS, requests of other models in between): the node's queue
/// is less regular than theirs. The same extra spread for every model makes up for it, the one
/// for which the latency model (`planner/src/latency.rs`) comes nearest (least squares of the
/// logarithms) the P90s the node was measured with at the `points` (rate in the catalog's mix,
/// P90): at half its capacity and at its planned peak.
fn calibrate_spread(measured: &mut [Measured], points: &[(f64, f64)]) {
    let weights = mix(measured);
    let p90_with = |rate: f64, extra: f64| {
        let streams: Vec<(Stream, f64)> = measured
            .iter()
            .zip(&weights)
            .map(|(m, w)| {
                (Stream { rate: rate * w, mean_ms: m.service_ms, scv: m.service_scv + extra }, m.light_service_ms)
            })
            .collect();
        node_p90(1.0, &streams)
    };
    let points: Vec<(f64, f64)> = points.iter().copied().filter(|(_, p90)| p90.is_finite() && *p90 > 0.0).collect();
    let error = |extra: f64| -> f64 {
        points.iter().map(|&(rate, p90)| (p90_with(rate, extra) / p90).ln().powi(2)).sum::<f64>()
    };
    const MOST: f64 = 8.0;
    // A coarse grid, then a finer one around its best; each point's error computed once.
    let best = |from: f64, to: f64, step: f64| {
        let n = ((to - from) / step).round() as usize;
        (0..=n)
            .map(|i| from + i as f64 * step)
            .map(|x| (x, error(x)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(0.0, |(x, _)| x)
    };
    let extra = if points.is_empty() {
        0.0
    } else {
        let coarse = best(0.0, MOST, 0.1);
        best((coarse - 0.1).max(0.0), (coarse + 0.1).min(MOST), 0.005)
    };
    for &(rate, p90) in &points {
        eprintln!(
            "profile: at {rate:.0} requests a second, P90 {p90:.1} ms measured, {:.1} ms predicted from the spreads one at a time, {:.1} ms with + {extra:.2}",
            p90_with(rate, 0.0),
            p90_with(rate, extra)
        );
    }
    for m in measured.iter_mut() {
        m.service_scv += extra;
    }
}

/// One line on a loaded pass; `slow`, the saturated pass's pace in its slower seconds, is said
/// only where it was counted.
fn report_load(what: &str, pass: usize, rate: f64, load: &Loaded, slow: Option<f64>) {
    eprintln!(
        "profile: {what} (pass {}): {rate:.0} requests a second, node busy {:.0} % of the time, {:.2} ms of CPU a request{}",
        pass + 1,
        load.busy * 100.0,
        load.ms,
        if load.refused > 0.01 {
            format!(
                ", {:.0} % refused (over capacity); answered {:.0} a second{}",
                load.refused * 100.0,
                load.answered_rate,
                slow.map_or(String::new(), |slow| format!(", {slow:.0} in its slower seconds"))
            )
        } else {
            String::new()
        }
    );
}

/// The share of requests a saturated pass's node must refuse: then it was over its capacity in
/// nearly every second, not only in its slower ones.
const SATURATED_REFUSED: f64 = 0.05;
/// The measuring node's bound on a request's wait, in latency targets (see `served`).
const MEASURING_WAIT_MULTIPLE: f64 = 2.0;
/// The shortest loaded pass: the VMs this runs on vary over seconds.
const LOADED_SECONDS: f64 = 10.0;
/// The shortest pass at the planned peak, whose P90 the spread is fitted to: there a slow spell of
/// the machine makes a queue, and one in a 10 s pass made its P90 three times that of a 45 s
/// verification a minute later (BENCHMARKS.md, "Plans that hold"); a spell of some seconds is a
/// third of a 10 s pass's requests, a sixth of a 20 s one's.
const PEAK_SECONDS: f64 = 20.0;
/// The shortest saturated pass: a VM's slow spells last seconds to tens of seconds, so a shorter
/// pass may hold none or only one, and its slower seconds (`--capacity-quantile`) say little (one 40 s
/// trace here: the 20th percentile of an 18 s stretch of it was anywhere in 489–601 answers a
/// second, of a 28 s stretch in 496–503).
const SATURATED_SECONDS: f64 = 30.0;

/// The node at `base` under open-loop Poisson load of `rate` requests a second, each model in
/// proportion to its peak_rps (all alike without traffic), about `requests` requests, for at least
/// `least` seconds.
fn under_load(base: &str, measured: &[Measured], rate: f64, requests: usize, pid: u32, least: f64) -> Result<Loaded> {
    use crate::openloop;
    let seconds = (requests as f64 / rate).max(least);
    let reqs: Vec<openloop::Request> =
        measured.iter().map(|m| openloop::Request::predict(base, &m.id, &m.text)).collect();
    let rates: Vec<f64> = mix(measured).iter().map(|w| rate * w).collect();
    let schedule = openloop::schedule(&rates, seconds, openloop::Arrivals::Poisson, 1);
    let cpu0 = cpu_seconds(pid)?;
    let started = Instant::now();
    let outcomes = openloop::run(&reqs, &schedule, 256, Duration::from_secs(60))?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu0;
    let ok = outcomes.iter().filter(|o| o.status == 200).count();
    // Refusals (429) are the node over capacity; anything else is a fault.
    if let Some(o) = outcomes.iter().find(|o| o.status != 200 && o.status != 429) {
        bail!("the measuring node answered {} under load (status 0: no answer)", o.status);
    }
    let mut answered: Vec<f64> = outcomes.iter().filter(|o| o.status == 200).map(|o| o.latency_ms).collect();
    answered.sort_by(f64::total_cmp);
    // As `stowage verify` reports it (0 without any answer, which the fit leaves out).
    let p90_ms = openloop::percentile(&answered, 0.90);
    Ok(Loaded {
        p90_ms,
        ms: cpu * 1e3 / ok.max(1) as f64,
        busy: cpu / wall,
        refused: (outcomes.len() - ok) as f64 / outcomes.len().max(1) as f64,
        answered_rate: ok as f64 / wall,
        per_second: answers_per_second(&outcomes),
    })
}

/// How many requests were answered (200) in each whole second from the first due time to the
/// last answer, leaving out the first and the last second (the node filling up and draining).
fn answers_per_second(outcomes: &[crate::openloop::Outcome]) -> Vec<u32> {
    let Some(start) = outcomes.iter().map(|o| o.due).min() else {
        return Vec::new();
    };
    let mut counts: Vec<u32> = Vec::new();
    for o in outcomes.iter().filter(|o| o.status == 200) {
        let at = o.due.duration_since(start).unwrap_or_default().as_secs_f64() + o.latency_ms / 1e3;
        let k = at as usize;
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += 1;
    }
    if counts.len() < 3 {
        return Vec::new();
    }
    counts[1..counts.len() - 1].to_vec()
}

/// The `quantile` of the one-second answer counts: the node's pace in its slower seconds (`None`
/// under 5 whole seconds).
fn slow_rate(per_second: &[u32], quantile: f64) -> Option<f64> {
    if per_second.len() < 5 {
        return None;
    }
    let mut sorted: Vec<f64> = per_second.iter().map(|&n| f64::from(n)).collect();
    sorted.sort_by(f64::total_cmp);
    Some(crate::openloop::percentile(&sorted, quantile))
}

/// The measuring node under load: its P90, CPU milliseconds per answered request, the share of
/// the time it was busy, and the share of requests it refused.
struct Loaded {
    /// The answered requests' P90, from when each was due.
    p90_ms: f64,
    ms: f64,
    busy: f64,
    refused: f64,
    /// Answered requests a second over the pass.
    answered_rate: f64,
    /// Answered requests in each whole second (`answers_per_second`); only a node that was
    /// saturated all along answers at its capacity in each second.
    per_second: Vec<u32>,
}

/// Each model's share of the traffic: its peak_rps over the catalog's (all alike without traffic).
fn mix(measured: &[Measured]) -> Vec<f64> {
    let total: f64 = measured.iter().map(|m| m.weight).sum();
    if total > 0.0 {
        measured.iter().map(|m| m.weight / total).collect()
    } else {
        vec![1.0 / measured.len() as f64; measured.len()]
    }
}

/// A catalog of the measured models on their local files and engines, for the measuring node.
fn served_catalog(measured: &[Measured]) -> String {
    let mut s = String::from(
        "[instance_types.\"profile.node\"]\nfamily = \"profile\"\nprice_per_hour = 1\nmemory_gib = 1024\ncompute = 1\n",
    );
    let path = |p: &Path| {
        let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        toml_edit::value(p.display().to_string()).to_string()
    };
    for m in measured {
        s += &format!(
            "\n[[models]]\nid = \"{}\"\nartifact = {}\ntokenizer = {}\npeak_rps = 1\nengine = \"{}\"\nresidency = \"hot\"\n",
            m.id,
            path(&m.files.artifact),
            path(&m.files.tokenizer),
            m.engine
        );
        if let Some(c) = &m.files.config {
            s += &format!("config = {}\n", path(c));
        }
        s += "[models.footprint.profile]\nmemory_mib = 1\nservice_ms = 1\n";
    }
    s
}

/// A child process stopped on drop.
struct Node(Child);

impl Node {
    fn stop(&mut self) {
        // SAFETY: kill sends a signal to our own child's pid.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPU for the measuring node (the last one this process may use) and the others (for this
/// process; the same one on a machine of one CPU).
fn cpus() -> (usize, Vec<usize>) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity fills the set we own.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let allowed: Vec<usize> =
        (0..libc::CPU_SETSIZE as usize).filter(|&c| ok && unsafe { libc::CPU_ISSET(c, &set) }).collect();
    match allowed.split_last() {
        Some((&last, rest)) if !rest.is_empty() => (last, rest.to_vec()),
        Some((&last, _)) => (last, vec![last]),
        None => (0, vec![0]),
    }
}

/// Pins process `pid` (0: this one) to `cpus`; where the system refuses, nothing changes.
fn pin(pid: i32, cpus: &[usize]) {
    // SAFETY: the set is ours; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU seconds (user + system) that process `pid` has used, from /proc.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("cannot read the node's CPU time")?;
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // After the command's ")": state is field 0, utime 11, stime 12.
    Ok((ticks(11) + ticks(12)) / hz.max(1.0))
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// The catalog text with each measured model's `[models.footprint.<family>]` set; other text and
/// comments stay. Relative file paths are made absolute when the output is in another folder.
pub fn write_footprints(text: &str, from: &Path, to: &Path, family: &str, measured: &[Measured]) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("{}: not TOML", from.display()))?;
    let dir = |p: &Path| -> PathBuf {
        let d = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        d.canonicalize().unwrap_or_else(|_| d.to_path_buf())
    };
    let (from_dir, moved) = (dir(from), dir(from) != dir(to));
    let models = doc
        .get_mut("models")
        .and_then(|m| m.as_array_of_tables_mut())
        .with_context(|| format!("{}: models must be [[models]] tables to be rewritten", from.display()))?;
    let by_id: HashMap<&str, &Measured> = measured.iter().map(|m| (m.id.as_str(), m)).collect();
    for table in models.iter_mut() {
        if moved {
            for field in ["artifact", "tokenizer", "config"] {
                let Some(v) = table.get(field).and_then(|v| v.as_str()) else { continue };
                let local = v.strip_prefix("file://").unwrap_or(v);
                if !v.starts_with("s3://") && Path::new(local).is_relative() {
                    table[field] = toml_edit::value(from_dir.join(local).display().to_string());
                }
            }
        }
        let id = table.get("id").and_then(|v| v.as_str()).unwrap_or_default();
        let Some(m) = by_id.get(id) else { continue };
        let footprints = table.entry("footprint").or_insert_with(toml_edit::table);
        let footprints = footprints.as_table_mut().context("footprint must be a table")?;
        footprints.set_implicit(true);
        let fp = footprints.entry(family).or_insert_with(toml_edit::table);
        let fp = fp.as_table_mut().with_context(|| format!("footprint.{family} must be a table"))?;
        fp["memory_mib"] = toml_edit::value(m.memory_bytes.div_ceil(1 << 20).max(1) as i64);
        fp["service_ms"] = toml_edit::value((m.service_ms * 100.0).ceil() / 100.0);
        fp["light_service_ms"] = toml_edit::value((m.light_service_ms * 100.0).ceil() / 100.0);
        fp["service_scv"] = toml_edit::value((m.service_scv * 1000.0).round() / 1000.0);
        fp["load_ms"] = toml_edit::value(m.load_ms.ceil().max(1.0) as i64);
        if m.chosen {
            table["engine"] = toml_edit::value(m.engine.to_string());
        }
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::DEFAULT_CAPACITY_QUANTILE;
    use crate::openloop::Outcome;
    use std::time::UNIX_EPOCH;

    fn answer(due_s: f64, latency_ms: f64, status: u16) -> Outcome {
        Outcome {
            request: 0,
            seq: 0,
            due: UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_secs_f64(due_s),
            latency_ms,
            late_ms: 0.0,
            status,
            error: None,
            bytes_out: 0,
            bytes_in: 0,
        }
    }

    #[test]
    fn capacity_is_the_slower_seconds_answer_count() {
        // Twelve seconds: 100 answers a second, but 50 in seconds 4 and 9; refusals do not count;
        // an answer counts in the second it came, not when it was due.
        let mut outcomes = Vec::new();
        for s in 0..12 {
            let n = if s == 4 || s == 9 { 50 } else { 100 };
            for i in 0..n {
                outcomes.push(answer(s as f64 + i as f64 / n as f64 * 0.9, 50.0, 200));
                outcomes.push(answer(s as f64 + 0.5, 1.0, 429));
            }
        }
        // Due in second 2, answered in second 3.
        outcomes.push(answer(2.99, 20.0, 200));
        let counts = answers_per_second(&outcomes);
        assert_eq!(counts.len(), 10, "the first and last seconds are left out: {counts:?}");
        assert_eq!(counts[2], 101, "{counts:?}");
        assert_eq!(counts.iter().filter(|&&n| n == 50).count(), 2);
        // Two seconds in ten at 50: the 10th and 20th percentiles are slow seconds, the median not.
        assert_eq!(slow_rate(&counts, 0.1), Some(50.0));
        assert_eq!(slow_rate(&counts, DEFAULT_CAPACITY_QUANTILE), Some(50.0));
        assert_eq!(slow_rate(&counts, 0.5), Some(100.0), "the median second");
        // One slow second in six: its 10th percentile; one in eleven: not even that.
        assert_eq!(slow_rate(&counts[4..], 0.1), Some(50.0));
        assert_eq!(slow_rate(&counts[4..], 0.2), Some(100.0));
        assert_eq!(slow_rate(&[100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 50], 0.1), Some(100.0));
        assert_eq!(slow_rate(&counts[..4], 0.1), None, "too few seconds to tell");
        assert!(answers_per_second(&[]).is_empty());
    }
}
