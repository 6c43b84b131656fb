//! A lower bound by column generation on the set-cover (Gilmore–Gomory) LP.
//!
//! The continuous LP (`bound.rs`) lets a model split across nodes; where models are a large share
//! of a node that is loose. The set-cover LP instead chooses whole *patterns* — what one node of
//! a type holds — and only their counts are fractional:
//!
//! ```text
//! min Σ_j p_t(j) x_j   s.t.  Σ_j a_cj x_j ≥ n_c  (every class c covered, dual π_c ≥ 0)
//!                            Σ_{j of type t} x_j ≤ K_t  (types with a count limit, dual −ν_t)
//! ```
//!
//! Patterns are generated as needed: given duals, the best pattern of type t solves a bounded
//! two-dimensional knapsack over the classes (`knapsack`, exact branch and bound with a node
//! limit). At *every* iteration the duals give a valid bound (Lagrangian relaxation; Farley's
//! bound where no count limit applies): with ζ_t an upper bound on the best pattern's value and
//! U_t a cap on how many nodes of type t any plan no dearer than the heuristic's can use,
//!
//! ```text
//! LB(π, ν) = Σ_c π_c n_c − Σ_t ν_t K_t + Σ_t U_t · min(0, p_t + ν_t − ζ_t)
//! ```
//!
//! so a time limit still yields a bound, and the best over iterations is reported. The duals are
//! smoothed (Wentges: priced at a mix of the best duals so far and the master's) and come from an
//! interior-point solver (clarabel), whose well-centred duals converge in fewer rounds than a
//! simplex's extreme ones.
//!
//! Classes: models with equal demands on every type are one class. Where there would be more than
//! `MAX_CLASSES`, demands are rounded *down* onto a geometric grid (relative step ε above 0.2 % of
//! a node, finer below) and a class takes the smallest demand of its members: every real node is
//! then a feasible pattern, so the bound stays valid and loses at most about ε of it.

use std::collections::HashMap;
use std::time::Instant;

use crate::bound::LpBound;
use crate::heuristic::Bin;
use crate::problem::{Problem, EPS};

/// At most this many classes: the master LP has one row per class.
pub const MAX_CLASSES: usize = 600;
/// Branch-and-bound nodes per knapsack before its LP bound stands in for its optimum.
const KNAPSACK_NODES: usize = 20_000;
/// Wentges smoothing: the weight of the best duals so far in the point priced. The centre starts
/// at the continuous LP's prices, which are nearly optimal on the catalogs of BENCHMARKS.md: a
/// heavy weight keeps the search near them (0.95 converged where 0.5 and 0.8 tailed off).
const SMOOTHING: f64 = 0.95;
/// Patterns generated per type and round, each over the models the earlier ones left.
const PATTERNS_PER_TYPE: usize = 40;

/// The column-generation bound and how it was reached.
#[derive(Debug, Clone)]
pub struct CgBound {
    /// A valid lower bound on any plan's cost.
    pub value: f64,
    /// True when pricing proved no pattern improves the master LP (the bound is its optimum, up
    /// to the solver's tolerance); false when the time limit stopped it.
    pub converged: bool,
    pub iterations: usize,
    pub columns: usize,
    pub classes: usize,
    /// The grid's relative step (0: every class is exact).
    pub rounding: f64,
}

/// Models grouped into classes of equal (rounded-down) demands.
#[derive(Debug, Clone)]
pub struct Classes {
    pub count: Vec<usize>,
    /// `demand[c * n_types + t]`: the smallest demand of c's members on t.
    pub demand: Vec<Option<[f64; 2]>>,
    pub of_item: Vec<usize>,
    pub rounding: f64,
}

