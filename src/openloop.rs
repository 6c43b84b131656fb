//! Open-loop load: requests leave on a schedule whatever the server does, and each latency is
//! counted from the request's scheduled time, as vegeta's `attack -rate` and wrk2 count it. A
//! closed-loop client (a fixed number of clients, each waiting for its answer) slows down with a
//! slow server and so never sees the queue that builds at a given arrival rate: coordinated
//! omission. Used by `stowage attack --rate` and `stowage verify`.
//!
//! At most `connections` requests are in flight; a request due while all are busy waits for one,
//! and that wait is in its latency (the server is not keeping up) and in the client's lateness
//! (how late it left), which the report shows so that a client that fell behind is not mistaken
//! for the server's capacity.

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrivals {
    /// Evenly, 1/rate apart.
    Constant,
    /// A Poisson process: exponential gaps of mean 1/rate.
    Poisson,
}

/// One request to send, as often as the schedule says.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// `POST {base}/predictions/{model}` with `{"inputs": text}`.
    pub fn predict(base: &str, model: &str, text: &str) -> Self {
        Self {
            method: "POST".into(),
            url: format!("{}/predictions/{model}", base.trim_end_matches('/')),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::json!({ "inputs": text }).to_string().into_bytes(),
        }
    }
}

/// When to send which request: (seconds from the start, request index), in time order.
pub type Schedule = Vec<(f64, usize)>;

