#!/usr/bin/env bash
# A node's resident memory across a long run that nobody scrapes: the metrics recorder must fold
# its histogram samples on its own timer, or they pile up (about 92 bytes per request before).
# The node on CPU 0, wrk on CPU 1, a tiny model, SECONDS of closed-loop load at 4 connections.
#   scripts/bench-unscraped.sh [SECONDS]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
seconds=${1:-60}
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo; $sudo apt-get install -y -qq wrk >/dev/null; }
stowage=$(release_binary)
dir=out/bench/unscraped
[ -f "$dir/tiny-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn taskset -c 0 "$stowage" serve --catalog "$dir/models.toml" --host 127.0.0.1 --port "$port" 2>/dev/null &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
export WRK_BODY='{"inputs": "I love this product"}'
url=http://127.0.0.1:$port/predictions/tiny-0001
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
taskset -c 1 wrk -t1 -c4 -d3s -s scripts/wrk-report.lua "$url" >/dev/null   # warm: allocator pools, series
sleep 6
before=$(rss)
taskset -c 1 wrk -t1 -c4 -d"${seconds}s" -s scripts/wrk-report.lua "$url" | tail -1
sleep 6   # one upkeep period
after=$(rss)
echo "RSS before ${before} KiB, after ${after} KiB: $(((after - before) / 1024)) MiB grown, no scrape in between"
