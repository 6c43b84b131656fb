//! `stowage plan`: from a catalog to a plan. Bound first, then heuristic, then (small catalogs)
//! the exact MILP; `proven_optimal` only when the MILP proved it or the cost meets the bound.

use std::time::{Duration, Instant};

use stowage_core::plan::{Plan, PlanNode, Predicted, SolverInfo, Usage, PLAN_FORMAT};
use stowage_core::{node_id, Catalog};

use crate::bound::{lp_bound, round_to_price_lattice};
use crate::heuristic::{construct, improve, Budget, Infeasible, Packing};
use crate::milp::solve_exact;
use crate::problem::Problem;

/// Which algorithm to run (`stowage plan --method`: the doc comments are its help).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Method {
    /// Exact MILP up to --exact-max-models models, heuristic with a lower bound above.
    #[default]
    Auto,
    /// Exact MILP (CBC) whatever the size, within --time-limit.
    Exact,
    /// Heuristic and large-neighbourhood search only.
    Heuristic,
    /// Plain first-fit decreasing, no improvement: the baseline benchmarks compare against.
    Ffd,
}

/// Default of `--time-limit`, in seconds.
pub const DEFAULT_TIME_LIMIT_SECONDS: f64 = 30.0;
/// Default of `--exact-max-models`.
pub const DEFAULT_EXACT_MAX_MODELS: usize = 120;
/// Default of `--lns-iterations`.
pub const DEFAULT_LNS_ITERATIONS: usize = 3000;
/// Default of `--seed`.
pub const DEFAULT_SEED: u64 = 0x0570_7a6e;

#[derive(Clone)]
pub struct Options {
    pub method: Method,
    /// Wall-clock cap for the whole solve. Output is deterministic when the cap is not reached.
    pub time_limit: Duration,
    pub exact_max_models: usize,
    /// Improvement iterations of the large-neighbourhood search (a fixed budget keeps runs repeatable).
    pub lns_iterations: usize,
    pub seed: u64,
    /// The time the column-generation bound may take (zero: the continuous LP bound only).
    pub bound_time: Duration,
    /// Called with (LNS iteration, cost) on each improvement.
    pub progress: Option<std::sync::Arc<dyn Fn(usize, f64) + Send + Sync>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::Auto,
            time_limit: Duration::from_secs_f64(DEFAULT_TIME_LIMIT_SECONDS),
            exact_max_models: DEFAULT_EXACT_MAX_MODELS,
            lns_iterations: DEFAULT_LNS_ITERATIONS,
            seed: DEFAULT_SEED,
            bound_time: Duration::from_secs_f64(DEFAULT_BOUND_SECONDS),
            progress: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error(transparent)]
    Infeasible(#[from] Infeasible),
    #[error(
        "model {model:?} cannot keep its latency target (P90 {target} ms) on any instance type, even alone on a node \
         (its fastest service time is {fastest} ms): raise slo_p90_ms, or give it a faster footprint"
    )]
    Target { model: String, target: f64, fastest: f64 },
}

/// Above this many models a problem is large: its search after construction gets `LARGE_SEARCH`.
pub const LARGE: usize = 20_000;
/// The time the search after construction gets on a large problem.
pub const LARGE_SEARCH: Duration = Duration::from_secs(2);

/// Default of `--bound-time`, in seconds: what the column-generation bound may take (within the
/// time limit).
pub const DEFAULT_BOUND_SECONDS: f64 = 2.0;
/// The column-generation bound runs where the plan is more than this share above the continuous
/// bound: below, a user does not distrust the plan, and the time is better saved.
pub const COLGEN_ABOVE_GAP: f64 = 0.01;

/// Which bound a plan's gap is measured against (`solver.bound` in plan.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundKind {
    /// The continuous LP: a model may split across nodes.
    ContinuousLp,
    /// The set-cover LP by column generation: converged (its optimum) or Farley's/Lagrangian
    /// bound where the time limit stopped it.
    ColumnGeneration { converged: bool },
    /// The exact MILP's own bound (branch and bound).
    Milp,
}

impl std::fmt::Display for BoundKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ContinuousLp => "continuous LP",
            Self::ColumnGeneration { converged: true } => "column generation, converged",
            Self::ColumnGeneration { converged: false } => "column generation, Farley at the time limit",
            Self::Milp => "MILP branch and bound",
        })
    }
}

