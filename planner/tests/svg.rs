//! The plan picture at 10, 118, 500 and 4,000 nodes: no two texts overlap (their boxes, rotated
//! where the text is), the limits are labelled apart even when equal, and a legend says what the
//! bars are. The renders are kept as fixtures (`tests/data/svg/`): a change to the picture shows
//! in review as a diff; `UPDATE_GOLDEN=1 cargo test -p stowage-planner --test svg` rewrites them.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stowage_core::catalog::Limits;
use stowage_core::plan::{PlanNode, Predicted, SolverInfo, Usage, PLAN_FORMAT};
use stowage_core::{node_id, Plan};
use stowage_planner::svg::{render, Shares, CHAR_WIDTH};

const TYPES: [(&str, f64); 5] = [
    ("inf1.2xlarge", 0.362),
    ("inf1.xlarge", 0.228),
    ("inf1.6xlarge", 1.18),
    ("g4dn.xlarge", 0.526),
    ("c5.large", 0.085),
];

/// A plan of `nodes` nodes over the instance types (the first one most common), each with 5–40
/// models, fills that a packing leaves, a predicted P90 and a few cold pools; and each model's
/// share of its node.
fn synthetic(nodes: usize, seed: u64) -> (Plan, Shares) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut shares = Shares::default();
    let mut index = [0usize; TYPES.len()];
    let mut out = Vec::new();
    let mut model = 0;
    for k in 0..nodes {
        let t = if k % 7 == 6 { rng.random_range(1..TYPES.len()) } else { 0 };
        let (ty, price) = TYPES[t];
        let id = node_id(ty, index[t]);
        index[t] += 1;
        let n = rng.random_range(5..40);
        let memory = if rng.random_bool(0.9) { rng.random_range(0.8..0.9) } else { rng.random_range(0.1..0.8) };
        let utilization = rng.random_range(0.02..0.83);
        let cold = if rng.random_bool(0.2) { 3 } else { 0 };
        let pool = if cold > 0 { 0.1 } else { 0.0 };
        let mut models = Vec::new();
        for j in 0..n {
            model += 1;
            let m = format!("model-{model:05}");
            let is_cold = j < cold;
            let mem = if is_cold { 0.0 } else { (memory - pool) / (n - cold) as f64 };
            shares.models.insert(m.clone(), (mem, utilization / n as f64));
            models.push(m);
        }
        if cold > 0 {
            shares.pools.insert(id.clone(), pool);
        }
        let p90 = rng.random_range(5.0..90.0);
        out.push(PlanNode {
            id,
            instance_type: ty.into(),
            family: ty.split('.').next().unwrap().into(),
            price_per_hour: price,
            cold_models: models[..cold].to_vec(),
            cold_pool_mib: if cold > 0 { 1024.0 } else { 0.0 },
            models,
            usage: Usage { memory, utilization },
            predicted: Some(Predicted { p50_ms: p90 / 3.0, p90_ms: p90 }),
            slo_p90_ms: Some(100.0),
            min_replicas: 1,
            shares: Default::default(),
        });
    }
    let cost: f64 = out.iter().map(|n| n.price_per_hour).sum();
    let plan = Plan {
        format: PLAN_FORMAT.into(),
        catalog_sha256: "0".repeat(64),
        cost_per_hour: cost,
        lower_bound_per_hour: cost * 0.98,
        solver: SolverInfo {
            method: "heuristic+lns".into(),
            seconds: 1.0,
            proven_optimal: false,
            gap: 0.02,
            bound: "continuous LP".into(),
        },
        nodes: out,
        changes: None,
    };
    (plan, shares)
}

/// A text's box: its four corners (after its rotation).
#[derive(Debug)]
struct TextBox {
    text: String,
    corners: [(f64, f64); 4],
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_string())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
}

