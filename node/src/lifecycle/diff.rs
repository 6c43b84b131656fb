//! What a reload changes: the difference between the model set a node serves and the one its new
//! plan and catalog name, computed without touching anything. `reconcile.rs` applies it.

use std::collections::{HashMap, HashSet};

use crate::lifecycle::spec::ModelSpec;

/// From one model set to the next.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// Models new to the node, in the next set's order.
    pub added: Vec<ModelSpec>,
    /// Models whose spec changed (artifact, sha256, engine, files, residency): loaded anew beside
    /// the old one and swapped in when warm; in the next set's order.
    pub replaced: Vec<ModelSpec>,
    /// Model ids the next set no longer has, in the current order.
    pub removed: Vec<String>,
    /// Model ids served on untouched, in the next set's order.
    pub kept: Vec<String>,
}

impl Diff {
    /// Nothing to load and nothing to drop.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.replaced.is_empty() && self.removed.is_empty()
    }
}

/// The difference from `current` to `next` (each a list of specs with distinct ids).
pub fn diff(current: &[ModelSpec], next: &[ModelSpec]) -> Diff {
    let now: HashMap<&str, &ModelSpec> = current.iter().map(|s| (s.id.as_str(), s)).collect();
    let wanted: HashSet<&str> = next.iter().map(|s| s.id.as_str()).collect();
    let mut d = Diff::default();
    for spec in next {
        match now.get(spec.id.as_str()) {
            None => d.added.push(spec.clone()),
            Some(old) if *old != spec => d.replaced.push(spec.clone()),
            Some(_) => d.kept.push(spec.id.clone()),
        }
    }
    d.removed = current.iter().filter(|s| !wanted.contains(s.id.as_str())).map(|s| s.id.clone()).collect();
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_core::Engine;

    fn spec(id: &str) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            engine: Engine::Auto,
            artifact: std::path::PathBuf::from(format!("/m/{id}/model.onnx")).into(),
            tokenizer: std::path::PathBuf::from(format!("/m/{id}/tokenizer.json")).into(),
            config: None,
            config_optional: true,
            sha256: None,
            cold: false,
            request_tokens: 32,
            slo_p90_ms: None,
        }
    }

    fn ids(specs: &[ModelSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.id.as_str()).collect()
    }

    #[test]
    fn the_same_set_changes_nothing() {
        let set = vec![spec("a"), spec("b")];
        let d = diff(&set, &set);
        assert!(d.is_empty());
        assert_eq!(d.kept, ["a", "b"]);
    }

    #[test]
    fn added_removed_and_kept_in_their_orders() {
        let d = diff(&[spec("a"), spec("b"), spec("c")], &[spec("d"), spec("c"), spec("a"), spec("e")]);
        assert_eq!(ids(&d.added), ["d", "e"]);
        assert_eq!(d.removed, ["b"]);
        assert_eq!(d.kept, ["c", "a"]);
        assert!(d.replaced.is_empty());
    }

    #[test]
    fn a_changed_spec_is_replaced_not_added() {
        let mut new_weights = spec("a");
        new_weights.sha256 = Some("00".repeat(32));
        let mut other_engine = spec("b");
        other_engine.engine = Engine::Ort;
        let mut now_cold = spec("c");
        now_cold.cold = true;
        let d = diff(&[spec("a"), spec("b"), spec("c")], &[new_weights, other_engine, now_cold]);
        assert_eq!(ids(&d.replaced), ["a", "b", "c"]);
        assert!(d.added.is_empty() && d.removed.is_empty() && d.kept.is_empty());
    }

    #[test]
    fn from_nothing_and_to_nothing() {
        let set = vec![spec("a"), spec("b")];
        assert_eq!(ids(&diff(&[], &set).added), ["a", "b"]);
        assert_eq!(diff(&set, &[]).removed, ["a", "b"]);
    }
}
