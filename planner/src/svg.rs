//! `plan.svg`: one bar pair per node (memory, utilization), stacked by model, with the limits
//! drawn across. Above `MAX_DETAILED` nodes, a per-type summary of node fill replaces the bars.

use std::collections::BTreeMap;
use std::fmt::Write;

use stowage_core::catalog::Limits;
use stowage_core::Plan;

/// Up to this many nodes each gets its own stacked bars.
pub const MAX_DETAILED: usize = 300;

const H: f64 = 320.0;
const TOP: f64 = 60.0;
const LEFT: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A stable color per model id.
fn color(id: &str) -> String {
    let h = id.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    format!("hsl({},{}%,{}%)", h % 360, 45 + (h >> 9) % 30, 45 + (h >> 17) % 20)
}

/// Per-model shares of a node (memory, utilization as node fractions), and each node's cold pool
/// (memory as a node fraction), when the caller knows them. A cold model's memory is its node's
/// pool's: it has no memory share of its own.
#[derive(Debug, Clone, Default)]
pub struct Shares {
    pub models: BTreeMap<String, (f64, f64)>,
    pub pools: BTreeMap<String, f64>,
}

/// Each planned model's share of its node, from the catalog's footprints.
pub fn shares(catalog: &stowage_core::Catalog, plan: &Plan) -> Shares {
    let mut out = Shares::default();
    for n in &plan.nodes {
        let Some(it) = catalog.instance_type(&n.instance_type) else {
            continue;
        };
        for m in &n.models {
            if let Some(d) = catalog.model(m).and_then(|m| catalog.demand(m, it)) {
                let cold = n.cold_models.contains(m);
                out.models.insert(
                    m.clone(),
                    (
                        if cold { 0.0 } else { d.memory * catalog.limits.max_memory },
                        d.utilization * catalog.limits.max_utilization,
                    ),
                );
            }
        }
        if n.cold_pool_mib > 0.0 {
            out.pools.insert(n.id.clone(), n.cold_pool_mib / (it.memory_gib * 1024.0));
        }
    }
    out
}

pub fn render(plan: &Plan, limits: &Limits, shares: &Shares) -> String {
    let title = format!(
        "{} models on {} nodes: ${:.3}/h (lower bound ${:.3}/h, gap {:.2}%)",
        plan.model_count(),
        plan.nodes.len(),
        plan.cost_per_hour,
        plan.lower_bound_per_hour,
        100.0 * plan.solver.gap
    );
    if plan.nodes.len() > MAX_DETAILED {
        return summary(plan, limits, &title);
    }
    // Wide bars for a few nodes, thin ones for hundreds.
    let bw = (560.0 / (2.6 * plan.nodes.len().max(1) as f64)).clamp(3.0, 24.0);
    let step = 2.0 * bw + (bw * 0.6).max(2.0);
    let width = LEFT + 20.0 + step * plan.nodes.len().max(1) as f64;
    let width = width.max(640.0);
    let label_room = 120.0;
    let height = TOP + H + label_room;
    let mut s = header(width, height, &title, DETAILED);
    axis(&mut s, width);
    for (k, n) in plan.nodes.iter().enumerate() {
        let x0 = LEFT + 10.0 + step * k as f64;
        for (dim, x) in [(0, x0), (1, x0 + bw)] {
            let mut y = TOP + H;
            if let Some(&pool) = shares.pools.get(&n.id).filter(|_| dim == 0) {
                let h = pool * H;
                y -= h;
                let _ = writeln!(
                    s,
                    r##"<rect x="{x:.1}" y="{y:.2}" width="{bw}" height="{h:.2}" fill="url(#cold)" stroke="#88a" stroke-width="0.5"><title>{}: cold pool {:.0} MiB ({:.1}% memory) shared by {} cold models</title></rect>"##,
                    esc(&n.id),
                    n.cold_pool_mib,
                    100.0 * pool,
                    n.cold_models.len()
                );
            }
            for m in &n.models {
                let cold = n.cold_models.contains(m);
                if cold && dim == 0 {
                    continue;
                }
                let v = shares.models.get(m).map_or(0.0, |s| if dim == 0 { s.0 } else { s.1 });
                let h = v * H;
                y -= h;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y:.2}" width="{bw}" height="{h:.2}" fill="{}" stroke="white" stroke-width="0.3"><title>{} on {}{}: {:.1}% {}</title></rect>"#,
                    color(m),
                    esc(m),
                    esc(&n.id),
                    if cold { " (cold)" } else { "" },
                    100.0 * v,
                    if dim == 0 { "memory" } else { "utilization" }
                );
            }
            let (used, lim) = if dim == 0 {
                (n.usage.memory, limits.max_memory)
            } else {
                (n.usage.utilization, limits.max_utilization)
            };
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.2}" width="{bw}" height="{:.2}" fill="none" stroke="{}" stroke-width="0.6"><title>{}: {} {:.1}% of {:.0}%</title></rect>"#,
                TOP + H - used * H,
                used * H,
                if dim == 0 { "#333" } else { "#777" },
                esc(&n.id),
                if dim == 0 { "memory" } else { "utilization" },
                100.0 * used,
                100.0 * lim
            );
        }
        let lx = x0 + bw;
        let _ = writeln!(
            s,
            r#"<text x="{lx:.1}" y="{:.1}" font-size="9" transform="rotate(60 {lx:.1} {:.1})">{}</text>"#,
            TOP + H + 10.0,
            TOP + H + 10.0,
            esc(&n.id)
        );
    }
    limit_lines(&mut s, limits, width);
    s.push_str("</svg>\n");
    s
}

