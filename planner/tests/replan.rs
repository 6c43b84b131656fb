//! `plan --previous`: properties on random generated catalogs (every model once, every limit
//! held, an unchanged catalog moves nothing, re-planning is idempotent) and the day-2 scenarios
//! of BENCHMARKS.md on 3,000 and 10,000 models.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use proptest::prelude::*;
use stowage_core::{Catalog, Plan};
use stowage_planner::catalogs::{churn, heterogeneous, without_type};
use stowage_planner::replan::{replan, Budget};
use stowage_planner::{plan, Method, Options};

fn opts() -> Options {
    Options { method: Method::Heuristic, lns_iterations: 300, ..Options::default() }
}

fn catalog(toml: &str) -> Catalog {
    Catalog::parse("models.toml", toml).unwrap()
}

/// Every catalog model on exactly one node, on a type it can run on, within the limits: hot
/// models with all their memory, cold ones in the node's pool, which holds the largest of them.
fn assert_valid(c: &Catalog, p: &Plan) {
    let mut seen = BTreeSet::new();
    for n in &p.nodes {
        let it = c.instance_type(&n.instance_type).unwrap_or_else(|| panic!("{} not in the catalog", n.instance_type));
        let (mut mem, mut util, mut largest_cold) = (0.0, 0.0, 0.0_f64);
        for m in &n.models {
            assert!(seen.insert(m.clone()), "{m} twice");
            let model = c.model(m).unwrap_or_else(|| panic!("{m} not in the catalog"));
            let d = c.demand(model, it).unwrap_or_else(|| panic!("{m} cannot run on {}", it.name));
            let cold = model.is_cold(&c.limits);
            assert_eq!(cold, n.cold_models.contains(m), "{m}: cold in the catalog, cold in the plan");
            if cold {
                largest_cold = largest_cold.max(model.footprints[&it.family].memory_mib);
            } else {
                mem += d.memory;
            }
            util += d.utilization;
        }
        assert!(
            n.cold_pool_mib >= largest_cold,
            "{}: pool {} < its largest cold model {largest_cold}",
            n.id,
            n.cold_pool_mib
        );
        mem += n.cold_pool_mib / (it.memory_gib * 1024.0 * c.limits.max_memory);
        assert!(mem <= 1.0 + 1e-6 && util <= 1.0 + 1e-6, "{} over its limits: {mem} {util}", n.id);
    }
    assert_eq!(seen.len(), c.models.len(), "every model placed");
    assert!(p.validate().is_ok());
}

