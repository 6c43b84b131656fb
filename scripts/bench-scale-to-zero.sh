#!/usr/bin/env bash
# Scale to zero, measured and modelled (BENCHMARKS.md, "Pay for traffic"). Prints Markdown tables.
#   scripts/bench-scale-to-zero.sh [PRESETS] [RUNS]      e.g. scripts/bench-scale-to-zero.sh "tiny mini" 5
# 1. Cold start from zero, on real processes: `stowage synth` models of each preset, every one
#    `scale_to_zero = true`, deployed with scripts/deploy.sh --runtime local (STOWAGE_IDLE_SECONDS=2).
#    RUNS times: wait until the node has stopped, then one request through the gateway (curl's
#    total time: the gateway's hold, scripts/autoscale.py's start, the node's start and the answer),
#    then a warm one.
# 2. The cost of a day (scripts/diurnal-cost.py, a model): generated 3,000-model catalogs
#    (heterogeneous; long-tail), planned as they are (static) and with every model below 0.05
#    peak rps marked `scale_to_zero = true`, under two daily curves.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
presets=${1:-"tiny mini"}
runs=${2:-5}
stowage=$(release_binary)
cd "$root"
cargo build --release --locked -q -p stowage-planner --example catalog
dir=$(mktemp -d)
trap 'scripts/stop.sh --out "$dir/deploy" > /dev/null 2>&1 || true; rm -rf "$dir"' EXIT
# Marks every model of catalog $1 below $2 peak rps `scale_to_zero = true`.
mark() {
  python3 - "$1" "$2" <<'PY'
import sys
path, below = sys.argv[1], float(sys.argv[2])
out = []
for line in open(path).read().split("\n"):
    out.append(line)
    if line.startswith("peak_rps = ") and float(line.split("=")[1]) < below:
        out.append("scale_to_zero = true")
open(path, "w").write("\n".join(out))
PY
}

echo "| preset | cold start p50 (ms) | min | max | warm request p50 (ms) | runs |"
echo "|---|---:|---:|---:|---:|---:|"
for preset in $presets; do
  rm -rf "$dir/synth" "$dir/deploy"
  "$stowage" synth --preset "$preset" --count 2 --out "$dir/synth" > /dev/null
  mark "$dir/synth/models.toml" 1e9
  "$stowage" plan --catalog "$dir/synth/models.toml" --out "$dir/synth/plan.json" > /dev/null
  STOWAGE_IDLE_SECONDS=2 scripts/deploy.sh --out "$dir/deploy" "$dir/synth/plan.json" > /dev/null
  gateway=$(cat "$dir/deploy/gateway.url")
  model=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][0]["models"][0])' "$dir/synth/plan.json")
  node=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][0]["id"])' "$dir/synth/plan.json")
  cold=() warm=()
  for _ in $(seq "$runs"); do
    # Asleep: no pid file (scripts/autoscale.py removes it when the node has exited).
    while [ -f "$dir/deploy/nodes/$node/pid" ]; do sleep 0.2; done
    cold+=("$(curl -s -o /dev/null -w '%{time_total}' "$gateway/predictions/$model?text=wake+up")")
    warm+=("$(curl -s -o /dev/null -w '%{time_total}' "$gateway/predictions/$model?text=again")")
  done
  python3 - "$preset" "${cold[*]}" "${warm[*]}" <<'PY'
import statistics, sys
preset, cold, warm = sys.argv[1], [float(x) * 1000 for x in sys.argv[2].split()], [float(x) * 1000 for x in sys.argv[3].split()]
print(f"| {preset} | {statistics.median(cold):.0f} | {min(cold):.0f} | {max(cold):.0f} | {statistics.median(warm):.1f} | {len(cold)} |")
PY
  scripts/stop.sh --out "$dir/deploy" > /dev/null
done

echo
echo "| catalog | curve | static plan \$/day | with scale to zero: nodes (of them to zero) | \$/day, always on | \$/day, scaling to zero | saving vs static |"
echo "|---|---|---:|---:|---:|---:|---:|"
for kind in heterogeneous long-tail; do
  ./target/release/examples/catalog "$kind" 3000 1 > "$dir/static.toml"
  cp "$dir/static.toml" "$dir/marked.toml"
  mark "$dir/marked.toml" 0.05
  "$stowage" plan --catalog "$dir/static.toml" --out "$dir/static.json" > /dev/null
  "$stowage" plan --catalog "$dir/marked.toml" --out "$dir/marked.json" > /dev/null
  for curve in consumer business; do
    python3 - "$kind" "$curve" "$dir" <<'PY'
import subprocess, sys
kind, curve, d = sys.argv[1:]
row = lambda cat, plan: subprocess.run(["python3", "scripts/diurnal-cost.py", f"{d}/{cat}", f"{d}/{plan}", "--curve", curve],
                                       check=True, capture_output=True, text=True).stdout.strip().strip("|").split("|")
static = float(row("static.toml", "static.json")[1])
nodes, always, scaled, _ = row("marked.toml", "marked.json")
saving = 100 * (static - float(scaled)) / static
print(f"| {kind} 3000 | {curve} | {static:.2f} | {nodes.strip()} | {float(always):.2f} | {float(scaled):.2f} | {saving:.1f}% |")
PY
  done
done
