//! Exact re-optimization of a packing's tail: the models of the few least useful nodes are
//! re-packed by the MILP over every instance type (e.g. two half-empty inf1.2xlarge → one
//! c5.4xlarge), which greedy rules do not see.

use std::time::Instant;

use crate::bound::LpBound;
use crate::heuristic::{item_values, least_useful_first, Bin, Packing};
use crate::milp::solve_exact;
use crate::problem::Problem;

/// Most models handed to one sub-MILP.
const MAX_ITEMS: usize = 60;
/// Branch-and-bound nodes for one sub-MILP: its job is to find a better tail, not to prove it
/// optimal. A node budget (not time) keeps plans identical across machines.
const SUB_NODES: usize = 50;
/// Safety cap on one sub-MILP's wall time, far above what its node budget takes (milliseconds):
/// under a heavily loaded machine a tighter cap cut some sub-MILPs short and not others, and two
/// plans of one catalog differed (a replan then moved models of an unchanged catalog).
const SUB_SECONDS: f64 = 10.0;

/// Tries the 2, 3 and 4 least useful nodes; returns how much cost it saved.
pub fn reoptimize_tail(p: &Problem, lb: &LpBound, pk: &mut Packing, deadline: Instant) -> f64 {
    let mut saved = 0.0;
    let values = item_values(p, lb);
    for k in [2usize, 3, 4] {
        let left = deadline.saturating_duration_since(Instant::now()).as_secs_f64();
        if left < 0.05 {
            break;
        }
        let order = least_useful_first(p, &values, pk);
        if order.len() < k {
            break;
        }
        let chosen = &order[..k];
        let items: Vec<usize> = chosen.iter().flat_map(|&j| pk.bins[j].items.iter().copied()).collect();
        if items.len() > MAX_ITEMS {
            break;
        }
        let mut used = pk.counts(p);
        for &j in chosen {
            used[pk.bins[j].t] -= 1;
        }
        let available: Vec<usize> = p.types.iter().zip(&used).map(|(t, &u)| t.max_count.saturating_sub(u)).collect();
        let sub = p.subset(&items, &available);
        let position: std::collections::HashMap<usize, usize> =
            items.iter().enumerate().map(|(s, &i)| (i, s)).collect();
        let mut incumbent = Packing {
            bins: chosen
                .iter()
                .map(|&j| Bin {
                    t: pk.bins[j].t,
                    items: pk.bins[j].items.iter().map(|i| position[i]).collect(),
                    load: pk.bins[j].load,
                })
                .collect(),
        };
        incumbent.normalize(&sub);
        let before = incumbent.cost(&sub);
        let r = solve_exact(&sub, &incumbent, (left / 2.0).min(SUB_SECONDS), Some(SUB_NODES));
        let Some(better) = r.packing.filter(|b| b.cost(&sub) < before - 1e-9) else { continue };
        saved += before - better.cost(&sub);
        for &j in chosen {
            pk.bins[j].items.clear();
        }
        for b in better.bins {
            pk.bins.push(Bin { t: b.t, items: b.items.iter().map(|&s| items[s]).collect(), load: b.load });
        }
        pk.normalize(p);
    }
    saved
}
