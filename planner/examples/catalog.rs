//! Prints a generated catalog: `cargo run -p stowage-planner --example catalog -- KIND N [SEED]`
//! with KIND one of uniform, heterogeneous, reference78. Used by BENCHMARKS.md and scripts/.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: catalog uniform|heterogeneous|reference78 N [SEED]";
    let kind = args.first().map(String::as_str).unwrap_or("");
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let text = match kind {
        "uniform" if n > 0 => stowage_planner::catalogs::uniform(n),
        "heterogeneous" if n > 0 => stowage_planner::catalogs::heterogeneous(n, seed),
        "reference78" => stowage_planner::catalogs::reference78(seed),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    print!("{text}");
}