/// Groups the items into at most `max` classes, rounding as little as that allows; `None` when
/// even the coarsest grid leaves more. Items are sorted by which types they run on, then by
/// their demands; a run of consecutive items is one class while every demand of each stays
/// within (1 + ε) of the class's smallest (plus ε of 0.2 % of a node, for tiny demands).
pub fn classes(p: &Problem, max: usize) -> Option<Classes> {
    const TAU: f64 = 0.002;
    let nt = p.n_types();
    let row = |i: usize| (0..nt).map(move |t| p.demand(i, t));
    let mut order: Vec<usize> = (0..p.n_items()).collect();
    // Which types first (the None pattern), then memory per type, then compute.
    let runs_on: Vec<Vec<bool>> = (0..p.n_items()).map(|i| row(i).map(|d| d.is_none()).collect()).collect();
    order.sort_by(|&a, &b| {
        runs_on[a].cmp(&runs_on[b]).then_with(|| {
            for dim in [0, 1] {
                for (x, y) in row(a).zip(row(b)) {
                    if let (Some(x), Some(y)) = (x, y) {
                        let o = x[dim].total_cmp(&y[dim]);
                        if o != std::cmp::Ordering::Equal {
                            return o;
                        }
                    }
                }
            }
            std::cmp::Ordering::Equal
        })
    });
    for eps in [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2] {
        let mut of_item = vec![0; p.n_items()];
        let mut count: Vec<usize> = Vec::new();
        // Per class and type: the smallest and the largest demand of its members.
        let mut lo: Vec<Option<[f64; 2]>> = Vec::new();
        let mut hi: Vec<Option<[f64; 2]>> = Vec::new();
        let mut overflow = false;
        for &i in &order {
            let c = count.len().wrapping_sub(1);
            let joins = !count.is_empty()
                && row(i).enumerate().all(|(t, d)| match (lo[c * nt + t], hi[c * nt + t], d) {
                    (None, None, None) => true,
                    (Some(l), Some(h), Some(d)) => (0..2).all(|k| {
                        let (l, h) = (l[k].min(d[k]), h[k].max(d[k]));
                        h <= l * (1.0 + eps) + TAU * eps
                    }),
                    _ => false,
                });
            if joins {
                count[c] += 1;
                for (t, d) in row(i).enumerate() {
                    if let (Some(l), Some(h), Some(d)) = (lo[c * nt + t], hi[c * nt + t], d) {
                        lo[c * nt + t] = Some([l[0].min(d[0]), l[1].min(d[1])]);
                        hi[c * nt + t] = Some([h[0].max(d[0]), h[1].max(d[1])]);
                    }
                }
                of_item[i] = c;
            } else {
                if count.len() == max {
                    overflow = true;
                    break;
                }
                count.push(1);
                lo.extend(row(i));
                hi.extend(row(i));
                of_item[i] = count.len() - 1;
            }
        }
        if !overflow {
            return Some(Classes { count, demand: lo, of_item, rounding: eps });
        }
    }
    None
}

/// One pattern: a node of type `t` holding `a[k].1` models of class `a[k].0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Column {
    t: usize,
    a: Vec<(usize, usize)>,
}

