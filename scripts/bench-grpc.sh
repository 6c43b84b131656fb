#!/usr/bin/env bash
# KServe v2 over gRPC against its REST form, on one model: the node on CPU 0 (--grpc-port), the
# gateway (--grpc-port) and the load on CPU 1. Per round, at concurrency 1 and 16, directly and
# through the gateway: REST `POST /v2/models/{model}/infer` (JSON, wrk) and gRPC `ModelInfer` (raw
# contents, as tritonclient.grpc sends it; examples/grpc_load.rs, one connection per caller, as
# wrk's). The same text each time. ROUNDS rounds, alternating which protocol runs first; medians.
#   scripts/bench-grpc.sh [SECONDS] [ROUNDS] [PRESET]      e.g. scripts/bench-grpc.sh 6 3 tiny
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seconds=${1:-6}
rounds=${2:-3}
preset=${3:-tiny}
(($(nproc) >= 2)) || { echo "bench-grpc.sh needs 2 CPUs" >&2; exit 1; }
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
stowage=$(release_binary)
cargo build --release --locked -q --example grpc_load
load=$root/target/release/examples/grpc_load
dir=out/bench/$preset
[ -f "$dir/$preset-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 --preset "$preset" >/dev/null
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
node_port=$(free); node_grpc=$(free); gw_port=$(free); gw_grpc=$(free)
RUST_LOG=warn taskset -c 0 "$stowage" serve --catalog "$dir/models.toml" --host 127.0.0.1 --port "$node_port" \
  --grpc-port "$node_grpc" --queue-size 256 &
node=$!
routes=$(mktemp)
runs=out/bench/grpc-runs.txt
trap 'kill -TERM $node ${gw:-} 2>/dev/null; wait 2>/dev/null || true; rm -f "$routes"' EXIT
until curl -sf "localhost:$node_port/ready" >/dev/null; do kill -0 $node; sleep 0.2; done
printf '{"%s-0001": {"url": "http://127.0.0.1:%s", "grpc": "http://127.0.0.1:%s"}}\n' "$preset" "$node_port" "$node_grpc" > "$routes"
RUST_LOG=warn taskset -c 1 "$stowage" gateway --routes "$routes" --host 127.0.0.1 --port "$gw_port" \
  --grpc-port "$gw_grpc" --workers 1 &
gw=$!
until curl -sf "localhost:$gw_port/ready" >/dev/null; do kill -0 $gw; sleep 0.2; done
text="I love this product, the delivery was fast and the support team was very helpful"
export WRK_BODY="{\"inputs\": [{\"name\": \"text\", \"shape\": [1], \"datatype\": \"BYTES\", \"data\": [\"$text\"]}]}"
: > "$runs"
rest() { # PATH_LABEL PORT CONCURRENCY
  echo "$1 rest $3 $(taskset -c 1 wrk -t1 -c"$3" -d"${seconds}s" -s scripts/wrk-report.lua \
    "http://127.0.0.1:$2/v2/models/$preset-0001/infer" | tail -1)" >> "$runs"
}
grpc() { # PATH_LABEL PORT CONCURRENCY
  echo "$1 grpc $3 $(taskset -c 1 "$load" "http://127.0.0.1:$2" "$preset-0001" "$3" "$seconds" "$text")" >> "$runs"
}
for r in $(seq "$rounds"); do
  for c in 1 16; do
    if [ $((r % 2)) = 1 ]; then
      rest direct "$node_port" "$c"; grpc direct "$node_grpc" "$c"; rest gateway "$gw_port" "$c"; grpc gateway "$gw_grpc" "$c"
    else
      grpc direct "$node_grpc" "$c"; rest direct "$node_port" "$c"; grpc gateway "$gw_grpc" "$c"; rest gateway "$gw_port" "$c"
    fi
  done
done
python3 - "$runs" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    path, proto, c, data = line.split(" ", 3)
    runs.setdefault((path, int(c)), {}).setdefault(proto, []).append(json.loads(data))
med = statistics.median
print("| path | concurrency | REST req/s | gRPC req/s | gRPC / REST | REST p50 ms | gRPC p50 ms | REST p99 ms | gRPC p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (path, c), r in sorted(runs.items(), key=lambda kv: (kv[0][0] != "direct", kv[0][1])):
    a, b = r["rest"], r["grpc"]
    print(f"| {path} | {c} | {med(x['rps'] for x in a):.1f} | {med(x['rps'] for x in b):.1f} "
          f"| {med(y['rps'] / x['rps'] for x, y in zip(a, b)):.3f} | {med(x['p50_ms'] for x in a):.3f} "
          f"| {med(x['p50_ms'] for x in b):.3f} | {med(x['p99_ms'] for x in a):.3f} | {med(x['p99_ms'] for x in b):.3f} "
          f"| {sum(x['errors'] for x in a + b)} |")
PY
