//! The cost table `stowage plan` prints: per instance type, nodes, models, $/h, $/model-hour.

use std::collections::BTreeMap;
use std::fmt::Write;

use stowage_core::Plan;

#[derive(Default)]
struct Row {
    nodes: usize,
    models: usize,
    cold: usize,
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
        r.price = n.price_per_hour;
        r.cost += n.price_per_hour;
        r.memory += n.usage.memory;
        r.utilization += n.usage.utilization;
    }
    let mut s = String::new();
    // A `cold` column (the models of `models` that are cold) only when the plan has any.
    let with_cold = plan.nodes.iter().any(|n| !n.cold_models.is_empty());
    let _ = write!(
        s,
        "{:<16} {:>6} {:>7} {:>10} {:>10} {:>12} {:>8} {:>8}",
        "instance type", "nodes", "models", "$/h each", "$/h", "$/model-h", "memory", "util"
    );
    let _ = writeln!(s, "{}", if with_cold { format!(" {:>6}", "cold") } else { String::new() });
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
        let _ = writeln!(s, "{}", if with_cold { format!(" {:>6}", r.cold) } else { String::new() });
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
        "lower bound ${:.3}/h, gap {:.2}%, {}optimal; {} in {:.2} s",
        plan.lower_bound_per_hour,
        100.0 * plan.solver.gap,
        if plan.solver.proven_optimal { "proven " } else { "not proven " },
        plan.solver.method,
        plan.solver.seconds
    );
    s
}
