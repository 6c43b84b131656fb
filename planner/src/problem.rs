//! The numeric packing problem built from a catalog: items (models) with a two-dimensional demand
//! per instance type, normalized so that a node of that type holds at most 1.0 in each dimension.

use stowage_core::catalog::{demand, Catalog};

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
}

impl Problem {
    pub fn from_catalog(c: &Catalog) -> Self {
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
        let mut d = Vec::with_capacity(c.models.len() * types.len());
        for m in &c.models {
            for it in &c.instance_types {
                d.push(demand(&c.limits, m, it).filter(|d| d.fits()).map(|d| [d.memory, d.utilization]));
            }
        }
        Self { types, items: c.models.iter().map(|m| m.id.clone()).collect(), demand: d }
    }

    /// A problem from raw numbers (tests and benches).
    pub fn new(types: Vec<BinType>, items: Vec<String>, demand: Vec<Option<[f64; 2]>>) -> Self {
        assert_eq!(demand.len(), items.len() * types.len());
        Self { types, items, demand }
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
        Problem { types, items: items.iter().map(|&i| self.items[i].clone()).collect(), demand }
    }

    /// Types item i may run on.
    pub fn allowed(&self, item: usize) -> impl Iterator<Item = (usize, [f64; 2])> + '_ {
        let nt = self.types.len();
        self.demand[item * nt..(item + 1) * nt].iter().enumerate().filter_map(|(t, d)| d.map(|d| (t, d)))
    }
}