fn ids(p: &Plan) -> Vec<String> {
    p.nodes.iter().map(|n| n.id.clone()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn an_unchanged_catalog_moves_nothing_and_replanning_is_idempotent(n in 20usize..400, seed in 0u64..1000) {
        let c = catalog(&heterogeneous(n, seed));
        let first = plan(&c, &opts()).unwrap();
        let again = replan(&c, &first, &opts(), Budget::default()).unwrap();
        let ch = again.changes.clone().unwrap();
        prop_assert!(ch.models_moved.is_empty() && ch.nodes_changed.is_empty(), "{:?}", ch);
        prop_assert_eq!(ids(&again), ids(&first));
        prop_assert!((again.cost_per_hour - first.cost_per_hour).abs() < 1e-9);
        let third = replan(&c, &again, &opts(), Budget::default()).unwrap();
        prop_assert_eq!(&third.nodes, &again.nodes);
    }

    #[test]
    fn a_changed_catalog_is_packed_validly_within_the_budget(
        n in 20usize..250, seed in 0u64..1000, retire in 0.0f64..0.3, add in 0.0f64..0.3, double in 0.0f64..0.3,
    ) {
        let before = heterogeneous(n, seed);
        let first = plan(&catalog(&before), &opts()).unwrap();
        let c = catalog(&churn(&before, retire, add, double, seed));
        let next = replan(&c, &first, &opts(), Budget::default()).unwrap();
        assert_valid(&c, &next);
        let ch = next.changes.clone().unwrap();
        let fresh = ch.fresh_cost_per_hour.unwrap();
        prop_assert!(next.cost_per_hour <= fresh * 1.01 + 1e-6, "{} vs fresh {fresh}", next.cost_per_hour);
        // Kept node ids are the previous plan's; new ones were never used there.
        let old: BTreeSet<String> = ids(&first).into_iter().collect();
        for id in &ch.nodes_added {
            prop_assert!(!old.contains(id), "{id} reused");
        }
        // Deterministic, and idempotent on its own output.
        let again = replan(&c, &first, &opts(), Budget::default()).unwrap();
        prop_assert_eq!(&again.nodes, &next.nodes);
        let third = replan(&c, &next, &opts(), Budget::default()).unwrap();
        prop_assert!(third.changes.unwrap().models_moved.is_empty());
    }
}

/// One scenario: (moved models, moved GiB, changed nodes, cost ÷ fresh, seconds), printed for
/// BENCHMARKS.md.
fn scenario(name: &str, before: &str, after: &str) -> (Plan, Plan, f64) {
    let first = plan(&catalog(before), &Options::default()).unwrap();
    let c = catalog(after);
    let start = Instant::now();
    let next = replan(&c, &first, &Options::default(), Budget::default()).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_valid(&c, &next);
    let ch = next.changes.as_ref().unwrap();
    let fresh = ch.fresh_cost_per_hour.unwrap();
    eprintln!(
        "{name}: {} models moved ({:.1} GiB), {} nodes changed of {}, cost {:.3} = {:.4} × fresh {fresh:.3}, {seconds:.2} s ({})",
        ch.models_moved.len(),
        ch.moved_bytes as f64 / (1u64 << 30) as f64,
        ch.nodes_changed.len(),
        first.nodes.len(),
        next.cost_per_hour,
        next.cost_per_hour / fresh,
        next.solver.method
    );
    (first, next, fresh)
}

fn scenarios(n: usize) {
    let base = heterogeneous(n, 1);
    // (i) one retired, one added: no kept model moves (no limit forces one).
    let (_, next, _) = scenario(&format!("{n} (i)"), &base, &churn(&base, 1e-9, 1e-9, 0.0, 7));
    let ch = next.changes.unwrap();
    assert_eq!((ch.models_added.len(), ch.models_removed.len()), (1, 1));
    assert!(ch.models_moved.is_empty(), "{:?}", ch.models_moved);
    // (ii) 5 % retired, 5 % added, 10 % traffic doubled: at most 5 % of kept models move, cost
    // within 1 % of a fresh plan.
    let (_, next, fresh) = scenario(&format!("{n} (ii)"), &base, &churn(&base, 0.05, 0.05, 0.10, 7));
    let ch = next.changes.unwrap();
    let kept = n - ch.models_removed.len();
    assert!(ch.models_moved.len() * 20 <= kept, "{} of {kept} kept models moved", ch.models_moved.len());
    assert!(next.cost_per_hour <= fresh * 1.01 + 1e-6);
    // (iii) 20 % / 20 % / 20 %.
    let (_, next, fresh) = scenario(&format!("{n} (iii)"), &base, &churn(&base, 0.20, 0.20, 0.20, 7));
    assert!(next.cost_per_hour <= fresh * 1.01 + 1e-6);
    // (iv) the least used instance type of the plan leaves the catalog: its nodes' models move.
    let first = plan(&catalog(&base), &Options::default()).unwrap();
    let mut used: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &first.nodes {
        *used.entry(node.instance_type.as_str()).or_default() += 1;
    }
    let (&gone, _) = used.iter().min_by_key(|(t, c)| (**c, **t)).unwrap();
    let (_, next, _) = scenario(&format!("{n} (iv) without {gone}"), &base, &without_type(&base, gone));
    assert!(next.nodes.iter().all(|node| node.instance_type != gone));
    let ch = next.changes.unwrap();
    let forced: usize =
        first.nodes.iter().filter(|node| node.instance_type == gone).map(|node| node.models.len()).sum();
    assert!(ch.models_moved.len() >= forced);
}

#[test]
fn day_two_scenarios_on_3000_models() {
    scenarios(3000);
}

#[test]
fn day_two_scenarios_on_10000_models() {
    scenarios(10_000);
}

#[test]
fn a_node_on_a_dearer_type_than_it_needs_is_retyped_keeping_its_id() {
    let toml = r#"[limits]
max_memory = 0.9
max_utilization = 0.9

[instance_types."big.x"]
family = "x"
price_per_hour = 1.0
memory_gib = 10
compute = 4

[instance_types."small.x"]
family = "x"
price_per_hour = 0.3
memory_gib = 3
compute = 4

[[models]]
id = "a"
artifact = "a.onnx"
peak_rps = 1.0
[models.footprint.x]
memory_mib = 1024
service_ms = 5

[[models]]
id = "b"
artifact = "b.onnx"
peak_rps = 1.0
[models.footprint.x]
memory_mib = 1024
service_ms = 5
"#;
    let c = catalog(toml);
    let previous = Plan::parse(
        "previous.json",
        &format!(
            r#"{{"format": "stowage-plan/v1", "catalog_sha256": "{}", "cost_per_hour": 1.0, "lower_bound_per_hour": 0.3,
                "solver": {{"method": "hand", "seconds": 0.0, "proven_optimal": false, "gap": 0.7}},
                "nodes": [{{"id": "big-x-000", "instance_type": "big.x", "family": "x", "price_per_hour": 1.0,
                           "models": ["a", "b"], "usage": {{"memory": 0.2, "utilization": 0.01}}}}]}}"#,
            c.sha256
        ),
    )
    .unwrap();
    let next = replan(&c, &previous, &opts(), Budget::default()).unwrap();
    assert_valid(&c, &next);
    assert_eq!(ids(&next), ["big-x-000"], "the node keeps its id");
    assert_eq!(next.nodes[0].instance_type, "small.x");
    let ch = next.changes.unwrap();
    assert_eq!(ch.nodes_retyped.len(), 1);
    assert_eq!((ch.nodes_retyped[0].from.as_str(), ch.nodes_retyped[0].to.as_str()), ("big.x", "small.x"));
    // Its pod restarts on another machine: both models load again.
    assert_eq!(ch.models_moved.len(), 2);
    assert_eq!(ch.moved_bytes, 2 << 30);
    assert_eq!(ch.nodes_changed, ["big-x-000"]);
    // With --max-moves 0 it stays where it is, and costs what it did.
    let capped = replan(&c, &previous, &opts(), Budget { max_moves: Some(0), ..Budget::default() }).unwrap();
    assert_eq!(capped.nodes[0].instance_type, "big.x");
    assert!(capped.changes.unwrap().models_moved.is_empty());
}

