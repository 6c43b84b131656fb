//! `stowage targets`: plan (+ routes) → vegeta JSON targets on stdout.

use std::io::Write;

use anyhow::{ensure, Context, Result};
use stowage_core::Plan;
use stowage_deployment::targets::{targets, BaseUrls, Order};

use crate::cli::{TargetOrder, TargetsArgs};

pub fn run(args: &TargetsArgs) -> Result<()> {
    ensure!(args.zipf_s > 0.0, "--zipf-s must be positive");
    let plan = Plan::load(&args.plan)?;
    let urls = match (&args.routes, &args.base_url) {
        (Some(path), _) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read routes {}", path.display()))?;
            BaseUrls::Routes(
                serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a JSON object of model id → URL", path.display()))?,
            )
        }
        (None, Some(url)) => BaseUrls::Single(url.clone()),
        (None, None) => BaseUrls::Cluster { namespace: args.namespace.clone().unwrap_or_else(|| "stowage".into()) },
    };
    let order = match args.order {
        TargetOrder::Random => Order::Random,
        TargetOrder::Zipf => Order::Zipf(args.zipf_s),
    };
    let list = targets(&plan, &urls, args.requests, order, args.seed, &args.text)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for t in &list {
        serde_json::to_writer(&mut out, t)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
