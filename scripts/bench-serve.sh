#!/usr/bin/env bash
# Serving benchmark: one synthetic model, the engine alone vs the same model through HTTP
# (JSON + tokenization + admission), for tract and ONNX Runtime, at concurrency 1, 4 and 16.
# Also the node's resident memory after load vs the weights file. Prints a Markdown table.
#   scripts/bench-serve.sh [SECONDS] [PRESETS]      e.g. scripts/bench-serve.sh 10 "mini base"
# Load generator: hey (Debian package; installed here if missing). The client shares the machine's
# cores with the server, as the table says.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
presets=${2:-"mini base"}
command -v hey >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq hey >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
cargo build --release --locked -q
cargo build --release --locked -q --example engine_load
stowage=./target/release/stowage
text="I love this product, the delivery was fast and the support team was very helpful"
body="{\"inputs\": \"$text\"}"
results=$(mktemp)
echo "| preset | engine | concurrency | engine alone req/s | engine p50 ms | HTTP req/s | HTTP p50 ms | HTTP p99 ms | HTTP/engine req/s | p50 overhead |" > "$results"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" >> "$results"
mem=$(mktemp)
for preset in $presets; do
  dir=out/bench/$preset
  [ -f "$dir/$preset-0001/model.onnx" ] || $stowage synth --out "$dir" --count 1 --preset "$preset" >/dev/null
  weights=$(stat -c %s "$dir/$preset-0001/model.onnx")
  for engine in tract ort; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RUST_LOG=warn $stowage serve --catalog "$dir/models.toml" --engine "$engine" --host 127.0.0.1 --port "$port" --queue-size 256 &
    pid=$!
    until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
    rss=$(awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status)
    for c in 1 4 16; do
      e=$(./target/release/examples/engine_load "$dir/$preset-0001" "$engine" "$c" "$seconds" "$text")
      h=$(hey -z "${seconds}s" -c "$c" -m POST -T application/json -d "$body" "http://127.0.0.1:$port/predictions/$preset-0001")
      python3 - "$preset" "$engine" "$c" "$e" "$h" >> "$results" <<'PY'
import json, re, sys
preset, engine, c, e, h = sys.argv[1:6]
e = json.loads(e)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", h).group(1))
pct = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%% in ([\d.]+) secs".replace("%%", "%"), h)}
codes = re.findall(r"\[(\d+)\]\s+(\d+) responses", h)
bad = sum(int(n) for code, n in codes if code != "200")
note = f" ({bad} non-200)" if bad else ""
print(f"| {preset} | {engine} | {c} | {e['rps']:.1f} | {e['p50_ms']:.1f} | {rps:.1f}{note} | {pct[50]:.1f} | {pct[99]:.1f} | {rps / e['rps']:.2f} | {100 * (pct[50] / e['p50_ms'] - 1):+.1f}% |")
PY
    done
    rss_after=$(awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status)
    echo "$preset $engine $weights $rss $rss_after" >> "$mem"
    kill -TERM $pid; wait $pid
  done
done
cat "$results"
echo
echo "| preset | engine | weights MiB | node RSS after load MiB | after the load tests MiB | RSS / weights (after tests) | target (1.2 × weights + 150 MiB) |"
echo "|---|---|---:|---:|---:|---:|---:|"
while read -r preset engine weights rss after; do
  python3 -c "import sys; p,e,w,r,a=sys.argv[1],sys.argv[2],int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); M=1048576; print(f'| {p} | {e} | {w/M:.0f} | {r/M:.0f} | {a/M:.0f} | {a/w:.2f} | {(1.2*w/M+150):.0f} |')" "$preset" "$engine" "$weights" "$rss" "$after"
done < "$mem"
rm -f "$results" "$mem"
