#!/usr/bin/env bash
# Planner quality and speed on generated heterogeneous catalogs: Stowage's planner vs plain
# first-fit decreasing. Prints a Markdown table (used in BENCHMARKS.md).
#   scripts/bench-plan.sh [SIZES] [SEEDS]     e.g. scripts/bench-plan.sh "3000 10000" "1 2 3 4 5"
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
sizes=${1:-"3000 10000"}
seeds=${2:-"1 2 3 4 5"}
cargo build --release --locked -q -p stowage-planner --example catalog
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "| models | seed | lower bound \$/h | Stowage \$/h | gap | seconds | FFD \$/h | FFD gap |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in $sizes; do
  for s in $seeds; do
    ./target/release/examples/catalog heterogeneous "$n" "$s" > "$dir/c.toml"
    ./target/release/stowage plan --catalog "$dir/c.toml" --out "$dir/p.json" >/dev/null
    ./target/release/stowage plan --catalog "$dir/c.toml" --out "$dir/f.json" --method ffd >/dev/null
    python3 - "$n" "$s" "$dir/p.json" "$dir/f.json" <<'PY'
import json, sys
n, s, p, f = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
lb = p["lower_bound_per_hour"]
gap = lambda c: 100 * (c - lb) / c
print(f"| {n} | {s} | {lb:.3f} | {p['cost_per_hour']:.3f} | {gap(p['cost_per_hour']):.2f}% | {p['solver']['seconds']:.2f} | {f['cost_per_hour']:.3f} | {gap(f['cost_per_hour']):.2f}% |")
PY
  done
done
