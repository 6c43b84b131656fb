//! Fast packing for catalogs of thousands to 100,000 models.
//!
//! 1. Construct: each model goes to the instance type where it is cheapest at the LP's dual prices
//!    (so both dimensions and each type's price weigh in), packed best-fit decreasing.
//! 2. Improve, all deterministic (seeded RNG, iteration budget; the time limit only cuts short):
//!    retype nodes to the cheapest type that still holds them, empty the least useful nodes by
//!    moving their models elsewhere, and ruin-and-recreate large-neighbourhood search.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

use crate::bound::LpBound;
use crate::problem::{Problem, EPS};

/// One node of a packing.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub t: usize,
    pub items: Vec<usize>,
    pub load: [f64; 2],
}

impl Bin {
    pub(crate) fn new(t: usize) -> Self {
        Self { t, items: Vec::new(), load: [0.0; 2] }
    }

    #[inline]
    pub(crate) fn fits(&self, d: [f64; 2]) -> bool {
        self.load[0] + d[0] <= 1.0 + EPS && self.load[1] + d[1] <= 1.0 + EPS
    }

    pub(crate) fn add(&mut self, i: usize, d: [f64; 2]) {
        self.items.push(i);
        self.load[0] += d[0];
        self.load[1] += d[1];
    }

    /// Takes item i out of the bin; `d` is its demand on the bin's type.
    pub(crate) fn take_out(&mut self, i: usize, d: [f64; 2]) {
        self.items.retain(|&x| x != i);
        self.load = [self.load[0] - d[0], self.load[1] - d[1]];
    }

    fn fill(&self) -> f64 {
        self.load[0].max(self.load[1])
    }
}

/// Nodes of each type among `bins` (empty bins are not bought).
pub(crate) fn open_counts(p: &Problem, bins: &[Bin]) -> Vec<usize> {
    let mut c = vec![0; p.n_types()];
    for b in bins.iter().filter(|b| !b.items.is_empty()) {
        c[b.t] += 1;
    }
    c
}

/// The cheapest type of which one more node may be bought besides `bins` (within its
/// `max_count`) and that `ok` takes; ties go to the first type.
pub(crate) fn cheapest_new(p: &Problem, bins: &[Bin], ok: impl Fn(usize) -> bool) -> Option<usize> {
    let counts = open_counts(p, bins);
    (0..p.n_types())
        .filter(|&t| counts[t] < p.types[t].max_count && ok(t))
        .min_by(|&a, &b| p.types[a].price.total_cmp(&p.types[b].price).then(a.cmp(&b)))
}

/// A complete assignment of items to nodes. Empty bins cost nothing and are dropped at the end.
#[derive(Debug, Clone, Default)]
pub struct Packing {
    pub bins: Vec<Bin>,
}

impl Packing {
    pub fn cost(&self, p: &Problem) -> f64 {
        self.bins.iter().filter(|b| !b.items.is_empty()).map(|b| p.types[b.t].price).sum()
    }

    pub fn counts(&self, p: &Problem) -> Vec<usize> {
        open_counts(p, &self.bins)
    }

    /// Recomputes every load from scratch, drops empty bins, and sorts items: the canonical form.
    pub fn normalize(&mut self, p: &Problem) {
        self.bins.retain(|b| !b.items.is_empty());
        for b in &mut self.bins {
            b.items.sort_unstable();
            b.load = [0.0; 2];
            for &i in &b.items {
                let d = p.demand(i, b.t).expect("item placed on a type it cannot run on");
                b.load[0] += d[0];
                b.load[1] += d[1];
            }
        }
    }

    /// Checks every invariant: each item once, on an allowed type, within limits and counts.
    pub fn check(&self, p: &Problem) -> Result<(), PackingDefect> {
        let mut seen = vec![false; p.n_items()];
        let mut counts = vec![0usize; p.n_types()];
        for (k, b) in self.bins.iter().enumerate().filter(|(_, b)| !b.items.is_empty()) {
            counts[b.t] += 1;
            let mut load = [0.0; 2];
            for &i in &b.items {
                if std::mem::replace(&mut seen[i], true) {
                    return Err(PackingDefect::PlacedTwice(p.items[i].clone()));
                }
                let d = p.demand(i, b.t).ok_or_else(|| PackingDefect::WrongType {
                    item: p.items[i].clone(),
                    instance_type: p.types[b.t].name.clone(),
                })?;
                load[0] += d[0];
                load[1] += d[1];
            }
            if load[0] > 1.0 + 1e-6 || load[1] > 1.0 + 1e-6 {
                return Err(PackingDefect::OverLimits { bin: k, instance_type: p.types[b.t].name.clone(), load });
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(PackingDefect::NotPlaced(p.items[i].clone()));
        }
        for (t, &c) in counts.iter().enumerate() {
            if c > p.types[t].max_count {
                return Err(PackingDefect::TooMany {
                    count: c,
                    instance_type: p.types[t].name.clone(),
                    max_count: p.types[t].max_count,
                });
            }
        }
        Ok(())
    }
}

/// An invariant a packing breaks (`Packing::check`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackingDefect {
    #[error("item {0} placed twice")]
    PlacedTwice(String),
    #[error("item {item} on type {instance_type} it cannot run on")]
    WrongType { item: String, instance_type: String },
    #[error("bin {bin} ({instance_type}) over its limits: {load:?}")]
    OverLimits { bin: usize, instance_type: String, load: [f64; 2] },
    #[error("item {0} not placed")]
    NotPlaced(String),
    #[error("{count} nodes of {instance_type}, max_count {max_count}")]
    TooMany { count: usize, instance_type: String, max_count: usize },
}

