#!/usr/bin/env bash
# The plan's lower bound with and without column generation, per catalog: the continuous LP
# (`--bound-time 0`) against the default. Prints a Markdown table (used in BENCHMARKS.md).
#   scripts/bench-bound.sh [SEEDS]     e.g. scripts/bench-bound.sh "1 2"
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seeds=${1:-"1"}
cargo build --release --locked -q -p stowage-planner --example catalog
cargo build --release --locked -q
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "| catalog | plan \$/h | continuous LP bound, gap | bound after, gap | which | seconds before → after |"
echo "|---|---:|---:|---:|---|---:|"
row() {
  local name=$1 file=$2
  ./target/release/stowage plan --catalog "$file" --out "$dir/a.json" --bound-time 0 >/dev/null
  ./target/release/stowage plan --catalog "$file" --out "$dir/b.json" >/dev/null
  python3 - "$name" "$dir/a.json" "$dir/b.json" <<'PY'
import json, sys
name, a, b = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
g = lambda p: 100 * p["solver"]["gap"]
print(f"| {name} | {b['cost_per_hour']:.3f} | {a['lower_bound_per_hour']:.3f}, {g(a):.2f}% | "
      f"{b['lower_bound_per_hour']:.3f}, {g(b):.2f}% | {b['solver'].get('bound', '')} | "
      f"{a['solver']['seconds']:.2f} → {b['solver']['seconds']:.2f} |")
PY
}
row "models.toml (300)" models.toml
./target/release/examples/catalog uniform 3040 > "$dir/u.toml"
row "uniform 3040 (bert-base)" "$dir/u.toml"
for s in $seeds; do
  for kind in "heterogeneous 3000" "heterogeneous 10000" "bert-family 3000" "reference78 78"; do
    read -r k n <<<"$kind"
    ./target/release/examples/catalog "$k" "$n" "$s" > "$dir/c.toml"
    row "$k $n, seed $s" "$dir/c.toml"
  done
done
