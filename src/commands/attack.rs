//! `stowage attack`: a load generator over vegeta-format targets, for machines without vegeta.
//! With `--rate`, open loop (`openloop.rs`): the targets in turn at that rate whatever the server
//! does, each latency from its scheduled time. Without it, closed loop: N threads each send the
//! next target as soon as their last answer came. Every latency is kept, so percentiles are exact.
//! The report says how much of the machine the client itself used (and, open loop, how late its
//! requests left), so that a step where the client, not the server, was the bottleneck can be
//! refused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use crate::cli::AttackArgs;
use crate::openloop::{self, Outcome, Request};

#[derive(Deserialize)]
struct Target {
    method: String,
    url: String,
    #[serde(default)]
    header: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    body: String,
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

pub fn run(args: &AttackArgs) -> Result<()> {
    ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    ensure!(args.duration > 0.0, "--duration must be positive");
    if let Some(rate) = args.rate {
        ensure!(rate.is_finite() && rate > 0.0, "--rate must be a positive number of requests a second");
        ensure!(args.connections >= 1, "--connections must be at least 1");
    }
    let text =
        std::fs::read_to_string(&args.targets).with_context(|| format!("cannot read {}", args.targets.display()))?;
    let mut targets = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let t: Target = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a vegeta JSON target", args.targets.display(), i + 1))?;
        let body = base64::engine::general_purpose::STANDARD
            .decode(&t.body)
            .with_context(|| format!("{}:{}: body is not base64", args.targets.display(), i + 1))?;
        let headers = t.header.into_iter().flat_map(|(k, vs)| vs.into_iter().map(move |v| (k.clone(), v))).collect();
        targets.push(Request { method: t.method, url: t.url, headers, body });
    }
    ensure!(!targets.is_empty(), "{} has no targets", args.targets.display());
    if let Some(rate) = args.rate {
        return open_loop(args, rate, &targets);
    }
    let targets = Arc::new(targets);
    let next = Arc::new(AtomicUsize::new(0));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs_f64(args.timeout)))
        .http_status_as_error(false)
        .max_idle_connections_per_host(args.concurrency.max(8))
        .build()
        .into();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (targets, next, agent) = (targets.clone(), next.clone(), agent.clone());
            std::thread::spawn(move || {
                let mut seen: Vec<Outcome> = Vec::new();
                while Instant::now() < deadline {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let request = seq % targets.len();
                    let t = &targets[request];
                    let sent = std::time::SystemTime::now();
                    let began = Instant::now();
                    let result = if t.method == "GET" {
                        let mut r = agent.get(&t.url);
                        for (k, v) in &t.headers {
                            r = r.header(k, v);
                        }
                        r.call()
                    } else {
                        let mut r = agent.post(&t.url);
                        for (k, v) in &t.headers {
                            r = r.header(k, v);
                        }
                        r.send(&t.body[..])
                    };
                    let (status, bytes_in, error) = match result {
                        Ok(mut resp) => {
                            let n = resp.body_mut().read_to_vec().map_or(0, |b| b.len());
                            (resp.status().as_u16(), n, None)
                        }
                        Err(e) => (0, 0, Some(e.to_string())),
                    };
                    // Closed loop: each request is due when it is sent, never late.
                    seen.push(Outcome {
                        request,
                        seq,
                        due: sent,
                        latency_ms: began.elapsed().as_secs_f64() * 1000.0,
                        late_ms: 0.0,
                        status,
                        error,
                        bytes_out: t.body.len(),
                        bytes_in,
                    });
                }
                seen
            })
        })
        .collect();
    let mut all: Vec<Outcome> = Vec::new();
    for w in workers {
        all.extend(w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?);
    }
    if let Some(path) = &args.vegeta_results {
        all.sort_by_key(|s| s.seq);
        std::fs::write(path, openloop::vegeta_csv(&all, "stowage"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for s in &all {
        // A request that got no answer counts under its error.
        let code = match &s.error {
            Some(e) if s.status == 0 => format!("error: {e}"),
            _ => s.status.to_string(),
        };
        *codes.entry(code).or_default() += 1;
    }
    let mut lat: Vec<f64> = all.iter().map(|x| x.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() as f64 * p).ceil() as usize).saturating_sub(1).min(lat.len() - 1)]
        }
    };
    let ok = codes.get("200").copied().unwrap_or(0);
    let report = serde_json::json!({
        "generator": "stowage attack",
        "concurrency": args.concurrency,
        "duration_s": wall,
        "requests": all.len(),
        "throughput_rps": ok as f64 / wall,
        "success_ratio": if all.is_empty() { 0.0 } else { ok as f64 / all.len() as f64 },
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p95": pct(0.95), "p99": pct(0.99), "max": lat.last().copied().unwrap_or(0.0)},
        "status_codes": codes,
        "client_cpu_share": (cpu_seconds() - cpu0) / (wall * cpus),
    });
    println!("{report}");
    Ok(())
}

/// `--rate`: the targets in turn, on schedule; the report as the closed loop's, with the rate
/// asked and sent and how late requests left.
fn open_loop(args: &AttackArgs, rate: f64, requests: &[Request]) -> Result<()> {
    let n = requests.len();
    let schedule: openloop::Schedule = openloop::schedule(&[rate], args.duration, args.arrivals, 1)
        .into_iter()
        .enumerate()
        .map(|(seq, (at, _))| (at, seq % n))
        .collect();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let outcomes = openloop::run(requests, &schedule, args.connections, Duration::from_secs_f64(args.timeout))?;
    let wall = start.elapsed().as_secs_f64();
    if let Some(path) = &args.vegeta_results {
        std::fs::write(path, openloop::vegeta_csv(&outcomes, "stowage"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let all: Vec<&Outcome> = outcomes.iter().collect();
    let mut s = openloop::summary(&all, args.duration);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let behind = s["client"]["behind"].as_u64().unwrap_or(0);
    let lat = s["latency_ms"].clone();
    let codes = s["status_codes"].clone();
    let report = serde_json::json!({
        "generator": "stowage attack",
        "mode": "open loop",
        "rate": rate,
        "arrivals": format!("{:?}", args.arrivals).to_lowercase(),
        "connections": args.connections,
        "duration_s": args.duration,
        "wall_s": wall,
        "requests": outcomes.len(),
        "sent_rps": s["sent_rps"],
        "throughput_rps": s["ok_rps"],
        "success_ratio": if outcomes.is_empty() { 0.0 } else { codes.get("200").and_then(|v| v.as_u64()).unwrap_or(0) as f64 / outcomes.len() as f64 },
        "latency_ms": lat,
        "status_codes": codes,
        "client": s["client"].take(),
        "client_cpu_share": (cpu_seconds() - cpu0) / (wall * cpus),
    });
    println!("{report}");
    if behind as f64 > 0.01 * outcomes.len() as f64 {
        eprintln!(
            "attack: the client fell behind: {behind} of {} requests left more than {} ms after their time (all {} connections busy, or this machine too busy); their wait is in their latency",
            outcomes.len(),
            openloop::BEHIND_MS,
            args.connections
        );
    }
    Ok(())
}
