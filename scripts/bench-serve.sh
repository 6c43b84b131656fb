#!/usr/bin/env bash
# Serving benchmark: one synthetic model, the engine alone vs the same model through HTTP
# (JSON + tokenization + admission + the hop to an inference thread), for tract and ONNX Runtime,
# at concurrency 1, 4 and 16. Also the node's resident memory after load vs the weights file.
# Prints Markdown tables.
#   scripts/bench-serve.sh [SECONDS] [PRESETS] [ROUNDS]     e.g. scripts/bench-serve.sh 10 "mini base" 3
# Method, so that the two sides get the same cores and the same conditions:
# - the node and the engine-alone harness run on SERVER_CPUS, the load generator on CLIENT_CPUS
#   (defaults: every CPU but the last, and the last), so the client never takes the server's CPU;
# - ROUNDS rounds per point, alternating which side runs first (A B, B A, …); the table shows the
#   median of each column, and the two ratios as medians of per-round ratios, so drift of the
#   machine's speed during the run cancels out; every run is kept in out/bench/serve-runs.txt;
# - the node's own inference timings (its metrics, before and after each run) split the request
#   time into inference and what the node adds around it (HTTP, JSON, tokenization, hand-offs);
# - load generator: wrk (Debian package; installed here if missing), closed loop, latency
#   percentiles to the microsecond through scripts/wrk-report.lua;
# - CONCURRENCY (default "1 4 16") picks the points; the node's flags can be added in SERVE_ARGS;
# - HTTP_CPUS, when set, moves every node thread but the inference threads (stowage-infer-N) onto
#   those CPUs once the node is ready: the inference keeps SERVER_CPUS to itself, as on a node with
#   cores to spare for HTTP (the engine alone still gets SERVER_CPUS only).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seconds=${1:-10}
presets=${2:-"mini base"}
rounds=${3:-3}
last=$(($(nproc) - 1))
[ "$last" -ge 1 ] || { echo "bench-serve.sh needs at least 2 CPUs (one for the load generator)" >&2; exit 1; }
server_cpus=${SERVER_CPUS:-0-$((last - 1))}
client_cpus=${CLIENT_CPUS:-$last}
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
cargo build --release --locked -q
cargo build --release --locked -q --example engine_load
stowage=./target/release/stowage
read -r -a serve_args <<< "${SERVE_ARGS:-}"
text="I love this product, the delivery was fast and the support team was very helpful"
export WRK_BODY="{\"inputs\": \"$text\"}"
# Sum and count of stowage_inference_duration_seconds, engine calls and the inputs they ran, and
# the sums of tokenization and batch wait seconds, on the node at PORT, minus BEFORE
# ("sum, count, calls, inputs, tokenization, wait").
inference_seconds() {
  curl -sf "localhost:$1/metrics" | awk -v before="${2:-0, 0, 0, 0, 0, 0}" '
    /^stowage_inference_duration_seconds_sum/ { s += $NF }
    /^stowage_inference_duration_seconds_count/ { n += $NF }
    /^stowage_batches_total/ { c += $NF }
    /^stowage_batched_inputs_total/ { i += $NF }
    /^stowage_tokenization_duration_seconds_sum/ { t += $NF }
    /^stowage_batch_wait_seconds_sum/ { w += $NF }
    END { split(before, b, ", ");
          printf "%.6f, %d, %d, %d, %.6f, %.6f", s - b[1], n - b[2], c - b[3], i - b[4], t - b[5], w - b[6] }'
}
runs=out/bench/serve-runs.txt   # every run, kept for a second look
mkdir -p out/bench
: > "$runs"
mem=$(mktemp)
trap 'rm -f "$mem"' EXIT
for preset in $presets; do
  dir=out/bench/$preset
  [ -f "$dir/$preset-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 --preset "$preset" >/dev/null
  weights=$(stat -c %s "$dir/$preset-0001/model.onnx")
  for engine in tract ort; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    RUST_LOG=warn taskset -c "$server_cpus" "$stowage" serve --catalog "$dir/models.toml" --engine "$engine" \
      --host 127.0.0.1 --port "$port" --queue-size 256 "${serve_args[@]}" &
    pid=$!
    until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
    if [ -n "${HTTP_CPUS:-}" ]; then
      for task in "/proc/$pid/task/"*; do
        case $(cat "$task/comm") in stowage-infer-*) ;; *) taskset -p -c "$HTTP_CPUS" "${task##*/}" >/dev/null ;; esac
      done
    fi
    rss=$(awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status)
    for c in ${CONCURRENCY:-1 4 16}; do
      for r in $(seq "$rounds"); do
        order="engine http"
        [ $((r % 2)) = 0 ] && order="http engine"
        for side in $order; do
          if [ "$side" = engine ]; then
            out=$(taskset -c "$server_cpus" ./target/release/examples/engine_load "$dir/$preset-0001" "$engine" "$c" "$seconds" "$text")
          else
            before=$(inference_seconds "$port")
            out=$(taskset -c "$client_cpus" wrk -t1 -c"$c" -d"${seconds}s" -s scripts/wrk-report.lua \
              "http://127.0.0.1:$port/predictions/$preset-0001" | tail -1)
            # The node's own measure during the run:
            # {"node_inference": [seconds, requests, calls, inputs, tokenization seconds, wait seconds]}.
            out="${out%\}}, \"node_inference\": [$(inference_seconds "$port" "$before")]}"
          fi
          echo "$preset $engine $c $side $out" >> "$runs"
        done
      done
    done
    rss_after=$(awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status)
    echo "$preset $engine $weights $rss $rss_after" >> "$mem"
    kill -TERM $pid
    wait $pid
  done