#[test]
fn a_long_tail_packs_its_cold_models_into_shared_pools_at_about_half_the_cost() {
    let auto = catalog(&stowage_planner::catalogs::long_tail(600, 3, 0.05));
    let hot = catalog(&stowage_planner::catalogs::long_tail(600, 3, 0.0));
    let with_cold = plan(&auto, &opts()).unwrap();
    let all_hot = plan(&hot, &opts()).unwrap();
    assert_valid(&auto, &with_cold);
    assert_valid(&hot, &all_hot);
    let cold: usize = with_cold.nodes.iter().map(|n| n.cold_models.len()).sum();
    assert!(cold > 400, "{cold} cold models");
    assert!(all_hot.nodes.iter().all(|n| n.cold_models.is_empty() && n.cold_pool_mib == 0.0));
    let ratio = with_cold.cost_per_hour / all_hot.cost_per_hour;
    eprintln!(
        "600-model long tail: {} $/h with cold models, {} $/h all hot ({ratio:.3} ×)",
        with_cold.cost_per_hour, all_hot.cost_per_hour
    );
    assert!(ratio < 0.65, "{ratio}");
    // Re-planning keeps the pools valid.
    let again = replan(&auto, &with_cold, &opts(), Budget::default()).unwrap();
    assert_valid(&auto, &again);
    assert!(again.changes.unwrap().models_moved.is_empty());
}

