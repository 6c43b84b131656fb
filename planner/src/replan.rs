//! Day-2 planning (`stowage plan --previous`): the new catalog packed starting from the previous
//! placement, moving as few model bytes as the cost budget allows.
//!
//! 1. A fresh plan of the new catalog is made in the same run: its cost sets the budget,
//!    `(1 + max_cost_increase) ×` that cost.
//! 2. Sticky start: every node of the previous plan whose type is still in the catalog keeps its
//!    id and the models it had that are still in the catalog. A node over its limits (traffic or
//!    footprints grew) gives up the models that relieve it most per byte; those, the new models
//!    and the models of nodes whose type left are placed best-fit into nodes with room (changed
//!    nodes first, so unchanged ones stay unchanged), or on new nodes.
//! 3. While the cost is over the budget (or, with `max_moves`, while moves are left and the cost
//!    is above the fresh plan's): the step that saves the most dollars per byte moved — empty a
//!    node into the others, or retype a node to a cheaper type that holds its models (its pod
//!    restarts, so its models count as moved) — is taken.
//! 4. If that cannot reach the budget, the fresh plan is used, its nodes matched to the previous
//!    ones of the same type with the most model bytes in common.
//!
//! Deterministic: the same inputs give the same plan (when no time limit cuts the fresh plan).

use std::collections::{BTreeMap, HashMap};

use stowage_core::changes::model_bytes;
use stowage_core::plan::{Plan, SolverInfo, PLAN_FORMAT};
use stowage_core::{node_id, Catalog, Changes};

use crate::bound::lp_bound;
use crate::heuristic::{best_fit, loads_on, open_bins, prices, size, Bin, Packing};
use crate::problem::Problem;
use crate::solve::{round6, Options, SolveError};

/// Default of `--max-cost-increase`: 1 % over a fresh plan.
pub const DEFAULT_MAX_COST_INCREASE: f64 = 0.01;

/// How far a re-plan may trade cost for fewer moves.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The plan may cost up to `(1 + this) ×` a fresh plan of the new catalog.
    pub max_cost_increase: f64,
    /// Instead of the cost budget: at most this many models moved to save money (moves that
    /// limits force are not counted).
    pub max_moves: Option<usize>,
}

impl Default for Budget {
    fn default() -> Self {
        Self { max_cost_increase: DEFAULT_MAX_COST_INCREASE, max_moves: None }
    }
}

/// A bin of the re-plan and the previous node it continues, if any.
struct Node {
    bin: Bin,
    /// The previous node's id (kept), or none for a new node.
    id: Option<String>,
    /// The previous node's type index, to tell a retype.
    was_type: Option<usize>,
}

/// The re-plan being built: nodes, where each item was, and what moved.
struct State<'a> {
    p: &'a Problem,
    nodes: Vec<Node>,
    /// Per item: the index of the node it was on in the previous plan (None: new to the plan).
    origin: Vec<Option<usize>>,
    /// Per item: its memory on each type, in MiB (what a move reloads).
    mib: Vec<Vec<f64>>,
}

impl State<'_> {
    fn cost(&self) -> f64 {
        self.nodes.iter().filter(|n| !n.bin.items.is_empty()).map(|n| self.p.types[n.bin.t].price).sum()
    }

    /// Whether item i (on node k now) counts as moved.
    fn moved(&self, i: usize, k: usize) -> bool {
        let n = &self.nodes[k];
        self.origin[i].is_some_and(|o| o != k || n.was_type.is_some_and(|t| t != n.bin.t))
    }

    fn moved_count(&self) -> usize {
        (0..self.nodes.len()).map(|k| self.nodes[k].bin.items.iter().filter(|&&i| self.moved(i, k)).count()).sum()
    }

    /// Bytes and count of the items of node k that would newly count as moved if they left it or
    /// it restarted.
    fn cost_of_moving(&self, k: usize) -> (f64, usize) {
        let n = &self.nodes[k];
        let fresh: Vec<usize> = n.bin.items.iter().copied().filter(|&i| self.origin[i] == Some(k)).collect();
        // Items already moved here (or new) cost nothing more to move again; on a retyped node
        // every item already counts.
        if n.was_type.is_some_and(|t| t != n.bin.t) {
            return (0.0, 0);
        }
        (fresh.iter().map(|&i| self.mib[i][n.bin.t]).sum(), fresh.len())
    }
}

