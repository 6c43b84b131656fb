//! Prints a generated catalog: `cargo run -p stowage-planner --example catalog -- KIND N [SEED]`
//! with KIND one of uniform, heterogeneous, bert-family, wide, long-tail (80 % of models under the cold threshold), long-tail-hot (the same, every model hot), reference78; or a day-2 change of a catalog file:
//! `-- churn FILE RETIRE ADD DOUBLE [SEED]` (shares of models) or `-- without-type FILE TYPE`.
//! Used by BENCHMARKS.md and scripts/.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: catalog uniform|heterogeneous|bert-family|wide|long-tail|long-tail-hot|reference78 N [SEED] | churn FILE RETIRE ADD DOUBLE [SEED] | without-type FILE TYPE";
    let kind = args.first().map(String::as_str).unwrap_or("");
    let file = || std::fs::read_to_string(&args[1]).unwrap_or_else(|e| panic!("{}: {e}", args[1]));
    let share = |k: usize| args.get(k).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    match kind {
        "churn" if args.len() >= 5 => {
            let seed = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(7);
            print!("{}", stowage_planner::catalogs::churn(&file(), share(2), share(3), share(4), seed));
            return;
        }
        "without-type" if args.len() == 3 => {
            print!("{}", stowage_planner::catalogs::without_type(&file(), &args[2]));
            return;
        }
        _ => {}
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let text = match kind {
        "uniform" if n > 0 => stowage_planner::catalogs::uniform(n),
        "heterogeneous" if n > 0 => stowage_planner::catalogs::heterogeneous(n, seed),
        "bert-family" if n > 0 => stowage_planner::catalogs::bert_family(n, seed),
        "wide" if n > 0 => stowage_planner::catalogs::wide(n, seed),
        "long-tail" if n > 0 => stowage_planner::catalogs::long_tail(n, seed, 0.05),
        "long-tail-hot" if n > 0 => stowage_planner::catalogs::long_tail(n, seed, 0.0),
        "reference78" => stowage_planner::catalogs::reference78(seed),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    print!("{text}");
}
