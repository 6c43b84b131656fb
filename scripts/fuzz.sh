#!/usr/bin/env bash
# Fuzzes a node on real sockets (scripts/fuzz.py: mutated paths, methods, query strings, JSON
# bodies, Unicode, malformed request lines and headers, v2 shapes that overflow, chunked bodies
# that stall) and checks it survives: no crash, no
# undocumented status, no connection dropped without an answer, /ping answering at the end.
#   scripts/fuzz.sh [COUNT] [SEED]      e.g. scripts/fuzz.sh 1000000 12 (about 7 minutes here)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
count=${1:-20000}
seed=${2:-1}
stowage=$(release_binary)
dir=out/fuzz
[ -f "$dir/tiny-0001/model.onnx" ] || "$stowage" synth --out "$dir" --count 1 --embedding-every 0 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn "$stowage" serve --catalog "$dir/models.toml" --host 127.0.0.1 --port "$port" --max-batch 8 \
  --body-timeout-ms 2000 2> "$dir/node.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
status=0
python3 scripts/fuzz.py "127.0.0.1:$port" tiny-0001 "$count" "$seed" || status=$?
kill -0 $pid || { echo "the node died"; exit 1; }
errors=$(grep -c " ERROR " "$dir/node.log" || true)
echo "node log: $(wc -l < "$dir/node.log") lines, $errors at ERROR"
exit $status