/// Arrival times for streams of `rates` (per second) over `seconds`, merged: each stream its own
/// process (seeded), tagged with its index.
pub fn schedule(rates: &[f64], seconds: f64, arrivals: Arrivals, seed: u64) -> Schedule {
    let mut out = Vec::new();
    for (k, &rate) in rates.iter().enumerate() {
        if rate <= 0.0 {
            continue;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(k as u64 * 0x9e37_79b9));
        let mut t = match arrivals {
            // Evenly spaced streams start at a random phase, so streams of the same rate do not
            // all arrive together.
            Arrivals::Constant => rng.random::<f64>() / rate,
            Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() / rate,
        };
        while t < seconds {
            out.push((t, k));
            t += match arrivals {
                Arrivals::Constant => 1.0 / rate,
                Arrivals::Poisson => -(1.0 - rng.random::<f64>()).ln() / rate,
            };
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

/// What happened to one scheduled request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its request's index.
    pub request: usize,
    /// Its place in the schedule.
    pub seq: usize,
    /// When it was due (wall clock, for vegeta's results).
    pub due: SystemTime,
    /// Milliseconds from when it was due to its answer (or its failure).
    pub latency_ms: f64,
    /// Milliseconds it left after it was due (waiting for a connection, or a busy client).
    pub late_ms: f64,
    /// The HTTP status; 0 when no answer came.
    pub status: u16,
    pub error: Option<String>,
    pub bytes_out: usize,
    pub bytes_in: usize,
}

/// Sends `requests` on `schedule` with at most `connections` in flight, each answer awaited at
/// most `timeout`; returns every outcome, in schedule order.
pub fn run(requests: &[Request], schedule: &Schedule, connections: usize, timeout: Duration) -> Result<Vec<Outcome>> {
    let requests: Rc<Vec<Request>> = Rc::new(requests.to_vec());
    let connections = connections.max(1);
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .connector(awc::Connector::new().limit(connections))
            .timeout(timeout)
            .disable_redirects()
            .finish();
        let slots = Rc::new(tokio::sync::Semaphore::new(connections));
        let start = Instant::now();
        let wall = SystemTime::now();
        let mut tasks = Vec::with_capacity(schedule.len());
        for (seq, &(at, k)) in schedule.iter().enumerate() {
            let due = start + Duration::from_secs_f64(at);
            tokio::time::sleep_until(due.into()).await;
            let (client, slots, requests) = (client.clone(), slots.clone(), requests.clone());
            tasks.push(actix_web::rt::spawn(async move {
                let _slot = slots.acquire().await;
                let left = Instant::now();
                let r = &requests[k];
                let method = awc::http::Method::from_bytes(r.method.as_bytes()).unwrap_or(awc::http::Method::GET);
                let mut req = client.request(method, &r.url);
                for (name, value) in &r.headers {
                    req = req.insert_header((name.as_str(), value.as_str()));
                }
                let (status, bytes_in, error) = match req.send_body(r.body.clone()).await {
                    Ok(mut resp) => match resp.body().limit(64 << 20).await {
                        Ok(b) => (resp.status().as_u16(), b.len(), None),
                        Err(e) => (resp.status().as_u16(), 0, Some(format!("reading the body: {e}"))),
                    },
                    Err(e) => (0, 0, Some(e.to_string())),
                };
                let done = Instant::now();
                Outcome {
                    request: k,
                    seq,
                    due: wall + due.duration_since(start),
                    latency_ms: done.duration_since(due).as_secs_f64() * 1e3,
                    late_ms: left.saturating_duration_since(due).as_secs_f64() * 1e3,
                    status,
                    error,
                    bytes_out: r.body.len(),
                    bytes_in,
                }
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await.context("a request task failed")?);
        }
        Ok(out)
    })
}

/// Latency percentiles of outcomes, in milliseconds (0 without any).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
}

/// A summary of outcomes: what was sent and answered, the latency percentiles (from the
/// scheduled times), the status codes, and how far behind the client fell.
pub fn summary(outcomes: &[&Outcome], seconds: f64) -> serde_json::Value {
    let mut lat: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    let mut late: Vec<f64> = outcomes.iter().map(|o| o.late_ms).collect();
    late.sort_by(f64::total_cmp);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for o in outcomes {
        let key = if o.status == 0 { "error".to_string() } else { o.status.to_string() };
        *codes.entry(key).or_default() += 1;
    }
    let ok = codes.get("200").copied().unwrap_or(0);
    let behind = outcomes.iter().filter(|o| o.late_ms > BEHIND_MS).count();
    serde_json::json!({
        "requests": outcomes.len(),
        "sent_rps": outcomes.len() as f64 / seconds,
        "ok_rps": ok as f64 / seconds,
        "latency_ms": {
            "p50": percentile(&lat, 0.50), "p90": percentile(&lat, 0.90), "p95": percentile(&lat, 0.95),
            "p99": percentile(&lat, 0.99), "max": lat.last().copied().unwrap_or(0.0),
        },
        "status_codes": codes,
        "client": {"late_p99_ms": percentile(&late, 0.99), "late_max_ms": late.last().copied().unwrap_or(0.0), "behind": behind},
    })
}

/// A request that leaves later than this after it was due counts as the client falling behind.
pub const BEHIND_MS: f64 = 10.0;

/// Results in vegeta's CSV format (its `NewCSVDecoder`: nine columns — time due in ns since the
/// epoch, status code (0 when none came), latency in ns, bytes out, bytes in, error, base64 body
/// (left empty), attack name, sequence number), which `vegeta report` and `vegeta plot` read.
pub fn vegeta_csv(outcomes: &[Outcome], attack: &str) -> String {
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::with_capacity(outcomes.len() * 64);
    for o in outcomes {
        let ns = o.due.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let latency = (o.latency_ms * 1e6).round() as u64;
        let error = quote(o.error.as_deref().unwrap_or(""));
        out.push_str(&format!(
            "{ns},{},{latency},{},{},{error},,{attack},{}\n",
            o.status, o.bytes_out, o.bytes_in, o.seq
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_keep_their_rates_and_order() {
        let s = schedule(&[50.0, 10.0], 20.0, Arrivals::Poisson, 3);
        assert!(s.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        let count = |k: usize| s.iter().filter(|x| x.1 == k).count() as f64;
        assert!((count(0) / 20.0 - 50.0).abs() < 5.0, "{}", count(0));
        assert!((count(1) / 20.0 - 10.0).abs() < 2.5, "{}", count(1));
        let c = schedule(&[100.0], 1.0, Arrivals::Constant, 1);
        assert_eq!(c.len(), 100);
        assert!(c.windows(2).all(|w| (w[1].0 - w[0].0 - 0.01).abs() < 1e-9));
        assert_eq!(schedule(&[5.0], 2.0, Arrivals::Poisson, 9), schedule(&[5.0], 2.0, Arrivals::Poisson, 9));
    }
}