/// Every `<text>` of the SVG with its box: the width the renderer lays it out with, the font size
/// tall (0.8 above the baseline, 0.2 below), anchored as it says, rotated as it says.
fn text_boxes(svg: &str) -> Vec<TextBox> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text ") {
        let tail = &rest[i..];
        let open_end = tail.find('>').unwrap();
        let tag = &tail[..open_end];
        let close = tail.find("</text>").unwrap();
        let text = unescape(&tail[open_end + 1..close]);
        let x: f64 = attr(tag, "x").unwrap().parse().unwrap();
        let y: f64 = attr(tag, "y").unwrap().parse().unwrap();
        let size: f64 = attr(tag, "font-size").unwrap().parse().unwrap();
        let w = text.chars().count() as f64 * size * CHAR_WIDTH;
        let x0 = match attr(tag, "text-anchor").as_deref() {
            Some("end") => x - w,
            Some("middle") => x - w / 2.0,
            _ => x,
        };
        let mut corners =
            [(x0, y - 0.8 * size), (x0 + w, y - 0.8 * size), (x0 + w, y + 0.2 * size), (x0, y + 0.2 * size)];
        if let Some(t) = attr(tag, "transform") {
            let args: Vec<f64> =
                t.trim_start_matches("rotate(").trim_end_matches(')').split(' ').map(|v| v.parse().unwrap()).collect();
            let (a, cx, cy) = (args[0].to_radians(), args[1], args[2]);
            for c in &mut corners {
                let (dx, dy) = (c.0 - cx, c.1 - cy);
                *c = (cx + dx * a.cos() - dy * a.sin(), cy + dx * a.sin() + dy * a.cos());
            }
        }
        out.push(TextBox { text, corners });
        rest = &tail[close..];
    }
    out
}

/// Separating-axis test for two convex quadrilaterals.
fn overlap(a: &TextBox, b: &TextBox) -> bool {
    for poly in [&a.corners, &b.corners] {
        for k in 0..4 {
            let (p, q) = (poly[k], poly[(k + 1) % 4]);
            let axis = (q.1 - p.1, p.0 - q.0);
            let project = |c: &[(f64, f64); 4]| {
                c.iter()
                    .map(|v| v.0 * axis.0 + v.1 * axis.1)
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
            };
            let (a0, a1) = project(&a.corners);
            let (b0, b1) = project(&b.corners);
            if a1 <= b0 + 1e-6 || b1 <= a0 + 1e-6 {
                return false;
            }
        }
    }
    true
}

fn check(svg: &str, name: &str) {
    let boxes = text_boxes(svg);
    assert!(boxes.len() > 5, "{name}: {} texts", boxes.len());
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            assert!(!overlap(a, b), "{name}: {:?} overlaps {:?} ({a:?}, {b:?})", a.text, b.text);
        }
    }
    let width: f64 = attr(&svg[..svg.find('>').unwrap()], "width").unwrap().parse().unwrap();
    let height: f64 = attr(&svg[..svg.find('>').unwrap()], "height").unwrap().parse().unwrap();
    for b in &boxes {
        for &(x, y) in &b.corners {
            assert!((-0.5..=width + 0.5).contains(&x) && (-0.5..=height + 0.5).contains(&y), "{name}: {b:?} outside");
        }
    }
}

fn golden(svg: &str, nodes: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/svg/plan-{nodes}.svg"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, svg).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(want == svg, "picture differs from {}; rerun with UPDATE_GOLDEN=1 if intended", path.display());
}

#[test]
fn no_text_overlaps_at_any_size_and_the_renders_match_their_fixtures() {
    for nodes in [10, 118, 500, 4000] {
        let (plan, shares) = synthetic(nodes, nodes as u64);
        let limits = Limits { max_memory: 0.9, max_utilization: 0.83, ..Limits::default() };
        let svg = render(&plan, &limits, &shares);
        check(&svg, &format!("{nodes} nodes"));
        golden(&svg, nodes);
        // It says what it shows.
        if nodes <= stowage_planner::svg::MAX_DETAILED {
            assert!(svg.contains("left bar: memory") && svg.contains("right bar: utilization at peak"));
            assert!(svg.contains(&plan.nodes[0].id), "names every node");
        } else {
            assert!(svg.contains("memory used, one column per node") && svg.contains("utilization at peak"));
            assert!(svg.contains("emptiest nodes:") && svg.contains("slowest nodes (predicted P90 at peak):"));
            let first = &plan.nodes.iter().filter(|n| n.instance_type == "inf1.2xlarge").count();
            assert!(svg.contains(&format!("{first} × inf1.2xlarge")), "group labels count nodes");
        }
        assert!(svg.len() < 400_000, "{nodes} nodes: {} bytes", svg.len());
    }
}

#[test]
fn equal_limits_are_labelled_apart() {
    let (plan, shares) = synthetic(10, 1);
    for (m, c) in [(0.85, 0.85), (0.85, 0.84), (0.5, 0.9)] {
        let limits = Limits { max_memory: m, max_utilization: c, ..Limits::default() };
        for svg in [render(&plan, &limits, &shares), render(&synthetic(300, 2).0, &limits, &Shares::default())] {
            assert!(
                svg.contains(&format!("Mmax {:.0}%", 100.0 * m)) && svg.contains(&format!("Cmax {:.0}%", 100.0 * c))
            );
            check(&svg, &format!("limits {m} and {c}"));
        }
    }
}