done
echo "server CPUs $server_cpus${HTTP_CPUS:+ (HTTP side of the node on CPUs $HTTP_CPUS)}, client CPUs $client_cpus, $rounds rounds of ${seconds} s per side; medians"
echo
python3 - "$runs" <<'PY'
import json, statistics, sys
points = {}
for line in open(sys.argv[1]):
    preset, engine, c, side, data = line.split(" ", 4)
    points.setdefault((preset, engine, int(c)), {"engine": [], "http": []})[side].append(json.loads(data))
med = statistics.median
print("| preset | engine | concurrency | engine alone req/s | engine p50 ms | HTTP req/s | HTTP p50 ms | HTTP p99 ms | HTTP/engine req/s | p50 overhead | inputs per engine call |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (preset, engine, c), p in points.items():
    e, h = p["engine"], p["http"]
    # Ratios per round (its two sides ran back to back), then the median over rounds.
    ratio = med(b["rps"] / a["rps"] for a, b in zip(e, h))
    over = med(b["p50_ms"] / a["p50_ms"] - 1 for a, b in zip(e, h))
    bad = sum(r["errors"] for r in h)
    note = f" ({bad} errors)" if bad else ""
    print(f"| {preset} | {engine} | {c} | {med(r['rps'] for r in e):.1f} | {med(r['p50_ms'] for r in e):.2f} "
          f"| {med(r['rps'] for r in h):.1f}{note} | {med(r['p50_ms'] for r in h):.2f} | {med(r['p99_ms'] for r in h):.2f} "
          f"| {ratio:.3f} | {100 * over:+.1f}% | {med(r['node_inference'][3] / max(r['node_inference'][2], 1) for r in h):.2f} |")
print()
print("At concurrency 1, where the time goes (means per request, medians over rounds): the engine alone, the")
print("same engine timed inside the node (stowage_inference_duration_seconds), the node's tokenization")
print("(stowage_tokenization_duration_seconds) and the hop from the HTTP worker to an inference thread")
print("(stowage_batch_wait_seconds), the rest (HTTP, JSON, the hop back), and the whole request seen by the client.")
print()
print("| preset | engine | engine alone ms | inference in the node ms | tokenization µs | hop to inference thread µs | rest µs | HTTP request ms | HTTP − inference in the node | as % of the inference |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for (preset, engine, c), p in points.items():
    if c != 1:
        continue
    e, h = p["engine"], p["http"]
    per = lambda r, i: 1000 * r["node_inference"][i] / max(r["node_inference"][1], 1)
    inside = med(per(r, 0) for r in h)
    tok = med(per(r, 4) for r in h)
    wait = med(per(r, 5) for r in h)
    rest = med(r["mean_ms"] - per(r, 0) - per(r, 4) - per(r, 5) for r in h)
    added = med(r["mean_ms"] - per(r, 0) for r in h)
    print(f"| {preset} | {engine} | {med(r['mean_ms'] for r in e):.3f} | {inside:.3f} | {1000 * tok:.0f} | {1000 * wait:.0f} "
          f"| {1000 * rest:.0f} | {med(r['mean_ms'] for r in h):.3f} | {added:.3f} ms | {100 * added / inside:.1f}% |")
PY
echo
echo "| preset | engine | weights MiB | node RSS after load MiB | after the load tests MiB | RSS / weights (after tests) | target (1.2 × weights + 150 MiB) |"
echo "|---|---|---:|---:|---:|---:|---:|"
while read -r preset engine weights rss after; do
  python3 -c "import sys; p,e,w,r,a=sys.argv[1],sys.argv[2],int(sys.argv[3]),int(sys.argv[4]),int(sys.argv[5]); M=1048576; print(f'| {p} | {e} | {w/M:.0f} | {r/M:.0f} | {a/M:.0f} | {a/w:.2f} | {(1.2*w/M+150):.0f} |')" "$preset" "$engine" "$weights" "$rss" "$after"
done < "$mem"