/// The items could not all be placed within the instance types' `max_count`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not enough capacity: model {model:?} fits no node within the instance types' max_count")]
pub struct Infeasible {
    pub model: String,
}

/// Per item: its LP price (cheapest over types) and its types ordered by LP price.
pub(crate) struct Prices {
    value: Vec<f64>,
    pref: Vec<Vec<usize>>,
}

pub(crate) fn prices(p: &Problem, lb: &LpBound) -> Prices {
    prices_by(p, lb, Preference::Dual)
}

/// How construction ranks the types an item may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// Cheapest at the LP's dual prices; near-ties (the dual is often degenerate) broken by
    /// `Isolated`.
    Dual,
    /// Cheapest if nodes were filled with copies of the item: price × its larger share of a node.
    Isolated,
}

fn prices_by(p: &Problem, lb: &LpBound, how: Preference) -> Prices {
    let mut value = Vec::with_capacity(p.n_items());
    let mut pref = Vec::with_capacity(p.n_items());
    for i in 0..p.n_items() {
        // (primary key, isolated cost, type)
        let mut ts: Vec<(f64, f64, usize)> = p
            .allowed(i)
            .map(|(t, d)| {
                let isolated = p.types[t].price * size(d);
                (if how == Preference::Dual { lb.item_cost(d, t) } else { isolated }, isolated, t)
            })
            .collect();
        let min = ts.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
        let tie = min.abs() * 1e-6 + 1e-12;
        // Near-ties on the primary key compare by isolated cost.
        ts.sort_by(|a, b| {
            let (ka, kb) = (if a.0 <= min + tie { min } else { a.0 }, if b.0 <= min + tie { min } else { b.0 });
            ka.total_cmp(&kb).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2))
        });
        value.push(
            ts.iter()
                .map(|x| lb.item_cost(p.demand(i, x.2).expect("allowed"), x.2))
                .fold(f64::INFINITY, f64::min)
                .max(0.0),
        );
        pref.push(ts.into_iter().map(|x| x.2).collect());
    }
    Prices { value, pref }
}

/// Weight of each dimension of type t when judging leftover space (its dual prices, normalized).
fn weights(lb: &LpBound, t: usize) -> [f64; 2] {
    let s = lb.lambda[t] + lb.mu[t];
    if s <= 0.0 {
        [0.5, 0.5]
    } else {
        [lb.lambda[t] / s, lb.mu[t] / s]
    }
}

/// Size of an item for ordering: its larger share of a node.
#[inline]
pub(crate) fn size(d: [f64; 2]) -> f64 {
    d[0].max(d[1])
}

