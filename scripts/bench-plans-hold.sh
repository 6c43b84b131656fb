#!/usr/bin/env bash
# Does a plan hold? 20 models of several architectures and sizes, Zipf traffic, a 1-vCPU
# instance type and a P90 target of 100 ms: profile, scale the traffic to the largest the planner
# puts on one node, serve that node on CPU 0 and verify it (open loop, Poisson) from CPU 1 at
# 0.5, 1.0 and 1.25 × its planned peak. Prints a Markdown table (BENCHMARKS.md, "Plans that
# hold"); the details are in out/bench/hold/hold.json. Needs 2 CPUs.
#   scripts/bench-plans-hold.sh [SECONDS] [BEFORE_BINARY]     e.g. scripts/bench-plans-hold.sh 45
# BEFORE_BINARY: an older stowage (e.g. built from the commit before this work) for the "before"
# rows: its profile and planner, its plan served by this build's node.
# Env: STOWAGE_HOLD_LIMITS (max_utilization values, comma-separated; default 0.83) and
# STOWAGE_HOLD_FACTORS (multiples of the planned peak; default 0.5,1.0,1.25), STOWAGE_HOLD_QUANTILE
# (the profile's --capacity-quantile; default its own), STOWAGE_HOLD_SERVE_ARGS (more flags for
# the node's stowage serve; default none: the node as a user starts it) and STOWAGE_HOLD_SPELL
# (START,SECONDS: a busy loop on the node's CPU that far into each pass, a slow spell of the kind
# this machine has; default none).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
seconds=${1:-45}
before=${2:+$(from_caller "$2")}
cd "$root"
(($(nproc) >= 2)) || { echo "bench-plans-hold: needs 2 CPUs (the node on one, the load on the other)" >&2; exit 1; }
py=$(scripts/venv.sh scripts/requirements-bench.txt)/python3
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
stowage=$(release_binary)
"$py" scripts/bench_hold.py out/bench/hold "$stowage" --seconds "$seconds" ${before:+--before "$before"} \
  --limits "${STOWAGE_HOLD_LIMITS:-0.83}" --factors "${STOWAGE_HOLD_FACTORS:-0.5,1.0,1.25}" \
  ${STOWAGE_HOLD_QUANTILE:+--quantile "$STOWAGE_HOLD_QUANTILE"} \
  ${STOWAGE_HOLD_SERVE_ARGS:+--serve-args "$STOWAGE_HOLD_SERVE_ARGS"} \
  ${STOWAGE_HOLD_SPELL:+--spell "$STOWAGE_HOLD_SPELL"}
