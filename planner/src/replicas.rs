//! Models with replicas: a model whose peak needs more compute than one node of any type gives,
//! or whose catalog entry asks for `min_replicas`, is planned as that many copies — each with an
//! equal share of its traffic — that `solve::separate` keeps on distinct nodes. Inside the
//! planner a copy is a model of its own, `<id>~<k>` (no model id has a `~`); the plan names the
//! model on each of its nodes with its share (`PlanNode::shares`).

use std::collections::HashMap;

use stowage_core::{Catalog, Model, Plan, MAX_REPLICAS};

/// What separates a copy's index from its model's id.
const MARK: char = '~';

/// The model a planner item stands for: its id, less a copy's mark.
pub fn model_of(item: &str) -> &str {
    item.split_once(MARK).map_or(item, |(m, _)| m)
}

/// How many copies of `m` the plan places: `Model::replicas`, raised until one copy can go on
/// some type (a latency target may leave a node less of its compute than `max_utilization`).
fn copies(catalog: &Catalog, m: &Model) -> u32 {
    let mut r = m.replicas(&catalog.limits, &catalog.instance_types);
    if r <= 1 {
        return r;
    }
    while r < MAX_REPLICAS {
        let mut copy = m.clone();
        copy.peak_rps = m.peak_rps / f64::from(r);
        let one = catalog.with_models(vec![copy]);
        if crate::problem::Problem::from_catalog(&one).allowed(0).next().is_some() {
            break;
        }
        r += 1;
    }
    r
}

/// The catalog with each model that has replicas split into its copies, or `None` when no model
/// has any.
pub fn split(catalog: &Catalog) -> Option<Catalog> {
    let counts: Vec<u32> = catalog.models.iter().map(|m| copies(catalog, m)).collect();
    if counts.iter().all(|&r| r <= 1) {
        return None;
    }
    let mut models = Vec::new();
    for (m, &r) in catalog.models.iter().zip(&counts) {
        if r <= 1 {
            models.push(m.clone());
            continue;
        }
        for k in 0..r {
            let mut copy = m.clone();
            copy.id = format!("{}{MARK}{k}", m.id);
            copy.peak_rps = m.peak_rps / f64::from(r);
            copy.min_replicas = 1;
            models.push(copy);
        }
    }
    Some(catalog.with_models(models))
}

/// `previous` in the split catalog's terms: the nodes of a model with replicas hold its copies,
/// `<id>~0` on the first of them, `~1` on the next, as many as `split` has (so a re-plan keeps
/// them where they are); a model that has none now stays on the first of its nodes.
pub fn split_plan(previous: &Plan, split: &Catalog) -> Plan {
    let mut next: HashMap<String, usize> = HashMap::new();
    let mut kept = std::collections::HashSet::new();
    let mut plan = previous.clone();
    for n in &mut plan.nodes {
        let models = std::mem::take(&mut n.models);
        for m in models {
            if split.model(&m).is_some() {
                // A model that no longer has replicas stays on its first node only.
                if kept.insert(m.clone()) {
                    n.models.push(m);
                }
                continue;
            }
            let k = next.entry(m.clone()).or_default();
            let copy = format!("{m}{MARK}{k}");
            *k += 1;
            if split.model(&copy).is_some() {
                n.models.push(copy);
            }
        }
        n.shares.clear();
    }
    plan
}

/// The plan of the split catalog with each copy named by its model again, with the share of the
/// model's traffic each node carries.
pub fn join(mut plan: Plan) -> Plan {
    let mut copies: HashMap<String, usize> = HashMap::new();
    for n in &plan.nodes {
        for m in n.models.iter().filter(|m| m.contains(MARK)) {
            *copies.entry(model_of(m).to_string()).or_default() += 1;
        }
    }
    for n in &mut plan.nodes {
        for list in [&mut n.models, &mut n.cold_models] {
            for m in list.iter_mut() {
                if m.contains(MARK) {
                    *m = model_of(m).to_string();
                }
            }
            list.sort();
            list.dedup();
        }
        for m in &n.models {
            if let Some(&r) = copies.get(m) {
                // To a millionth, as the plan writes its other shares of a node.
                n.shares.insert(m.clone(), (1e6 / r as f64).round() / 1e6);
            }
        }
    }
    plan
}