/// The column-generation bound, starting from the heuristic's nodes (every one a feasible
/// pattern, so the first master is feasible) and stopping at `deadline`. `upper` is the cost of a
/// known plan (the heuristic's): it caps how many nodes of each type a better plan can use.
pub fn colgen_bound(p: &Problem, lp: &LpBound, bins: &[Bin], upper: f64, deadline: Instant) -> Option<CgBound> {
    let nt = p.n_types();
    let cls = classes(p, MAX_CLASSES)?;
    let nc = cls.count.len();
    // The continuous LP's prices, as duals of the set-cover LP: feasible there (a pattern's models
    // never weigh more than a whole node), so the first stability centre is worth the continuous
    // bound and the search only goes up from it.
    let pi0: Vec<f64> = (0..nc)
        .map(|c| {
            (0..nt)
                .filter_map(|t| cls.demand[c * nt + t].map(|d| lp.item_cost(d, t)))
                .fold(f64::INFINITY, f64::min)
                .max(0.0)
        })
        .map(|x| if x.is_finite() { x } else { 0.0 })
        .collect();
    let nu0: Vec<f64> = p
        .types
        .iter()
        .enumerate()
        .map(|(t, ty)| if ty.max_count == usize::MAX { 0.0 } else { (lp.lambda[t] + lp.mu[t] - ty.price).max(0.0) })
        .collect();
    let mut columns: Vec<Column> = Vec::new();
    let mut known = std::collections::HashSet::new();
    for b in bins.iter().filter(|b| !b.items.is_empty()) {
        let mut a: HashMap<usize, usize> = HashMap::new();
        for &i in &b.items {
            *a.entry(cls.of_item[i]).or_default() += 1;
        }
        let mut a: Vec<(usize, usize)> = a.into_iter().collect();
        a.sort_unstable();
        let col = Column { t: b.t, a };
        if known.insert(col.clone()) {
            columns.push(col);
        }
    }
    let n_items = p.n_items() as f64;
    let cap: Vec<f64> = p
        .types
        .iter()
        .map(|t| {
            let by_cost = if t.price > 0.0 { (upper / t.price + 1e-9).floor() } else { n_items };
            let k = if t.max_count == usize::MAX { f64::INFINITY } else { t.max_count as f64 };
            by_cost.min(k).min(n_items)
        })
        .collect();
    let limited: Vec<bool> = p.types.iter().map(|t| t.max_count != usize::MAX).collect();
    let start: Vec<Knap> = (0..nt).map(|t| price(p, &cls, t, &pi0, &cls.count)).collect();
    let zeta: Vec<f64> = start.iter().map(|k| k.upper).collect();
    let mut best = lagrangian(p, &cls.count, &pi0, &nu0, &zeta, &cap);
    // And the patterns these prices like best, so the master starts near them.
    for (t, k) in start.into_iter().enumerate() {
        let mut a = k.pattern;
        a.sort_unstable();
        let col = Column { t, a };
        if !col.a.is_empty() && known.insert(col.clone()) {
            columns.push(col);
        }
    }
    let mut center = (pi0, nu0);
    let mut iterations = 0;
    let mut converged = false;
    while Instant::now() < deadline {
        iterations += 1;
        let left = deadline.saturating_duration_since(Instant::now()).as_secs_f64().max(0.01);
        let Some(master) = solve_master(p, &cls, &columns, &limited, left) else { break };
        let mut found = Vec::new();
        // Price at the smoothed point first; where it finds nothing the master's duals decide.
        for smooth in [true, false] {
            let (pi, nu) = if smooth {
                (mix(&center.0, &master.pi), mix(&center.1, &master.nu))
            } else {
                (master.pi.clone(), master.nu.clone())
            };
            let mut zeta = vec![0.0; nt];
            for t in 0..nt {
                let k = price(p, &cls, t, &pi, &cls.count);
                zeta[t] = k.upper;
                // Then more patterns of the type over the models the earlier ones left (a whole
                // packing's worth): the master needs many columns at once to move.
                let mut left = cls.count.clone();
                let mut k = Some(k);
                for _ in 0..PATTERNS_PER_TYPE {
                    let next = k.take().unwrap_or_else(|| price(p, &cls, t, &pi, &left));
                    let value: f64 = next.pattern.iter().map(|&(c, n)| pi[c] * n as f64).sum();
                    if next.pattern.is_empty() || p.types[t].price + nu[t] - value >= -1e-9 * p.types[t].price.max(1e-9)
                    {
                        break;
                    }
                    for &(c, n) in &next.pattern {
                        left[c] -= n;
                    }
                    let mut a = next.pattern;
                    a.sort_unstable();
                    let col = Column { t, a };
                    if known.insert(col.clone()) {
                        found.push(col);
                    }
                }
            }
            let lb = lagrangian(p, &cls.count, &pi, &nu, &zeta, &cap);
            if lb > best {
                best = lb;
                center = (pi, nu);
            }
            if !found.is_empty() {
                break;
            }
        }
        // Converged: the master LP (an upper bound on the set-cover LP) within 0.01 % of the
        // bound. Nothing new to add short of that: the solver's tolerance, stop there.
        let tol = 1e-4 * master.value.abs().max(1e-9);
        if best >= master.value - tol {
            converged = true;
            break;
        }
        if found.is_empty() {
            break;
        }
        columns.extend(found);
    }
    best.is_finite().then_some(CgBound {
        value: best.max(0.0),
        converged,
        iterations,
        columns: columns.len(),
        classes: nc,
        rounding: cls.rounding,
    })
}

/// The best pattern of type t at duals `pi`.
fn price(p: &Problem, cls: &Classes, t: usize, pi: &[f64], bound: &[usize]) -> Knap {
    let nt = p.n_types();
    let items: Vec<KnapItem> = (0..cls.count.len())
        .filter_map(|c| {
            let d = cls.demand[c * nt + t]?;
            (pi[c] > 0.0 && bound[c] > 0).then_some(KnapItem { class: c, value: pi[c], w: d, bound: bound[c] })
        })
        .collect();
    knapsack(&items, KNAPSACK_NODES)
}

