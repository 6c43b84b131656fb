#!/usr/bin/env bash
# Stowage against the seed-style peer (scripts/peer_server.py: FastAPI + ONNX Runtime, one
# uvicorn worker, one intra-op thread, inline inference) on COUNT copies of one int8 MiniLM-style
# model (a `stowage synth --preset mini` model, 6 layers × 384, quantized by scripts/quantize.py),
# a random model per request, one text of about 16 tokens, each server with its default flags
# (Stowage: `stowage serve --catalog`, engine auto, ONNX Runtime available as in the images).
# Points: p50 at 1 connection and throughput at 16, wrk closed loop (scripts/wrk-report.lua);
# ROUNDS rounds, alternating which server runs first; medians, every run kept in
# out/bench/peer-runs.txt. Both servers may use every CPU; wrk runs on CLIENT_CPUS (default the
# last CPU), which the servers share with it. Prints a Markdown table.
#   scripts/bench-peer.sh [SECONDS] [ROUNDS] [COUNT]      e.g. scripts/bench-peer.sh 10 3 20
# STOWAGE_BIN picks the binary (e.g. an older build, for a before/after); SERVE_ARGS adds flags.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
seconds=${1:-10}
rounds=${2:-3}
count=${3:-20}
cd "$root"
command -v wrk > /dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk > /dev/null; }
py=$(scripts/venv.sh scripts/requirements-bench.txt)/python3
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
stowage=$(release_binary)
read -r -a serve_args <<< "${SERVE_ARGS:-}"
client_cpus=${CLIENT_CPUS:-$(($(nproc) - 1))}
dir=out/bench/peer
if [ ! -f "$dir/int8/model.onnx" ]; then
  rm -rf "$dir" && mkdir -p "$dir"
  "$stowage" synth --out "$dir/fp32" --count 1 --preset mini > /dev/null
  "$py" scripts/quantize.py "$dir/fp32/mini-0001" "$dir/int8" > /dev/null
fi
ids=()
{
  printf '[instance_types."c5.large"]\nfamily = "c5"\nprice_per_hour = 0.085\nmemory_gib = 3\ncompute = 2\n'
  for i in $(seq -w 1 "$count"); do
    mkdir -p "$dir/m$i" && ln -f "$dir"/int8/* "$dir/m$i/"
    ids+=("m$i")
    printf '\n[[models]]\nid = "m%s"\nartifact = "m%s/model.onnx"\npeak_rps = 1\n' "$i" "$i"
    printf '[models.footprint.c5]\nmemory_mib = 60\nservice_ms = 4\n'
  done
} > "$dir/models.toml"
WRK_MODELS=$(IFS=,; echo "${ids[*]}")
export WRK_MODELS WRK_BODY='{"inputs": "I love this product, the delivery was fast and the support helpful"}'
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
runs=out/bench/peer-runs.txt
: > "$runs"
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2> /dev/null || true' EXIT
start() {
  port=$(free)
  case "$1" in
    stowage) RUST_LOG=warn "$stowage" serve --catalog "$dir/models.toml" --host 127.0.0.1 --port "$port" \
      --cache-dir "$dir/cache" "${serve_args[@]+"${serve_args[@]}"}" > /dev/null 2>&1 & ;;
    peer) "$py" scripts/peer_server.py "$dir/models.toml" "$port" > /dev/null 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 600); do
    curl -sf -o /dev/null -d '{"inputs": "warm"}' "127.0.0.1:$port/predictions/m$(printf %0${#count}d "$count")" && return
    kill -0 "$pid" || { echo "bench-peer: $1 exited" >&2; exit 1; }
    sleep 0.2
  done
  echo "bench-peer: $1 did not answer" >&2
  exit 1
}
measure() {
  start "$1"
  # Every model once before the clock starts (a first call pays for lazy set-up in both).
  for id in "${ids[@]}"; do
    curl -sf --retry 30 --retry-all-errors --retry-delay 1 -o /dev/null -d '{"inputs": "warm"}' "127.0.0.1:$port/predictions/$id"
  done
  for c in 1 16; do
    line=$(taskset -c "$client_cpus" wrk -t1 -c"$c" -d"${seconds}s" -s scripts/wrk-report.lua "http://127.0.0.1:$port" | tail -1)
    echo "$1 $c $line" >> "$runs"
  done
  kill "$pid"; wait "$pid" 2> /dev/null || true; pid=""
}
for r in $(seq "$rounds"); do
  if ((r % 2)); then measure stowage; measure peer; else measure peer; measure stowage; fi
done
python3 - "$runs" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    side, c, data = line.split(" ", 2)
    runs.setdefault((side, int(c)), []).append(json.loads(data))
med = lambda side, c, k: statistics.median(r[k] for r in runs[(side, c)])
print("| server | c=1 p50 ms | c=1 p99 ms | c=16 req/s | c=16 p50 ms | c=16 p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for side in ("stowage", "peer"):
    errors = sum(r["errors"] for c in (1, 16) for r in runs[(side, c)])
    print(f"| {side} | {med(side, 1, 'p50_ms'):.2f} | {med(side, 1, 'p99_ms'):.2f} | {med(side, 16, 'rps'):.0f} "
          f"| {med(side, 16, 'p50_ms'):.2f} | {med(side, 16, 'p99_ms'):.2f} | {errors} |")
print()
print(f"Stowage / peer: c=16 throughput {med('stowage', 16, 'rps') / med('peer', 16, 'rps'):.2f} ×, "
      f"c=1 p50 {med('stowage', 1, 'p50_ms') / med('peer', 1, 'p50_ms'):.2f} × (medians of {len(runs[('peer', 1)])} rounds)")
PY
