//! The latency target (`slo_p90_ms`) as the planner keeps it. Each node is a queue
//! (`latency.rs`): its compute units serve its models' peak traffic, each with the mean and spread
//! of its service time; cold models' reloads keep the units busy too (at the rate the cold pool is
//! expected to miss, each for the model's load time) though they are not requests. A request's
//! own service time follows the node's load, from its footprint's `light_service_ms` on a quiet
//! node to its `service_ms` on a full one (`own_scale`).
//!
//! Packing with it, in two steps:
//! 1. Per instance type, the utilization the target allows (`type_cap`): the largest share of
//!    the type's compute at which the catalog's traffic mix on its family, scaled to that share,
//!    keeps a P90 within the target. The packing uses it as that type's Cmax (when lower).
//! 2. Every node is then checked as it is (`meets`): its P90 at peak within the tightest target of
//!    its models (the catalog's, or a model's tighter one), and each model's own P90 within its
//!    own. A node that fails gives up models,
//!    those with the most load first, until it passes; they go to nodes that stay within their
//!    limits and pass with them, or to new nodes (`meet_targets`).
//!
//! A model that cannot keep its target even alone on a type is not placed on that type; one that
//! cannot anywhere is refused with the reason.

use std::collections::HashSet;

use stowage_core::catalog::{Catalog, InstanceType, Model};

use crate::cold::ColdWeight;
use crate::latency::{Percentiles, Queue, Stream};

/// A model's requests on a family: its peak traffic and its footprint's service time there.
pub fn stream(model: &Model, family: &str) -> Option<Stream> {
    let fp = model.footprints.get(family)?;
    Some(Stream { rate: model.peak_rps.max(0.0), mean_ms: fp.service_ms, scv: fp.service_scv() })
}

/// A model's requests on a family with their footprint's light service time there.
fn served(model: &Model, family: &str) -> Option<(Stream, f64)> {
    let fp = model.footprints.get(family)?;
    Some((stream(model, family)?, fp.light_service_ms()))
}

/// The utilization (share of capacity) up to which a request's own service takes its light time.
pub const LIGHT_LOAD: f64 = 0.5;

/// How much longer a request's own service is than the time it takes off a busy node's queue, at
/// utilization `u` (share of the node's capacity): `light` (light_service_ms ÷ service_ms) up to
/// `LIGHT_LOAD`, 1 at full load, linear between. A node under load drains its queue faster
/// (batches form, threads stay awake) than it serves a request that finds it idle; the queue's
/// waits are those of its busy rate, and a request adds its own time at the load it meets.
pub fn own_scale(u: f64, light: f64) -> f64 {
    let t = ((1.0 - u) / (1.0 - LIGHT_LOAD)).clamp(0.0, 1.0);
    1.0 + (light - 1.0) * t
}

/// The P90 of a node of `servers` units serving `requests` (streams with their light service
/// times), as the planner predicts it (`stowage profile` fits the spread to a measured one).
pub fn node_p90(servers: f64, requests: &[(Stream, f64)]) -> f64 {
    loaded_queue(servers, requests, &[]).percentiles().p90_ms
}

/// A queue of `servers` units for `requests` (streams with their light service times) and
/// `background` work, its requests' own service scaled to its load (`own_scale`).
fn loaded_queue(servers: f64, requests: &[(Stream, f64)], background: &[Stream]) -> Queue {
    let all: Vec<Stream> = requests.iter().map(|(s, _)| *s).chain(background.iter().copied()).collect();
    let queue = Queue::with_requests(servers, &all, requests.len());
    let busy: f64 = requests.iter().map(|(s, _)| s.rate * s.mean_ms).sum();
    let light: f64 = requests.iter().map(|(s, light)| s.rate * light).sum();
    let ratio = if busy > 0.0 { light / busy } else { 1.0 };
    let u = queue.utilization();
    queue.with_own_scale(own_scale(u, ratio))
}

/// The compute a cold model's reloads take: the pool's expected misses, each for its load time.
fn reloads(model: &Model, family: &str, catalog: &Catalog) -> Option<Stream> {
    let fp = model.footprints.get(family)?;
    let w = ColdWeight::of(model, &catalog.limits);
    Some(Stream { rate: w.misses_per_second, mean_ms: fp.load_ms(), scv: 0.5 })
}

/// The queue of a node of type `it` holding `models` (cold ones as `cold` says).
pub fn queue<'a>(catalog: &Catalog, it: &InstanceType, models: impl Iterator<Item = &'a Model>) -> NodeQueue {
    let mut requests = Vec::new();
    let mut background = Vec::new();
    let mut targets = Vec::new();
    for m in models {
        if let Some(s) = served(m, &it.family) {
            requests.push(s);
            targets.push(m.slo_p90_ms(&catalog.limits));
        }
        if m.is_cold(&catalog.limits) {
            background.extend(reloads(m, &it.family, catalog));
        }
    }
    let queue = loaded_queue(it.compute, &requests, &background);
    NodeQueue { queue, requests: requests.into_iter().map(|(s, _)| s).collect(), targets }
}

