#!/usr/bin/env bash
# The BENCHMARKS.md load test: N nodes × M synthetic models on the local runtime, full report.
#   scripts/bench-loadtest.sh [NODES] [MODELS_PER_NODE] [PRESET] [ENGINE] [SECONDS]   (default 4 20 mini tract 10)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
nodes=${1:-4}; per=${2:-20}; preset=${3:-mini}; engine=${4:-tract}; secs=${5:-10}
dir=out/bench-loadtest
stowage=$(release_binary)
count=$((nodes * per))
[ -f "$dir/models/$preset-$(printf %04d "$count")/model.onnx" ] || "$stowage" synth --out "$dir/models" --count "$count" --preset "$preset" > /dev/null
# One local instance type that holds exactly MODELS_PER_NODE models of 200 MiB (planning footprint).
gib=$(python3 -c "print(round(($per * 200 + 100) / 1024 / 0.9, 3))")
{
  printf '[instance_types."local.node"]\nfamily = "local"\nprice_per_hour = 1.0\nmemory_gib = %s\ncompute = 2\n\n' "$gib"
  printf '[profiles."synth-%s".local]\nmemory_mib = 200\nservice_ms = 5\n\n' "$preset"
  sed -n '/^\[\[models\]\]/,$p' "$dir/models/models.toml"
} > "$dir/models/local.toml"
"$stowage" plan --catalog "$dir/models/local.toml" --out "$dir/models/plan.json"
scripts/stop.sh --out "$dir/deploy" > /dev/null 2>&1 || true
STOWAGE_BIN=$stowage scripts/deploy.sh --runtime local --out "$dir/deploy" "$dir/models/plan.json" -- --engine "$engine" --catalog "$dir/models/local.toml"
trap 'scripts/stop.sh --out "$dir/deploy"' EXIT
STOWAGE_BIN=$stowage scripts/loadtest.sh --routes "$dir/deploy/routes.json" --out "$dir/loadtest" --steps "1 2 4 8 16 32" --duration "$secs" --order zipf "$dir/models/plan.json"
