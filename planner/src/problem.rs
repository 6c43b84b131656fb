//! The numeric packing problem built from a catalog: items (models) with a two-dimensional demand
//! per instance type, normalized so that a node of that type holds at most 1.0 in each dimension.

use std::collections::HashSet;

use stowage_core::catalog::{demand, Catalog};

use crate::cold::ColdWeight;

/// Slack allowed on a capacity of 1.0, for float noise only.
pub const EPS: f64 = 1e-9;

/// One instance type, as the solver sees it.
#[derive(Debug, Clone)]
pub struct BinType {
    pub name: String,
    pub family: String,
    pub price: f64,
    /// How many may be bought (`usize::MAX` when unlimited).
    pub max_count: usize,
    /// Units per node in the memory dimension for subset-sum work (MiB under the limit, from a
    /// catalog); demands are rounded to these units only to propose moves, never to accept them.
    pub grain: f64,
}

/// The whole problem: `demand[i * types.len() + t]` is item i's `[memory, utilization]` on a node
/// of type t as fractions of that node's limits, or `None` where i cannot run on t.
#[derive(Debug, Clone)]
pub struct Problem {
    pub types: Vec<BinType>,
    pub items: Vec<String>,
    demand: Vec<Option<[f64; 2]>>,
    /// Per type: the share of a node's compute that a full load (1.0) in the utilization
    /// dimension stands for: `max_utilization`, or less where the latency target caps it
    /// (`slo::type_cap`).
    pub utilization_cap: Vec<f64>,
}

impl Problem {
    pub fn from_catalog(c: &Catalog) -> Self {
        Self::from_catalog_pinned(c, &HashSet::new())
    }

    /// The problem where the cold models in `pinned` count all their memory (so that their
    /// node's pool can hold the largest of them).
    pub fn from_catalog_pinned(c: &Catalog, pinned: &HashSet<String>) -> Self {
        let types: Vec<BinType> = c
            .instance_types
            .iter()
            .map(|t| BinType {
                name: t.name.clone(),
                family: t.family.clone(),
                price: t.price_per_hour,
                max_count: t.max_count.map_or(usize::MAX, |n| n as usize),
                grain: (t.memory_gib * 1024.0 * c.limits.max_memory).clamp(100.0, 200_000.0),
            })
            .collect();
        let cmax = c.limits.max_utilization;
        let caps: Vec<f64> = c.instance_types.iter().map(|it| crate::slo::type_cap(c, it)).collect();
        let mut alone = crate::slo::Alone::default();
        let mut dvec = Vec::with_capacity(c.models.len() * types.len());
        for m in &c.models {
            // A pinned cold model counts in full: its pool holds it whenever it is loaded, so it is
            // never evicted and never reloads — as a hot model weighs.
            let cold = (m.is_cold(&c.limits) && !pinned.contains(&m.id)).then(|| ColdWeight::of(m, &c.limits));
            for (it, &cap) in c.instance_types.iter().zip(&caps) {
                // Under a latency target a node's compute counts up to `cap` of it, and a model
                // that cannot keep its target even alone on the type does not go there.
                let scale = cmax / cap;
                let d = demand(&c.limits, m, it).filter(|d| d.fits() && alone.meets(c, m, it)).map(|d| match cold {
                    None => [d.memory, d.utilization * scale],
                    Some(w) => {
                        let fp = m.footprints[&it.family];
                        let share = w.share;
                        let reloads = w.misses_per_second * fp.load_ms() / 1000.0 / it.compute / cmax;
                        [d.memory * share, (d.utilization + reloads) * scale]
                    }
                });
                dvec.push(d.filter(|x| x[0] <= 1.0 + EPS && x[1] <= 1.0 + EPS));
            }
        }
        Self { types, items: c.models.iter().map(|m| m.id.clone()).collect(), demand: dvec, utilization_cap: caps }
    }

    /// A problem from raw numbers (tests and benches).
    pub fn new(types: Vec<BinType>, items: Vec<String>, demand: Vec<Option<[f64; 2]>>) -> Self {
        assert_eq!(demand.len(), items.len() * types.len());
        let utilization_cap = vec![1.0; types.len()];
        Self { types, items, demand, utilization_cap }
    }

    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    pub fn n_types(&self) -> usize {
        self.types.len()
    }

    #[inline]
    pub fn demand(&self, item: usize, t: usize) -> Option<[f64; 2]> {
        self.demand[item * self.types.len() + t]
    }

    /// The problem restricted to `items`, with `available[t]` nodes of each type left to buy.
    pub fn subset(&self, items: &[usize], available: &[usize]) -> Problem {
        let nt = self.types.len();
        let types = self.types.iter().zip(available).map(|(t, &a)| BinType { max_count: a, ..t.clone() }).collect();
        let mut demand = Vec::with_capacity(items.len() * nt);
        for &i in items {
            demand.extend_from_slice(&self.demand[i * nt..(i + 1) * nt]);
        }
        let items = items.iter().map(|&i| self.items[i].clone()).collect();
        Problem { types, items, demand, utilization_cap: self.utilization_cap.clone() }
    }

    /// Types item i may run on.
    pub fn allowed(&self, item: usize) -> impl Iterator<Item = (usize, [f64; 2])> + '_ {
        let nt = self.types.len();
        self.demand[item * nt..(item + 1) * nt].iter().enumerate().filter_map(|(t, d)| d.map(|d| (t, d)))
    }
}
