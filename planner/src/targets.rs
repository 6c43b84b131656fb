//! Packed nodes made to keep their latency targets (`slo.rs`): a node whose queue misses a
//! target gives up models, those with the most load first, until it passes; they go to nodes
//! that stay within their limits and pass with them, or to new nodes.

use stowage_core::catalog::Catalog;

use crate::heuristic::Bin;
use crate::problem::Problem;
use crate::slo::{has_targets, queue};

/// Whether the node `items` on type `t` of problem `p` keeps every target.
pub fn bin_meets(catalog: &Catalog, p: &Problem, t: usize, items: &[usize]) -> bool {
    if !has_targets(catalog) {
        return true;
    }
    let Some(it) = catalog.instance_type(&p.types[t].name) else { return true };
    queue(catalog, it, items.iter().map(|&i| &catalog.models[i])).meets()
}

/// Makes every node of `bins` keep its targets: a node that does not gives up its models with the
/// most load first until it does; each goes to a node with room that keeps its targets with it, or
/// to a new node (the cheapest type where it keeps its target alone). New nodes are appended.
pub fn meet_targets(catalog: &Catalog, p: &Problem, bins: &mut Vec<Bin>) {
    if !has_targets(catalog) {
        return;
    }
    let meets = |b: &Bin| bin_meets(catalog, p, b.t, &b.items);
    let mut evicted = Vec::new();
    for (k, b) in bins.iter_mut().enumerate() {
        while b.items.len() > 1 && !meets(b) {
            let (j, _) = b
                .items
                .iter()
                .enumerate()
                .map(|(j, &i)| (j, p.demand(i, b.t).map_or(0.0, |d| d[1])))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .expect("a node with models");
            let i = b.items.remove(j);
            let d = p.demand(i, b.t).expect("placed on an allowed type");
            b.load = [b.load[0] - d[0], b.load[1] - d[1]];
            evicted.push((i, k));
        }
    }
    for (i, from) in evicted {
        let takes = |b: &Bin| {
            let Some(d) = p.demand(i, b.t) else { return false };
            if b.items.is_empty() || !b.fits(d) {
                return false;
            }
            let mut with = b.items.clone();
            with.push(i);
            bin_meets(catalog, p, b.t, &with)
        };
        if let Some(j) = (0..bins.len()).find(|&j| takes(&bins[j])) {
            let d = p.demand(i, bins[j].t).expect("checked by takes");
            bins[j].add(i, d);
            continue;
        }
        match crate::heuristic::cheapest_new(p, bins, |t| p.demand(i, t).is_some()) {
            Some(t) => {
                let mut b = Bin::new(t);
                b.add(i, p.demand(i, t).expect("filtered"));
                bins.push(b);
            }
            // No node can be bought: back where it was (that node's prediction shows the miss).
            None => {
                let d = p.demand(i, bins[from].t).expect("it was placed there");
                bins[from].add(i, d);
            }
        }
    }
}
