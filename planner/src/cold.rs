//! A cold model's weight on its node: the cold pool is an LRU cache whose misses Che's
//! approximation predicts from each model's traffic.

use stowage_core::catalog::{Limits, Model};

/// How a cold model weighs on a node (docs/formats.md, "Cold models"). The cold pool is an LRU
/// cache; by Che's approximation, with a characteristic time T (`cold_window_seconds`) a model
/// of Poisson traffic λ is resident with probability p = 1 − e^(−λT), and a request finds it
/// evicted at the rate λ·e^(−λT). A cold model counts `share` of its memory ((1 + margin) p +
/// 0.02, at most 1: its expected resident memory with `cold_pool_margin`, and 2 % of every cold
/// model), and its traffic plus its expected reloads (misses × load time) as compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdWeight {
    pub share: f64,
    /// Reloads per second the pool is expected to make for the model.
    pub misses_per_second: f64,
}

impl ColdWeight {
    pub fn of(model: &Model, limits: &Limits) -> Self {
        let rate = model.peak_rps.max(0.0);
        let resident = 1.0 - (-rate * limits.cold_window_seconds).exp();
        Self {
            share: ((1.0 + limits.cold_pool_margin) * resident + 0.02).min(1.0),
            misses_per_second: misses_per_second(rate, limits.cold_window_seconds),
        }
    }
}

/// By Che's approximation, how often requests of Poisson traffic λ (`rate`) find their model
/// evicted from an LRU pool of characteristic time `t`: λ·e^(−λt); 0 without traffic (also for an
/// infinite `t`, where 0 · e^(−0·∞) would be no number).
pub fn misses_per_second(rate: f64, t: f64) -> f64 {
    if rate > 0.0 {
        rate * (-rate * t).exp()
    } else {
        0.0
    }
}

/// Che's characteristic time of an LRU pool of `pool_mib` shared by `models` (memory in MiB,
/// requests per second): the T at which their expected resident memory Σ s·(1 − e^(−λT)) fills
/// the pool; infinite when the pool holds them all.
pub fn characteristic_time(models: &[(f64, f64)], pool_mib: f64) -> f64 {
    let resident = |t: f64| models.iter().map(|&(s, l)| s * (1.0 - (-l * t).exp())).sum::<f64>();
    if models.iter().map(|m| m.0).sum::<f64>() <= pool_mib + 1e-9 {
        return f64::INFINITY;
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while resident(hi) < pool_mib {
        lo = hi;
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if resident(mid) < pool_mib {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}