/// Best-fit: among `cands`, the bin that item i fits in with the least weighted space left.
pub(crate) fn best_fit(
    p: &Problem,
    lb: &LpBound,
    bins: &[Bin],
    cands: impl Iterator<Item = usize>,
    i: usize,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for k in cands {
        let b = &bins[k];
        let Some(d) = p.demand(i, b.t) else { continue };
        if !b.fits(d) {
            continue;
        }
        let w = weights(lb, b.t);
        let left = w[0] * (1.0 - b.load[0] - d[0]) + w[1] * (1.0 - b.load[1] - d[1]);
        if best.is_none_or(|(l, _)| left < l) {
            best = Some((left, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Builds the first packing: best-fit decreasing under each preference rule, bin-centric dot
/// product, and plain first-fit decreasing, each retyped; the cheapest wins (ties: the earlier
/// rule).
pub fn construct(p: &Problem, lb: &LpBound) -> Result<Packing, Infeasible> {
    let candidates = [
        construct_with(p, lb, Preference::Dual),
        construct_with(p, lb, Preference::Isolated),
        construct_dot(p, lb),
        first_fit_decreasing(p),
    ];
    let mut best: Option<Packing> = None;
    let mut err = None;
    for c in candidates {
        match c {
            Ok(mut pk) => {
                retype(p, &mut pk);
                if best.as_ref().is_none_or(|b| pk.cost(p) < b.cost(p) - 1e-9) {
                    best = Some(pk);
                }
            }
            Err(e) => err = Some(e),
        }
    }
    best.ok_or_else(|| err.expect("every candidate failed, so one error was kept"))
}

/// Up to this many models, construction also tries `construct_dot` (quadratic in the models of a
/// type).
pub const DOT_MAX_ITEMS: usize = 20_000;

/// Bin-centric dot-product packing (Panigrahy et al., "Heuristics for vector bin packing"): each
/// model goes to its cheapest type at the dual prices; per type, one node at a time takes, among
/// the models that still fit, the one whose demand points most along the node's free room (the
/// largest dot product), until none fits. Where compute binds and memory is free at the dual
/// prices, this fills both dimensions together: best fit by the dual weights fills compute alone,
/// and the memory-heavy models then need dearer nodes.
pub fn construct_dot(p: &Problem, lb: &LpBound) -> Result<Packing, Infeasible> {
    if p.n_items() > DOT_MAX_ITEMS || p.types.iter().any(|t| t.max_count != usize::MAX) {
        return construct_with(p, lb, Preference::Dual);
    }
    let pr = prices_by(p, lb, Preference::Dual);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); p.n_types()];
    for i in 0..p.n_items() {
        let Some(&t) = pr.pref[i].first() else { return Err(Infeasible { model: p.items[i].clone() }) };
        groups[t].push(i);
    }
    let mut bins = Vec::new();
    for (t, mut left) in groups.into_iter().enumerate() {
        while !left.is_empty() {
            let mut b = Bin::new(t);
            loop {
                let room = [1.0 - b.load[0], 1.0 - b.load[1]];
                let mut best: Option<(f64, usize)> = None;
                for (j, &i) in left.iter().enumerate() {
                    let d = p.demand(i, t).expect("preferred types are allowed");
                    if !b.fits(d) {
                        continue;
                    }
                    let score = d[0] * room[0] + d[1] * room[1];
                    if best.is_none_or(|(s, _)| score > s) {
                        best = Some((score, j));
                    }
                }
                let Some((_, j)) = best else { break };
                let i = left.swap_remove(j);
                b.add(i, p.demand(i, t).expect("preferred types are allowed"));
            }
            if b.items.is_empty() {
                // Cannot happen (a model fits its preferred type alone); never loop on it.
                return construct_with(p, lb, Preference::Dual);
            }
            bins.push(b);
        }
    }
    Ok(Packing { bins })
}

/// Best-fit decreasing, each item on its most preferred type with room (or a new node there).
pub fn construct_with(p: &Problem, lb: &LpBound, how: Preference) -> Result<Packing, Infeasible> {
    let pr = prices_by(p, lb, how);
    let mut order: Vec<usize> = (0..p.n_items()).collect();
    let key = |i: usize| pr.pref[i].first().and_then(|&t| p.demand(i, t)).map_or(0.0, size);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));

    let mut bins: Vec<Bin> = Vec::new();
    let mut by_type: Vec<Vec<usize>> = vec![Vec::new(); p.n_types()];
    for i in order {
        let mut placed = false;
        for &t in &pr.pref[i] {
            let d = p.demand(i, t).expect("preferred types are allowed");
            if let Some(k) = best_fit(p, lb, &bins, by_type[t].iter().copied(), i) {
                bins[k].add(i, d);
                placed = true;
                break;
            }
            if by_type[t].len() < p.types[t].max_count {
                let mut b = Bin::new(t);
                b.add(i, d);
                by_type[t].push(bins.len());
                bins.push(b);
                placed = true;
                break;
            }
        }
        if !placed {
            return Err(Infeasible { model: p.items[i].clone() });
        }
    }
    Ok(Packing { bins })
}

/// The textbook baseline: first-fit decreasing, each item on the type where it is cheapest in
/// isolation (price × its larger share of a node). No dual prices, no improvement.
pub fn first_fit_decreasing(p: &Problem) -> Result<Packing, Infeasible> {
    let lb = LpBound { value: 0.0, lambda: vec![0.0; p.n_types()], mu: vec![0.0; p.n_types()] };
    let pr = prices_by(p, &lb, Preference::Isolated);
    let mut order: Vec<usize> = (0..p.n_items()).collect();
    let key = |i: usize| pr.pref[i].first().and_then(|&t| p.demand(i, t)).map_or(0.0, size);
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let mut bins: Vec<Bin> = Vec::new();
    let mut counts = vec![0usize; p.n_types()];
    'items: for i in order {
        for &t in &pr.pref[i] {
            let d = p.demand(i, t).expect("preferred types are allowed");
            if let Some(b) = bins.iter_mut().find(|b| b.t == t && b.fits(d)) {
                b.add(i, d);
                continue 'items;
            }
            if counts[t] < p.types[t].max_count {
                counts[t] += 1;
                let mut b = Bin::new(t);
                b.add(i, d);
                bins.push(b);
                continue 'items;
            }
        }
        return Err(Infeasible { model: p.items[i].clone() });
    }
    Ok(Packing { bins })
}

/// Loads of `items` on type t, or None if one of them cannot run there or they overflow it.
pub(crate) fn loads_on(p: &Problem, items: &[usize], t: usize) -> Option<[f64; 2]> {
    let mut l = [0.0; 2];
    for &i in items {
        let d = p.demand(i, t)?;
        l[0] += d[0];
        l[1] += d[1];
    }
    (l[0] <= 1.0 + EPS && l[1] <= 1.0 + EPS).then_some(l)
}

