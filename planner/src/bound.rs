//! Lower bounds on the cost of any feasible packing.
//!
//! 1. The LP relaxation (fractional nodes, items split across types), solved through its dual:
//!    for prices λ_t ≥ 0 on memory and μ_t ≥ 0 on compute of type t,
//!    `LB(λ, μ) = Σ_i min_t (λ_t a_it + μ_t b_it) − Σ_t K_t · max(0, λ_t + μ_t − p_t)`
//!    is a valid bound for *any* λ, μ (weak duality), so every evaluated point is safe to report.
//!    We maximize this concave function by coordinate ascent with golden-section line searches.
//! 2. Price-lattice rounding: a plan's cost is a sum of whole instance prices, so the bound rounds
//!    up to the smallest such sum that is ≥ the LP bound.

use crate::problem::Problem;

/// The best LP-dual bound found, with the dual prices that prove it.
#[derive(Debug, Clone)]
pub struct LpBound {
    pub value: f64,
    /// Dual price of a full node's memory, per type.
    pub lambda: Vec<f64>,
    /// Dual price of a full node's compute, per type.
    pub mu: Vec<f64>,
}

impl LpBound {
    /// An item's LP price on type t: what it "costs" there at the dual prices.
    #[inline]
    pub fn item_cost(&self, d: [f64; 2], t: usize) -> f64 {
        self.lambda[t] * d[0] + self.mu[t] * d[1]
    }
}

/// Evaluates the dual at (λ, μ).
pub fn dual_value(p: &Problem, lambda: &[f64], mu: &[f64]) -> f64 {
    let mut v = 0.0;
    for i in 0..p.n_items() {
        let best = p.allowed(i).map(|(t, d)| lambda[t] * d[0] + mu[t] * d[1]).fold(f64::INFINITY, f64::min);
        v += best;
    }
    v - penalty(p, lambda, mu)
}

fn penalty(p: &Problem, lambda: &[f64], mu: &[f64]) -> f64 {
    p.types
        .iter()
        .enumerate()
        .filter(|(_, bt)| bt.max_count != usize::MAX)
        .map(|(t, bt)| bt.max_count as f64 * (lambda[t] + mu[t] - bt.price).max(0.0))
        .sum()
}

