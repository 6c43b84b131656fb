#!/usr/bin/env bash
# Day-2 re-planning (`stowage plan --previous`) on generated heterogeneous catalogs: plan the
# catalog, change it (scenarios below), re-plan from the first plan, and report moved models and
# bytes, changed nodes, cost against a fresh plan, seconds. Prints a Markdown table (BENCHMARKS.md).
#   scripts/bench-replan.sh [SIZES] [SEED]          e.g. scripts/bench-replan.sh "3000 10000" 1
# Scenarios: (i) one model retired, one added; (ii) 5 % retired, 5 % added, 10 % of models'
# traffic doubled; (iii) 20 % / 20 % / 20 %; (iv) the plan's least used instance type removed.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
sizes=${1:-"3000 10000"}
seed=${2:-1}
cargo build --release --locked -q -p stowage-planner --example catalog
cargo build --release --locked -q
catalog=./target/release/examples/catalog
stowage=./target/release/stowage
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "| models | scenario | models moved (of kept) | GiB to reload | nodes changed / unchanged / added / removed | \$/h | fresh \$/h | × fresh | seconds |"
echo "|---:|---|---:|---:|---|---:|---:|---:|---:|"
for n in $sizes; do
  "$catalog" heterogeneous "$n" "$seed" > "$dir/a.toml"
  "$stowage" plan --catalog "$dir/a.toml" --out "$dir/a.json" > /dev/null
  least=$(python3 -c 'import json,sys,collections; c=collections.Counter(n["instance_type"] for n in json.load(open(sys.argv[1]))["nodes"]); print(min(c, key=lambda t: (c[t], t)))' "$dir/a.json")
  for scenario in "(i) 1 retired, 1 added" "(ii) 5 %, 5 %, 10 % traffic ×2" "(iii) 20 %, 20 %, 20 % traffic ×2" "(iv) without $least"; do
    case "$scenario" in
      "(i)"*) "$catalog" churn "$dir/a.toml" 0.000000001 0.000000001 0 7 > "$dir/b.toml" ;;
      "(ii)"*) "$catalog" churn "$dir/a.toml" 0.05 0.05 0.10 7 > "$dir/b.toml" ;;
      "(iii)"*) "$catalog" churn "$dir/a.toml" 0.20 0.20 0.20 7 > "$dir/b.toml" ;;
      "(iv)"*) "$catalog" without-type "$dir/a.toml" "$least" > "$dir/b.toml" ;;
    esac
    start=$(date +%s.%N)
    "$stowage" plan --catalog "$dir/b.toml" --previous "$dir/a.json" --out "$dir/b.json" > /dev/null
    end=$(date +%s.%N)
    python3 - "$n" "$scenario" "$dir/b.json" "$start" "$end" <<'PY'
import json, sys
n, scenario, plan, start, end = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), float(sys.argv[4]), float(sys.argv[5])
c = plan["changes"]
kept = int(n) - len(c["models_removed"])
fresh = c["fresh_cost_per_hour"]
print(f"| {n} | {scenario} | {len(c['models_moved'])} ({100 * len(c['models_moved']) / kept:.1f} %) | {c['moved_bytes'] / 2**30:.1f} | "
      f"{len(c['nodes_changed'])} / {c['nodes_unchanged']} / {len(c['nodes_added'])} / {len(c['nodes_removed'])} | "
      f"{plan['cost_per_hour']:.3f} | {fresh:.3f} | {plan['cost_per_hour'] / fresh:.4f} | {end - start:.2f} |")
PY
  done
done
