//! `stowage plan`: catalog → plan.json (+ plan.svg) and a cost table on stdout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use stowage_core::{Catalog, Plan};
use stowage_planner::replan::{replan, Budget};
use stowage_planner::{report, svg, Options};

use crate::cli::PlanArgs;

pub fn run(args: &PlanArgs) -> Result<()> {
    ensure!(args.time_limit.is_finite() && args.time_limit > 0.0, "--time-limit must be a positive number of seconds");
    ensure!(
        args.bound_time.is_finite() && args.bound_time >= 0.0,
        "--bound-time must be a number of seconds, 0 or more"
    );
    let catalog = Catalog::load(&args.catalog)?;
    warn_missing_files(&catalog);

    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("static template"));
    spinner.set_message(format!(
        "packing {} models onto {} instance types",
        catalog.models.len(),
        catalog.instance_types.len()
    ));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let bar = spinner.clone();
    let opts = Options {
        method: args.method,
        time_limit: Duration::from_secs_f64(args.time_limit),
        exact_max_models: args.exact_max_models,
        lns_iterations: args.lns_iterations,
        seed: args.seed,
        bound_time: Duration::from_secs_f64(args.bound_time),
        progress: Some(Arc::new(move |it, cost| bar.set_message(format!("search iteration {it}: ${cost:.3}/h")))),
    };
    let previous = match &args.previous {
        Some(path) => Some(Plan::load(path)?),
        None => None,
    };
    ensure!(
        args.max_cost_increase.is_finite() && args.max_cost_increase >= 0.0,
        "--max-cost-increase must be a share of at least 0 (0.01 is 1 %)"
    );
    let plan = match &previous {
        Some(prev) => {
            let budget = Budget { max_cost_increase: args.max_cost_increase, max_moves: args.max_moves };
            replan(&catalog, prev, &opts, budget)
        }
        None => stowage_planner::plan(&catalog, &opts),
    }
    .with_context(|| format!("cannot pack {}", args.catalog.display()))?;
    spinner.finish_and_clear();

    std::fs::write(&args.out, plan.to_json()).with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.svg {
        let picture = svg::render(&plan, &catalog.limits, &svg::shares(&catalog, &plan));
        std::fs::write(path, picture).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", report::cost_table(&plan));
    if let Some(line) = cold_summary(&catalog, &plan) {
        println!("{line}");
    }
    if let (Some(prev), Some(c)) = (&previous, &plan.changes) {
        println!("changes: {}", c.summary());
        let fresh = c.fresh_cost_per_hour.unwrap_or(plan.cost_per_hour);
        let over = if fresh > 0.0 { (plan.cost_per_hour / fresh - 1.0) * 100.0 } else { 0.0 };
        println!(
            "cost ${:.2}/h (previous ${:.2}/h; a fresh plan of this catalog: ${fresh:.2}/h, {over:+.2} %)",
            plan.cost_per_hour, prev.cost_per_hour
        );
        if args.max_moves.is_some() && over > 0.005 {
            println!("left on the table by --max-moves: ${:.2}/h", plan.cost_per_hour - fresh);
        }
    }
    println!(
        "wrote {}{}",
        args.out.display(),
        args.svg.as_ref().map(|p| format!(" and {}", p.display())).unwrap_or_default()
    );
    Ok(())
}

/// Warns (on stderr) about model files the catalog names on local disk that are not there: the
/// plan is made all the same, but a node would fail to load those models.
fn warn_missing_files(catalog: &Catalog) {
    let missing = catalog.missing_local_files();
    if missing.is_empty() {
        return;
    }
    let models: std::collections::BTreeSet<&str> = missing.iter().map(|(m, _)| m.as_str()).collect();
    let shown: Vec<String> = missing.iter().take(3).map(|(m, p)| format!("{m}: {}", p.display())).collect();
    let more =
        if missing.len() > shown.len() { format!(", and {} more", missing.len() - shown.len()) } else { String::new() };
    eprintln!(
        "warning: {}: {} models name local files that are not on this machine ({}{more}); nodes will fail to load them",
        catalog.path.display(),
        models.len(),
        shown.join("; ")
    );
}

/// `cold: N models on M nodes share X GiB of cold pools; about Y cold starts an hour expected`:
/// by Che's approximation, each pool keeps its models for its characteristic time T_c (at least
/// `cold_window_seconds`, as planned), and a cold model of traffic λ misses it at λ·e^(−λ·T_c);
/// with T_c = the window (the bound the planner counts reloads at) the same sum is the most.
fn cold_summary(catalog: &Catalog, plan: &Plan) -> Option<String> {
    let nodes = plan.nodes.iter().filter(|n| !n.cold_models.is_empty()).count();
    if nodes == 0 {
        return None;
    }
    let window = catalog.limits.cold_window_seconds;
    let (mut models, mut starts, mut most) = (0, 0.0, 0.0);
    for n in plan.nodes.iter().filter(|n| !n.cold_models.is_empty()) {
        let cold: Vec<(f64, f64)> = n
            .cold_models
            .iter()
            .filter_map(|id| catalog.model(id))
            .map(|m| (m.footprints.get(&n.family).map_or(0.0, |f| f.memory_mib), m.peak_rps))
            .collect();
        let t = stowage_planner::characteristic_time(&cold, n.cold_pool_mib).max(window);
        models += cold.len();
        let misses = |t: f64| cold.iter().map(|&(_, l)| stowage_planner::misses_per_second(l, t) * 3600.0).sum::<f64>();
        starts += misses(t);
        most += misses(window);
    }
    let gib: f64 = plan.nodes.iter().map(|n| n.cold_pool_mib).sum::<f64>() / 1024.0;
    Some(format!(
        "cold: {models} models on {nodes} nodes share {gib:.1} GiB of cold pools; about {starts:.0} cold starts an hour expected (at most {most:.0}: a {window:.0} s window)"
    ))
}
