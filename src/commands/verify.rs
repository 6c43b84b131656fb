//! `stowage verify`: does the plan hold? Every model of a plan gets its own Poisson stream at its
//! planned `peak_rps` × `--factor`, open loop (`openloop.rs`: requests leave on schedule whatever
//! the nodes do, latency from the scheduled time), to its node (a route map) or through one URL
//! (the gateway). Per node: the rate offered, sent and answered, measured P50/P90/P99, status
//! codes, the plan's predicted P90 and the target, and whether the target held.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use stowage_core::Plan;
use stowage_node::lifecycle::spec::ModelSpec;
use stowage_node::lifecycle::storage::Source;

use crate::cli::VerifyArgs;
use crate::openloop::{self, Outcome};

/// Words the text is made of when a model's tokenizer is not on this machine.
const WORDS: [&str; 16] = [
    "the", "delivery", "was", "fast", "and", "the", "product", "works", "well", "but", "the", "box", "was", "late",
    "again", "today",
];

/// A request of about `tokens` tokens for `model`: whole words of its tokenizer's vocabulary, as
/// `stowage profile` measured it (each such word is one token); common English words where the
/// tokenizer is not a local file (they may take more tokens than words).
fn text_of(catalog: &stowage_core::Catalog, model: &stowage_core::Model, tokens: usize) -> String {
    // The tokenizer the node would read (the catalog's, else the file beside the artifact), when
    // it is on this machine.
    let tokenizer = match ModelSpec::from_catalog(catalog, &model.id, stowage_core::Engine::Auto) {
        Ok(ModelSpec { tokenizer: Source::Local(path), .. }) => tokenizers::Tokenizer::from_file(path).ok(),
        _ => None,
    };
    match tokenizer {
        Some(t) => stowage_node::lifecycle::load::typical_text(&t, tokens),
        None => WORDS.iter().cycle().take(tokens.saturating_sub(2).max(1)).copied().collect::<Vec<_>>().join(" "),
    }
}

/// One node's results.
struct NodeReport<'a> {
    node: &'a stowage_core::PlanNode,
    offered: f64,
    outcomes: Vec<&'a Outcome>,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    ensure!(args.factor.is_finite() && args.factor > 0.0, "--factor must be a positive number");
    ensure!(args.duration > 0.0, "--duration must be positive");
    let plan = Plan::load(&args.plan)?;
    let catalog = plan.catalog(&args.plan, args.catalog.as_deref())?;
    let routes: Option<BTreeMap<String, String>> = match &args.routes {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("{}: not a route map", path.display()))?)
        }
        None => None,
    };
    let mut requests = Vec::new();
    let mut rates = Vec::new();
    let mut node_of = Vec::new();
    for (k, n) in plan.nodes.iter().enumerate() {
        for m in &n.models {
            let model = catalog.model(m).with_context(|| format!("model {m:?} of the plan is not in the catalog"))?;
            let base = match (&routes, &args.url) {
                (Some(r), _) => r.get(m).cloned().with_context(|| format!("the route map has no URL for {m:?}"))?,
                (None, Some(u)) => u.clone(),
                (None, None) => bail!("give --url or --routes"),
            };
            let text =
                args.text.clone().unwrap_or_else(|| text_of(&catalog, model, model.request_tokens(&catalog.limits)));
            requests.push(openloop::Request::predict(&base, m, &text));
            // A model with replicas: this node's share of its traffic.
            rates.push(model.peak_rps * n.shares.get(m).copied().unwrap_or(1.0) * args.factor);
            node_of.push(k);
        }
    }
    ensure!(!requests.is_empty(), "{}: the plan has no models", args.plan.display());
    let timeout = Duration::from_secs_f64(args.timeout);
    // Each model once, not counted: a first request pays for what a node does once.
    let warm: openloop::Schedule = (0..requests.len()).map(|i| (0.0, i)).collect();
    openloop::run(&requests, &warm, args.connections, timeout)?;
    let schedule = openloop::schedule(&rates, args.duration, args.arrivals, args.seed);
    eprintln!(
        "verify: {} models on {} nodes, {:.1} requests a second in all ({} × peak) for {} s, {} arrivals",
        requests.len(),
        plan.nodes.len(),
        rates.iter().sum::<f64>(),
        args.factor,
        args.duration,
        format!("{:?}", args.arrivals).to_lowercase()
    );
    let outcomes = openloop::run(&requests, &schedule, args.connections, timeout)?;

    let mut nodes: Vec<NodeReport> =
        plan.nodes.iter().map(|node| NodeReport { node, offered: 0.0, outcomes: Vec::new() }).collect();
    for (i, &k) in node_of.iter().enumerate() {
        nodes[k].offered += rates[i];
    }
    for o in &outcomes {
        nodes[node_of[o.request]].outcomes.push(o);
    }
    let mut report = Vec::new();
    let mut failed = 0;
    println!(
        "{:<24} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10} {:>7} {:>5}  codes",
        "node", "offered/s", "sent/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "pred. p90", "target", "held"
    );
    for n in &nodes {
        let s = openloop::summary(&n.outcomes, args.duration);
        let p = |q: &str| s["latency_ms"][q].as_f64().unwrap_or(0.0);
        let target = n.node.slo_p90_ms.or(args.slo_ms);
        let all_ok = s["status_codes"].as_object().is_some_and(|c| c.keys().all(|k| k == "200"));
        let held = all_ok && target.is_none_or(|t| p("p90") <= t);
        failed += usize::from(!held);
        let predicted = n.node.predicted.map(|x| x.p90_ms);
        let codes: Vec<String> = s["status_codes"]
            .as_object()
            .map(|c| c.iter().map(|(k, v)| format!("{k}:{v}")).collect())
            .unwrap_or_default();
        println!(
            "{:<24} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>7} {:>5}  {}",
            n.node.id,
            n.offered,
            s["sent_rps"].as_f64().unwrap_or(0.0),
            s["ok_rps"].as_f64().unwrap_or(0.0),
            p("p50"),
            p("p90"),
            p("p99"),
            predicted.map_or("-".into(), |x| format!("{x:.1}")),
            target.map_or("-".into(), |t| format!("{t}")),
            if held { "yes" } else { "NO" },
            codes.join(" ")
        );
        report.push(serde_json::json!({
            "node": n.node.id,
            "instance_type": n.node.instance_type,
            "offered_rps": n.offered,
            "predicted": n.node.predicted,
            "slo_p90_ms": target,
            "held": held,
            "measured": s,
        }));
    }
    let behind: u64 = report.iter().filter_map(|r| r["measured"]["client"]["behind"].as_u64()).sum();
    if behind as f64 > 0.01 * outcomes.len() as f64 {
        eprintln!(
            "verify: the client fell behind: {behind} of {} requests left more than {} ms late (--connections {}); their wait is in their latency",
            outcomes.len(),
            openloop::BEHIND_MS,
            args.connections
        );
    }
    if failed == 0 {
        println!(
            "verify: every node held{} at {} × peak",
            if nodes.iter().any(|n| n.node.slo_p90_ms.or(args.slo_ms).is_some()) {
                " its target"
            } else {
                " (every answer 200)"
            },
            args.factor
        );
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::json!({
            "plan": args.plan.display().to_string(),
            "factor": args.factor,
            "duration_s": args.duration,
            "arrivals": format!("{:?}", args.arrivals).to_lowercase(),
            "nodes": report,
        });
        std::fs::write(dir.join("verify.json"), serde_json::to_string_pretty(&json)?)?;
        std::fs::write(dir.join("results.csv"), openloop::vegeta_csv(&outcomes, "stowage-verify"))?;
        std::fs::write(dir.join("verify.svg"), picture(&report, args.factor))?;
        eprintln!("verify: wrote {}/verify.json, results.csv and verify.svg", dir.display());
    }
    // A check a pipeline can gate on: a node that missed fails the command.
    if failed > 0 {
        anyhow::bail!("{failed} of {} nodes did not hold at {} × peak", nodes.len(), args.factor);
    }
    Ok(())
}

