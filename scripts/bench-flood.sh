#!/usr/bin/env bash
# Goodput under a flood: one model's capacity (closed loop, 4 connections, every answer 200) vs
# the 200s per second it still serves while 256 connections hammer it without waiting for
# Retry-After (most get 429). The node runs on SERVER_CPUS, wrk on CLIENT_CPUS (defaults: every CPU
# but the last, and the last). Counts come from the node's own stowage_requests_total.
#   scripts/bench-flood.sh [SECONDS] [PRESET] [ENGINE]      e.g. scripts/bench-flood.sh 15 mini tract
# SERVE_ARGS adds flags to the node.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seconds=${1:-15}
preset=${2:-mini}
engine=${3:-tract}
last=$(($(nproc) - 1))
[ "$last" -ge 1 ] || { echo "bench-flood.sh needs at least 2 CPUs (one for the load generator)" >&2; exit 1; }
server_cpus=${SERVER_CPUS:-0-$((last - 1))}
client_cpus=${CLIENT_CPUS:-$last}
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
stowage=$(release_binary)
read -r -a serve_args <<< "${SERVE_ARGS:-}"
dir=out/bench/$preset
[ -f "$dir/$preset-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 --preset "$preset" >/dev/null
export WRK_BODY='{"inputs": "I love this product, the delivery was fast and the support team was very helpful"}'
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn taskset -c "$server_cpus" "$stowage" serve --catalog "$dir/models.toml" --engine "$engine" \
  --host 127.0.0.1 --port "$port" "${serve_args[@]}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
# 200s and all answers so far, from the node's counters.
counts() {
  curl -sf "localhost:$port/metrics" | awk '
    /^stowage_requests_total\{/ { all += $NF; if ($0 ~ /code="200"/) ok += $NF }
    END { printf "%d %d\n", ok, all }'
}
run() {
  read -r ok0 all0 < <(counts)
  taskset -c "$client_cpus" wrk -t1 -c"$1" -d"${seconds}s" -s scripts/wrk-report.lua \
    "http://127.0.0.1:$port/predictions/$preset-0001" > /dev/null
  read -r ok1 all1 < <(counts)
  echo "$((ok1 - ok0)) $((all1 - all0))"
}
taskset -c "$client_cpus" wrk -t1 -c4 -d2s -s scripts/wrk-report.lua "http://127.0.0.1:$port/predictions/$preset-0001" >/dev/null
read -r cap_ok cap_all < <(run 4)
read -r flood_ok flood_all < <(run 256)
python3 - "$seconds" "$cap_ok" "$cap_all" "$flood_ok" "$flood_all" "$preset" "$engine" "${SERVE_ARGS:-}" <<'PY'
import sys
s, cap_ok, cap_all, ok, total = float(sys.argv[1]), *map(int, sys.argv[2:6])
preset, engine, args = sys.argv[6], sys.argv[7], sys.argv[8]
print("| preset | engine | node flags | capacity (4 connections) 200/s | flood (256 connections) 200/s | goodput / capacity | other answers/s in the flood |")
print("|---|---|---|---:|---:|---:|---:|")
print(f"| {preset} | {engine} | {args or 'defaults'} | {cap_ok / s:.1f} | {ok / s:.1f} | {ok / max(cap_ok, 1):.2f} | {(total - ok) / s:.0f} |")
PY