const DETAILED: &str =
    "each node: memory, utilization at peak, stacked by model (hatched: the cold pool); dashed: limits";

fn header(width: f64, height: f64, title: &str, subtitle: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\">\n\
         <defs><pattern id=\"cold\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"4\" height=\"4\" fill=\"#dde\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"4\" stroke=\"#99b\" stroke-width=\"1.5\"/></pattern></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n\
         <text x=\"{LEFT}\" y=\"42\" font-size=\"11\" fill=\"#555\">{}</text>\n",
        esc(title),
        esc(subtitle)
    )
}

fn axis(s: &mut String, width: f64) {
    for pct in [0, 25, 50, 75, 100] {
        let y = TOP + H - H * pct as f64 / 100.0;
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{width:.0}" y2="{y:.1}" stroke="#eee"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" font-size="10" text-anchor="end">{pct}%</text>"#,
            LEFT - 4.0,
            y + 3.0
        );
    }
}

fn limit_lines(s: &mut String, limits: &Limits, width: f64) {
    for (v, name, color) in [(limits.max_memory, "Mmax", "#c00"), (limits.max_utilization, "Cmax", "#06c")] {
        let y = TOP + H - v * H;
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{width:.0}" y2="{y:.1}" stroke="{color}" stroke-dasharray="5,3"/><text x="{:.0}" y="{:.1}" font-size="10" fill="{color}" text-anchor="end">{name} {:.0}%</text>"#,
            width - 4.0,
            y - 3.0,
            100.0 * v
        );
    }
}

/// Many nodes: per instance type, every node's memory and utilization as thin columns, fullest
/// first, so the shape of the packing stays visible at thousands of nodes.
fn summary(plan: &Plan, limits: &Limits, title: &str) -> String {
    let mut groups: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for n in &plan.nodes {
        groups.entry(&n.instance_type).or_default().push((n.usage.memory, n.usage.utilization));
    }
    let col = (1000.0 / plan.nodes.len() as f64).clamp(0.25, 2.0);
    let gap = 30.0;
    // Every group gets room for its label, however few nodes it has.
    let group_width = |n: usize| (n as f64 * col).max(110.0);
    let width = LEFT + 20.0 + groups.values().map(|v| group_width(v.len()) + gap).sum::<f64>();
    let width = width.max(800.0);
    let subtitle = "one column per node, grouped by instance type, sorted by memory; green: memory used, blue: utilization at peak";
    let mut s = header(width, TOP + H + 40.0, title, subtitle);
    axis(&mut s, width);
    let mut x = LEFT + 10.0;
    for (ty, mut v) in groups {
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)));
        let x_start = x;
        for (m, u) in &v {
            let _ = writeln!(
                s,
                r##"<rect x="{x:.2}" y="{:.2}" width="{col:.2}" height="{:.2}" fill="#4a7"/>"##,
                TOP + H - m * H,
                m * H
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x:.2}" y="{:.2}" width="{col:.2}" height="1.2" fill="#06c"/>"##,
                TOP + H - u * H
            );
            x += col;
        }
        let _ = writeln!(
            s,
            r#"<text x="{x_start:.1}" y="{:.1}" font-size="11">{} × {}</text>"#,
            TOP + H + 16.0,
            v.len(),
            esc(ty)
        );
        x = x_start + group_width(v.len()) + gap;
    }
    limit_lines(&mut s, limits, width);
    s.push_str("</svg>\n");
    s
}