/// Moves every bin to the cheapest type that still holds its items (within counts).
pub fn retype(p: &Problem, pk: &mut Packing) -> bool {
    let mut counts = pk.counts(p);
    let mut changed = false;
    for b in pk.bins.iter_mut().filter(|b| !b.items.is_empty()) {
        let mut best = (p.types[b.t].price, b.t, b.load);
        for t in 0..p.n_types() {
            if t == b.t || p.types[t].price >= best.0 - 1e-12 || counts[t] >= p.types[t].max_count {
                continue;
            }
            if let Some(l) = loads_on(p, &b.items, t) {
                best = (p.types[t].price, t, l);
            }
        }
        if best.1 != b.t {
            counts[b.t] -= 1;
            counts[best.1] += 1;
            b.t = best.1;
            b.load = best.2;
            changed = true;
        }
    }
    changed
}

/// Undo log for a tentative change to a packing.
struct Journal {
    saved: Vec<(usize, Bin)>,
    touched: Vec<bool>,
    appended_from: usize,
}

impl Journal {
    fn new(pk: &Packing) -> Self {
        Self { saved: Vec::new(), touched: vec![false; pk.bins.len()], appended_from: pk.bins.len() }
    }

    fn touch(&mut self, pk: &Packing, k: usize) {
        if k < self.appended_from && !std::mem::replace(&mut self.touched[k], true) {
            self.saved.push((k, pk.bins[k].clone()));
        }
    }

    fn undo(self, pk: &mut Packing) {
        pk.bins.truncate(self.appended_from);
        for (k, b) in self.saved {
            pk.bins[k] = b;
        }
    }

    /// (Δcost, Δ Σ fill²) of the change.
    fn delta(&self, p: &Problem, pk: &Packing) -> (f64, f64) {
        let price = |b: &Bin| {
            if b.items.is_empty() {
                0.0
            } else {
                p.types[b.t].price
            }
        };
        let sq = |b: &Bin| b.fill() * b.fill();
        let (mut dc, mut dq) = (0.0, 0.0);
        for (k, old) in &self.saved {
            dc += price(&pk.bins[*k]) - price(old);
            dq += sq(&pk.bins[*k]) - sq(old);
        }
        for b in &pk.bins[self.appended_from..] {
            dc += price(b);
            dq += sq(b);
        }
        (dc, dq)
    }
}

/// Opens new bins for `items` (none fit the existing ones): while some type holds all that is
/// left, the cheapest such; otherwise the type that packs the most LP value per dollar.
pub(crate) fn open_bins(
    p: &Problem,
    pr: &Prices,
    pk: &mut Packing,
    counts: &mut [usize],
    mut items: Vec<usize>,
) -> bool {
    items.sort_by(|&a, &b| pr.value[b].total_cmp(&pr.value[a]).then(a.cmp(&b)));
    while !items.is_empty() {
        let mut all: Option<(f64, usize)> = None;
        for t in 0..p.n_types() {
            if counts[t] < p.types[t].max_count
                && all.is_none_or(|(c, _)| p.types[t].price < c)
                && loads_on(p, &items, t).is_some()
            {
                all = Some((p.types[t].price, t));
            }
        }
        let (t, take) = if let Some((_, t)) = all {
            (t, vec![true; items.len()])
        } else {
            let mut best: Option<(f64, usize, Vec<bool>)> = None;
            for t in 0..p.n_types() {
                if counts[t] >= p.types[t].max_count {
                    continue;
                }
                let mut b = Bin::new(t);
                let mut take = vec![false; items.len()];
                let mut value = 0.0;
                for (j, &i) in items.iter().enumerate() {
                    if let Some(d) = p.demand(i, t).filter(|&d| b.fits(d)) {
                        b.add(i, d);
                        take[j] = true;
                        value += pr.value[i];
                    }
                }
                let eff = value / p.types[t].price;
                if value > 0.0 && best.as_ref().is_none_or(|(e, _, _)| eff > *e) {
                    best = Some((eff, t, take));
                }
            }
            match best {
                Some((_, t, take)) => (t, take),
                None => return false,
            }
        };
        let mut b = Bin::new(t);
        let mut rest = Vec::new();
        for (j, i) in items.into_iter().enumerate() {
            if take[j] {
                b.add(i, p.demand(i, t).expect("taken items fit"));
            } else {
                rest.push(i);
            }
        }
        counts[t] += 1;
        pk.bins.push(b);
        items = rest;
    }
    true
}

/// Tries to place `items` into existing non-empty bins other than `exclude`; returns the ones left.
fn reinsert(
    p: &Problem,
    lb: &LpBound,
    pk: &mut Packing,
    j: &mut Journal,
    items: &[usize],
    exclude: &[bool],
) -> Vec<usize> {
    let mut left = Vec::new();
    for &i in items {
        let cands =
            (0..pk.bins.len()).filter(|&k| !exclude.get(k).copied().unwrap_or(false) && !pk.bins[k].items.is_empty());
        match best_fit(p, lb, &pk.bins, cands, i) {
            Some(k) => {
                j.touch(pk, k);
                let d = p.demand(i, pk.bins[k].t).expect("best_fit checks the type");
                pk.bins[k].add(i, d);
            }
            None => left.push(i),
        }
    }
    left
}

/// Sorts items by decreasing size on their current node's type (ties by index).
fn by_size_desc(p: &Problem, items: &mut [usize], t_of: impl Fn(usize) -> usize) {
    items.sort_by(|&a, &b| {
        let sa = p.demand(a, t_of(a)).map_or(0.0, size);
        let sb = p.demand(b, t_of(b)).map_or(0.0, size);
        sb.total_cmp(&sa).then(a.cmp(&b))
    });
}

