#!/usr/bin/env bash
# Two builds of stowage side by side on one model: each serves it on CPU 0 (a fresh node per run),
# wrk calls it from CPU 1 at concurrency 1 and 16, ROUNDS rounds alternating which build runs
# first; medians, and B / A per round. For what one change costs per request (e.g. tracing).
#   scripts/bench-ab.sh BIN_A BIN_B [SECONDS] [ROUNDS] [PRESET]   e.g. scripts/bench-ab.sh /tmp/a /tmp/b 6 5 tiny
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || { sed -n 2,5p "$0" >&2; exit 2; }
a=$(from_caller "$1")
b=$(from_caller "$2")
seconds=${3:-6}
rounds=${4:-5}
preset=${5:-tiny}
cd "$root"
(($(nproc) >= 2)) || { echo "bench-ab.sh needs 2 CPUs" >&2; exit 1; }
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
dir=out/bench/$preset
[ -f "$dir/$preset-0001/model.onnx" ] || "$a" synth --out "$dir" --count 1 --preset "$preset" >/dev/null
runs=out/bench/ab-runs.txt
: > "$runs"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export WRK_BODY='{"inputs": "I love this product, the delivery was fast and the support team was very helpful"}'
one() { # BUILD_LABEL BINARY CONCURRENCY
  RUST_LOG=warn taskset -c 0 "$2" serve --catalog "$dir/models.toml" --host 127.0.0.1 --port "$port" &
  local node=$!
  until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $node; sleep 0.1; done
  out=$(taskset -c 1 wrk -t1 -c"$3" -d"${seconds}s" -s scripts/wrk-report.lua \
    "http://127.0.0.1:$port/predictions/$preset-0001" | tail -1)
  kill -TERM $node; wait $node 2>/dev/null || true
  echo "$3 $1 $out" >> "$runs"
}
for c in 1 16; do
  for r in $(seq "$rounds"); do
    if [ $((r % 2)) = 1 ]; then one A "$a" "$c"; one B "$b" "$c"; else one B "$b" "$c"; one A "$a" "$c"; fi
  done
done
python3 - "$runs" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    c, side, data = line.split(" ", 2)
    runs.setdefault(int(c), {"A": [], "B": []})[side].append(json.loads(data))
med = statistics.median
print("| concurrency | A req/s | B req/s | B / A | A p50 ms | B p50 ms | B − A p50 ms [rounds] | errors |")
print("|---:|---:|---:|---:|---:|---:|---|---:|")
for c, r in sorted(runs.items()):
    a, b = r["A"], r["B"]
    diffs = [y["p50_ms"] - x["p50_ms"] for x, y in zip(a, b)]
    print(f"| {c} | {med(x['rps'] for x in a):.1f} | {med(x['rps'] for x in b):.1f} "
          f"| {med(y['rps'] / x['rps'] for x, y in zip(a, b)):.3f} | {med(x['p50_ms'] for x in a):.3f} "
          f"| {med(x['p50_ms'] for x in b):.3f} | {med(diffs):+.3f} [{min(diffs):+.3f}, {max(diffs):+.3f}] "
          f"| {sum(x['errors'] for x in a + b)} |")
PY
