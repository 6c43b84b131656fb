//! `plan.svg`: one bar pair per node (memory, utilization), stacked by model, with the limits
//! drawn across. Above `MAX_DETAILED` nodes, a per-type summary of node fill replaces the bars,
//! and the emptiest and the slowest nodes are named. Every text is placed so that none overlaps
//! another (`tests/svg.rs` checks the boxes at 10, 118, 500 and 4,000 nodes).

use std::collections::BTreeMap;
use std::fmt::Write;

use stowage_core::catalog::Limits;
use stowage_core::Plan;

/// Up to this many nodes each gets its own stacked bars (a few dozen: beyond, thousands of stacked
/// colours read as noise and the node names no longer fit).
pub const MAX_DETAILED: usize = 40;
/// At most this many columns in the summary: beyond, each column stands for a run of nodes of
/// the same type, in order of fill (their mean).
const MAX_COLUMNS: usize = 600;
/// The width of a character of the sans-serif font, as a share of its size (a generous estimate:
/// text boxes are laid out with it).
pub const CHAR_WIDTH: f64 = 0.62;

const H: f64 = 320.0;
const TOP: f64 = 60.0;
const LEFT: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A stable color per model id, as `#rrggbb` (every SVG renderer reads it; some draw `hsl()` black).
fn color(id: &str) -> String {
    let h = id.bytes().fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
    let (hue, sat, light) =
        ((h % 360) as f64, (45 + (h >> 9) % 30) as f64 / 100.0, (45 + (h >> 17) % 20) as f64 / 100.0);
    // HSL to RGB (CSS Color 4's algorithm).
    let f = |n: f64| {
        let k = (n + hue / 30.0) % 12.0;
        let a = sat * light.min(1.0 - light);
        let v = light - a * (k - 3.0).min(9.0 - k).clamp(-1.0, 1.0);
        (v * 255.0).round() as u8
    };
    format!("#{:02x}{:02x}{:02x}", f(0.0), f(8.0), f(4.0))
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
    // Wide bars for a few nodes; at MAX_DETAILED still far enough apart for the slanted names.
    let bw = (560.0 / (2.6 * plan.nodes.len().max(1) as f64)).clamp(6.0, 24.0);
    let step = 2.0 * bw + (bw * 0.6).max(2.0);
    let width = LEFT + 90.0 + step * plan.nodes.len().max(1) as f64;
    let width = width.max(720.0);
    let longest = plan.nodes.iter().map(|n| n.id.chars().count()).max().unwrap_or(0) as f64;
    let label_room = 20.0 + longest * 9.0 * CHAR_WIDTH * 0.87;
    let height = TOP + H + label_room;
    let mut s = header(width, height, &title);
    legend(
        &mut s,
        &[
            (Swatch::Outline("#333"), "left bar: memory, stacked by model"),
            (Swatch::Hatched, "cold pool"),
            (Swatch::Outline("#777"), "right bar: utilization at peak"),
            (Swatch::Dashed("#c00"), "limits"),
        ],
    );
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

fn header(width: f64, height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\">\n\
         <defs><pattern id=\"cold\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"4\" height=\"4\" fill=\"#dde\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"4\" stroke=\"#99b\" stroke-width=\"1.5\"/></pattern></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
        esc(title),
    )
}

