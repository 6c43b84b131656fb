//! What response times a node will give at its planned peak: the node as a queue with `c`
//! servers (its compute units; a node runs one inference per unit at a time), Poisson arrivals at
//! the planned rates, FIFO, and each model's service time a gamma distribution with the mean and
//! squared coefficient of variation (SCV) of its footprint.
//!
//! The model (M/G/c by Allen–Cunneen, with an exponential waiting tail):
//! - offered load a = λ·E[S] (in servers), utilization ρ = a / c; the probability of waiting is
//!   Erlang's C(c, a), as in M/M/c;
//! - the wait of a request that waits is exponential with mean E[S] / (c − a) · (1 + cs²) / 2,
//!   where cs² is the SCV of the node's mixture of service times: the Allen–Cunneen
//!   approximation of E[Wq] (Kingman's heavy-traffic form for c = 1), spread as M/M/c spreads it;
//! - a request of model i takes Wq + S_i; its distribution is computed exactly for a gamma S_i
//!   (the incomplete gamma function), and the node's is the traffic-weighted mixture.
//!
//! `tests/latency.rs` checks it against a discrete-event simulation over a grid of servers, loads
//! and spreads; BENCHMARKS.md against a real node.

use statrs::function::gamma::{gamma_lr, ln_gamma};

/// One model's traffic and service on a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stream {
    /// Requests per second.
    pub rate: f64,
    /// Mean service time, in milliseconds of one compute unit.
    pub mean_ms: f64,
    /// Squared coefficient of variation of the service time (0: always the same).
    pub scv: f64,
}

/// A node's queue: its servers and what arrives.
#[derive(Debug, Clone)]
pub struct Queue {
    servers: f64,
    streams: Vec<Stream>,
    /// The streams that are requests (the first ones); the rest is other work that keeps the
    /// servers busy (a cold model's reloads).
    requests: usize,
    /// Probability that a request waits (Erlang C), and the rate of the waiting time's
    /// exponential tail (per ms); `None` when the node is at or over capacity.
    wait: Option<(f64, f64)>,
    /// A request's own service time is its stream's mean times this (1: the same time it takes
    /// off the queue; see `with_own_scale`).
    own_scale: f64,
}

/// Percentiles of a response time, in milliseconds (infinite at or over capacity).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
}

impl Queue {
    /// `servers` compute units (at least one) serving `streams` (streams without traffic are left out).
    pub fn new(servers: f64, streams: &[Stream]) -> Self {
        Self::with_requests(servers, streams, streams.len())
    }

    /// As `new`, where only the first `requests` streams are requests: the others take the
    /// servers' time (and so make requests wait) but have no response time of their own.
    pub fn with_requests(servers: f64, streams: &[Stream], requests: usize) -> Self {
        // Streams of the same service (mean and spread) are one stream of their summed traffic:
        // the same queue, computed once (packed nodes hold many models of a few sizes).
        let merge = |part: &[Stream]| {
            let mut out: Vec<Stream> = Vec::new();
            for s in part.iter().filter(|s| s.rate > 0.0 && s.mean_ms > 0.0) {
                match out.iter_mut().find(|o| o.mean_ms == s.mean_ms && o.scv == s.scv) {
                    Some(o) => o.rate += s.rate,
                    None => out.push(*s),
                }
            }
            out
        };
        let split = requests.min(streams.len());
        let mut merged = merge(&streams[..split]);
        let requests_left = merged.len();
        merged.extend(merge(&streams[split..]));
        let streams = merged;
        let servers = servers.max(1.0);
        let rate: f64 = streams.iter().map(|s| s.rate).sum();
        let wait = if rate == 0.0 {
            Some((0.0, 1.0))
        } else {
            let mean = streams.iter().map(|s| s.rate * s.mean_ms).sum::<f64>() / rate;
            let second = streams.iter().map(|s| s.rate * s.mean_ms * s.mean_ms * (1.0 + s.scv)).sum::<f64>() / rate;
            let scv = (second / (mean * mean) - 1.0).max(0.0);
            let load = rate * mean / 1000.0;
            (load < servers).then(|| {
                let tail = (servers - load) / mean * 2.0 / (1.0 + scv);
                (erlang_c(servers, load), tail)
            })
        };
        Self { servers, streams, requests: requests_left, wait, own_scale: 1.0 }
    }