fn mix(center: &[f64], x: &[f64]) -> Vec<f64> {
    center.iter().zip(x).map(|(c, x)| SMOOTHING * c + (1.0 - SMOOTHING) * x).collect()
}

/// The Lagrangian bound at (θπ, θν), best over the scalings θ where a type's reduced cost
/// changes sign and θ = 1 (Farley's scaling, generalized to count limits).
fn lagrangian(p: &Problem, count: &[usize], pi: &[f64], nu: &[f64], zeta: &[f64], cap: &[f64]) -> f64 {
    let base: f64 = pi.iter().zip(count).map(|(x, &n)| x * n as f64).sum::<f64>()
        - p.types
            .iter()
            .zip(nu)
            .filter(|(t, _)| t.max_count != usize::MAX)
            .map(|(t, v)| v * t.max_count as f64)
            .sum::<f64>();
    let at = |th: f64| -> f64 {
        let mut v = th * base;
        for (t, ty) in p.types.iter().enumerate() {
            let reduced = ty.price + th * (nu[t] - zeta[t]);
            if reduced < 0.0 {
                v += cap[t] * reduced;
            }
        }
        v
    };
    let mut best = at(1.0);
    for t in 0..p.n_types() {
        if zeta[t] > nu[t] {
            let th = p.types[t].price / (zeta[t] - nu[t]);
            if th.is_finite() && th > 0.0 {
                best = best.max(at(th));
            }
        }
    }
    best
}

struct Master {
    value: f64,
    pi: Vec<f64>,
    nu: Vec<f64>,
}

fn solve_master(p: &Problem, cls: &Classes, columns: &[Column], limited: &[bool], left: f64) -> Option<Master> {
    use good_lp::{
        constraint, variable, DualValues, Expression, ProblemVariables, Solution, SolutionWithDual, SolverModel,
    };
    let nc = cls.count.len();
    let mut vars = ProblemVariables::new();
    let x: Vec<_> = columns.iter().map(|_| vars.add(variable().min(0.0))).collect();
    let objective: Expression = columns.iter().zip(&x).map(|(col, &v)| p.types[col.t].price * v).sum();
    let mut model = vars.minimise(objective).using(good_lp::clarabel);
    // Duals a little less precise than clarabel's defaults serve as well (any dual point gives a
    // valid bound) in about half the iterations.
    model.settings().tol_gap_rel(1e-7).tol_gap_abs(1e-8).tol_feas(1e-8).max_iter(80).time_limit(left);
    let mut cover: Vec<Expression> = vec![Expression::from(0.0); nc];
    let mut per_type: Vec<Expression> = vec![Expression::from(0.0); p.n_types()];
    for (col, &v) in columns.iter().zip(&x) {
        for &(c, n) in &col.a {
            cover[c] += n as f64 * v;
        }
        per_type[col.t] += v;
    }
    let cover_refs: Vec<_> =
        cover.into_iter().zip(&cls.count).map(|(e, &n)| model.add_constraint(constraint!(e >= n as f64))).collect();
    let type_refs: Vec<_> = per_type
        .into_iter()
        .enumerate()
        .map(|(t, e)| limited[t].then(|| model.add_constraint(constraint!(e <= p.types[t].max_count as f64))))
        .collect();
    let mut sol = model.solve().ok()?;
    let value: f64 = columns.iter().zip(&x).map(|(col, &v)| p.types[col.t].price * sol.value(v)).sum();
    let duals = sol.compute_dual();
    let pi = cover_refs.into_iter().map(|r| duals.dual(r).max(0.0)).collect();
    let nu = type_refs.into_iter().map(|r| r.map_or(0.0, |r| (-duals.dual(r)).max(0.0))).collect();
    Some(Master { value, pi, nu })
}

/// One class in a pricing knapsack: its dual value, demand on the type, and how many there are.
#[derive(Debug, Clone, Copy)]
pub struct KnapItem {
    pub class: usize,
    pub value: f64,
    pub w: [f64; 2],
    pub bound: usize,
}

/// The best pattern found and an upper bound on the best there is (equal when proven).
#[derive(Debug, Clone)]
pub struct Knap {
    pub value: f64,
    pub pattern: Vec<(usize, usize)>,
    pub upper: f64,
}

