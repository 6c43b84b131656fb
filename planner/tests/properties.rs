//! Property tests on random problems: every model placed once on a type it can run on, every
//! limit and count held, cost ≥ lower bound, the bound never above the exact LP, determinism.

use good_lp::{constraint, variable, Expression, ProblemVariables, Solution, SolverModel};
use proptest::prelude::*;
use std::time::{Duration, Instant};
use stowage_planner::bound::lp_bound;
use stowage_planner::colgen::colgen_bound;
use stowage_planner::problem::{BinType, Problem};
use stowage_planner::{solve_problem, BoundKind, Method, Options};

fn problem() -> impl Strategy<Value = Problem> {
    problem_of(40)
}

fn problem_of(max_items: usize) -> impl Strategy<Value = Problem> {
    (1usize..4, 1usize..max_items)
        .prop_flat_map(|(nt, n)| {
            let types = proptest::collection::vec((1u32..400, prop::option::weighted(0.2, 1usize..6)), nt);
            // Per item and type: fits? memory, compute (fractions of a node).
            let demand = proptest::collection::vec((prop::bool::weighted(0.85), 0.01f64..0.7, 0.0f64..0.6), n * nt);
            (Just(nt), Just(n), types, demand)
        })
        .prop_map(|(nt, n, types, demand)| {
            let types: Vec<BinType> = types
                .into_iter()
                .enumerate()
                .map(|(t, (cents, max))| BinType {
                    name: format!("t{t}"),
                    family: "f".into(),
                    price: cents as f64 / 100.0,
                    max_count: max.unwrap_or(usize::MAX),
                    grain: 10_000.0,
                })
                .collect();
            let mut d: Vec<Option<[f64; 2]>> = demand.into_iter().map(|(ok, m, c)| ok.then_some([m, c])).collect();
            // Every item must be able to run somewhere: give the first type a fallback footprint.
            for i in 0..n {
                if (0..nt).all(|t| d[i * nt + t].is_none()) {
                    d[i * nt] = Some([0.3, 0.2]);
                }
            }
            Problem::new(types, (0..n).map(|i| format!("m{i}")).collect(), d)
        })
}

/// The LP relaxation solved directly (primal), for comparison with the dual bound.
fn exact_lp(p: &Problem) -> f64 {
    let mut vars = ProblemVariables::new();
    let nt = p.n_types();
    let y: Vec<_> = (0..nt)
        .map(|t| {
            let v = variable().min(0.0);
            vars.add(if p.types[t].max_count == usize::MAX { v } else { v.max(p.types[t].max_count as f64) })
        })
        .collect();
    let mut x = Vec::new();
    for i in 0..p.n_items() {
        for (t, d) in p.allowed(i) {
            x.push((i, t, d, vars.add(variable().min(0.0).max(1.0))));
        }
    }
    let obj: Expression = (0..nt).map(|t| p.types[t].price * y[t]).sum();
    let mut m = vars.minimise(obj).using(good_lp::coin_cbc);
    m.set_parameter("log", "0");
    for i in 0..p.n_items() {
        let s: Expression = x.iter().filter(|e| e.0 == i).map(|e| e.3).sum();
        m = m.with(constraint!(s == 1));
    }
    for (t, &yt) in y.iter().enumerate() {
        let mem: Expression = x.iter().filter(|e| e.1 == t).map(|e| e.2[0] * e.3).sum();
        let cpu: Expression = x.iter().filter(|e| e.1 == t).map(|e| e.2[1] * e.3).sum();
        m = m.with(constraint!(mem <= yt));
        m = m.with(constraint!(cpu <= yt));
    }
    match m.solve() {
        Ok(s) => (0..nt).map(|t| p.types[t].price * s.value(y[t])).sum(),
        Err(_) => f64::INFINITY, // infeasible under max_count
    }
}

fn opts(method: Method) -> Options {
    Options { method, lns_iterations: 300, ..Options::default() }
}