    /// The same queue where a request's own service time (what it adds to its wait) is `scale`
    /// times its stream's mean, while the queue still drains at the streams' means: a node that
    /// batches and keeps its threads awake under load serves a queue faster than it serves a
    /// request that finds it idle (`slo.rs` says how the scale follows the load).
    pub fn with_own_scale(mut self, scale: f64) -> Self {
        self.own_scale = scale.max(0.0);
        self
    }

    /// Utilization: the share of the servers' time the traffic takes.
    pub fn utilization(&self) -> f64 {
        self.streams.iter().map(|s| s.rate * s.mean_ms / 1000.0).sum::<f64>() / self.servers
    }

    /// P(a request of `s` takes longer than `x` ms).
    fn exceeds(&self, s: &Stream, x: f64) -> f64 {
        let Some((waits, tail)) = self.wait else { return 1.0 };
        let service = Gamma::of(&Stream { mean_ms: s.mean_ms * self.own_scale, ..*s });
        (1.0 - waits) * service.exceeds(x) + waits * service.plus_exponential_exceeds(tail, x)
    }

    /// The time that a share `q` of the requests of `streams` (traffic-weighted) take at most.
    fn quantile(&self, streams: &[Stream], q: f64) -> f64 {
        let rate: f64 = streams.iter().map(|s| s.rate).sum();
        if self.wait.is_none() {
            return f64::INFINITY;
        }
        if streams.is_empty() || rate == 0.0 {
            return 0.0;
        }
        let over = |x: f64| streams.iter().map(|s| s.rate / rate * self.exceeds(s, x)).sum::<f64>();
        let longest = streams.iter().map(|s| s.mean_ms * self.own_scale).fold(0.0, f64::max);
        let (mut lo, mut hi) = (0.0, longest.max(1e-3));
        while over(hi) > 1.0 - q {
            lo = hi;
            hi *= 2.0;
            if hi > 1e9 {
                return f64::INFINITY;
            }
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if over(mid) > 1.0 - q {
                lo = mid;
            } else {
                hi = mid;
            }
            if hi - lo < 1e-4 * hi {
                break;
            }
        }
        hi
    }

    /// The node's P50 and P90 over all its requests.
    pub fn percentiles(&self) -> Percentiles {
        let requests = &self.streams[..self.requests];
        Percentiles { p50_ms: self.quantile(requests, 0.5), p90_ms: self.quantile(requests, 0.9) }
    }

    /// The P90 of the requests of one of its streams.
    pub fn p90_of(&self, s: &Stream) -> f64 {
        self.quantile(std::slice::from_ref(s), 0.9)
    }
}