/// A node's queue and its models' targets.
pub struct NodeQueue {
    queue: Queue,
    requests: Vec<Stream>,
    targets: Vec<Option<f64>>,
}

impl NodeQueue {
    /// The node's P50 and P90 at peak, over all its requests; `None` at or over capacity.
    pub fn predicted(&self) -> Option<Percentiles> {
        let p = self.queue.percentiles();
        (p.p90_ms.is_finite() && p.p50_ms.is_finite()).then_some(p)
    }

    /// Whether the node's P90 (over all its requests) is within the tightest of its models'
    /// targets, and each model's own P90 within its own (a slow model's requests take longer than
    /// the node's). Models of the same service and target are checked once.
    pub fn meets(&self) -> bool {
        let Some(tightest) = self.targets.iter().flatten().copied().reduce(f64::min) else { return true };
        if self.queue.percentiles().p90_ms > tightest {
            return false;
        }
        let mut seen = HashSet::new();
        self.requests.iter().zip(&self.targets).all(|(s, t)| {
            let Some(t) = t else { return true };
            if !seen.insert((s.mean_ms.to_bits(), s.scv.to_bits(), t.to_bits())) {
                return true;
            }
            self.queue.p90_of(s) <= *t
        })
    }
}

/// The share of compute a node of type `it` may use under the catalog's target: the largest
/// utilization (at most `max_utilization`) at which the catalog's traffic mix on its family,
/// scaled to that utilization, keeps its P90 within `slo_p90_ms`; `max_utilization` without a
/// target.
pub fn type_cap(catalog: &Catalog, it: &InstanceType) -> f64 {
    let cmax = catalog.limits.max_utilization;
    let Some(target) = catalog.limits.slo_p90_ms else { return cmax };
    let mix: Vec<(Stream, f64)> =
        catalog.models.iter().filter_map(|m| served(m, &it.family)).filter(|(s, _)| s.rate > 0.0).collect();
    let work: f64 = mix.iter().map(|(s, _)| s.rate * s.mean_ms / 1000.0).sum();
    if work <= 0.0 {
        return cmax;
    }
    let p90_at = |u: f64| {
        let k = u * it.compute.max(1.0) / work;
        let scaled: Vec<(Stream, f64)> =
            mix.iter().map(|(s, light)| (Stream { rate: s.rate * k, ..*s }, *light)).collect();
        loaded_queue(it.compute, &scaled, &[]).percentiles().p90_ms
    };
    if p90_at(cmax) <= target {
        return cmax;
    }
    largest_within(0.0, cmax, 40, |u| p90_at(u) <= target).max(1e-3)
}

/// The largest x in [lo, hi] for which `ok` holds (it holds at `lo` and, once false, stays
/// false above), to within (hi − lo) / 2^iterations, by bisection.
fn largest_within(mut lo: f64, mut hi: f64, iterations: usize, ok: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..iterations {
        let mid = 0.5 * (lo + hi);
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Whether models keep their targets alone on a node (their own traffic only), remembered by
/// service time, spread, target, compute and light service time: the most traffic such a model
/// may have there. That bound holds where the P90 rises with the traffic, that is where a request
/// alone is no slower than on a busy node (`light_service_ms` ≤ `service_ms`); other models are
/// asked at their own traffic.
#[derive(Default)]
pub struct Alone {
    most: std::collections::HashMap<(u64, u64, u64, u64, u64), f64>,
}

impl Alone {
    /// Whether `model` keeps its target alone on a node of type `it` (always, without a target).
    pub fn meets(&mut self, catalog: &Catalog, model: &Model, it: &InstanceType) -> bool {
        let (Some(target), Some((s, light))) = (model.slo_p90_ms(&catalog.limits), served(model, &it.family)) else {
            return true;
        };
        let p90 =
            |rate: f64| loaded_queue(it.compute, &[(Stream { rate, ..s }, light)], &[]).p90_of(&Stream { rate, ..s });
        if light > s.mean_ms {
            // A request alone takes longer than on a busy node (`own_scale`): the P90 may fall as
            // the traffic rises, so the most traffic within the target does not bound it. Ask at
            // the model's own traffic.
            return p90(s.rate) <= target;
        }
        let key = (it.compute.to_bits(), s.mean_ms.to_bits(), s.scv.to_bits(), target.to_bits(), light.to_bits());
        let most = *self.most.entry(key).or_insert_with(|| {
            let full = it.compute.max(1.0) * 1000.0 / s.mean_ms;
            if p90(full * 1e-6) > target {
                return -1.0;
            }
            largest_within(full * 1e-6, full, 50, |rate| p90(rate) <= target)
        });
        s.rate <= most
    }
}

/// Whether any model has a latency target.
pub fn has_targets(catalog: &Catalog) -> bool {
    catalog.limits.slo_p90_ms.is_some() || catalog.models.iter().any(|m| m.slo_p90_ms.is_some())
}
