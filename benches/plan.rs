//! Guards the planner's speed: `stowage plan` on heterogeneous catalogs of 3,000 and 10,000 models
//! (targets: under 2 s and 10 s on a 2-core machine), and the first-fit-decreasing baseline.
//! Catalogs are generated and parsed outside the timed region.

use criterion::{criterion_group, criterion_main, Criterion};
use stowage_core::Catalog;
use stowage_planner::{catalogs, plan, Method, Options};

fn planner(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group.sample_size(10);
    for n in [3_000, 10_000] {
        let catalog =
            Catalog::parse("heterogeneous.toml", &catalogs::heterogeneous(n, 1)).expect("generated catalog is valid");
        group.bench_function(format!("heterogeneous-{n}"), |b| b.iter(|| plan(&catalog, &Options::default())));
        let ffd = Options { method: Method::Ffd, ..Options::default() };
        group.bench_function(format!("heterogeneous-{n}-ffd"), |b| b.iter(|| plan(&catalog, &ffd)));
    }
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