/// Erlang's C: the probability that an arrival waits in an M/M/c queue with `servers` servers and
/// offered load `load` (< servers). Non-integer servers are rounded down for the recursion and
/// the load scaled to keep the same utilization.
pub fn erlang_c(servers: f64, load: f64) -> f64 {
    let c = servers.floor().max(1.0);
    let a = load * c / servers;
    // Erlang B by its stable recursion, then C from B.
    let mut b = 1.0;
    for k in 1..=(c as usize) {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c;
    (b / (1.0 - rho * (1.0 - b))).clamp(0.0, 1.0)
}

/// A gamma-distributed service time (shape k, scale θ, in ms); near-constant ones (SCV ≈ 0) as a
/// fixed time.
struct Gamma {
    mean: f64,
    shape: f64,
    scale: f64,
    /// ln Γ(shape).
    ln_gamma: f64,
}

/// Above this shape (SCV under 1/400) the service time is taken as fixed.
const FIXED_SHAPE: f64 = 400.0;

impl Gamma {
    fn of(s: &Stream) -> Self {
        let shape = if s.scv > 0.0 { (1.0 / s.scv).min(FIXED_SHAPE) } else { FIXED_SHAPE };
        Self { mean: s.mean_ms, shape, scale: s.mean_ms / shape, ln_gamma: ln_gamma(shape) }
    }

    fn fixed(&self) -> bool {
        self.shape >= FIXED_SHAPE
    }

    fn cdf(&self, x: f64) -> f64 {
        if x <= 0.0 {
            return 0.0;
        }
        if self.fixed() {
            return if x >= self.mean { 1.0 } else { 0.0 };
        }
        gamma_lr(self.shape, x / self.scale)
    }

    fn exceeds(&self, x: f64) -> f64 {
        1.0 - self.cdf(x)
    }

    /// P(S + E > x) for E exponential of rate `r` (per ms), independent of S:
    /// P(S > x) + e^(−r·x)·E[e^(r·S); S ≤ x].
    fn plus_exponential_exceeds(&self, r: f64, x: f64) -> f64 {
        if x <= 0.0 {
            return 1.0;
        }
        if self.fixed() {
            return if x < self.mean { 1.0 } else { (-r * (x - self.mean)).exp() };
        }
        let (k, b) = (self.shape, self.scale);
        let tilted = if r * b < 0.999 {
            // E[e^(rS); S ≤ x] = (1 − r·b)^(−k) · P(Gamma(k, b / (1 − r·b)) ≤ x), in logs.
            let log_factor = -k * (1.0 - r * b).ln() - r * x;
            log_factor.exp() * gamma_lr(k, x * (1.0 - r * b) / b)
        } else {
            self.tilted_series(r, x).unwrap_or_else(|| simpson(|s| (r * (s - x)).exp() * self.pdf(s), 0.0, x, 512))
        };
        (self.exceeds(x) + tilted).min(1.0)
    }

    /// e^(−r·x)·E[e^(rS); S ≤ x] where the tilt does not converge (r·b ≥ 1, or nearly): with
    /// z = (r − 1/b)·x, ∫₀ˣ s^(k−1) e^(s(r − 1/b)) ds = x^k Σₙ zⁿ / (n! (k + n)) (Kummer's series),
    /// scaled by e^(−r·x) / (Γ(k) b^k). `None` where the series would take too long or lose
    /// precision (a numerical integration answers there).
    fn tilted_series(&self, r: f64, x: f64) -> Option<f64> {
        let (k, b) = (self.shape, self.scale);
        let z = (r - 1.0 / b) * x;
        if !(-1.0..=600.0).contains(&z) {
            return None;
        }
        // The terms grow until n ≈ z, then fall geometrically; summed with the largest scaled out.
        let (mut term, mut sum, mut n) = (1.0 / k, 1.0 / k, 0.0);
        let mut log_scale = 0.0;
        loop {
            n += 1.0;
            term *= z / n * (k + n - 1.0) / (k + n);
            sum += term;
            if sum.abs() > 1e200 {
                log_scale += sum.abs().ln();
                term /= sum.abs();
                sum = sum.signum();
            }
            if n > z && term.abs() < 1e-13 * sum.abs() {
                break;
            }
            if n > 2000.0 {
                return None;
            }
        }
        let log = -r * x + k * x.ln() - self.ln_gamma - k * b.ln() + log_scale;
        (sum > 0.0).then(|| (log + sum.ln()).exp())
    }

    fn pdf(&self, s: f64) -> f64 {
        if s <= 0.0 {
            return 0.0;
        }
        let (k, b) = (self.shape, self.scale);
        ((k - 1.0) * s.ln() - s / b - self.ln_gamma - k * b.ln()).exp()
    }
}

fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
    let n = n + n % 2;
    let h = (b - a) / n as f64;
    let mut sum = f(a) + f(b);
    for i in 1..n {
        sum += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    sum * h / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(rate: f64, mean_ms: f64, scv: f64) -> Vec<Stream> {
        vec![Stream { rate, mean_ms, scv }]
    }

    #[test]
    fn erlang_c_matches_known_values() {
        // M/M/1: the probability of waiting is the utilization.
        assert!((erlang_c(1.0, 0.7) - 0.7).abs() < 1e-12);
        // M/M/2 at a = 1.5: C = 0.6428…
        assert!((erlang_c(2.0, 1.5) - 0.642857).abs() < 1e-5);
    }

    #[test]
    fn an_m_m_1_queue_has_its_textbook_response_time() {
        // M/M/1: the response time is exponential with rate μ − λ: P90 = ln 10 / (μ − λ).
        let q = Queue::new(1.0, &one(50.0, 10.0, 1.0));
        let want = 10f64.ln() / (100.0 - 50.0) * 1000.0;
        assert!((q.percentiles().p90_ms - want).abs() < 0.01 * want, "{:?} vs {want}", q.percentiles());
        let median = 2f64.ln() / 50.0 * 1000.0;
        assert!((q.percentiles().p50_ms - median).abs() < 0.01 * median);
    }

    #[test]
    fn idle_full_and_overloaded_nodes() {
        let idle = Queue::new(2.0, &one(0.0, 10.0, 0.5));
        assert_eq!(idle.percentiles(), Percentiles { p50_ms: 0.0, p90_ms: 0.0 });
        let lone = Queue::new(1.0, &one(0.001, 10.0, 0.0));
        assert!((lone.percentiles().p90_ms - 10.0).abs() < 0.01, "{:?}", lone.percentiles());
        assert!(Queue::new(1.0, &one(100.0, 10.0, 0.5)).percentiles().p90_ms.is_infinite());
        assert!(Queue::new(1.0, &one(120.0, 10.0, 0.5)).percentiles().p90_ms.is_infinite());
    }

    #[test]
    fn the_series_for_a_diverging_tilt_matches_integration() {
        // Exponential service (k = 1): e^(−rx)∫₀ˣ μe^((r−μ)s) ds = μ(e^(−μx) − e^(−rx)) / (r − μ).
        for (mean, r, x) in [(10.0, 0.2, 5.0), (10.0, 0.2, 40.0), (4.0, 1.0, 30.0), (10.0, 0.1001, 25.0)] {
            let g = Gamma::of(&Stream { rate: 1.0, mean_ms: mean, scv: 1.0 });
            let mu = 1.0 / mean;
            let want = mu * ((-mu * x).exp() - (-r * x).exp()) / (r - mu);
            let got = g.tilted_series(r, x).unwrap();
            assert!((got - want).abs() < 1e-9 * want.max(1e-12) + 1e-15, "k 1 r {r} x {x}: {got} vs {want}");
        }
        // Other shapes: against a fine numerical integration.
        for scv in [0.5, 0.2, 0.05] {
            for (r, x) in [(0.999, 8.0), (1.0, 40.0), (2.0, 15.0), (10.0, 30.0)] {
                let g = Gamma::of(&Stream { rate: 1.0, mean_ms: 10.0, scv });
                let r = r / g.scale;
                let want = simpson(|s| (r * (s - x)).exp() * g.pdf(s), 0.0, x, 200_000);
                let got = g.tilted_series(r, x).unwrap();
                assert!((got - want).abs() < 1e-6 * want + 1e-12, "scv {scv} r {r} x {x}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn more_load_and_more_spread_take_longer() {
        let p90 = |rate, scv| Queue::new(1.0, &one(rate, 10.0, scv)).percentiles().p90_ms;
        assert!(p90(30.0, 0.5) < p90(60.0, 0.5) && p90(60.0, 0.5) < p90(90.0, 0.5));
        assert!(p90(80.0, 0.1) < p90(80.0, 1.0) && p90(80.0, 1.0) < p90(80.0, 3.0));
        // More servers at the same utilization wait less.
        let four = Queue::new(4.0, &one(320.0, 10.0, 0.5)).percentiles().p90_ms;
        assert!(four < p90(80.0, 0.5), "{four}");
    }
}
