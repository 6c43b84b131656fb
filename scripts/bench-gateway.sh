#!/usr/bin/env bash
# What the gateway costs: the same model called directly on its node and through `stowage
# gateway`, side by side, at concurrency 1 (the p50 the gateway adds) and 16 (its throughput
# against direct calls). The node runs on NODE_CPUS (default CPU 0); the gateway and wrk share
# CLIENT_CPUS (default the last CPU), so the gateway never takes the node's core. ROUNDS rounds,
# alternating which side runs first; medians.
#   scripts/bench-gateway.sh [SECONDS] [PRESET] [ROUNDS]      e.g. scripts/bench-gateway.sh 6 mini 3
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seconds=${1:-6}
preset=${2:-mini}
rounds=${3:-3}
last=$(($(nproc) - 1))
[ "$last" -ge 1 ] || { echo "bench-gateway.sh needs at least 2 CPUs" >&2; exit 1; }
node_cpus=${NODE_CPUS:-0}
client_cpus=${CLIENT_CPUS:-$last}
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
stowage=$(release_binary)
dir=out/bench/$preset
[ -f "$dir/$preset-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 --preset "$preset" >/dev/null
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node_port=$(free)
gw_port=$(free)
RUST_LOG=warn taskset -c "$node_cpus" "$stowage" serve --catalog "$dir/models.toml" --engine tract \
  --host 127.0.0.1 --port "$node_port" --queue-size 256 &
node=$!
routes=$(mktemp)
runs=out/bench/gateway-runs.txt
trap 'kill -TERM $node ${gw:-} 2>/dev/null; wait 2>/dev/null || true; rm -f "$routes"' EXIT
until curl -sf "localhost:$node_port/ready" >/dev/null; do kill -0 $node; sleep 0.2; done
echo "{\"$preset-0001\": \"http://127.0.0.1:$node_port\"}" > "$routes"
RUST_LOG=warn taskset -c "$client_cpus" "$stowage" gateway --routes "$routes" --host 127.0.0.1 --port "$gw_port" --workers 1 &
gw=$!
until curl -sf "localhost:$gw_port/ready" >/dev/null; do kill -0 $gw; sleep 0.2; done
export WRK_BODY='{"inputs": "I love this product, the delivery was fast and the support team was very helpful"}'
: > "$runs"
for c in 1 16; do
  for r in $(seq "$rounds"); do
    order="direct gateway"
    [ $((r % 2)) = 0 ] && order="gateway direct"
    for side in $order; do
      port=$node_port
      [ "$side" = gateway ] && port=$gw_port
      out=$(taskset -c "$client_cpus" wrk -t1 -c"$c" -d"${seconds}s" -s scripts/wrk-report.lua \
        "http://127.0.0.1:$port/predictions/$preset-0001" | tail -1)
      echo "$c $side $out" >> "$runs"
    done
  done
done
python3 - "$runs" "$preset" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, side, data = line.split(" ", 2)
    runs.setdefault(int(c), {"direct": [], "gateway": []})[side].append(json.loads(data))
med = statistics.median
print("| preset | concurrency | direct req/s | gateway req/s | gateway / direct | direct p50 ms | gateway p50 ms | p50 added ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for c, r in sorted(runs.items()):
    d, g = r["direct"], r["gateway"]
    ratio = med(b["rps"] / a["rps"] for a, b in zip(d, g))
    added = med(b["p50_ms"] - a["p50_ms"] for a, b in zip(d, g))
    errors = sum(x["errors"] for x in d + g)
    print(f"| {sys.argv[2]} | {c} | {med(x['rps'] for x in d):.1f} | {med(x['rps'] for x in g):.1f} | {ratio:.3f} "
          f"| {med(x['p50_ms'] for x in d):.3f} | {med(x['p50_ms'] for x in g):.3f} | {added:+.3f} | {errors} |")
PY