/// Bounded two-dimensional knapsack, capacity 1 (+EPS) in each dimension: depth-first branch and
/// bound over the items in order of value per surrogate weight `λ w0 + (1 − λ) w1`, λ chosen to
/// make the root's LP bound smallest; each node is bounded by the fractional knapsack on the
/// surrogate capacity left (valid, since any completion meets both capacities). After `nodes`
/// nodes the root bound stands for the optimum.
pub fn knapsack(items: &[KnapItem], nodes: usize) -> Knap {
    let cap = 1.0 + EPS;
    let items: Vec<KnapItem> = items
        .iter()
        .filter(|it| it.value > 0.0 && it.bound > 0 && it.w[0] <= cap && it.w[1] <= cap)
        .map(|it| {
            let fit = |w: f64| if w > 0.0 { (cap / w).floor() as usize } else { usize::MAX };
            KnapItem { bound: it.bound.min(fit(it.w[0])).min(fit(it.w[1])), ..*it }
        })
        .collect();
    if items.is_empty() {
        return Knap { value: 0.0, pattern: Vec::new(), upper: 0.0 };
    }
    let frac = |lambda: f64| -> f64 {
        let mut order: Vec<(f64, f64, f64)> =
            items.iter().map(|it| (lambda * it.w[0] + (1.0 - lambda) * it.w[1], it.value, it.bound as f64)).collect();
        // By value per weight, as a number (cross-multiplying is not transitive under rounding).
        order.sort_by(|a, b| ratio(b.1, b.0).total_cmp(&ratio(a.1, a.0)));
        let (mut left, mut v) = (cap, 0.0);
        for (w, val, n) in order {
            if w <= 0.0 {
                v += val * n;
            } else if w * n <= left {
                left -= w * n;
                v += val * n;
            } else {
                v += val * left / w;
                break;
            }
        }
        v
    };
    // The surrogate bound is quasi-convex in λ: the continuous bound's golden-section search
    // (a maximizer, so on its negation) finds a good one.
    let (lambda, neg_root) = crate::bound::golden(0.0, 1.0, 30, |l| -frac(l));
    let root = -neg_root;
    let mut s = Search::new(&items, lambda, nodes);
    s.greedy();
    s.dfs(0, [cap, cap], 0.0);
    let exact = s.visited <= nodes;
    let pattern =
        s.best_counts.iter().enumerate().filter(|(_, &n)| n > 0).map(|(k, &n)| (s.items[k].class, n)).collect();
    Knap { value: s.best, pattern, upper: if exact { s.best.max(0.0) } else { root.max(s.best) } }
}

/// Value per unit of weight; infinite for weightless items.
fn ratio(value: f64, weight: f64) -> f64 {
    if weight > 0.0 {
        value / weight
    } else {
        f64::INFINITY
    }
}

struct Search {
    items: Vec<KnapItem>,
    /// Surrogate weight per item (sorted order).
    sw: Vec<f64>,
    lambda: f64,
    /// Prefix sums of `bound × sw` and `bound × value`.
    pw: Vec<f64>,
    pv: Vec<f64>,
    counts: Vec<usize>,
    best: f64,
    best_counts: Vec<usize>,
    visited: usize,
    limit: usize,
}

impl Search {
    fn new(items: &[KnapItem], lambda: f64, limit: usize) -> Self {
        let mut items = items.to_vec();
        let w = |it: &KnapItem| lambda * it.w[0] + (1.0 - lambda) * it.w[1];
        items.sort_by(|a, b| ratio(b.value, w(b)).total_cmp(&ratio(a.value, w(a))).then(a.class.cmp(&b.class)));
        let sw: Vec<f64> = items.iter().map(w).collect();
        let (mut pw, mut pv) = (vec![0.0], vec![0.0]);
        for (it, &s) in items.iter().zip(&sw) {
            pw.push(pw.last().unwrap() + s * it.bound as f64);
            pv.push(pv.last().unwrap() + it.value * it.bound as f64);
        }
        let n = items.len();
        Self { items, sw, lambda, pw, pv, counts: vec![0; n], best: 0.0, best_counts: vec![0; n], visited: 0, limit }
    }