/// Predicted and measured P90 per node, side by side, with each node's target as a tick.
fn picture(nodes: &[serde_json::Value], factor: f64) -> String {
    let (w, h, left, top, bottom) = (760.0, 340.0, 60.0, 40.0, 70.0);
    let p90 = |n: &serde_json::Value| n["measured"]["latency_ms"]["p90"].as_f64().unwrap_or(0.0);
    let pred = |n: &serde_json::Value| n["predicted"]["p90_ms"].as_f64();
    let target = |n: &serde_json::Value| n["slo_p90_ms"].as_f64();
    let top_ms =
        nodes.iter().flat_map(|n| [p90(n), pred(n).unwrap_or(0.0), target(n).unwrap_or(0.0)]).fold(1.0, f64::max)
            * 1.15;
    let plot_h = h - top - bottom;
    let y = |ms: f64| top + plot_h * (1.0 - (ms / top_ms).min(1.0));
    let slot = (w - left - 20.0) / nodes.len().max(1) as f64;
    let bar = (slot * 0.35).min(40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"{left}\" y=\"20\" font-size=\"13\">P90 per node at {factor} × the planned peak: predicted (grey) and measured (blue), target (red tick)</text>\n"
    );
    for k in 0..=4 {
        let ms = top_ms * k as f64 / 4.0;
        let yy = y(ms);
        s += &format!(
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{ms:.0} ms</text>\n",
            w - 20.0,
            left - 4.0,
            yy + 4.0
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let x = left + slot * i as f64 + slot / 2.0;
        if let Some(p) = pred(n) {
            s += &format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#aaa\"><title>predicted {p:.1} ms</title></rect>\n",
                x - bar,
                y(p),
                top + plot_h - y(p)
            );
        }
        let m = p90(n);
        s += &format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"#36c\"><title>measured {m:.1} ms</title></rect>\n",
            y(m),
            top + plot_h - y(m)
        );
        if let Some(t) = target(n) {
            s += &format!(
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#c00\" stroke-width=\"2\"/>\n",
                x - bar - 3.0,
                x + bar + 3.0,
                y(t),
                y(t)
            );
        }
        s += &format!(
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"end\" transform=\"rotate(-35 {x:.1} {:.1})\">{}</text>\n",
            h - bottom + 14.0,
            h - bottom + 14.0,
            n["node"].as_str().unwrap_or("")
        );
    }
    s += "</svg>\n";
    s
}
