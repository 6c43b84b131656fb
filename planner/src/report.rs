//! The cost table `stowage plan` prints: per instance type, nodes, models, $/h, $/model-hour,
//! and where the plan has cold models, how many of the models are hot and cold and the memory
//! their nodes' cold pools take.

use std::collections::BTreeMap;
use std::fmt::Write;

use stowage_core::Plan;

#[derive(Default)]
struct Row {
    nodes: usize,
    models: usize,
    cold: usize,
    pool_mib: f64,
    price: f64,
    cost: f64,
    memory: f64,
    utilization: f64,
}

/// Renders the cost table of a plan, with the lower bound and the gap.
pub fn cost_table(plan: &Plan) -> String {
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for n in &plan.nodes {
        let r = rows.entry(n.instance_type.as_str()).or_default();
        r.nodes += 1;
        r.models += n.models.len();
        r.cold += n.cold_models.len();
        r.pool_mib += n.cold_pool_mib;
        r.price = n.price_per_hour;
        r.cost += n.price_per_hour;
        r.memory += n.usage.memory;
        r.utilization += n.usage.utilization;
    }
    let mut s = String::new();
    // `hot`, `cold` (the models of `models` that are hot and cold) and `pool GiB` (the cold pools
    // of those nodes) only when the plan has cold models.
    let with_cold = plan.nodes.iter().any(|n| !n.cold_models.is_empty());
    let _ = write!(
        s,
        "{:<16} {:>6} {:>7} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "instance type", "nodes", "models", "$/h each", "$/h", "$/model-h", "memory", "util"
    );
    let _ = writeln!(
        s,
        "{}",
        if with_cold { format!(" {:>6} {:>6} {:>9}", "hot", "cold", "pool GiB") } else { String::new() }
    );
    let per_model = |cost: f64, models: usize| {
        if models == 0 {
            0.0
        } else {
            cost / models as f64
        }
    };
    for (ty, r) in &rows {
        let _ = write!(
            s,
            "{:<16} {:>6} {:>7} {:>10.3} {:>10.3} {:>12.5} {:>7.1}% {:>7.1}%",
            ty,
            r.nodes,
            r.models,
            r.price,
            r.cost,
            per_model(r.cost, r.models),
            100.0 * r.memory / r.nodes as f64,
            100.0 * r.utilization / r.nodes as f64
        );
        let cold = format!(" {:>6} {:>6} {:>9.1}", r.models - r.cold, r.cold, r.pool_mib / 1024.0);
        let _ = writeln!(s, "{}", if with_cold { cold } else { String::new() });
    }
    let models = plan.model_count();
    let _ = writeln!(
        s,
        "{:<16} {:>6} {:>7} {:>10} {:>10.3} {:>12.5}",
        "total",
        plan.nodes.len(),
        models,
        "",
        plan.cost_per_hour,
        per_model(plan.cost_per_hour, models)
    );
    let _ = writeln!(
        s,
        "lower bound ${:.3}/h{}, gap {:.2}%, {}optimal; {} in {:.2} s",
        plan.lower_bound_per_hour,
        if plan.solver.bound.is_empty() { String::new() } else { format!(" ({})", plan.solver.bound) },
        100.0 * plan.solver.gap,
        if plan.solver.proven_optimal { "proven " } else { "not proven " },
        plan.solver.method,
        plan.solver.seconds
    );
    let (replicated, extra) = plan.extra_replicas();
    if replicated > 0 {
        let _ = writeln!(
            s,
            "replicas: {replicated} models on {} nodes in all ({extra} copies beyond one each, counted in the types' rows)",
            replicated + extra
        );
    }
    if let Some(line) = latency_line(plan) {
        let _ = writeln!(s, "{line}");
    }
    s
}

/// `predicted P90 at peak: worst node 63.2 ms (c5-xlarge-003), target 100 ms`: the node whose
/// predicted P90 is the highest (or one with none: over its capacity), and the target; the nodes
/// over their target are counted.
fn latency_line(plan: &Plan) -> Option<String> {
    let worst = plan
        .nodes
        .iter()
        .max_by(|a, b| {
            let p90 = |n: &&stowage_core::PlanNode| n.predicted.map_or(f64::INFINITY, |p| p.p90_ms);
            p90(a).total_cmp(&p90(b)).then_with(|| b.id.cmp(&a.id))
        })
        .filter(|n| !n.models.is_empty())?;
    let mut line = match worst.predicted {
        Some(p) => format!("predicted P90 at peak: worst node {:.1} ms ({})", p.p90_ms, worst.id),
        None => format!("predicted P90 at peak: node {} is at or over its capacity", worst.id),
    };
    let over = plan
        .nodes
        .iter()
        .filter(|n| n.slo_p90_ms.is_some_and(|t| n.predicted.is_none_or(|p| p.p90_ms > t + 1e-6)))
        .count();
    if let Some(t) = plan.nodes.iter().filter_map(|n| n.slo_p90_ms).reduce(f64::min) {
        line += &format!(", target {t} ms");
        if over > 0 {
            line += &format!("; {over} nodes over their target (no node could be bought for their models)");
        }
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::plan::{PlanNode, SolverInfo, Usage, PLAN_FORMAT};

    fn node(id: &str, models: &[&str], cold: &[&str], pool: f64) -> PlanNode {
        PlanNode {
            id: id.into(),
            instance_type: "inf1.2xlarge".into(),
            family: "inf1".into(),
            price_per_hour: 0.362,
            models: models.iter().map(|m| m.to_string()).collect(),
            usage: Usage { memory: 0.5, utilization: 0.1 },
            cold_models: cold.iter().map(|m| m.to_string()).collect(),
            cold_pool_mib: pool,
            predicted: None,
            slo_p90_ms: None,
            min_replicas: 1,
            shares: Default::default(),
        }
    }

    fn plan(nodes: Vec<PlanNode>) -> Plan {
        Plan {
            format: PLAN_FORMAT.into(),
            catalog_sha256: "x".into(),
            cost_per_hour: 0.362 * nodes.len() as f64,
            lower_bound_per_hour: 0.362,
            solver: SolverInfo {
                method: "hand".into(),
                seconds: 0.0,
                proven_optimal: false,
                gap: 0.0,
                bound: String::new(),
            },
            nodes,
            changes: None,
        }
    }

    #[test]
    fn the_table_counts_hot_and_cold_models_and_their_pools_per_type_only_when_there_are_cold_ones() {
        let with = cost_table(&plan(vec![
            node("a", &["m1", "m2", "m3"], &["m2", "m3"], 1024.0),
            node("b", &["m4", "m5"], &["m5"], 512.0),
        ]));
        let header = with.lines().next().unwrap();
        assert!(header.ends_with("hot   cold  pool GiB"), "{with}");
        let row: Vec<&str> = with.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[0], "inf1.2xlarge");
        assert_eq!(row[1..3], ["2", "5"], "{with}");
        assert_eq!(row[row.len() - 3..], ["2", "3", "1.5"], "{with}");
        let without = cost_table(&plan(vec![node("a", &["m1"], &[], 0.0)]));
        assert!(!without.contains("cold") && !without.contains("pool"), "{without}");
    }
}
