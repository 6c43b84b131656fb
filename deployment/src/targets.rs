//! `stowage targets`: load-test targets for a plan, in vegeta's JSON format (one object per line:
//! method, url, header, base64 body), covering every model of the plan.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stowage_core::Plan;

/// Where each model answers.
#[derive(Debug, Clone)]
pub enum BaseUrls {
    /// model id → node base URL (scripts/deploy.sh's routes.json).
    Routes(BTreeMap<String, String>),
    /// In-cluster DNS names: `http://<node>.<namespace>.svc.cluster.local:8080`.
    Cluster { namespace: String },
    /// One URL in front of every model (the Ingress).
    Single(String),
}

/// How requests are spread over the models.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Order {
    /// Every model once, then again, in a shuffled order.
    Random,
    /// Model popularity follows Zipf's law with exponent s (a few hot models, a long tail).
    Zipf(f64),
}

/// One vegeta target.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Target {
    pub method: String,
    pub url: String,
    pub header: BTreeMap<String, Vec<String>>,
    /// base64 of the JSON body.
    pub body: String,
}

/// The model of each request: every model at least once (so every route is exercised), then by
/// `order`, `count` in all (at least the number of models).
pub fn sequence(models: &[String], count: usize, order: Order, seed: u64) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out: Vec<String> = models.to_vec();
    // Fisher–Yates.
    for i in (1..out.len()).rev() {
        out.swap(i, rng.random_range(0..=i));
    }
    let n = models.len();
    if n == 0 {
        return out;
    }
    match order {
        Order::Random => {
            while out.len() < count {
                out.push(models[rng.random_range(0..n)].clone());
            }
        }
        Order::Zipf(s) => {
            // Popularity rank is a random permutation of the models, so hot models sit on any node.
            let mut ranked = models.to_vec();
            for i in (1..n).rev() {
                ranked.swap(i, rng.random_range(0..=i));
            }
            let weights: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
            let total: f64 = weights.iter().sum();
            let cdf: Vec<f64> = weights
                .iter()
                .scan(0.0, |acc, w| {
                    *acc += w / total;
                    Some(*acc)
                })
                .collect();
            while out.len() < count {
                let u: f64 = rng.random();
                let k = cdf.partition_point(|&c| c < u).min(n - 1);
                out.push(ranked[k].clone());
            }
        }
    }
    out
}

/// A model of the plan that the route map does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the route map has no URL for model {0:?}")]
pub struct NoRoute(pub String);

/// The targets for `plan`: POST `{"inputs": text}` to each model's route.
pub fn targets(
    plan: &Plan,
    urls: &BaseUrls,
    count: usize,
    order: Order,
    seed: u64,
    text: &str,
) -> Result<Vec<Target>, NoRoute> {
    let mut node_of: BTreeMap<&str, &str> = BTreeMap::new();
    for n in &plan.nodes {
        for m in &n.models {
            node_of.insert(m, &n.id);
        }
    }
    let models: Vec<String> = node_of.keys().map(|m| m.to_string()).collect();
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(serde_json::json!({ "inputs": text }).to_string());
    let header = BTreeMap::from([("Content-Type".to_string(), vec!["application/json".to_string()])]);
    sequence(&models, count, order, seed)
        .into_iter()
        .map(|m| {
            let base = match urls {
                BaseUrls::Routes(r) => r.get(&m).cloned().ok_or_else(|| NoRoute(m.clone()))?,
                BaseUrls::Cluster { namespace } => {
                    format!("http://{}.{namespace}.svc.cluster.local:8080", node_of[m.as_str()])
                }
                BaseUrls::Single(u) => u.clone(),
            };
            Ok(Target {
                method: "POST".into(),
                url: format!("{}/predictions/{m}", base.trim_end_matches('/')),
                header: header.clone(),
                body: body.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_first_then_skewed() {
        let models: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
        let s = sequence(&models, 5000, Order::Zipf(1.1), 3);
        assert_eq!(s.len(), 5000);
        let mut first: Vec<_> = s[..50].to_vec();
        first.sort();
        assert_eq!(first, models, "each model once before any repeat");
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &s {
            *counts.entry(m).or_default() += 1;
        }
        let mut c: Vec<usize> = counts.values().copied().collect();
        c.sort();
        assert!(c[c.len() - 1] > 10 * c[0], "Zipf: the hottest model gets many times the coldest's traffic: {c:?}");
        assert_eq!(sequence(&models, 100, Order::Random, 3), sequence(&models, 100, Order::Random, 3));
    }
}