/// Weighted fill of a bin at the dual prices of its type: what consolidation concentrates.
fn wfill(lb: &LpBound, t: usize, load: [f64; 2]) -> f64 {
    let w = weights(lb, t);
    w[0] * load[0] + w[1] * load[1]
}

/// Pairs of bins one `consolidate` sweep looks at, about.
const CONSOLIDATE_PAIRS: usize = 150_000;

/// Pairwise shifts and 1-1 swaps that make fuller nodes fuller (Σ fill² up), so that slack gathers
/// in few nodes, where elimination and the tail solver can use it. Returns the number of moves.
pub fn consolidate(p: &Problem, lb: &LpBound, pk: &mut Packing, sweeps: usize, deadline: Option<Instant>) -> usize {
    let mut moves = 0;
    for _ in 0..sweeps {
        let mut order: Vec<usize> = (0..pk.bins.len()).filter(|&k| !pk.bins[k].items.is_empty()).collect();
        // Fullest first: each bin takes what it can from the bins less full than it.
        let fill = |pk: &Packing, k: usize| wfill(lb, pk.bins[k].t, pk.bins[k].load);
        order.sort_by(|&a, &b| fill(pk, b).total_cmp(&fill(pk, a)).then(a.cmp(&b)));
        let before = moves;
        // Each bin takes from the least filled bins below it only, as many as keep a sweep near
        // CONSOLIDATE_PAIRS pairs (all pairs up to about 550 nodes, at least 64 sinks): slack
        // gathers there, and a sweep stays linear in the number of nodes (all pairs is
        // quadratic: 13 million pairs at 100,000 models).
        let sinks = (CONSOLIDATE_PAIRS / order.len().max(1)).max(64);
        let sinks_from = order.len().saturating_sub(sinks);
        for (ai, &a) in order.iter().enumerate() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return moves;
            }
            for &b in order[(ai + 1).max(sinks_from)..].iter().rev() {
                moves += improve_pair(p, lb, pk, a, b);
            }
        }
        if moves == before {
            break;
        }
    }
    moves
}

/// Moves load from bin `b` into bin `a` (shifts, then best 1-1 swaps) while that raises
/// fill(a)² + fill(b)². Returns the number of moves made.
fn improve_pair(p: &Problem, lb: &LpBound, pk: &mut Packing, a: usize, b: usize) -> usize {
    let (ta, tb) = (pk.bins[a].t, pk.bins[b].t);
    let mut moves = 0;
    loop {
        let la = pk.bins[a].load;
        let lbb = pk.bins[b].load;
        let score = |la: [f64; 2], lbb: [f64; 2]| wfill(lb, ta, la).powi(2) + wfill(lb, tb, lbb).powi(2);
        let base = score(la, lbb);
        let mut best: Option<(f64, usize, Option<usize>)> = None; // (gain, index in b, index in a)
        for (jb, &ib) in pk.bins[b].items.iter().enumerate() {
            let (Some(da_b), Some(db_b)) = (p.demand(ib, ta), p.demand(ib, tb)) else { continue };
            // Shift ib from b to a.
            let na = [la[0] + da_b[0], la[1] + da_b[1]];
            if na[0] <= 1.0 + EPS && na[1] <= 1.0 + EPS {
                let gain = score(na, [lbb[0] - db_b[0], lbb[1] - db_b[1]]) - base;
                if gain > 1e-12 && best.is_none_or(|x| gain > x.0) {
                    best = Some((gain, jb, None));
                }
            }
            // Swap ib with an item of a.
            for (ja, &ia) in pk.bins[a].items.iter().enumerate() {
                let (Some(da_a), Some(db_a)) = (p.demand(ia, ta), p.demand(ia, tb)) else { continue };
                let na = [la[0] - da_a[0] + da_b[0], la[1] - da_a[1] + da_b[1]];
                let nb = [lbb[0] - db_b[0] + db_a[0], lbb[1] - db_b[1] + db_a[1]];
                if na[0] > 1.0 + EPS || na[1] > 1.0 + EPS || nb[0] > 1.0 + EPS || nb[1] > 1.0 + EPS {
                    continue;
                }
                let gain = score(na, nb) - base;
                if gain > 1e-12 && best.is_none_or(|x| gain > x.0) {
                    best = Some((gain, jb, Some(ja)));
                }
            }
        }
        let Some((_, jb, ja)) = best else { return moves };
        let ib = pk.bins[b].items.swap_remove(jb);
        let d = p.demand(ib, tb).expect("checked");
        pk.bins[b].load = [pk.bins[b].load[0] - d[0], pk.bins[b].load[1] - d[1]];
        if let Some(ja) = ja {
            let ia = pk.bins[a].items.swap_remove(ja);
            let d = p.demand(ia, ta).expect("checked");
            pk.bins[a].load = [pk.bins[a].load[0] - d[0], pk.bins[a].load[1] - d[1]];
            pk.bins[b].add(ia, p.demand(ia, tb).expect("checked"));
        }
        pk.bins[a].add(ib, p.demand(ib, ta).expect("checked"));
        moves += 1;
        if moves > 10_000 {
            return moves;
        }
    }
}