/// Solves a numeric problem: the packing, its lower bound, and how it was found.
pub struct Solved {
    pub packing: Packing,
    pub lower_bound: f64,
    /// Which bound `lower_bound` is.
    pub bound: BoundKind,
    pub method: String,
    pub proven_optimal: bool,
    pub seconds: f64,
}

pub fn solve_problem(p: &Problem, opts: &Options) -> Result<Solved, SolveError> {
    let start = Instant::now();
    let deadline = start + opts.time_limit;
    let prices: Vec<f64> = p.types.iter().map(|t| t.price).collect();
    let lb = lp_bound(p);
    let mut bound = round_to_price_lattice(&prices, lb.value);

    if opts.method == Method::Ffd {
        let mut packing = crate::heuristic::first_fit_decreasing(p)?;
        packing.normalize(p);
        let proven = packing.cost(p) <= bound + 1e-9;
        return Ok(Solved {
            packing,
            lower_bound: bound,
            bound: BoundKind::ContinuousLp,
            method: "ffd".into(),
            proven_optimal: proven,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let mut packing = construct(p, &lb)?;
    // Large catalogs: the search after construction gains little there (under 0.01 % on the
    // 100,000-model catalogs of BENCHMARKS.md) and gets a fixed share of time; the user's limit
    // still caps it.
    let search = if p.n_items() > LARGE { deadline.min(Instant::now() + LARGE_SEARCH) } else { deadline };
    let budget = Budget { lns_iterations: opts.lns_iterations, deadline: Some(search), seed: opts.seed };
    let mut stats = improve(p, &lb, &mut packing, budget, bound, |it, c| {
        if let Some(f) = &opts.progress {
            f(it, c)
        }
    });
    // Stopping at the search's own budget is not the user's time limit.
    stats.cut_by_time &= Instant::now() >= deadline;
    let exact = match opts.method {
        Method::Exact => true,
        Method::Heuristic | Method::Ffd => false,
        Method::Auto => p.n_items() <= opts.exact_max_models,
    };
    // Also before the full MILP: it starts from (and keeps unless it beats) the heuristic's
    // plan, so an exact run is never worse than a heuristic one.
    if packing.cost(p) > bound + 1e-9 {
        crate::tail::reoptimize_tail(p, &lb, &mut packing, search);
    }
    let mut method = String::from("heuristic+lns");
    if stats.cut_by_time {
        method.push_str(" (time limit)");
    }
    let mut kind = BoundKind::ContinuousLp;
    if packing.cost(p) > bound * (1.0 + COLGEN_ABOVE_GAP) + 1e-9 && !opts.bound_time.is_zero() {
        // Where the plan does not meet the continuous bound, the set-cover LP may show why: whole
        // models per node, not fractions.
        let cg_deadline = deadline.min(Instant::now() + opts.bound_time);
        if let Some(cg) = crate::colgen::colgen_bound(p, &lb, &packing.bins, packing.cost(p), cg_deadline) {
            let rounded = round_to_price_lattice(&prices, cg.value);
            if rounded > bound + 1e-9 {
                bound = rounded;
                kind = BoundKind::ColumnGeneration { converged: cg.converged };
            }
        }
    }
    let mut proven = packing.cost(p) <= bound + 1e-9;
    if exact && !proven {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs_f64();
        let r = solve_exact(p, &packing, left, None);
        method = "milp-cbc".into();
        if let Some(better) = r.packing {
            if better.cost(p) < packing.cost(p) - 1e-9 {
                packing = better;
            }
        }
        let milp = round_to_price_lattice(&prices, r.bound - 1e-9);
        if milp > bound + 1e-9 {
            kind = BoundKind::Milp;
        }
        bound = bound.max(milp).min(packing.cost(p));
        proven = r.proven_optimal || packing.cost(p) <= bound + 1e-9;
        if !r.proven_optimal {
            method.push_str(" (time limit)");
        }
    } else if proven {
        method.push_str(" (meets lower bound)");
    }
    debug_assert!(packing.check(p).is_ok());
    Ok(Solved {
        packing,
        lower_bound: bound,
        bound: kind,
        method,
        proven_optimal: proven,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Plans a whole catalog. A model with replicas is planned as its copies, on distinct nodes
/// (`replicas.rs`). Models that may wait for their node to start (`scale_to_zero`) are
/// packed apart from the others, so that their nodes scale to zero (a node shared with an
/// always-on model could not).
pub fn plan(catalog: &Catalog, opts: &Options) -> Result<Plan, SolveError> {
    if let Some(split) = crate::replicas::split(catalog) {
        return Ok(crate::replicas::join(plan(&split, opts)?));
    }
    let zero = catalog.models.iter().filter(|m| m.scale_to_zero).count();
    if zero == 0 || zero == catalog.models.len() {
        let (p, s) = plan_problem(catalog, opts)?;
        return Ok(to_plan(catalog, &p, &s));
    }
    let on = plan(&catalog.subset(|m| !m.scale_to_zero), opts)?;
    // The second group gets what the first left of each type's `max_count`.
    let mut rest = catalog.subset(|m| m.scale_to_zero);
    for it in &mut rest.instance_types {
        if let Some(max) = &mut it.max_count {
            let used = on.nodes.iter().filter(|n| n.instance_type == it.name).count();
            *max = max.saturating_sub(u32::try_from(used).unwrap_or(u32::MAX));
        }
    }
    let off = plan(&rest, opts)?;
    Ok(merge(on, off))
}

/// One plan of two planned apart (`plan`'s groups): the nodes of both, numbered again per type
/// (`a`'s first); costs, bounds and solve times added.
fn merge(a: Plan, b: Plan) -> Plan {
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let nodes: Vec<PlanNode> = a
        .nodes
        .into_iter()
        .chain(b.nodes)
        .map(|mut n| {
            let k = index.entry(n.instance_type.clone()).or_default();
            n.id = node_id(&n.instance_type, *k);
            *k += 1;
            n
        })
        .collect();
    let cost = round6(a.cost_per_hour + b.cost_per_hour);
    let bound = round6(a.lower_bound_per_hour + b.lower_bound_per_hour).min(cost);
    Plan {
        format: a.format,
        catalog_sha256: a.catalog_sha256,
        cost_per_hour: cost,
        lower_bound_per_hour: bound,
        solver: SolverInfo {
            method: if a.solver.method == b.solver.method {
                a.solver.method
            } else {
                format!("{}; {}", a.solver.method, b.solver.method)
            },
            seconds: ((a.solver.seconds + b.solver.seconds) * 1000.0).round() / 1000.0,
            proven_optimal: a.solver.proven_optimal && b.solver.proven_optimal,
            gap: if cost > 0.0 { round6((cost - bound).max(0.0) / cost) } else { 0.0 },
            bound: a.solver.bound,
        },
        nodes,
        changes: None,
    }
}

/// What a cold load holds while it runs, beyond its model's memory, per MiB of that memory: the
/// file read, decoded and optimized before the copies are freed. The node loads one cold model
/// at a time and takes this out of its pool where it is free (`COLD_LOAD_WORKING_PER_WEIGHT_BYTE` in
/// `node/src/lifecycle/cold.rs`: 2.4 × the file, with 1.15 × the file for the model; measured
/// 0.5–2.4 × the file, BENCHMARKS.md "Cold-pool memory").
pub const COLD_LOAD_WORKING: f64 = 2.0;

/// A node's memory as its cold pool sees it, in MiB.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMemory {
    /// Its cold models, sorted.
    pub cold: Vec<String>,
    /// The cold models' shares (`ColdWeight`), as planned.
    pub shares: f64,
    /// The pool: the shares, at least the largest cold model (rounded up to 0.01 MiB).
    pub pool: f64,
    /// Its hot models' memory.
    pub hot: f64,
    /// All its cold models in full.
    pub cold_full: f64,
    /// The working memory of a load of its largest cold model (`COLD_LOAD_WORKING` × its memory):
    /// the node takes it out of its pool where the pool has it free (`node/src/lifecycle/cold.rs`),
    /// else out of the node's memory above `max_memory`.
    pub loading: f64,
    /// What models may use on the node (`max_memory` of its type).
    pub limit: f64,
}

impl NodeMemory {
    /// The hot models and the pool fit the node (up to rounding).
    pub fn fits(&self) -> bool {
        self.hot + self.pool <= self.limit + 0.01
    }
}

/// Node memory of the items `items` on a node of type t.
pub fn node_memory(catalog: &Catalog, p: &Problem, t: usize, items: &[usize]) -> NodeMemory {
    let family = &p.types[t].family;
    let limit = limit_mib(catalog, p, t);
    let mut m = NodeMemory { cold: Vec::new(), shares: 0.0, pool: 0.0, hot: 0.0, cold_full: 0.0, loading: 0.0, limit };
    let mut largest = 0.0_f64;
    for &i in items {
        let model = &catalog.models[i];
        let mib = p.demand(i, t).map_or(0.0, |d| d[0]) * limit;
        if model.is_cold(&catalog.limits) {
            let full = model.footprints.get(family).map_or(0.0, |f| f.memory_mib);
            m.cold.push(model.id.clone());
            m.shares += mib;
            m.cold_full += full;
            largest = largest.max(full);
        } else {
            m.hot += mib;
        }
    }
    m.cold.sort();
    if !m.cold.is_empty() {
        m.loading = COLD_LOAD_WORKING * largest;
        m.pool = (m.shares.max(largest) * 100.0).ceil() / 100.0;
    }
    m
}

/// Solves the catalog's problem; where a node's pool must grow to hold its largest cold model
/// beyond the node's memory, that model is pinned (it counts all its memory) and the catalog is
/// solved again (a few rounds at most).
pub fn plan_problem(catalog: &Catalog, opts: &Options) -> Result<(Problem, Solved), SolveError> {
    let mut pinned = std::collections::HashSet::new();
    // Pools pay where a node holds many cold models. With a few per node (a catalog with a few
    // quiet models) they count in full from the start: nodes ≈ the catalog's memory in nodes.
    let full = Problem::from_catalog_pinned(catalog, &catalog.models.iter().map(|m| m.id.clone()).collect());
    let nodes: f64 = (0..full.n_items())
        .map(|i| full.allowed(i).map(|(_, d)| d[0].max(d[1])).fold(f64::INFINITY, f64::min))
        .filter(|x| x.is_finite())
        .sum();
    let cold: Vec<String> =
        catalog.models.iter().filter(|m| m.is_cold(&catalog.limits)).map(|m| m.id.clone()).collect();
    if (cold.len() as f64) < 4.0 * nodes.max(1.0) {
        pinned.extend(cold);
    }
    for round in 0.. {
        let p = Problem::from_catalog_pinned(catalog, &pinned);
        reachable(catalog, &p)?;
        let mut s = solve_problem(&p, opts)?;
        separate(&p, &mut s);
        rehome_cold(catalog, &p, &mut s.packing);
        crate::targets::meet_targets(catalog, &p, &mut s.packing.bins);
        s.packing.normalize(&p);
        let (mut more, mut over) = (Vec::new(), false);
        for b in s.packing.bins.iter().filter(|b| !b.items.is_empty()) {
            let m = node_memory(catalog, &p, b.t, &b.items);
            over |= !m.fits();
            // A pool larger than its models' shares (few cold models on the node): a pool does
            // not pay there, so they count in full from now on. (The pool is rounded up to
            // 0.01 MiB: that alone is not larger.)
            if !m.fits() || m.shares + 0.011 < m.pool {
                more.extend(m.cold.into_iter().filter(|m| !pinned.contains(m)));
            }
        }
        if !over {
            return Ok((p, s));
        }
        // Pools pay where a node holds many cold models; with a few per node (a catalog with a
        // few quiet models) they would only come back round after round.
        let (nodes, cold) = s.packing.bins.iter().filter(|b| !b.items.is_empty()).fold((0, 0), |(n, c), b| {
            let k = b.items.iter().filter(|&&i| catalog.models[i].is_cold(&catalog.limits)).count();
            (n + usize::from(k > 0), c + k)
        });
        let few = cold < 4 * nodes.max(1);
        let all_pinned = catalog.models.iter().all(|m| !m.is_cold(&catalog.limits) || pinned.contains(&m.id));
        if all_pinned {
            // Nothing left to pin: the nodes are within their limits up to rounding.
            return Ok((p, s));
        }
        if round >= 2 || more.is_empty() || few {
            // The last round: every cold model counts in full (always within the limits).
            pinned.extend(catalog.models.iter().filter(|m| m.is_cold(&catalog.limits)).map(|m| m.id.clone()));
            let p = Problem::from_catalog_pinned(catalog, &pinned);
            let mut s = solve_problem(&p, opts)?;
            separate(&p, &mut s);
            crate::targets::meet_targets(catalog, &p, &mut s.packing.bins);
            s.packing.normalize(&p);
            return Ok((p, s));
        }
        pinned.extend(more);
    }
    unreachable!("the rounds end when no node is over its limit")
}

/// Moves copies of one model (`replicas.rs`) that the packing put on the same node to nodes
/// without one: the first with room, else a new node of the cheapest type with room (within
/// its `max_count`). The packing is then no longer proven optimal.
fn separate(p: &Problem, s: &mut Solved) {
    use crate::heuristic::Bin;
    use crate::replicas::model_of;
    let holds = |b: &Bin, model: &str| b.items.iter().any(|&j| model_of(&p.items[j]) == model);
    let mut moved = false;
    for k in 0..s.packing.bins.len() {
        let mut seen = std::collections::HashSet::new();
        let twins: Vec<usize> =
            s.packing.bins[k].items.iter().copied().filter(|&i| !seen.insert(model_of(&p.items[i]))).collect();
        for i in twins {
            let model = model_of(&p.items[i]);
            let bins = &s.packing.bins;
            let room = |b: &Bin| p.demand(i, b.t).is_some_and(|d| b.fits(d)) && !holds(b, model);
            let mut to = (0..bins.len()).find(|&j| j != k && !bins[j].items.is_empty() && room(&bins[j]));
            if to.is_none() {
                if let Some(t) = crate::heuristic::cheapest_new(p, bins, |t| p.demand(i, t).is_some()) {
                    s.packing.bins.push(Bin::new(t));
                    to = Some(s.packing.bins.len() - 1);
                }
            }
            let Some(j) = to else { continue };
            move_item(p, &mut s.packing.bins, i, k, j);
            moved = true;
        }
    }
    if moved {
        s.packing.normalize(p);
        s.proven_optimal = false;
    }
}

/// Every model can go somewhere: a model that cannot keep its latency target on any type, even
/// alone, is refused with the reason (the catalog check has already made sure each fits a type).
fn reachable(catalog: &Catalog, p: &Problem) -> Result<(), SolveError> {
    for (i, m) in catalog.models.iter().enumerate() {
        if p.allowed(i).next().is_some() {
            continue;
        }
        let target = m.slo_p90_ms(&catalog.limits).unwrap_or(f64::INFINITY);
        let fastest = m.footprints.values().map(|f| f.service_ms).fold(f64::INFINITY, f64::min);
        return Err(SolveError::Target { model: m.id.clone(), target, fastest });
    }
    Ok(())
}

/// The memory limit of a node of type t, in MiB.
fn limit_mib(catalog: &Catalog, p: &Problem, t: usize) -> f64 {
    catalog
        .instance_type(&p.types[t].name)
        .map_or(f64::INFINITY, |it| it.memory_gib * 1024.0 * catalog.limits.max_memory)
}

/// Where the packing left a node whose pool must be larger than its cold models' shares (it
/// must hold its largest cold model) and the node has no room for that, moves those cold models
/// to nodes with room for them whose pool then still holds its largest cold model, or, where no
/// node has that room, to a new node (the cheapest type whose pool holds the model) that the
/// next such models share. What cannot move is left for `plan_problem`'s next round (which
/// counts it in full).
fn rehome_cold(catalog: &Catalog, p: &Problem, packing: &mut Packing) {
    rehome_cold_bins(catalog, p, &mut packing.bins);
    packing.normalize(p);
}

/// `rehome_cold` on bare bins (a re-plan's nodes): new nodes are appended, emptied ones stay.
pub(crate) fn rehome_cold_bins(catalog: &Catalog, p: &Problem, bins: &mut Vec<crate::heuristic::Bin>) {
    use crate::heuristic::Bin;
    let over = |b: &Bin| !node_memory(catalog, p, b.t, &b.items).fits();
    // Whether cold model i may join bin b: room for its share, and the pool then still fits.
    let takes = |b: &Bin, i: usize| {
        let Some(d) = p.demand(i, b.t) else { return false };
        if !b.fits(d) {
            return false;
        }
        let mut with = b.clone();
        with.add(i, d);
        !over(&with)
    };
    for k in 0..bins.len() {
        if bins[k].items.is_empty() || !over(&bins[k]) {
            continue;
        }
        let cold: Vec<usize> =
            bins[k].items.iter().copied().filter(|&i| catalog.models[i].is_cold(&catalog.limits)).collect();
        for i in cold {
            let mut target = (0..bins.len()).find(|&j| j != k && !bins[j].items.is_empty() && takes(&bins[j], i));
            if target.is_none() {
                if let Some(t) = crate::heuristic::cheapest_new(p, bins, |t| takes(&Bin::new(t), i)) {
                    bins.push(Bin::new(t));
                    target = Some(bins.len() - 1);
                }
            }
            if let Some(j) = target {
                move_item(p, bins, i, k, j);
            }
            if !over(&bins[k]) {
                break;
            }
        }
    }
}

/// Moves item i from bin `from` to bin `to` (it must be allowed there).
fn move_item(p: &Problem, bins: &mut [crate::heuristic::Bin], i: usize, from: usize, to: usize) {
    let d = p.demand(i, bins[to].t).expect("allowed where it moves");
    bins[to].add(i, d);
    let d = p.demand(i, bins[from].t).expect("it was placed there");
    bins[from].take_out(i, d);
}

/// Names and orders nodes deterministically: by type, fullest first, then by first model id.
pub fn to_plan(catalog: &Catalog, p: &Problem, s: &Solved) -> Plan {
    let mut bins: Vec<_> = s.packing.bins.iter().filter(|b| !b.items.is_empty()).collect();
    let first_id = |b: &crate::heuristic::Bin| b.items.iter().map(|&i| p.items[i].as_str()).min().unwrap_or("");
    bins.sort_by(|a, b| {
        p.types[a.t]
            .name
            .cmp(&p.types[b.t].name)
            .then(b.items.len().cmp(&a.items.len()))
            .then_with(|| first_id(a).cmp(first_id(b)))
    });
    let mut index = vec![0usize; p.n_types()];
    let nodes = bins
        .into_iter()
        .map(|b| {
            let id = node_id(&p.types[b.t].name, index[b.t]);
            index[b.t] += 1;
            plan_node(catalog, p, b, id)
        })
        .collect::<Vec<_>>();
    let cost: f64 = nodes.iter().map(|n| n.price_per_hour).sum();
    Plan {
        format: PLAN_FORMAT.into(),
        catalog_sha256: catalog.sha256.clone(),
        cost_per_hour: round6(cost),
        lower_bound_per_hour: round6(s.lower_bound.min(cost)),
        solver: SolverInfo {
            method: s.method.clone(),
            seconds: (s.seconds * 1000.0).round() / 1000.0,
            proven_optimal: s.proven_optimal,
            bound: s.bound.to_string(),
            gap: if cost > 0.0 { round6((cost - s.lower_bound).max(0.0) / cost) } else { 0.0 },
        },
        nodes,
        changes: None,
    }
}

/// The plan's entry for bin `b` under node id `id`: its type, sorted models, usage of the whole
/// node, and its cold models and pool.
pub(crate) fn plan_node(catalog: &Catalog, p: &Problem, b: &crate::heuristic::Bin, id: String) -> PlanNode {
    let ty = &p.types[b.t];
    let lim = catalog.limits;
    let mut models: Vec<String> = b.items.iter().map(|&i| p.items[i].clone()).collect();
    models.sort();
    let m = node_memory(catalog, p, b.t, &b.items);
    let (predicted, slo_p90_ms) = match catalog.instance_type(&ty.name) {
        Some(it) => {
            let q = crate::slo::queue(catalog, it, b.items.iter().map(|&i| &catalog.models[i]));
            let predicted = q.predicted().map(|x| Predicted { p50_ms: round3(x.p50_ms), p90_ms: round3(x.p90_ms) });
            let slo = b.items.iter().filter_map(|&i| catalog.models[i].slo_p90_ms(&lim)).reduce(f64::min);
            (predicted, slo)
        }
        None => (None, None),
    };
    // The node's memory is bought whole: what its hot models and the planned pool leave free goes
    // to the pool too (fewer cold starts at no cost), up to all its cold models and a load's
    // room beside them.
    let cold_pool_mib = if m.cold.is_empty() {
        0.0
    } else {
        m.pool.max(((m.limit - m.hot).min(m.cold_full + m.loading) * 100.0).floor() / 100.0)
    };
    PlanNode {
        id,
        instance_type: ty.name.clone(),
        family: ty.family.clone(),
        price_per_hour: ty.price,
        models,
        usage: Usage {
            memory: round6(b.load[0] * lim.max_memory),
            utilization: round6(b.load[1] * p.utilization_cap[b.t]),
        },
        cold_models: m.cold,
        cold_pool_mib,
        predicted,
        slo_p90_ms,
        min_replicas: u32::from(!scales_to_zero(catalog, b.items.iter().map(|&i| &catalog.models[i]))),
        shares: Default::default(),
    }
}

/// Whether a node of these models may scale to zero replicas: they all ask for it
/// (`scale_to_zero`), or their summed peak traffic is below `[limits] scale_to_zero_below_rps`.
pub fn scales_to_zero<'a>(
    catalog: &Catalog,
    mut models: impl Iterator<Item = &'a stowage_core::Model> + Clone,
) -> bool {
    let quiet = models.clone().map(|m| m.peak_rps).sum::<f64>() < catalog.limits.scale_to_zero_below_rps;
    quiet || models.all(|m| m.scale_to_zero)
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

pub(crate) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