/// What a legend entry looks like.
enum Swatch {
    Fill(&'static str),
    Outline(&'static str),
    Hatched,
    Dashed(&'static str),
    Tick(&'static str),
}

/// One row of swatches and their names under the title, each after the one before.
fn legend(s: &mut String, entries: &[(Swatch, &str)]) {
    let y = 40.0;
    let mut x = LEFT;
    for (swatch, text) in entries {
        let _ = match swatch {
            Swatch::Fill(c) => {
                writeln!(s, r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="{c}"/>"#, y - 9.0)
            }
            Swatch::Outline(c) => writeln!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="none" stroke="{c}" stroke-width="1.2"/>"#,
                y - 9.0
            ),
            Swatch::Hatched => writeln!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="url(#cold)" stroke="#88a" stroke-width="0.5"/>"##,
                y - 9.0
            ),
            Swatch::Dashed(c) => writeln!(
                s,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-dasharray="4,2"/>"#,
                y - 4.0,
                x + 12.0,
                y - 4.0
            ),
            Swatch::Tick(c) => {
                writeln!(s, r#"<rect x="{x:.1}" y="{:.1}" width="12" height="2" fill="{c}"/>"#, y - 5.0)
            }
        };
        let tx = x + 16.0;
        let _ = writeln!(s, r##"<text x="{tx:.1}" y="{y:.1}" font-size="11" fill="#333">{}</text>"##, esc(text));
        x = tx + text_width(text, 11.0) + 18.0;
    }
}

/// The estimated width of `text` at `size`.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * CHAR_WIDTH
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

/// The two limits as dashed lines, labelled at the right end: where they are close or equal,
/// one label above its line and the other below, never on top of each other.
fn limit_lines(s: &mut String, limits: &Limits, width: f64) {
    let mut lines = [(limits.max_memory, "Mmax", "#c00"), (limits.max_utilization, "Cmax", "#06c")];
    // The higher line first.
    lines.sort_by(|a, b| b.0.total_cmp(&a.0));
    let close = (lines[0].0 - lines[1].0) * H < 14.0;
    for (k, (v, name, color)) in lines.into_iter().enumerate() {
        let y = TOP + H - v * H;
        let ty = if close && k == 1 { y + 11.0 } else { y - 3.0 };
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{width:.0}" y2="{y:.1}" stroke="{color}" stroke-dasharray="5,3"/><text x="{:.0}" y="{ty:.1}" font-size="10" fill="{color}" text-anchor="end">{name} {:.0}%</text>"#,
            width - 4.0,
            100.0 * v
        );
    }
}

/// How full a node is: the larger of its memory and utilization, each as a share of its limit.
fn fill(n: &stowage_core::plan::PlanNode, limits: &Limits) -> f64 {
    (n.usage.memory / limits.max_memory).max(n.usage.utilization / limits.max_utilization)
}

/// Many nodes: per instance type, every node's memory (a column) and utilization (a tick), in
/// order of fill, so the shape of the packing stays visible at thousands of nodes; beyond
/// `MAX_COLUMNS` a column stands for a run of nodes. Below, the emptiest nodes and (with a
/// latency model) the slowest are named.
fn summary(plan: &Plan, limits: &Limits, title: &str) -> String {
    let mut groups: BTreeMap<&str, Vec<&stowage_core::plan::PlanNode>> = BTreeMap::new();
    for n in &plan.nodes {
        groups.entry(&n.instance_type).or_default().push(n);
    }
    let per_column = plan.nodes.len().div_ceil(MAX_COLUMNS).max(1);
    let columns = |n: usize| n.div_ceil(per_column);
    let total_columns: usize = groups.values().map(|v| columns(v.len())).sum();
    let col = (900.0 / total_columns as f64).clamp(0.8, 6.0);
    let gap = 24.0;
    let label = |ty: &str, v: &[&stowage_core::plan::PlanNode]| {
        let price: f64 = v.iter().map(|n| n.price_per_hour).sum();
        (format!("{} × {ty}", v.len()), format!("${price:.2}/h"))
    };
    // Every group gets room for its labels, however few nodes it has.
    let group_width = |ty: &str, v: &[&stowage_core::plan::PlanNode]| {
        let (a, b) = label(ty, v);
        (columns(v.len()) as f64 * col).max(text_width(&a, 11.0).max(text_width(&b, 10.0)) + 6.0)
    };
    let chart_width = LEFT + 20.0 + groups.iter().map(|(ty, v)| group_width(ty, v) + gap).sum::<f64>();
    let mut notes = worst_nodes(plan, limits);
    let text_right = LEFT + notes.iter().map(|t| text_width(t, 11.0)).fold(0.0, f64::max);
    let width = chart_width.max(text_right + 20.0).max(900.0);
    let notes_top = TOP + H + 52.0;
    let height = notes_top + 16.0 * notes.len() as f64 + 10.0;
    let mut s = header(width, height, title);
    let per =
        if per_column > 1 { format!("; a column is up to {per_column} nodes (their mean)") } else { String::new() };
    let memory_text = format!("memory used, one column per node, emptiest last{per}");
    legend(
        &mut s,
        &[
            (Swatch::Fill("#4a7"), memory_text.as_str()),
            (Swatch::Tick("#06c"), "utilization at peak"),
            (Swatch::Dashed("#c00"), "limits"),
        ],
    );
    axis(&mut s, width);
    let mut x = LEFT + 10.0;
    for (ty, mut v) in groups {
        v.sort_by(|a, b| fill(b, limits).total_cmp(&fill(a, limits)).then(a.id.cmp(&b.id)));
        let x_start = x;
        for run in v.chunks(per_column) {
            let k = run.len() as f64;
            let m = run.iter().map(|n| n.usage.memory).sum::<f64>() / k;
            let u = run.iter().map(|n| n.usage.utilization).sum::<f64>() / k;
            let what =
                if run.len() == 1 { esc(&run[0].id) } else { format!("{} nodes from {}", run.len(), esc(&run[0].id)) };
            let _ = writeln!(
                s,
                r##"<rect x="{x:.2}" y="{:.2}" width="{col:.2}" height="{:.2}" fill="#4a7"><title>{what}: memory {:.1}%, utilization {:.1}%</title></rect>"##,
                TOP + H - m * H,
                m * H,
                100.0 * m,
                100.0 * u
            );
            let _ = writeln!(
                s,
                r##"<rect x="{x:.2}" y="{:.2}" width="{col:.2}" height="1.2" fill="#06c"/>"##,
                TOP + H - u * H
            );
            x += col;
        }
        let (a, b) = label(ty, &v);
        let _ = writeln!(s, r#"<text x="{x_start:.1}" y="{:.1}" font-size="11">{}</text>"#, TOP + H + 16.0, esc(&a));
        let _ = writeln!(
            s,
            r##"<text x="{x_start:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            TOP + H + 30.0,
            esc(&b)
        );
        x = x_start + group_width(ty, &v) + gap;
    }
    limit_lines(&mut s, limits, width);
    for (k, t) in notes.drain(..).enumerate() {
        // An entry under its heading is indented (SVG collapses leading spaces).
        let (x, t) = match t.strip_prefix("  ") {
            Some(t) => (LEFT + 14.0, t.to_string()),
            None => (LEFT, t),
        };
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
            notes_top + 16.0 * k as f64,
            esc(&t)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Lines naming the emptiest nodes (what a better plan would save) and, where the plan predicts
/// latency, the slowest ones.
fn worst_nodes(plan: &Plan, limits: &Limits) -> Vec<String> {
    let mut by_fill: Vec<_> = plan.nodes.iter().collect();
    by_fill.sort_by(|a, b| fill(a, limits).total_cmp(&fill(b, limits)).then(a.id.cmp(&b.id)));
    let mut out = vec!["emptiest nodes:".to_string()];
    for n in by_fill.iter().take(3) {
        out.push(format!(
            "  {} ({}): {} models, memory {:.1}%, utilization {:.1}%",
            n.id,
            n.instance_type,
            n.models.len(),
            100.0 * n.usage.memory,
            100.0 * n.usage.utilization
        ));
    }
    let mut slow: Vec<_> = plan.nodes.iter().filter_map(|n| n.predicted.as_ref().map(|p| (p.p90_ms, n))).collect();
    if !slow.is_empty() {
        slow.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        out.push("slowest nodes (predicted P90 at peak):".to_string());
        for (p90, n) in slow.iter().take(3) {
            let target = n.slo_p90_ms.map(|t| format!(", target {t} ms")).unwrap_or_default();
            out.push(format!("  {} ({}): {p90:.1} ms{target}", n.id, n.instance_type));
        }
    }
    out
}