/// Every sum of a subset of `sizes` up to `cap`: `reach[v]` says whether `v` is one, and
/// `parent[v]` is the last item of the first subset found for it (follow `v - sizes[parent[v]]`
/// back to 0). A word-parallel 0/1 subset-sum: each item shifts the reachable set by its size,
/// 64 sums per instruction; only sums reached for the first time are visited one by one.
fn subset_sums(sizes: &[Option<usize>], cap: usize) -> (Vec<u32>, Vec<bool>) {
    let words = cap / 64 + 1;
    let last = if (cap + 1).is_multiple_of(64) { u64::MAX } else { (1u64 << ((cap + 1) % 64)) - 1 };
    let mut bits = vec![0u64; words];
    bits[0] = 1;
    let mut parent: Vec<u32> = vec![u32::MAX; cap + 1];
    let mut shifted = vec![0u64; words];
    for (j, s) in sizes.iter().enumerate() {
        let Some(s) = *s else { continue };
        if s == 0 || s > cap {
            continue;
        }
        let (q, r) = (s / 64, s % 64);
        for w in 0..words {
            let lo = if w >= q { bits[w - q] << r } else { 0 };
            let hi = if r > 0 && w > q { bits[w - q - 1] >> (64 - r) } else { 0 };
            shifted[w] = lo | hi;
        }
        shifted[words - 1] &= last;
        for w in 0..words {
            let mut new = shifted[w] & !bits[w];
            bits[w] |= new;
            while new != 0 {
                parent[w * 64 + new.trailing_zeros() as usize] = j as u32;
                new &= new - 1;
            }
        }
    }
    let reach = (0..=cap).map(|v| bits[v / 64] >> (v % 64) & 1 == 1).collect();
    (parent, reach)
}

/// Re-packs bins `a` and `b` together so that `a` is as full as possible in its binding dimension:
/// a 0/1 knapsack over the pooled items (sizes rounded to the type's grain to propose), then an
/// exact float check of both bins. Returns true when `a` got fuller.
pub fn refill(p: &Problem, lb: &LpBound, pk: &mut Packing, a: usize, b: usize) -> bool {
    let (ta, tb) = (pk.bins[a].t, pk.bins[b].t);
    let w = weights(lb, ta);
    let dim = if w[0] >= w[1] { 0 } else { 1 };
    let grain = if dim == 0 { p.types[ta].grain } else { 10_000.0 };
    let cap = grain.floor() as usize;
    let pool: Vec<usize> = pk.bins[a].items.iter().chain(&pk.bins[b].items).copied().collect();
    // Items that may go to a (and, if not chosen, must be able to stay on b's type).
    let sizes: Vec<Option<usize>> =
        pool.iter().map(|&i| p.demand(i, ta).map(|d| (d[dim] * grain).round() as usize)).collect();
    let (parent, reach) = subset_sums(&sizes, cap);
    let current = wfill(lb, ta, pk.bins[a].load);
    let mut tried = 0;
    for v in (1..=cap).rev() {
        if !reach[v] {
            continue;
        }
        tried += 1;
        if tried > 24 {
            break;
        }
        let mut chosen = vec![false; pool.len()];
        let mut x = v;
        while x > 0 {
            let j = parent[x] as usize;
            chosen[j] = true;
            x -= sizes[j].expect("parent items have sizes");
        }
        let (mut la, mut lbb) = ([0.0; 2], [0.0; 2]);
        let mut ok = true;
        for (j, &i) in pool.iter().enumerate() {
            let d = if chosen[j] { p.demand(i, ta) } else { p.demand(i, tb) };
            let Some(d) = d else {
                ok = false;
                break;
            };
            let l = if chosen[j] { &mut la } else { &mut lbb };
            l[0] += d[0];
            l[1] += d[1];
        }
        if !ok || la[0] > 1.0 + EPS || la[1] > 1.0 + EPS || lbb[0] > 1.0 + EPS || lbb[1] > 1.0 + EPS {
            continue;
        }
        if wfill(lb, ta, la) <= current + 1e-12 {
            return false;
        }
        let (mut ia, mut ib) = (Vec::new(), Vec::new());
        for (j, &i) in pool.iter().enumerate() {
            if chosen[j] {
                ia.push(i)
            } else {
                ib.push(i)
            }
        }
        pk.bins[a].items = ia;
        pk.bins[a].load = la;
        pk.bins[b].items = ib;
        pk.bins[b].load = lbb;
        return true;
    }
    false
}

/// Refills every node from the `worst` least-filled ones, fullest nodes first.
pub fn refill_all(p: &Problem, lb: &LpBound, pk: &mut Packing, worst: usize, deadline: Option<Instant>) -> usize {
    let fill = |pk: &Packing, k: usize| wfill(lb, pk.bins[k].t, pk.bins[k].load);
    let mut order: Vec<usize> = (0..pk.bins.len()).filter(|&k| !pk.bins[k].items.is_empty()).collect();
    order.sort_by(|&a, &b| fill(pk, b).total_cmp(&fill(pk, a)).then(a.cmp(&b)));
    let n = order.len();
    if n < 2 {
        return 0;
    }
    let sinks: Vec<usize> = order[n.saturating_sub(worst)..].to_vec();
    let mut moved = 0;
    for &a in &order[..n.saturating_sub(worst)] {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        for &b in &sinks {
            if !pk.bins[b].items.is_empty() && refill(p, lb, pk, a, b) {
                moved += 1;
            }
        }
    }
    moved
}