#[test]
fn a_smaller_cold_pool_margin_never_costs_more_and_a_node_that_cannot_hold_a_pool_sends_its_cold_models_away() {
    // With no margin a cold model weighs little, so the packing fills hot nodes' last few MiB with
    // cold models whose pool must still hold the largest of them: those move to nodes with a pool
    // (before, re-solving with them counted in full pushed every cold model back to full size).
    let text = stowage_planner::catalogs::long_tail(3000, 1, 0.05);
    let with_margin = |m: f64| {
        let c = catalog(&text.replacen(
            "cold_below_rps = 0.05",
            &format!("cold_below_rps = 0.05\ncold_pool_margin = {m}"),
            1,
        ));
        assert_eq!(c.limits.cold_pool_margin, m);
        let p = plan(&c, &opts()).unwrap();
        assert_valid(&c, &p);
        assert!(p.nodes.iter().map(|n| n.cold_models.len()).sum::<usize>() > 2000);
        p.cost_per_hour
    };
    let costs: Vec<f64> = [0.0, 0.25, 1.0].into_iter().map(with_margin).collect();
    let all_hot = plan(&catalog(&stowage_planner::catalogs::long_tail(3000, 1, 0.0)), &opts()).unwrap().cost_per_hour;
    eprintln!("3,000-model long tail, margins 0 / 0.25 / 1: {costs:?} $/h; all hot {all_hot} $/h");
    assert!(costs[0] <= costs[1] + 1e-9 && costs[1] <= costs[2] + 1e-9, "{costs:?}");
    assert!(costs[2] < 0.7 * all_hot, "{costs:?} against {all_hot}");
    // The day after, with no margin: neither the fresh plan nor the re-plan falls back to counting
    // every cold model in full, and the re-plan keeps its nodes.
    let margin0 = text.replacen("cold_below_rps = 0.05", "cold_below_rps = 0.05\ncold_pool_margin = 0", 1);
    let (c0, c1) = (catalog(&margin0), catalog(&stowage_planner::catalogs::churn(&margin0, 0.02, 0.02, 0.05, 7)));
    let before = plan(&c0, &opts()).unwrap();
    let fresh = plan(&c1, &opts()).unwrap();
    assert_valid(&c1, &fresh);
    let after = replan(&c1, &before, &opts(), Budget::default()).unwrap();
    assert_valid(&c1, &after);
    let moved = after.changes.as_ref().unwrap().models_moved.len();
    eprintln!(
        "churned, no margin: fresh {} $/h, re-plan {} $/h moving {moved}",
        fresh.cost_per_hour, after.cost_per_hour
    );
    assert!(fresh.cost_per_hour < 0.6 * all_hot, "{} against {all_hot}", fresh.cost_per_hour);
    assert!(after.solver.method.starts_with("replan from previous"), "{}", after.solver.method);
    assert!(moved < 100, "{moved} models moved");
}

#[test]
fn a_pools_characteristic_time_fills_it_by_ches_approximation() {
    use stowage_planner::characteristic_time;
    // Two 100 MiB models at 0.01/s: a 100 MiB pool holds each half the time: 1 − e^(−0.01 T) = ½.
    let t = characteristic_time(&[(100.0, 0.01), (100.0, 0.01)], 100.0);
    assert!((t - 2f64.ln() / 0.01).abs() < 1e-6, "{t}");
    // A pool that holds them all never evicts.
    assert_eq!(characteristic_time(&[(100.0, 0.01), (100.0, 0.01)], 200.0), f64::INFINITY);
    // A bigger pool keeps them longer.
    let models = [(150.0, 0.002), (565.0, 0.0004), (330.0, 0.03)];
    assert!(characteristic_time(&models, 300.0) < characteristic_time(&models, 500.0));
}

#[test]
fn the_picture_draws_a_nodes_cold_pool_once_not_its_cold_models_in_full() {
    let c = catalog(&stowage_planner::catalogs::long_tail(600, 3, 0.05));
    let p = plan(&c, &opts()).unwrap();
    let n = p.nodes.iter().find(|n| n.cold_models.len() > 4).expect("a node with cold models");
    let shares = stowage_planner::svg::shares(&c, &p);
    let it = c.instance_type(&n.instance_type).unwrap();
    // Hot models, the pool and nothing else make the node's memory.
    let hot: f64 = n.models.iter().filter(|m| !n.cold_models.contains(m)).map(|m| shares.models[m].0).sum();
    let pool = shares.pools[&n.id];
    assert!((pool - n.cold_pool_mib / (it.memory_gib * 1024.0)).abs() < 1e-9);
    assert!(n.cold_models.iter().all(|m| shares.models[m].0 == 0.0 && shares.models[m].1 > 0.0));
    // The pool is at least the planned shares, and takes what the node leaves free, within Mmax.
    assert!(hot + pool >= n.usage.memory - 0.01, "hot {hot} + pool {pool} against {}", n.usage.memory);
    assert!(hot + pool <= c.limits.max_memory + 1e-6, "hot {hot} + pool {pool}");
    let svg = stowage_planner::svg::render(&p, &c.limits, &shares);
    assert_eq!(svg.matches(&format!("{}: cold pool", n.id)).count(), 1);
    assert!(svg.contains(&format!("shared by {} cold models", n.cold_models.len())));
    assert!(svg.contains("(cold):"));
}
