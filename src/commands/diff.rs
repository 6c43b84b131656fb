//! `stowage diff A B`: what changes from plan A to plan B — the summary line `plan --previous`
//! prints, then one line per changed, added and removed node.

use anyhow::Result;
use stowage_core::{Changes, Plan};

use crate::cli::DiffArgs;

pub fn run(args: &DiffArgs) -> Result<()> {
    let before = Plan::load(&args.before)?;
    let after = Plan::load(&args.after)?;
    // The bytes to reload need the new plan's catalog; without it they are not counted.
    let catalog = after.catalog(&args.after, args.catalog.as_deref());
    let catalog = match (catalog, &args.catalog) {
        (Ok(c), _) => Some(c),
        (Err(e), Some(_)) => return Err(e.into()),
        (Err(_), None) => None,
    };
    let changes = Changes::between(&before, &after, catalog.as_ref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
        return Ok(());
    }
    print!("{}", describe(&before, &after, &changes, catalog.is_some()));
    Ok(())
}

/// The summary, the costs, and one line per node that is not unchanged.
pub fn describe(before: &Plan, after: &Plan, c: &Changes, bytes_known: bool) -> String {
    let mut out = format!("changes: {}", c.summary());
    if !bytes_known {
        out.push_str(" (bytes unknown: no catalog for the new plan)");
    }
    out.push('\n');
    out.push_str(&format!("cost ${:.2}/h (previous ${:.2}/h)\n", after.cost_per_hour, before.cost_per_hour));
    let moved_to = |node: &str| c.models_moved.iter().filter(|m| m.to == node).count();
    let moved_from = |node: &str| c.models_moved.iter().filter(|m| m.from == node).count();
    for n in &after.nodes {
        let was = before.nodes.iter().find(|b| b.id == n.id);
        let line = match was {
            None => format!("+ {} ({}): {} models", n.id, n.instance_type, n.models.len()),
            Some(b) if c.nodes_changed.contains(&n.id) => {
                let added = n.models.iter().filter(|m| !b.models.contains(m)).count();
                let removed = b.models.iter().filter(|m| !n.models.contains(m)).count();
                let retype = if b.instance_type != n.instance_type {
                    format!(", {} → {} (restarts)", b.instance_type, n.instance_type)
                } else {
                    String::new()
                };
                format!(
                    "~ {} ({}): {} models, +{added} −{removed} ({} moved in, {} moved out){retype}",
                    n.id,
                    n.instance_type,
                    n.models.len(),
                    moved_to(&n.id),
                    moved_from(&n.id)
                )
            }
            Some(_) => continue,
        };
        out.push_str(&line);
        out.push('\n');
    }
    for b in before.nodes.iter().filter(|b| c.nodes_removed.contains(&b.id)) {
        out.push_str(&format!("- {} ({}): {} models\n", b.id, b.instance_type, b.models.len()));
    }
    out
}
