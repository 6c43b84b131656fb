//! Replicas: a model with more traffic than one node serves is split into copies on distinct
//! nodes, each with its share of the traffic; `min_replicas` asks for copies on distinct nodes
//! too; a re-plan keeps the copies where they are.

use stowage_core::{Catalog, Plan};
use stowage_planner::replan::{replan, Budget};
use stowage_planner::{plan, Options};

/// One instance type (1 compute unit, room for four 200 MiB models) and `models` (peak rps,
/// min_replicas), each 10 ms a request.
fn catalog(models: &[(f64, u32)]) -> Catalog {
    let mut s = String::from(
        "[instance_types.\"small\"]\nfamily = \"cpu\"\nprice_per_hour = 0.1\nmemory_gib = 1\ncompute = 1\n",
    );
    for (i, (rps, min)) in models.iter().enumerate() {
        s += &format!(
            "\n[[models]]\nid = \"m{i}\"\nartifact = \"s3://b/m{i}.onnx\"\npeak_rps = {rps}\nresidency = \"hot\"\n"
        );
        if *min > 1 {
            s += &format!("min_replicas = {min}\n");
        }
        s += "[models.footprint.cpu]\nmemory_mib = 200\nservice_ms = 10\n";
    }
    Catalog::parse("replicas.toml", &s).unwrap()
}

fn opts() -> Options {
    Options { lns_iterations: 100, ..Options::default() }
}

/// The nodes of `model` in `p` with their shares.
fn nodes_of<'a>(p: &'a Plan, model: &str) -> Vec<(&'a str, f64)> {
    p.replicas_of(model).into_iter().map(|(n, s)| (n.id.as_str(), s)).collect()
}

#[test]
fn a_model_at_five_times_a_node_is_split_over_five_nodes_and_a_replan_keeps_them() {
    // 400 rps × 10 ms = 4 units busy; a node gives 0.83 of one: 5 copies of 80 rps.
    let c = catalog(&[(400.0, 1), (5.0, 1), (5.0, 1), (1.0, 1)]);
    let p = plan(&c, &opts()).unwrap();
    let hot = nodes_of(&p, "m0");
    assert_eq!(hot.len(), 5, "{}", p.to_json());
    let mut ids: Vec<&str> = hot.iter().map(|(n, _)| *n).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "distinct nodes");
    assert!(hot.iter().all(|&(_, s)| (s - 0.2).abs() < 1e-9));
    // Each node within its limits; the plan reads back (its shares add up).
    for n in &p.nodes {
        assert!(n.usage.utilization <= 0.83 + 1e-9, "{}", p.to_json());
    }
    Plan::parse("p.json", &p.to_json()).unwrap();
    assert_eq!(p.model_count(), 4);
    let table = stowage_planner::report::cost_table(&p);
    assert!(table.contains("replicas: 1 models on 5 nodes in all (4 copies beyond one each"), "{table}");
    // The other models are on one node each, without a share.
    for m in ["m1", "m2", "m3"] {
        assert_eq!(nodes_of(&p, m).len(), 1);
        assert!(p.nodes.iter().all(|n| !n.shares.contains_key(m)));
    }

    let again = replan(&c, &p, &opts(), Budget::default()).unwrap();
    let changes = again.changes.as_ref().unwrap();
    assert!(changes.models_moved.is_empty(), "{changes:?}");
    assert_eq!(nodes_of(&again, "m0"), hot);
    // Twice the traffic: more copies; the kept ones stay where they were.
    let busier = catalog(&[(800.0, 1), (5.0, 1), (5.0, 1), (1.0, 1)]);
    let more = replan(&busier, &p, &opts(), Budget::default()).unwrap();
    let now = nodes_of(&more, "m0");
    assert!(now.len() >= 10, "{}", more.to_json());
    assert!(hot.iter().all(|(n, _)| now.iter().any(|(m, _)| m == n)), "{now:?}");
    Plan::parse("more.json", &more.to_json()).unwrap();
}

#[test]
fn min_replicas_puts_copies_on_distinct_nodes() {
    // Four quiet models fit one node; m0 asks for two copies.
    let c = catalog(&[(1.0, 2), (1.0, 1), (1.0, 1)]);
    let p = plan(&c, &opts()).unwrap();
    let copies = nodes_of(&p, "m0");
    assert_eq!(copies.len(), 2, "{}", p.to_json());
    assert_ne!(copies[0].0, copies[1].0);
    assert_eq!((copies[0].1, copies[1].1), (0.5, 0.5));
    assert_eq!(p.nodes.len(), 2);
    // Without it, one node.
    assert_eq!(plan(&catalog(&[(1.0, 1), (1.0, 1), (1.0, 1)]), &opts()).unwrap().nodes.len(), 1);
}