/// Improvement budget and limits.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub lns_iterations: usize,
    pub deadline: Option<Instant>,
    pub seed: u64,
}

impl Budget {
    /// True once the deadline has passed; records that the time limit cut the search short.
    fn expired(&self, stats: &mut ImproveStats) -> bool {
        let over = self.deadline.is_some_and(|d| Instant::now() >= d);
        stats.cut_by_time |= over;
        over
    }
}

/// Statistics of one improvement run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImproveStats {
    pub eliminated: usize,
    pub lns_iterations: usize,
    pub lns_improvements: usize,
    pub cut_by_time: bool,
}

/// Improves a packing in place; never makes it worse.
pub fn improve(
    p: &Problem,
    lb: &LpBound,
    pk: &mut Packing,
    budget: Budget,
    target: f64,
    mut progress: impl FnMut(usize, f64),
) -> ImproveStats {
    let pr = prices(p, lb);
    let mut stats = ImproveStats::default();
    retype(p, pk);

    eliminate(p, lb, &pr, pk, &mut stats, &budget, target);
    tighten(p, lb, &pr, pk, &mut stats, &budget, target);
    pk.normalize(p);

    // Ruin and recreate.
    let mut rng = ChaCha8Rng::seed_from_u64(budget.seed);
    let mut cost = pk.cost(p);
    for it in 0..budget.lns_iterations {
        if cost <= target + 1e-9 || (it % 16 == 0 && budget.expired(&mut stats)) {
            break;
        }
        stats.lns_iterations += 1;
        let live: Vec<usize> = (0..pk.bins.len()).filter(|&k| !pk.bins[k].items.is_empty()).collect();
        if live.len() < 2 {
            break;
        }
        let k_remove = rng.random_range(2..=live.len().min(5));
        let mut chosen = vec![false; pk.bins.len()];
        // Half the time start from a weakly filled node, else anywhere.
        let first = if rng.random_bool(0.5) {
            *live
                .iter()
                .min_by(|&&a, &&b| pk.bins[a].fill().total_cmp(&pk.bins[b].fill()).then(a.cmp(&b)))
                .expect("live is not empty")
        } else {
            live[rng.random_range(0..live.len())]
        };
        chosen[first] = true;
        let mut picked = 1;
        while picked < k_remove {
            let k = live[rng.random_range(0..live.len())];
            if !std::mem::replace(&mut chosen[k], true) {
                picked += 1;
            }
        }
        let mut j = Journal::new(pk);
        let mut pool = Vec::new();
        for k in 0..chosen.len() {
            if chosen[k] {
                j.touch(pk, k);
                pool.extend(std::mem::take(&mut pk.bins[k].items));
                pk.bins[k].load = [0.0; 2];
            }
        }
        // Recreate: largest first on the cheapest type each can use.
        let pref0 = |i: usize| pr.pref[i][0];
        by_size_desc(p, &mut pool, pref0);
        let left = reinsert(p, lb, pk, &mut j, &pool, &chosen);
        let mut counts = pk.counts(p);
        let ok = open_bins(p, &pr, pk, &mut counts, left);
        let (dc, dq) = j.delta(p, pk);
        if ok && (dc < -1e-9 || (dc.abs() <= 1e-9 && dq > 1e-12)) {
            if dc < -1e-9 {
                stats.lns_improvements += 1;
                cost += dc;
                progress(it, cost);
            }
            pk.bins.retain(|b| !b.items.is_empty());
        } else {
            j.undo(pk);
        }
    }
    tighten(p, lb, &pr, pk, &mut stats, &budget, target);
    retype(p, pk);
    pk.normalize(p);
    stats
}

/// Concentrates slack (pairwise moves, then subset-sum refills) and empties what that frees.
fn tighten(
    p: &Problem,
    lb: &LpBound,
    pr: &Prices,
    pk: &mut Packing,
    stats: &mut ImproveStats,
    budget: &Budget,
    target: f64,
) {
    if !budget.expired(stats) && pk.cost(p) > target + 1e-9 {
        consolidate(p, lb, pk, 8, budget.deadline);
        refill_all(p, lb, pk, 3, budget.deadline);
        eliminate(p, lb, pr, pk, stats, budget, target);
    }
}

/// Each item's LP price: its cheapest footprint at the dual prices.
pub fn item_values(p: &Problem, lb: &LpBound) -> Vec<f64> {
    prices(p, lb).value
}

/// Non-empty bins, least useful first: the LP value they carry per dollar, ties by index.
pub fn least_useful_first(p: &Problem, values: &[f64], pk: &Packing) -> Vec<usize> {
    let mut order: Vec<(f64, usize)> = (0..pk.bins.len())
        .filter(|&k| !pk.bins[k].items.is_empty())
        .map(|k| {
            let b = &pk.bins[k];
            (b.items.iter().map(|&i| values[i]).sum::<f64>() / p.types[b.t].price, k)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, k)| k).collect()
}

