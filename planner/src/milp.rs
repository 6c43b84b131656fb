//! Exact packing as a MILP (good_lp + COIN-OR CBC), for catalogs small enough to prove optimal.
//!
//! Variables: y[t][k] = node k of type t is bought; x[i][t][k] = item i runs on it.
//! Candidate nodes per type are capped by what the incumbent's cost can pay for, and symmetry is
//! broken twice: nodes of a type are used in order, and the r-th item that can run on a type may
//! only use that type's first r+1 nodes (relabel nodes by their lowest item: always possible).

use std::collections::BTreeMap;

use good_lp::{
    constraint, variable, Expression, ProblemVariables, Solution, SolutionStatus, SolverModel, Variable, WithMipGap,
};

use crate::heuristic::{Bin, Packing};
use crate::problem::Problem;

#[derive(Debug, Clone)]
pub struct MilpResult {
    /// A packing at least as good as the incumbent, when the solver returned a feasible one.
    pub packing: Option<Packing>,
    pub proven_optimal: bool,
    /// The solver's lower bound (0 when it gave none).
    pub bound: f64,
}

/// Solves exactly within `seconds`; `incumbent` caps the search (its cost is the cutoff).
/// `max_nodes` bounds the branch-and-bound tree: unlike time, a node budget gives the same answer
/// on every machine.
pub fn solve_exact(p: &Problem, incumbent: &Packing, seconds: f64, max_nodes: Option<usize>) -> MilpResult {
    let nt = p.n_types();
    let ub = incumbent.cost(p);
    // Rank of each item among the items that can run on each type.
    let mut rank = vec![vec![usize::MAX; nt]; p.n_items()];
    let mut fit_count = vec![0usize; nt];
    for (i, r) in rank.iter_mut().enumerate() {
        for (t, _) in p.allowed(i) {
            r[t] = fit_count[t];
            fit_count[t] += 1;
        }
    }
    let caps: Vec<usize> = (0..nt)
        .map(|t| p.types[t].max_count.min(fit_count[t]).min((ub / p.types[t].price + 1e-9).floor() as usize))
        .collect();

    let mut vars = ProblemVariables::new();
    let y: Vec<Vec<Variable>> = caps.iter().map(|&c| (0..c).map(|_| vars.add(variable().binary())).collect()).collect();
    let mut x: BTreeMap<(usize, usize, usize), Variable> = BTreeMap::new();
    for i in 0..p.n_items() {
        for (t, _) in p.allowed(i) {
            for k in 0..caps[t].min(rank[i][t] + 1) {
                x.insert((i, t, k), vars.add(variable().binary()));
            }
        }
    }
    let objective: Expression = (0..nt).map(|t| y[t].iter().map(|&v| p.types[t].price * v).sum::<Expression>()).sum();

    let mut model = vars.minimise(objective).using(good_lp::coin_cbc);
    let log = if std::env::var_os("STOWAGE_DEBUG_MILP").is_some() { "1" } else { "0" };
    model.set_parameter("log", log);
    model.set_parameter("slogLevel", log);
    model.set_parameter("randomSeed", "42");
    model.set_parameter("randomCbcSeed", "42");
    // CBC 2.10 (Debian's coinor-libcbc) can return an infeasible solution, marked optimal, when
    // given a MIP start; a cutoff at the incumbent's cost prunes as well and stays sound.
    model.set_parameter("cutoff", &format!("{}", ub + 1e-6 * ub.max(1.0)));
    // good_lp's with_time_limit rounds up to whole seconds; CBC itself takes fractions.
    model.set_parameter("sec", &format!("{:.3}", seconds.max(0.05)));
    if let Some(n) = max_nodes {
        model.set_parameter("maxNodes", &n.to_string());
    }
    model = model.with_mip_gap(0.0).unwrap_or_else(|_| unreachable!("0 is a valid gap"));

    for i in 0..p.n_items() {
        let s: Expression = x.range((i, 0, 0)..(i + 1, 0, 0)).map(|(_, &v)| v).sum();
        model = model.with(constraint!(s == 1));
    }
    for t in 0..nt {
        for k in 0..caps[t] {
            let (mut mem, mut cpu) = (Expression::from(0.0), Expression::from(0.0));
            for i in 0..p.n_items() {
                if let (Some(&v), Some(d)) = (x.get(&(i, t, k)), p.demand(i, t)) {
                    mem += d[0] * v;
                    cpu += d[1] * v;
                    model = model.with(constraint!(v <= y[t][k]));
                }
            }
            model = model.with(constraint!(mem <= y[t][k]));
            model = model.with(constraint!(cpu <= y[t][k]));
            if k + 1 < caps[t] {
                model = model.with(constraint!(y[t][k] >= y[t][k + 1]));
            }
        }
    }

    let sol = match model.solve() {
        Ok(sol) => sol,
        Err(e) => {
            if std::env::var_os("STOWAGE_DEBUG_MILP").is_some() {
                eprintln!("milp: {e}");
            }
            return MilpResult { packing: None, proven_optimal: false, bound: 0.0 };
        }
    };
    let proven = matches!(sol.status(), SolutionStatus::Optimal);
    if std::env::var_os("STOWAGE_DEBUG_MILP").is_some() {
        eprintln!(
            "milp: status {:?}, objective {}, bound {}",
            sol.status(),
            sol.model().obj_value(),
            sol.model().best_possible_value()
        );
    }
    let bound = sol.model().best_possible_value().max(0.0);
    let mut bins: BTreeMap<(usize, usize), Bin> = BTreeMap::new();
    for (&(i, t, k), &v) in &x {
        if sol.value(v) > 0.5 {
            bins.entry((t, k)).or_insert_with(|| Bin { t, items: Vec::new(), load: [0.0; 2] }).items.push(i);
        }
    }
    let mut pk = Packing { bins: bins.into_values().collect() };
    pk.normalize(p);
    let packing = (pk.check(p).is_ok() && pk.cost(p) <= ub + 1e-9).then_some(pk);
    // Claim a proof only when CBC's own bound agrees with the solution it returned.
    let proven_optimal = proven && packing.as_ref().is_some_and(|pk| bound >= pk.cost(p) - 1e-6);
    let bound = match &packing {
        Some(pk) if proven_optimal => pk.cost(p),
        _ => bound,
    };
    MilpResult { packing, proven_optimal, bound }
}