/// Maximizes a concave function on [lo, hi] by golden-section search; returns (argmax, max).
pub(crate) fn golden(lo: f64, hi: f64, iters: usize, mut f: impl FnMut(f64) -> f64) -> (f64, f64) {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (lo, hi);
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..iters {
        if fc >= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    // The end points too: the optimum of a piecewise-linear function often sits on the boundary.
    let mut best = if fc >= fd { (c, fc) } else { (d, fd) };
    for x in [lo, hi] {
        let fx = f(x);
        if fx > best.1 {
            best = (x, fx);
        }
    }
    best
}

/// Above this many models the dual prices are searched on an even sample of them (this many),
/// then the bound is the dual's exact value at those prices over every model: still a valid
/// bound (any prices give one), a little looser, in a fraction of the time.
pub const SAMPLED_ABOVE: usize = 12_000;

/// The LP-dual bound, by coordinate ascent over (θ_t, s_t) with λ_t = θ_t s_t, μ_t = (1 − θ_t) s_t.
pub fn lp_bound(p: &Problem) -> LpBound {
    let n = p.n_items();
    if n <= SAMPLED_ABOVE {
        return lp_bound_exact(p);
    }
    let items: Vec<usize> = (0..SAMPLED_ABOVE).map(|k| k * n / SAMPLED_ABOVE).collect();
    // The sample's share of each type's count limit.
    let share = SAMPLED_ABOVE as f64 / n as f64;
    let available: Vec<usize> = p
        .types
        .iter()
        .map(|t| if t.max_count == usize::MAX { usize::MAX } else { ((t.max_count as f64) * share).ceil() as usize })
        .collect();
    let sampled = lp_bound_exact(&p.subset(&items, &available));
    let value = dual_value(p, &sampled.lambda, &sampled.mu).max(0.0);
    LpBound { value, ..sampled }
}

fn lp_bound_exact(p: &Problem) -> LpBound {
    let nt = p.n_types();
    let n = p.n_items();
    let pmax = p.types.iter().map(|t| t.price).fold(0.0, f64::max);
    // Start: each type prices the dimension it is short of, half and half.
    let mut theta = vec![0.5; nt];
    let mut scale: Vec<f64> = p.types.iter().map(|t| t.price).collect();
    let build = |theta: &[f64], scale: &[f64]| -> (Vec<f64>, Vec<f64>) {
        (
            theta.iter().zip(scale).map(|(th, s)| th * s).collect(),
            theta.iter().zip(scale).map(|(th, s)| (1.0 - th) * s).collect(),
        )
    };
    let (l, m) = build(&theta, &scale);
    let mut best = dual_value(p, &l, &m);
    if n == 0 || nt == 0 {
        return LpBound { value: 0.0, lambda: l, mu: m };
    }

    // rest[i] = item i's cheapest price on every type but the one being moved.
    let mut rest = vec![0.0; n];
    let mut own: Vec<Option<[f64; 2]>> = vec![None; n];
    for _sweep in 0..12 {
        let before = best;
        for t in 0..nt {
            let (l, m) = build(&theta, &scale);
            for i in 0..n {
                rest[i] = p
                    .allowed(i)
                    .filter(|&(u, _)| u != t)
                    .map(|(u, d)| l[u] * d[0] + m[u] * d[1])
                    .fold(f64::INFINITY, f64::min);
                own[i] = p.demand(i, t);
            }
            let pen_other: f64 = penalty(p, &l, &m)
                - if p.types[t].max_count != usize::MAX {
                    p.types[t].max_count as f64 * (l[t] + m[t] - p.types[t].price).max(0.0)
                } else {
                    0.0
                };
            let kt = p.types[t].max_count;
            let price = p.types[t].price;
            let eval = |th: f64, s: f64| -> f64 {
                let mut v = 0.0;
                for i in 0..n {
                    let mine = own[i].map_or(f64::INFINITY, |d| s * (th * d[0] + (1.0 - th) * d[1]));
                    v += mine.min(rest[i]);
                }
                let pen = if kt == usize::MAX { 0.0 } else { kt as f64 * (s - price).max(0.0) };
                v - pen - pen_other
            };
            let (th, v) = golden(0.0, 1.0, 40, |th| eval(th, scale[t]));
            if v > best {
                best = v;
                theta[t] = th;
            }
            if kt != usize::MAX {
                let (s, v) = golden(0.0, 2.0 * pmax.max(price) * 4.0, 40, |s| eval(theta[t], s));
                if v > best {
                    best = v;
                    scale[t] = s;
                }
            }
        }
        if best - before <= 1e-9 * best.abs().max(1e-12) {
            break;
        }
    }
    let (lambda, mu) = build(&theta, &scale);
    let (lambda, mu) = refine(p, lambda, mu);
    // Re-evaluate from scratch: the reported number is exactly the dual value at these prices.
    let value = dual_value(p, &lambda, &mu).max(0.0);
    LpBound { value, lambda, mu }
}

/// The dual value at x = (λ, μ) and a supergradient there.
fn value_and_supergradient(p: &Problem, lambda: &[f64], mu: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let nt = p.n_types();
    let (mut gl, mut gm) = (vec![0.0; nt], vec![0.0; nt]);
    let mut v = 0.0;
    for i in 0..p.n_items() {
        let mut best = (f64::INFINITY, 0, [0.0; 2]);
        for (t, d) in p.allowed(i) {
            let c = lambda[t] * d[0] + mu[t] * d[1];
            if c < best.0 {
                best = (c, t, d);
            }
        }
        v += best.0;
        gl[best.1] += best.2[0];
        gm[best.1] += best.2[1];
    }
    for (t, bt) in p.types.iter().enumerate() {
        if bt.max_count != usize::MAX && lambda[t] + mu[t] > bt.price {
            let k = bt.max_count as f64;
            v -= k * (lambda[t] + mu[t] - bt.price);
            gl[t] -= k;
            gm[t] -= k;
        }
    }
    (v, gl, gm)
}

/// Trust-region cutting planes (Kelley) on the dual: coordinate ascent stalls where several types
/// must move together; the cuts see every direction at once. Each step solves a small LP.
fn refine(p: &Problem, lambda: Vec<f64>, mu: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    use good_lp::{constraint, variable, Expression, ProblemVariables, Solution, SolverModel};
    let nt = p.n_types();
    let pmax = p.types.iter().map(|t| t.price).fold(0.0, f64::max);
    let upper: Vec<f64> =
        p.types.iter().map(|t| if t.max_count == usize::MAX { t.price } else { 10.0 * pmax }).collect();
    let (mut best_v, gl, gm) = value_and_supergradient(p, &lambda, &mu);
    let mut best = (lambda, mu);
    let mut cuts = vec![(best_v, best.0.clone(), best.1.clone(), gl, gm)];
    let mut radius = 0.25 * pmax;
    for _ in 0..150 {
        let mut vars = ProblemVariables::new();
        let z = vars.add(variable());
        let l: Vec<_> = (0..nt).map(|t| vars.add(variable().min(0.0).max(upper[t]))).collect();
        let m: Vec<_> = (0..nt).map(|t| vars.add(variable().min(0.0).max(upper[t]))).collect();
        // microlp (pure Rust simplex), not CLP: CLP asserts and aborts the process on some nearly
        // parallel cuts (`ClpPrimalColumnSteepest … reducedCost > 0` in a property test). A
        // simplex's vertex, not an interior point (clarabel): the heuristic starts from these
        // prices, and clarabel's centred ones left a 10,000-model plan 3 s slower.
        let mut model = vars.maximise(z).using(good_lp::microlp);
        for t in 0..nt {
            model = model.with(constraint!(l[t] + m[t] <= upper[t]));
            model = model.with(constraint!(l[t] >= best.0[t] - radius));
            model = model.with(constraint!(l[t] <= best.0[t] + radius));
            model = model.with(constraint!(m[t] >= best.1[t] - radius));
            model = model.with(constraint!(m[t] <= best.1[t] + radius));
        }
        for (v, cl, cm, gl, gm) in &cuts {
            let mut rhs = Expression::from(*v);
            for t in 0..nt {
                rhs += gl[t] * (l[t] - cl[t]) + gm[t] * (m[t] - cm[t]);
            }
            model = model.with(constraint!(z <= rhs));
        }
        let Ok(sol) = model.solve() else { break };
        let predicted = sol.value(z);
        let cand: (Vec<f64>, Vec<f64>) =
            ((0..nt).map(|t| sol.value(l[t]).max(0.0)).collect(), (0..nt).map(|t| sol.value(m[t]).max(0.0)).collect());
        let (v, gl, gm) = value_and_supergradient(p, &cand.0, &cand.1);
        let tol = 1e-7 * best_v.abs().max(1e-9);
        if predicted - best_v <= tol {
            break; // the model sees nothing better within the region
        }
        if v > best_v + tol {
            best_v = v;
            best = cand.clone();
            radius *= 2.0;
        } else {
            radius *= 0.5;
        }
        cuts.push((v, cand.0, cand.1, gl, gm));
    }
    best
}

/// Rounds `lb` up to the cheapest total of whole instance prices that is ≥ `lb` (counts ignored,
/// which only loosens it). Returns `lb` unchanged when prices have more than 5 decimals or the
/// search space would be too large.
pub fn round_to_price_lattice(prices: &[f64], lb: f64) -> f64 {
    if prices.is_empty() || lb <= 0.0 {
        return lb.max(0.0);
    }
    let Some(scale) = [100.0, 1_000.0, 10_000.0, 100_000.0]
        .into_iter()
        .find(|s| prices.iter().all(|p| ((p * s).round() - p * s).abs() < 1e-6))
    else {
        return lb;
    };
    let units: Vec<usize> = prices.iter().map(|p| (p * scale).round() as usize).filter(|&u| u > 0).collect();
    // A bound a hair under a lattice point must not jump past it.
    let scaled = lb * scale;
    let target = (scaled - (scaled * 1e-9).max(1e-6)).ceil().max(0.0) as usize;
    let max_unit = *units.iter().max().unwrap_or(&1);
    let limit = target + max_unit;
    if limit > 50_000_000 {
        return lb;
    }
    let mut reach = vec![false; limit + 1];
    reach[0] = true;
    for v in 0..=limit {
        if !reach[v] {
            continue;
        }
        if v >= target {
            return v as f64 / scale;
        }
        for &u in &units {
            if v + u <= limit {
                reach[v + u] = true;
            }
        }
    }
    lb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::BinType;

    fn bt(name: &str, price: f64) -> BinType {
        BinType { name: name.into(), family: "f".into(), price, max_count: usize::MAX, grain: 10_000.0 }
    }

    #[test]
    fn memory_bound_uniform_items() {
        // 10 items of 0.25 memory on a $1 type: 2.5 nodes of volume.
        let p =
            Problem::new(vec![bt("a", 1.0)], (0..10).map(|i| i.to_string()).collect(), vec![Some([0.25, 0.01]); 10]);
        let b = lp_bound(&p);
        assert!((b.value - 2.5).abs() < 1e-6, "{}", b.value);
        assert!((round_to_price_lattice(&[1.0], b.value) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn picks_cheaper_type_per_dimension() {
        // Type a is cheap for memory-heavy items, b for compute-heavy ones.
        let items = vec!["m".to_string(), "c".to_string()];
        let d = vec![Some([0.5, 0.0]), Some([0.25, 0.0]), Some([0.0, 0.5]), Some([0.0, 1.0])];
        let p = Problem::new(vec![bt("a", 1.0), bt("b", 1.0)], items, d);
        // Both on one half node of a: m uses half its memory, c half its compute.
        let b = lp_bound(&p);
        assert!((b.value - 0.5).abs() < 1e-6, "{}", b.value);
    }

    #[test]
    fn max_count_tightens_the_bound() {
        // Cheap type limited to one node; the rest must go on the expensive one.
        let mut cheap = bt("cheap", 1.0);
        cheap.max_count = 1;
        let p = Problem::new(
            vec![cheap, bt("dear", 3.0)],
            (0..4).map(|i| i.to_string()).collect(),
            vec![Some([0.5, 0.0]); 8],
        );
        let b = lp_bound(&p);
        // Exact LP: one cheap node holds 2 items ($1), the other 2 items need 1 dear node ($3).
        assert!((b.value - 4.0).abs() < 1e-3, "{}", b.value);
        assert!(dual_value(&p, &b.lambda, &b.mu) <= 4.0 + 1e-9);
    }

    #[test]
    fn lattice_rounding() {
        assert!((round_to_price_lattice(&[0.362, 1.18], 45.85) - 45.856).abs() < 1e-9);
        assert!((round_to_price_lattice(&[1.0], 3.0) - 3.0).abs() < 1e-12);
        assert!((round_to_price_lattice(&[1.0], 2.001) - 3.0).abs() < 1e-12);
        // Float noise just above a lattice point does not round up past it.
        assert!((round_to_price_lattice(&[1.0], 2.0 + 1e-12) - 2.0).abs() < 1e-12);
        assert!((round_to_price_lattice(&[0.5, 0.7], 0.6) - 0.7).abs() < 1e-12);
        assert_eq!(round_to_price_lattice(&[0.1234567], 1.0), 1.0);
    }
}