/// Empties the least useful nodes (LP value carried per dollar, lowest first) by moving their
/// models into the others; repeats while that succeeds.
fn eliminate(
    p: &Problem,
    lb: &LpBound,
    pr: &Prices,
    pk: &mut Packing,
    stats: &mut ImproveStats,
    budget: &Budget,
    target: f64,
) {
    loop {
        let order = least_useful_first(p, &pr.value, pk);
        let mut any = false;
        for k in order {
            if budget.expired(stats) || pk.cost(p) <= target + 1e-9 {
                break;
            }
            let mut j = Journal::new(pk);
            j.touch(pk, k);
            let t = pk.bins[k].t;
            let mut items = std::mem::take(&mut pk.bins[k].items);
            pk.bins[k].load = [0.0; 2];
            by_size_desc(p, &mut items, |_| t);
            let mut exclude = vec![false; pk.bins.len()];
            exclude[k] = true;
            if reinsert(p, lb, pk, &mut j, &items, &exclude).is_empty() {
                stats.eliminated += 1;
                any = true;
            } else {
                j.undo(pk);
            }
        }
        if !any || budget.expired(stats) {
            break;
        }
        retype(p, pk);
    }
    pk.bins.retain(|b| !b.items.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bound::lp_bound;
    use crate::problem::BinType;

    fn uniform(n: usize, d: [f64; 2], types: Vec<BinType>) -> Problem {
        let nt = types.len();
        Problem::new(types, (0..n).map(|i| format!("m{i}")).collect(), vec![Some(d); n * nt])
    }

    fn bt(name: &str, price: f64) -> BinType {
        BinType { name: name.into(), family: "f".into(), price, max_count: usize::MAX, grain: 10_000.0 }
    }

    /// The subset-sum table the word-parallel one replaced: one sum at a time.
    fn subset_sums_scalar(sizes: &[Option<usize>], cap: usize) -> (Vec<u32>, Vec<bool>) {
        let mut parent: Vec<u32> = vec![u32::MAX; cap + 1];
        let mut reach = vec![false; cap + 1];
        reach[0] = true;
        for (j, s) in sizes.iter().enumerate() {
            let Some(s) = *s else { continue };
            if s == 0 || s > cap {
                continue;
            }
            for v in (s..=cap).rev() {
                if !reach[v] && reach[v - s] {
                    reach[v] = true;
                    parent[v] = j as u32;
                }
            }
        }
        (parent, reach)
    }

    proptest::proptest! {
        #[test]
        fn subset_sums_match_the_scalar_table(
            sizes in proptest::collection::vec(proptest::option::weighted(0.9, 0usize..400), 0..40),
            cap in 0usize..700,
        ) {
            proptest::prop_assert_eq!(subset_sums(&sizes, cap), subset_sums_scalar(&sizes, cap));
        }
    }

    #[test]
    fn constructs_valid_packings() {
        let p = uniform(10, [0.3, 0.1], vec![bt("a", 1.0)]);
        let lb = lp_bound(&p);
        let pk = construct(&p, &lb).unwrap();
        pk.check(&p).unwrap();
        assert_eq!(pk.bins.len(), 4); // 3 per node
    }

    #[test]
    fn retype_picks_cheaper_type() {
        // Three items fit one small node; a big node is what a naive pass might open.
        let p = Problem::new(
            vec![bt("big", 3.0), bt("small", 1.0)],
            vec!["a".into(), "b".into()],
            vec![Some([0.1, 0.1]), Some([0.5, 0.5]), Some([0.1, 0.1]), Some([0.5, 0.5])],
        );
        let mut pk = Packing { bins: vec![Bin { t: 0, items: vec![0, 1], load: [0.2, 0.2] }] };
        assert!(retype(&p, &mut pk));
        assert_eq!(pk.bins[0].t, 1);
        pk.check(&p).unwrap();
    }

    #[test]
    fn improve_empties_a_node() {
        // 6 items of 1/3: a bad start with 3 half-used nodes improves to 2 full ones.
        let p = uniform(6, [1.0 / 3.0 - 1e-6, 0.0], vec![bt("a", 1.0)]);
        let lb = lp_bound(&p);
        let mut pk = Packing {
            bins: (0..3).map(|k| Bin { t: 0, items: vec![2 * k, 2 * k + 1], load: [2.0 / 3.0, 0.0] }).collect(),
        };
        let budget = Budget { lns_iterations: 100, deadline: None, seed: 1 };
        improve(&p, &lb, &mut pk, budget, 0.0, |_, _| {});
        pk.check(&p).unwrap();
        assert_eq!(pk.cost(&p), 2.0);
    }

    #[test]
    fn max_count_is_respected_or_infeasible() {
        let mut a = bt("a", 1.0);
        a.max_count = 1;
        let p = uniform(3, [0.5, 0.0], vec![a]);
        let lb = lp_bound(&p);
        assert_eq!(construct(&p, &lb).unwrap_err().model, "m2");
    }
}