/// Reassigns the items of `bins` among those same bins (their types fixed) so that the weight of
/// the items away from their home bin (`home(item)`: an index into `bins`) is least, every bin
/// within its limits. Items without a home go wherever they fit. None when CBC finds nothing
/// better within its node budget (`max_nodes` keeps the answer the same on every machine).
pub fn min_moves(
    p: &Problem,
    bins: &[Bin],
    home: impl Fn(usize) -> Option<usize>,
    weight: impl Fn(usize) -> f64,
    max_nodes: usize,
) -> Option<Vec<Bin>> {
    let items: Vec<usize> = bins.iter().flat_map(|b| b.items.iter().copied()).collect();
    let away = |assign: &dyn Fn(usize) -> usize| -> f64 {
        items.iter().filter(|&&i| home(i).is_some_and(|h| h != assign(i))).map(|&i| weight(i)).sum()
    };
    let now: BTreeMap<usize, usize> =
        bins.iter().enumerate().flat_map(|(b, bin)| bin.items.iter().map(move |&i| (i, b))).collect();
    let before = away(&|i| now[&i]);
    if before <= 0.0 {
        return None;
    }
    let mut vars = ProblemVariables::new();
    let mut x: BTreeMap<(usize, usize), Variable> = BTreeMap::new();
    for &i in &items {
        for (b, bin) in bins.iter().enumerate() {
            if p.demand(i, bin.t).is_some() {
                x.insert((i, b), vars.add(variable().binary()));
            }
        }
    }
    let objective: Expression =
        items.iter().filter_map(|&i| home(i).and_then(|h| x.get(&(i, h))).map(|&v| weight(i) * v)).sum();
    let mut model = vars.maximise(objective).using(good_lp::coin_cbc);
    model.set_parameter("log", "0");
    model.set_parameter("slogLevel", "0");
    model.set_parameter("randomSeed", "42");
    model.set_parameter("randomCbcSeed", "42");
    model.set_parameter("maxNodes", &max_nodes.to_string());
    model.set_parameter("sec", "5");
    for &i in &items {
        let s: Expression = x.range((i, 0)..(i + 1, 0)).map(|(_, &v)| v).sum();
        model = model.with(constraint!(s == 1));
    }
    for (b, bin) in bins.iter().enumerate() {
        let (mut mem, mut cpu) = (Expression::from(0.0), Expression::from(0.0));
        for &i in &items {
            if let (Some(&v), Some(d)) = (x.get(&(i, b)), p.demand(i, bin.t)) {
                mem += d[0] * v;
                cpu += d[1] * v;
            }
        }
        model = model.with(constraint!(mem <= 1.0));
        model = model.with(constraint!(cpu <= 1.0));
    }
    let sol = model.solve().ok()?;
    let mut out: Vec<Bin> = bins.iter().map(|b| Bin { t: b.t, items: Vec::new(), load: [0.0; 2] }).collect();
    let mut placed: BTreeMap<usize, usize> = BTreeMap::new();
    for (&(i, b), &v) in &x {
        if sol.value(v) > 0.5 && placed.insert(i, b).is_none() {
            out[b].items.push(i);
        }
    }
    if placed.len() != items.len() {
        return None;
    }
    let mut pk = Packing { bins: out };
    for b in &mut pk.bins {
        for &i in &b.items.clone() {
            let d = p.demand(i, b.t)?;
            b.load = [b.load[0] + d[0], b.load[1] + d[1]];
        }
    }
    let within = pk.bins.iter().all(|b| b.load[0] <= 1.0 + 1e-6 && b.load[1] <= 1.0 + 1e-6);
    (within && away(&|i| placed[&i]) < before - 1e-9).then_some(pk.bins)
}
