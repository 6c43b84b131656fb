//! The standard profiles reproduce the reference deployment's models-per-node.
use stowage_core::Catalog;
use stowage_planner::catalogs;

#[test]
fn bert_base_densities_match_the_reference() {
    let c = Catalog::parse("uniform.toml", &catalogs::uniform(1)).unwrap();
    let m = &c.models[0];
    for (ty, want) in
        [("inf1.6xlarge", 76), ("inf1.2xlarge", 24), ("inf1.xlarge", 11), ("g4dn.xlarge", 18), ("g4dn.12xlarge", 72)]
    {
        let d = c.demand(m, c.instance_type(ty).unwrap()).unwrap();
        let per_node = (1.0 / d.memory.max(d.utilization) + 1e-9).floor() as usize;
        assert_eq!(per_node, want, "{ty}");
    }
}