    /// The fractional knapsack over items k.. on surrogate capacity `room`.
    fn bound(&self, k: usize, room: f64) -> f64 {
        // The last j with pw[j] − pw[k] ≤ room: items k..j fit whole.
        let target = self.pw[k] + room.max(0.0);
        let j = k + self.pw[k..].partition_point(|&x| x <= target) - 1;
        let mut v = self.pv[j] - self.pv[k];
        if j < self.items.len() && self.sw[j] > 0.0 {
            v += (target - self.pw[j]) / self.sw[j] * self.items[j].value;
        }
        v
    }

    fn most(&self, k: usize, room: [f64; 2]) -> usize {
        let w = self.items[k].w;
        let fit = |w: f64, r: f64| if w > 0.0 { ((r + 1e-15) / w).floor().max(0.0) as usize } else { usize::MAX };
        self.items[k].bound.min(fit(w[0], room[0])).min(fit(w[1], room[1]))
    }

    fn greedy(&mut self) {
        let mut room = [1.0 + EPS; 2];
        let mut v = 0.0;
        let mut counts = vec![0; self.items.len()];
        for k in 0..self.items.len() {
            let n = self.most(k, room);
            counts[k] = n;
            v += n as f64 * self.items[k].value;
            room[0] -= n as f64 * self.items[k].w[0];
            room[1] -= n as f64 * self.items[k].w[1];
        }
        self.best = v;
        self.best_counts = counts;
    }

    fn dfs(&mut self, k: usize, room: [f64; 2], v: f64) {
        if self.visited > self.limit {
            return;
        }
        self.visited += 1;
        if v > self.best + 1e-12 {
            self.best = v;
            self.best_counts.clone_from(&self.counts);
        }
        if k == self.items.len() {
            return;
        }
        let surrogate = self.lambda * room[0] + (1.0 - self.lambda) * room[1];
        if v + self.bound(k, surrogate) <= self.best * (1.0 + 1e-12) + 1e-15 {
            return;
        }
        let it = self.items[k];
        for n in (0..=self.most(k, room)).rev() {
            self.counts[k] = n;
            let r = [room[0] - n as f64 * it.w[0], room[1] - n as f64 * it.w[1]];
            self.dfs(k + 1, r, v + n as f64 * it.value);
            if self.visited > self.limit {
                break;
            }
        }
        self.counts[k] = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(items: &[KnapItem]) -> f64 {
        fn go(items: &[KnapItem], k: usize, room: [f64; 2]) -> f64 {
            if k == items.len() {
                return 0.0;
            }
            let mut best = 0.0_f64;
            for n in 0..=items[k].bound {
                let r = [room[0] - n as f64 * items[k].w[0], room[1] - n as f64 * items[k].w[1]];
                if r[0] < -EPS || r[1] < -EPS {
                    break;
                }
                best = best.max(n as f64 * items[k].value + go(items, k + 1, r));
            }
            best
        }
        go(items, 0, [1.0, 1.0])
    }

    #[test]
    fn the_knapsack_matches_brute_force_and_its_upper_bound_holds() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for round in 0..300 {
            let n = rng.random_range(1..7);
            let items: Vec<KnapItem> = (0..n)
                .map(|c| KnapItem {
                    class: c,
                    value: rng.random_range(0.0..2.0),
                    w: [rng.random_range(0.0..0.7), rng.random_range(0.0..0.7)],
                    bound: rng.random_range(1..4),
                })
                .collect();
            let k = knapsack(&items, 1_000_000);
            let b = brute(&items);
            assert!((k.value - b).abs() < 1e-9, "round {round}: {} vs brute force {b}", k.value);
            assert!((k.upper - b).abs() < 1e-9, "round {round}: proven, so upper {} = {b}", k.upper);
            // The pattern found is what it says and fits.
            let (mut v, mut load) = (0.0, [0.0; 2]);
            for &(c, m) in &k.pattern {
                let it = items.iter().find(|it| it.class == c).unwrap();
                assert!(m <= it.bound);
                v += m as f64 * it.value;
                load[0] += m as f64 * it.w[0];
                load[1] += m as f64 * it.w[1];
            }
            assert!((v - k.value).abs() < 1e-9 && load[0] <= 1.0 + EPS && load[1] <= 1.0 + EPS);
            // Cut short, the upper bound still holds.
            let short = knapsack(&items, 1);
            assert!(short.upper >= b - 1e-9 && short.value <= b + 1e-9);
        }
    }
}
