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
            })
            .collect();
        let mut d = Vec::with_capacity(c.models.len() * types.len());
        for m in &c.models {
            for it in &c.instance_types {
                d.push(
                    demand(&c.limits, m, it)
                        .filter(|d| d.fits())
                        .map(|d| [d.memory, d.utilization]),
                );
            }
        }
        Self {
            types,
            items: c.models.iter().map(|m| m.id.clone()).collect(),
            demand: d,
        }
    }

    /// A problem from raw numbers (tests and benches).
    pub fn new(types: Vec<BinType>, items: Vec<String>, demand: Vec<Option<[f64; 2]>>) -> Self {
        assert_eq!(demand.len(), items.len() * types.len());
        Self {
            types,
            items,
            demand,
        }
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

    /// Types item i may run on.
    pub fn allowed(&self, item: usize) -> impl Iterator<Item = (usize, [f64; 2])> + '_ {
        let nt = self.types.len();
        self.demand[item * nt..(item + 1) * nt]
            .iter()
            .enumerate()
            .filter_map(|(t, d)| d.map(|d| (t, d)))
    }
}
