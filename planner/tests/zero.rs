//! Nodes that scale to zero: models marked `scale_to_zero` are packed apart from the others, on
//! nodes with `min_replicas: 0`; a node whose models' traffic is below
//! `[limits] scale_to_zero_below_rps` scales to zero too; a catalog with neither plans as before.

use stowage_core::{Catalog, Plan};
use stowage_planner::{plan, Options};

/// A catalog of one instance type (room for four models a node) and `models` (peak rps,
/// `scale_to_zero`), with `[limits]` lines `limits`.
fn catalog(limits: &str, models: &[(f64, bool)]) -> Catalog {
    catalog_of(limits, "", models)
}

/// As `catalog`, with `types` added to the instance types.
fn catalog_of(limits: &str, types: &str, models: &[(f64, bool)]) -> Catalog {
    let mut s = format!("[limits]\n{limits}\n");
    s += "\n[instance_types.\"small\"]\nfamily = \"cpu\"\nprice_per_hour = 0.1\nmemory_gib = 1\ncompute = 1\n";
    s += types;
    for (i, (rps, zero)) in models.iter().enumerate() {
        s += &format!(
            "\n[[models]]\nid = \"m{i}\"\nartifact = \"s3://b/m{i}.onnx\"\npeak_rps = {rps}\nresidency = \"hot\"\n"
        );
        if *zero {
            s += "scale_to_zero = true\n";
        }
        s += "[models.footprint.cpu]\nmemory_mib = 200\nservice_ms = 10\n";
    }
    Catalog::parse("zero.toml", &s).unwrap()
}

fn opts() -> Options {
    Options { lns_iterations: 100, ..Options::default() }
}

fn zero_nodes(p: &Plan) -> Vec<&stowage_core::PlanNode> {
    p.nodes.iter().filter(|n| n.scales_to_zero()).collect()
}

#[test]
fn marked_models_get_nodes_of_their_own_that_scale_to_zero() {
    // Six always-on and three scale-to-zero models, interleaved: packed together they would fit
    // three nodes, none of which could scale to zero.
    let models: Vec<(f64, bool)> = (0..9).map(|i| (1.0, i % 3 == 0)).collect();
    let c = catalog("", &models);
    let p = plan(&c, &opts()).unwrap();
    let zero = zero_nodes(&p);
    assert_eq!(zero.len(), 1, "{}", p.to_json());
    assert_eq!(zero[0].models, ["m0", "m3", "m6"]);
    for n in p.nodes.iter().filter(|n| !n.scales_to_zero()) {
        assert!(n.models.iter().all(|m| !c.model(m).unwrap().scale_to_zero), "{}", p.to_json());
    }
    // Node ids stay unique and per type; every model is placed once; costs add up.
    let mut ids: Vec<_> = p.nodes.iter().map(|n| n.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), p.nodes.len());
    assert_eq!(p.model_count(), 9);
    let cost: f64 = p.nodes.iter().map(|n| n.price_per_hour).sum();
    assert!((p.cost_per_hour - cost).abs() < 1e-9 && p.lower_bound_per_hour <= p.cost_per_hour);
    assert!(p.to_json().contains("\"min_replicas\": 0"));
}

#[test]
fn a_quiet_node_scales_to_zero_and_a_catalog_without_either_plans_as_before() {
    let models = [(0.01, false), (0.02, false), (5.0, false), (6.0, false), (7.0, false), (8.0, false)];
    let p = plan(&catalog("scale_to_zero_below_rps = 0.5", &models), &opts()).unwrap();
    for n in &p.nodes {
        let rps: f64 = n.models.iter().map(|m| models[m[1..].parse::<usize>().unwrap()].0).sum();
        assert_eq!(n.scales_to_zero(), rps < 0.5, "{}", p.to_json());
    }
    let before = plan(&catalog("", &models), &opts()).unwrap();
    assert!(zero_nodes(&before).is_empty());
    assert!(!before.to_json().contains("min_replicas"));
    // Marking every model is one group: planned as one.
    let all: Vec<(f64, bool)> = models.iter().map(|&(r, _)| (r, true)).collect();
    let p = plan(&catalog("", &all), &opts()).unwrap();
    assert_eq!(p.nodes.len(), before.nodes.len());
    assert_eq!(zero_nodes(&p).len(), p.nodes.len());
}

#[test]
fn the_two_groups_together_keep_each_types_max_count() {
    // Six always-on models fill two small nodes, the only two there may be: the three that scale
    // to zero go to the dearer type rather than to a third small node.
    let types = "max_count = 2\n\n[instance_types.\"large\"]\nfamily = \"cpu\"\nprice_per_hour = 0.3\nmemory_gib = 4\ncompute = 4\n";
    let models: Vec<(f64, bool)> = (0..9).map(|i| (1.0, i >= 6)).collect();
    let p = plan(&catalog_of("", types, &models), &opts()).unwrap();
    let small = p.nodes.iter().filter(|n| n.instance_type == "small").count();
    assert!(small <= 2, "{}", p.to_json());
    assert_eq!(p.model_count(), 9);
    let zero = zero_nodes(&p);
    assert_eq!(zero.len(), 1, "{}", p.to_json());
    assert_eq!(zero[0].instance_type, "large");
}
