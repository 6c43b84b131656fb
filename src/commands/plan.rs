//! `stowage plan`: catalog → plan.json (+ plan.svg) and a cost table on stdout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use stowage_core::Catalog;
use stowage_planner::{report, svg, Options};

use crate::cli::PlanArgs;

pub fn run(args: &PlanArgs) -> Result<()> {
    ensure!(args.time_limit.is_finite() && args.time_limit > 0.0, "--time-limit must be a positive number of seconds");
    let catalog = Catalog::load(&args.catalog)?;

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
        progress: Some(Arc::new(move |it, cost| bar.set_message(format!("search iteration {it}: ${cost:.3}/h")))),
    };
    let plan =
        stowage_planner::plan(&catalog, &opts).with_context(|| format!("cannot pack {}", args.catalog.display()))?;
    spinner.finish_and_clear();

    std::fs::write(&args.out, plan.to_json()).with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.svg {
        let picture = svg::render(&plan, &catalog.limits, &svg::shares(&catalog, &plan));
        std::fs::write(path, picture).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{}", report::cost_table(&plan));
    println!(
        "wrote {}{}",
        args.out.display(),
        args.svg.as_ref().map(|p| format!(" and {}", p.display())).unwrap_or_default()
    );
    Ok(())
}