/// Plans `catalog` starting from `previous`; the result carries its `changes` block. Models with
/// replicas are planned as their copies (`replicas.rs`), each kept on the node it was on.
pub fn replan(catalog: &Catalog, previous: &Plan, opts: &Options, budget: Budget) -> Result<Plan, SolveError> {
    let split = crate::replicas::split(catalog);
    let replicated = previous.nodes.iter().any(|n| !n.shares.is_empty());
    if split.is_none() && !replicated {
        return replan_whole(catalog, previous, opts, budget);
    }
    let planned = split.as_ref().unwrap_or(catalog);
    let mut plan =
        crate::replicas::join(replan_whole(planned, &crate::replicas::split_plan(previous, planned), opts, budget)?);
    // What changed, in the models' terms.
    let inner = plan.changes.take().unwrap_or_default();
    let mut changes = Changes::between(previous, &plan, Some(catalog));
    changes.fresh_cost_per_hour = inner.fresh_cost_per_hour;
    changes.next_node_index = inner.next_node_index;
    plan.changes = Some(changes);
    Ok(plan)
}

fn replan_whole(catalog: &Catalog, previous: &Plan, opts: &Options, budget: Budget) -> Result<Plan, SolveError> {
    let start = std::time::Instant::now();
    let (p, fresh) = crate::solve::plan_problem(catalog, opts)?;
    let fresh_cost = fresh.packing.cost(&p);
    let lb = lp_bound(&p);
    let pr = prices(&p, &lb);
    let type_index: HashMap<&str, usize> = p.types.iter().enumerate().map(|(t, ty)| (ty.name.as_str(), t)).collect();
    let item_index: HashMap<&str, usize> = p.items.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mib: Vec<Vec<f64>> = p
        .items
        .iter()
        .map(|m| p.types.iter().map(|t| model_bytes(catalog, m, &t.name) as f64 / 1048576.0).collect())
        .collect();

    // 2. Sticky start.
    let mut st = State { p: &p, nodes: Vec::new(), origin: vec![None; p.n_items()], mib };
    let mut unplaced: Vec<usize> = Vec::new();
    let mut counts = vec![0usize; p.n_types()];
    for prev in &previous.nodes {
        let Some(&t) = type_index.get(prev.instance_type.as_str()) else {
            // The type left the catalog: its models are placed anew (they count as moved).
            for m in &prev.models {
                if let Some(&i) = item_index.get(m.as_str()) {
                    st.origin[i] = Some(usize::MAX);
                    unplaced.push(i);
                }
            }
            continue;
        };
        if counts[t] >= p.types[t].max_count {
            for m in &prev.models {
                if let Some(&i) = item_index.get(m.as_str()) {
                    st.origin[i] = Some(usize::MAX);
                    unplaced.push(i);
                }
            }
            continue;
        }
        counts[t] += 1;
        let k = st.nodes.len();
        let mut bin = Bin::new(t);
        for m in &prev.models {
            let Some(&i) = item_index.get(m.as_str()) else { continue };
            st.origin[i] = Some(k);
            match p.demand(i, t) {
                Some(d) => bin.add(i, d),
                None => unplaced.push(i),
            }
        }
        // Over its limits: give up the models that relieve it most per byte.
        while bin.load[0] > 1.0 + 1e-9 || bin.load[1] > 1.0 + 1e-9 {
            let over = [(bin.load[0] - 1.0).max(0.0), (bin.load[1] - 1.0).max(0.0)];
            let (j, _) = bin
                .items
                .iter()
                .enumerate()
                .map(|(j, &i)| {
                    let d = p.demand(i, t).expect("placed on an allowed type");
                    let relief = d[0].min(over[0]) / over[0].max(1e-12) * (over[0] > 0.0) as u8 as f64
                        + d[1].min(over[1]) / over[1].max(1e-12) * (over[1] > 0.0) as u8 as f64;
                    (j, relief / (st.mib[i][t] + 1.0))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .expect("an overfull node has models");
            let i = bin.items.swap_remove(j);
            let d = p.demand(i, t).expect("placed on an allowed type");
            bin.load = [bin.load[0] - d[0], bin.load[1] - d[1]];
            unplaced.push(i);
        }
        st.nodes.push(Node { bin, id: Some(prev.id.clone()), was_type: Some(t) });
    }
    for i in 0..p.n_items() {
        if st.origin[i].is_none() {
            unplaced.push(i);
        }
    }
    place(&mut st, &lb, &pr, unplaced, &mut counts)?;

    // 3. Cheaper, a few bytes at a time.
    let target = match budget.max_moves {
        Some(_) => fresh_cost,
        None => fresh_cost * (1.0 + budget.max_cost_increase.max(0.0)),
    };
    while st.cost() > target + 1e-9 {
        if !cheapen(&mut st, &lb, budget.max_moves) {
            break;
        }
    }

    // A node whose cold pool cannot hold its largest cold model beside its hot ones sends its
    // cold models where a pool has room (or to a new node), as a fresh plan does.
    let mut bins: Vec<Bin> = st.nodes.iter().map(|n| n.bin.clone()).collect();
    crate::solve::rehome_cold_bins(catalog, &p, &mut bins);
    // And every node keeps its latency target at its peak, as in a fresh plan.
    crate::targets::meet_targets(catalog, &p, &mut bins);
    for (k, bin) in bins.into_iter().enumerate() {
        match st.nodes.get_mut(k) {
            Some(n) => n.bin = bin,
            None => st.nodes.push(Node { bin, id: None, was_type: None }),
        }
    }

    // 4. The fresh plan, matched, when the budget could not be met.
    // Every node's cold pool must hold its largest cold model beside its hot ones.
    let pools_fit = |st: &State| {
        st.nodes.iter().filter(|n| !n.bin.items.is_empty()).all(|n| {
            crate::solve::node_memory(catalog, &p, n.bin.t, &n.bin.items).fits()
                && crate::targets::bin_meets(catalog, &p, n.bin.t, &n.bin.items)
        })
    };
    let within = pools_fit(&st) && (budget.max_moves.is_some() || st.cost() <= target + 1e-9);
    let method = if within {
        format!("replan from previous ({})", fresh.method)
    } else {
        st = matched(&p, &fresh.packing, previous, st.mib.clone(), true);
        if !pools_fit(&st) {
            // Models sent home broke a cold pool: the fresh plan as it is, only renamed.
            st = matched(&p, &fresh.packing, previous, st.mib.clone(), false);
        }
        format!("fresh plan matched to previous ({})", fresh.method)
    };
    let mut plan = to_plan(catalog, &st, previous, fresh.lower_bound);
    plan.solver = SolverInfo {
        method,
        seconds: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        proven_optimal: fresh.proven_optimal && plan.cost_per_hour <= fresh_cost + 1e-9,
        bound: fresh.bound.to_string(),
        gap: if plan.cost_per_hour > 0.0 {
            round6((plan.cost_per_hour - fresh.lower_bound).max(0.0) / plan.cost_per_hour)
        } else {
            0.0
        },
    };
    let mut changes = Changes::between(previous, &plan, Some(catalog));
    changes.fresh_cost_per_hour = Some(round6(fresh_cost));
    changes.next_node_index = next_indices(previous, &plan);
    plan.changes = Some(changes);
    Ok(plan)
}

/// Places `items` best-fit into nodes with room (nodes already changed first, so that unchanged
/// ones stay so), else on new nodes.
fn place(
    st: &mut State,
    lb: &crate::bound::LpBound,
    pr: &crate::heuristic::Prices,
    mut items: Vec<usize>,
    counts: &mut [usize],
) -> Result<(), SolveError> {
    let p = st.p;
    items.sort_by(|&a, &b| {
        let s = |i: usize| p.allowed(i).map(|(_, d)| size(d)).fold(f64::INFINITY, f64::min);
        s(b).total_cmp(&s(a)).then(a.cmp(&b))
    });
    items.dedup();
    let mut left = Vec::new();
    // The bins as best_fit reads them, and which nodes already hold a model from elsewhere; both
    // kept up to date as models are placed (not rebuilt for every model).
    let mut bins: Vec<Bin> = st.nodes.iter().map(|n| n.bin.clone()).collect();
    let mut changed: Vec<bool> = (0..bins.len())
        .map(|k| bins[k].items.iter().any(|&j| st.origin[j] != Some(k)) || st.nodes[k].id.is_none())
        .collect();
    for i in items {
        let k = best_fit(p, lb, &bins, (0..bins.len()).filter(|&k| changed[k]), i)
            .or_else(|| best_fit(p, lb, &bins, (0..bins.len()).filter(|&k| !changed[k]), i));
        match k {
            Some(k) => {
                let d = p.demand(i, bins[k].t).expect("best_fit checks the type");
                bins[k].add(i, d);
                st.nodes[k].bin.add(i, d);
                changed[k] |= st.origin[i] != Some(k);
            }
            None => left.push(i),
        }
    }
    if !left.is_empty() {
        let pk = match solve_subset(p, &left, counts) {
            Some(pk) => pk,
            None => {
                let mut pk = Packing::default();
                if !open_bins(p, pr, &mut pk, counts, left.clone()) {
                    return Err(crate::heuristic::Infeasible { model: p.items[left[0]].clone() }.into());
                }
                pk
            }
        };
        for bin in pk.bins {
            counts[bin.t] += 1;
            st.nodes.push(Node { bin, id: None, was_type: None });
        }
    }
    Ok(())
}

/// Takes the one step that saves the most per byte moved: empty a node into the others, or
/// retype it. False when no step saves anything (within `max_moves`).
fn cheapen(st: &mut State, lb: &crate::bound::LpBound, max_moves: Option<usize>) -> bool {
    let p = st.p;
    let moved_now = st.moved_count();
    let counts = {
        let mut c = vec![0usize; p.n_types()];
        for n in st.nodes.iter().filter(|n| !n.bin.items.is_empty()) {
            c[n.bin.t] += 1;
        }
        c
    };
    // (dollars saved per MiB moved, node, what)
    let mut best: Option<(f64, usize, Step)> = None;
    let mut consider = |ratio: f64, k: usize, step: Step| {
        if best.as_ref().is_none_or(|b| ratio > b.0 + 1e-15) {
            best = Some((ratio, k, step));
        }
    };
    // Least filled first: those are the ones worth emptying; at most 64 tried per step.
    let mut order: Vec<usize> = (0..st.nodes.len()).filter(|&k| !st.nodes[k].bin.items.is_empty()).collect();
    order.sort_by(|&a, &b| {
        let f = |k: usize| st.nodes[k].bin.load[0].max(st.nodes[k].bin.load[1]);
        f(a).total_cmp(&f(b)).then(a.cmp(&b))
    });
    for &k in order.iter().take(64) {
        let (bytes, n) = st.cost_of_moving(k);
        if max_moves.is_some_and(|m| moved_now + n > m) {
            continue;
        }
        let saved = p.types[st.nodes[k].bin.t].price;
        let bins: Vec<Bin> = st.nodes.iter().map(|n| n.bin.clone()).collect();
        if let Some(to) = empty_into_others(p, lb, bins, k) {
            consider(saved / (bytes + 1.0), k, Step::Empty(to));
        }
    }
    for &k in &order {
        let (bytes, n) = st.cost_of_moving(k);
        if max_moves.is_some_and(|m| moved_now + n > m) {
            continue;
        }
        let b = &st.nodes[k].bin;
        let mut cheapest: Option<(f64, usize)> = None;
        for t in 0..p.n_types() {
            if t == b.t || p.types[t].price >= p.types[b.t].price - 1e-12 || counts[t] >= p.types[t].max_count {
                continue;
            }
            if loads_on(p, &b.items, t).is_some() && cheapest.is_none_or(|c| p.types[t].price < c.0) {
                cheapest = Some((p.types[t].price, t));
            }
        }
        if let Some((price, t)) = cheapest {
            consider((p.types[b.t].price - price) / (bytes + 1.0), k, Step::Retype(t));
        }
    }
    // Repack a few of the least filled nodes together onto fewer or cheaper ones: pairs of the
    // ten least filled, and the three and four least filled.
    let few: Vec<usize> = order.iter().take(10).copied().collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for a in 0..few.len() {
        for b in a + 1..few.len() {
            groups.push(vec![few[a], few[b]]);
        }
    }
    for m in [3, 4] {
        if few.len() >= m {
            groups.push(few[..m].to_vec());
        }
    }
    // The nodes opened for what did not fit, together with each of the least filled old ones.
    let opened: Vec<usize> = order.iter().copied().filter(|&k| st.nodes[k].id.is_none()).collect();
    if !opened.is_empty() {
        groups.push(opened.clone());
        for &k in few.iter().filter(|k| !opened.contains(k)).take(8) {
            let mut g = opened.clone();
            g.push(k);
            groups.push(g);
        }
    }
    for g in groups {
        if let Some((saved, bytes, n, repacked)) = repack(st, &counts, &g) {
            if max_moves.is_none_or(|m| moved_now + n <= m) {
                consider(saved / (bytes + 1.0), g[0], Step::Repack(g, repacked));
            }
        }
    }
    let Some((_, k, step)) = best else { return false };
    match step {
        Step::Repack(group, bins) => {
            // Each new bin takes the place of the old node of its type whose models it keeps most
            // of; the other old nodes empty, the other new bins are new nodes.
            for b in &mut st.nodes.iter_mut().enumerate().filter(|(k, _)| group.contains(k)) {
                b.1.bin.items.clear();
                b.1.bin.load = [0.0; 2];
            }
            for (bin, slot) in bins {
                match slot {
                    Some(k) => st.nodes[k].bin = bin,
                    None => st.nodes.push(Node { bin, id: None, was_type: None }),
                }
            }
        }
        Step::Empty(to) => {
            st.nodes[k].bin.items.clear();
            st.nodes[k].bin.load = [0.0; 2];
            for (i, dest) in to {
                let d = p.demand(i, st.nodes[dest].bin.t).expect("checked");
                st.nodes[dest].bin.add(i, d);
            }
        }
        Step::Retype(t) => {
            let b = &mut st.nodes[k].bin;
            b.load = loads_on(p, &b.items, t).expect("checked");
            b.t = t;
        }
    }
    true
}

enum Step {
    /// Node k's items go to these nodes: (item, node).
    Empty(Vec<(usize, usize)>),
    Retype(usize),
    /// These nodes' items repacked into these bins, each in the place of an old node or new.
    Repack(Vec<usize>, Vec<(Bin, Option<usize>)>),
}

/// A cheaper repack of a group: (dollars saved, MiB moved, models moved, the new bins each with
/// the old node it continues).
type Repacked = (f64, f64, usize, Vec<(Bin, Option<usize>)>);

/// Repacks the items of nodes `group` together (a small fresh plan of them), then returns every
/// model it can to its old node (`homecoming`, then exactly with CBC: `milp::min_moves`). When
/// that is cheaper than the group was: what it saves and moves.
fn repack(st: &State, counts: &[usize], group: &[usize]) -> Option<Repacked> {
    let p = st.p;
    let old: f64 = group.iter().map(|&k| p.types[st.nodes[k].bin.t].price).sum();
    let mut counts = counts.to_vec();
    let mut items = Vec::new();
    for &k in group {
        counts[st.nodes[k].bin.t] -= 1;
        items.extend(st.nodes[k].bin.items.iter().copied());
    }
    let pk = solve_subset(p, &items, &counts)?;
    if pk.cost(p) >= old - 1e-9 {
        return None;
    }
    // Match new bins to old nodes of the same type by the MiB of models they keep.
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (b, bin) in pk.bins.iter().enumerate() {
        for &k in group {
            if st.nodes[k].bin.t != bin.t || st.nodes[k].was_type.is_some_and(|t| t != bin.t) {
                continue;
            }
            let keep: f64 =
                bin.items.iter().filter(|&&i| st.origin[i] == Some(k)).map(|&i| st.mib[i][bin.t] + 1e-3).sum();
            if keep > 0.0 {
                pairs.push((keep, b, k));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut slot: Vec<Option<usize>> = vec![None; pk.bins.len()];
    let mut used = Vec::new();
    for (_, b, k) in pairs {
        if slot[b].is_none() && !used.contains(&k) {
            slot[b] = Some(k);
            used.push(k);
        }
    }
    // Models the repack put elsewhere go back to their node where it has room (or by a swap).
    let mut bins = pk.bins;
    let home: HashMap<usize, usize> = slot.iter().enumerate().filter_map(|(b, s)| s.map(|k| (k, b))).collect();
    let home_of = |i: usize| st.origin[i].and_then(|k| home.get(&k).copied());
    homecoming(p, &mut bins, home_of);
    // Then the fewest bytes away from home over these same bins, exactly where CBC can.
    if let Some(better) = crate::milp::min_moves(
        p,
        &bins,
        home_of,
        |i| st.origin[i].and_then(|k| st.nodes.get(k)).map_or(1.0, |n| st.mib[i][n.bin.t].max(1.0)),
        2000,
    ) {
        bins = better;
    }
    let kept: Vec<(Bin, Option<usize>)> = bins.into_iter().zip(slot).filter(|(b, _)| !b.items.is_empty()).collect();
    let new: f64 = kept.iter().map(|(b, _)| p.types[b.t].price).sum();
    let (mut bytes, mut n) = (0.0, 0);
    for (bin, slot) in &kept {
        for &i in &bin.items {
            let was_here = |k: usize| st.origin[i] == Some(k) && !st.moved(i, k);
            let stays = slot.is_some_and(was_here);
            let was_in_group = group.iter().any(|&k| was_here(k));
            if was_in_group && !stays {
                bytes += st.mib[i][bin.t];
                n += 1;
            }
        }
    }
    Some((old - new, bytes, n, kept))
}

/// Moves each item whose home bin (`home(item)`) is another one back to it, where that bin has
/// room or a swap with an item not at home there makes room; repeats while anything moves.
/// Loads stay within the limits throughout (an item leaving a bin only frees room).
fn homecoming(p: &Problem, bins: &mut [Bin], home: impl Fn(usize) -> Option<usize>) {
    let demand = |i: usize, b: &Bin| p.demand(i, b.t);
    for _ in 0..8 {
        let mut moved = false;
        for b in 0..bins.len() {
            let mut j = 0;
            while j < bins[b].items.len() {
                let i = bins[b].items[j];
                let Some(h) = home(i).filter(|&h| h != b) else {
                    j += 1;
                    continue;
                };
                let (Some(dh), Some(db)) = (demand(i, &bins[h]), demand(i, &bins[b])) else {
                    j += 1;
                    continue;
                };
                if bins[h].fits(dh) {
                    bins[b].items.swap_remove(j);
                    bins[b].load = [bins[b].load[0] - db[0], bins[b].load[1] - db[1]];
                    bins[h].add(i, dh);
                    moved = true;
                    continue;
                }
                // A swap with an item in h that is not at home there.
                let swap = bins[h].items.iter().position(|&x| {
                    if home(x) == Some(h) {
                        return false;
                    }
                    let (Some(xh), Some(xb)) = (demand(x, &bins[h]), demand(x, &bins[b])) else { return false };
                    let nh = [bins[h].load[0] - xh[0] + dh[0], bins[h].load[1] - xh[1] + dh[1]];
                    let nb = [bins[b].load[0] - db[0] + xb[0], bins[b].load[1] - db[1] + xb[1]];
                    nh[0] <= 1.0 + crate::problem::EPS
                        && nh[1] <= 1.0 + crate::problem::EPS
                        && nb[0] <= 1.0 + crate::problem::EPS
                        && nb[1] <= 1.0 + crate::problem::EPS
                });
                match swap {
                    Some(q) => {
                        let x = bins[h].items.swap_remove(q);
                        let (xh, xb) = (demand(x, &bins[h]).expect("checked"), demand(x, &bins[b]).expect("checked"));
                        bins[h].load = [bins[h].load[0] - xh[0], bins[h].load[1] - xh[1]];
                        bins[h].add(i, dh);
                        bins[b].items[j] = x;
                        bins[b].load = [bins[b].load[0] - db[0] + xb[0], bins[b].load[1] - db[1] + xb[1]];
                        moved = true;
                        j += 1;
                    }
                    None => j += 1,
                }
            }
        }
        if !moved {
            break;
        }
    }
}

/// Where each item of bin k would go if k were emptied into the other non-empty bins (best-fit,
/// largest first), or None if they do not all fit.
fn empty_into_others(
    p: &Problem,
    lb: &crate::bound::LpBound,
    mut bins: Vec<Bin>,
    k: usize,
) -> Option<Vec<(usize, usize)>> {
    let t = bins[k].t;
    let mut items = std::mem::take(&mut bins[k].items);
    items.sort_by(|&a, &b| {
        let s = |i: usize| p.demand(i, t).map_or(0.0, size);
        s(b).total_cmp(&s(a)).then(a.cmp(&b))
    });
    let mut moves = Vec::with_capacity(items.len());
    for i in items {
        let cands = (0..bins.len()).filter(|&j| j != k && !bins[j].items.is_empty());
        let j = best_fit(p, lb, &bins, cands, i)?;
        let d = p.demand(i, bins[j].t).expect("best_fit checks the type");
        bins[j].add(i, d);
        moves.push((i, j));
    }
    Some(moves)
}

/// The fresh packing, each bin given the id of the previous node of its type it shares the most
/// model bytes with (greedily, largest overlap first).
fn matched<'a>(p: &'a Problem, fresh: &Packing, previous: &Plan, mib: Vec<Vec<f64>>, send_home: bool) -> State<'a> {
    let item_index: HashMap<&str, usize> = p.items.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut was: Vec<Option<usize>> = vec![None; p.n_items()];
    for (n, prev) in previous.nodes.iter().enumerate() {
        for m in &prev.models {
            if let Some(&i) = item_index.get(m.as_str()) {
                was[i] = Some(n);
            }
        }
    }
    let bins: Vec<&Bin> = fresh.bins.iter().filter(|b| !b.items.is_empty()).collect();
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (b, bin) in bins.iter().enumerate() {
        let mut overlap: BTreeMap<usize, f64> = BTreeMap::new();
        for &i in &bin.items {
            if let Some(n) = was[i].filter(|&n| previous.nodes[n].instance_type == p.types[bin.t].name) {
                *overlap.entry(n).or_default() += mib[i][bin.t] + 1e-3;
            }
        }
        pairs.extend(overlap.into_iter().map(|(n, o)| (o, b, n)));
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut bin_to, mut taken) = (vec![None; bins.len()], vec![false; previous.nodes.len()]);
    for (_, b, n) in pairs {
        if bin_to[b].is_none() && !taken[n] {
            bin_to[b] = Some(n);
            taken[n] = true;
        }
    }
    let mut st = State { p, nodes: Vec::new(), origin: vec![None; p.n_items()], mib };
    let mut node_of_prev = vec![usize::MAX; previous.nodes.len()];
    for (b, bin) in bins.iter().enumerate() {
        if let Some(n) = bin_to[b] {
            node_of_prev[n] = st.nodes.len();
        }
        st.nodes.push(Node {
            bin: (*bin).clone(),
            id: bin_to[b].map(|n| previous.nodes[n].id.clone()),
            was_type: bin_to[b].map(|_| bin.t),
        });
    }
    for i in 0..p.n_items() {
        st.origin[i] = was[i].map(|n| node_of_prev[n]);
    }
    if !send_home {
        return st;
    }
    let mut bins: Vec<Bin> = st.nodes.iter().map(|n| n.bin.clone()).collect();
    let origin = st.origin.clone();
    homecoming(p, &mut bins, |i| origin[i].filter(|&k| k != usize::MAX));
    for (n, b) in st.nodes.iter_mut().zip(bins) {
        n.bin = b;
    }
    st
}

/// A small fresh plan of `items` alone (heuristic and a short search), with `counts` nodes of each
/// type already taken elsewhere; its bins in the whole problem's item indices.
fn solve_subset(p: &Problem, items: &[usize], counts: &[usize]) -> Option<Packing> {
    let available: Vec<usize> = p.types.iter().zip(counts).map(|(t, &c)| t.max_count.saturating_sub(c)).collect();
    let sub = p.subset(items, &available);
    // Construction and a short search only: no tail MILP, so that many of these stay cheap.
    let lb = lp_bound(&sub);
    let mut packing = crate::heuristic::construct(&sub, &lb).ok()?;
    let bound = crate::bound::round_to_price_lattice(&sub.types.iter().map(|t| t.price).collect::<Vec<_>>(), lb.value);
    let budget = crate::heuristic::Budget { lns_iterations: 200, deadline: None, seed: crate::solve::DEFAULT_SEED };
    crate::heuristic::improve(&sub, &lb, &mut packing, budget, bound, |_, _| {});
    let solved = crate::solve::Solved {
        packing,
        lower_bound: bound,
        bound: crate::solve::BoundKind::ContinuousLp,
        method: String::new(),
        proven_optimal: false,
        seconds: 0.0,
    };
    let mut pk = solved.packing;
    for b in &mut pk.bins {
        for i in &mut b.items {
            *i = items[*i];
        }
    }
    Some(pk)
}

/// Turns the re-plan into a plan: previous nodes in their order with their ids, new nodes after
/// with ids never used before.
fn to_plan(catalog: &Catalog, st: &State, previous: &Plan, lower_bound: f64) -> Plan {
    let p = st.p;
    let mut next = next_indices(previous, previous);
    let mut nodes = Vec::new();
    for n in st.nodes.iter().filter(|n| !n.bin.items.is_empty()) {
        let ty = &p.types[n.bin.t];
        let id = match &n.id {
            Some(id) => id.clone(),
            None => {
                let k = next.entry(ty.name.clone()).or_insert(0);
                let id = node_id(&ty.name, *k);
                *k += 1;
                id
            }
        };
        nodes.push(crate::solve::plan_node(catalog, p, &n.bin, id));
    }
    let cost: f64 = nodes.iter().map(|n| n.price_per_hour).sum();
    Plan {
        format: PLAN_FORMAT.into(),
        catalog_sha256: catalog.sha256.clone(),
        cost_per_hour: round6(cost),
        lower_bound_per_hour: round6(lower_bound.min(cost)),
        solver: SolverInfo {
            method: String::new(),
            seconds: 0.0,
            proven_optimal: false,
            gap: 0.0,
            bound: String::new(),
        },
        nodes,
        changes: None,
    }
}

/// Per instance type, the next index a new node id takes: past every id of `previous` (and its
/// own record of ids handed out before) and of `plan`.
fn next_indices(previous: &Plan, plan: &Plan) -> BTreeMap<String, usize> {
    let mut next: BTreeMap<String, usize> =
        previous.changes.as_ref().map(|c| c.next_node_index.clone()).unwrap_or_default();
    for n in previous.nodes.iter().chain(&plan.nodes) {
        let Some(index) = n.id.rsplit('-').next().and_then(|s| s.parse::<usize>().ok()) else { continue };
        let e = next.entry(n.instance_type.clone()).or_insert(0);
        *e = (*e).max(index + 1);
    }
    next
}