/// Thirty models that each take 51 % of a node: the continuous LP counts 15.3 nodes, but no two
/// share one. Column generation proves the 30-node plan optimal without the MILP.
#[test]
fn whole_models_per_node_close_the_gap_that_the_continuous_bound_leaves() {
    let types =
        vec![BinType { name: "t".into(), family: "f".into(), price: 1.0, max_count: usize::MAX, grain: 10_000.0 }];
    let p = Problem::new(types, (0..30).map(|i| format!("m{i}")).collect(), vec![Some([0.51, 0.1]); 30]);
    assert!((lp_bound(&p).value - 15.3).abs() < 1e-6);
    let s = solve_problem(&p, &opts(Method::Heuristic)).unwrap();
    assert_eq!(s.packing.cost(&p), 30.0);
    assert!((s.lower_bound - 30.0).abs() < 1e-9, "bound {}", s.lower_bound);
    assert_eq!(s.bound, BoundKind::ColumnGeneration { converged: true });
    assert!(s.proven_optimal);
    // Without it, the gap the user saw (the bound rounded up to whole prices: 16 nodes).
    let s = solve_problem(&p, &Options { bound_time: Duration::ZERO, ..opts(Method::Heuristic) }).unwrap();
    assert_eq!((s.lower_bound, s.bound, s.proven_optimal), (16.0, BoundKind::ContinuousLp, false));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn heuristic_plans_are_valid(p in problem()) {
        match solve_problem(&p, &opts(Method::Heuristic)) {
            Ok(s) => {
                prop_assert!(s.packing.check(&p).is_ok(), "{:?}", s.packing.check(&p));
                prop_assert!(s.packing.cost(&p) >= s.lower_bound - 1e-9);
            }
            // Only max_count can make a problem infeasible; the LP must agree it is tight.
            Err(_) => prop_assert!(p.types.iter().any(|t| t.max_count != usize::MAX)),
        }
    }

    #[test]
    fn dual_bound_is_valid_and_tight(p in problem()) {
        let b = lp_bound(&p);
        let lp = exact_lp(&p);
        prop_assert!(b.value <= lp + 1e-6 * lp.max(1.0), "dual {} above LP {}", b.value, lp);
        if lp.is_finite() {
            prop_assert!(b.value >= lp - 1e-3 * lp.max(1.0), "dual {} far below LP {}", b.value, lp);
        }
    }

    #[test]
    fn the_column_generation_bound_is_valid_and_never_below_the_continuous_one(p in problem_of(14)) {
        let Ok(h) = solve_problem(&p, &Options { bound_time: Duration::ZERO, ..opts(Method::Heuristic) }) else {
            return Ok(());
        };
        let lb = lp_bound(&p);
        let deadline = Instant::now() + Duration::from_secs(5);
        let cg = colgen_bound(&p, &lb, &h.packing.bins, h.packing.cost(&p), deadline).expect("few classes");
        let tol = 1e-6 * lb.value.max(1.0);
        prop_assert!(cg.value >= lb.value - tol, "set cover {} below continuous {}", cg.value, lb.value);
        prop_assert!(cg.value <= h.packing.cost(&p) + tol, "bound {} above a plan's cost {}", cg.value, h.packing.cost(&p));
        let exact = Options { time_limit: Duration::from_secs(5), bound_time: Duration::ZERO, ..opts(Method::Exact) };
        if let Ok(e) = solve_problem(&p, &exact) {
            if e.proven_optimal {
                prop_assert!(cg.value <= e.packing.cost(&p) + tol, "bound {} above the optimum {}", cg.value, e.packing.cost(&p));
            }
        }
    }

    #[test]
    fn exact_is_no_worse_and_deterministic(p in problem_of(20)) {
        let exact = Options { time_limit: std::time::Duration::from_secs(2), ..opts(Method::Exact) };
        let (Ok(h), Ok(e)) = (solve_problem(&p, &opts(Method::Heuristic)), solve_problem(&p, &exact)) else {
            return Ok(());
        };
        prop_assert!(e.packing.check(&p).is_ok());
        prop_assert!(e.packing.cost(&p) <= h.packing.cost(&p) + 1e-9);
        prop_assert!(e.lower_bound <= e.packing.cost(&p) + 1e-9);
        let again = solve_problem(&p, &opts(Method::Heuristic)).unwrap();
        prop_assert_eq!(&again.packing.bins, &h.packing.bins);
    }
}
