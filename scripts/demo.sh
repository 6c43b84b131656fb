#!/usr/bin/env bash
# The main job end to end on the embedded default (local synthetic models, local processes):
#   1. plan the example catalog (models.toml) → out/plan.json, out/plan.svg
#   2. synth 6 small BERT-style models → out/demo/, plan them, start their node with `stowage serve`
#   3. curl a classification, an embedding and an asynchronous request (a durable queue in
#      out/demo/jobs) from it, print them, stop the node (SIGTERM → drain)
# Takes no arguments; writes under out/ in the repository. The first run builds stowage in release
# mode (Cargo shows its progress; README.md says what it costs) and installs ONNX Runtime's
# library into .venv (scripts/ort-lib.sh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
(($# == 0)) || refuse "takes no arguments"
cd "$root"
scripts/setup.sh
stowage=$(release_binary)
# ONNX Runtime, as the images ship it: `auto` then runs each model on the faster engine.
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
export ORT_DYLIB_PATH
mkdir -p out

echo "== stowage plan --catalog models.toml"
"$stowage" plan --catalog models.toml --out out/plan.json --svg out/plan.svg

echo; echo "== stowage synth + plan (embedded default: 6 synthetic models on local disk)"
rm -rf out/demo
"$stowage" synth --out out/demo --count 6 --embedding-every 3 --preset tiny
"$stowage" plan --catalog out/demo/models.toml --out out/demo/plan.json --svg out/demo/plan.svg
node=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][0]["id"])' out/demo/plan.json)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

echo; echo "== stowage serve --plan out/demo/plan.json --node $node --port $port"
RUST_LOG=${RUST_LOG:-warn} "$stowage" serve --plan out/demo/plan.json --node "$node" --host 127.0.0.1 --port "$port" \
  --async-dir out/demo/jobs &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  curl -sf "localhost:$port/ready" >/dev/null && break
  kill -0 $pid 2>/dev/null || { echo "the node exited" >&2; exit 1; }
  sleep 0.1
done
curl -sf "localhost:$port/ready"; echo

echo; echo "== curl 'localhost:$port/predictions/tiny-0001?text=I+love+this'"
curl -sf "localhost:$port/predictions/tiny-0001?text=I+love+this"; echo
echo; echo "== curl -d '{\"inputs\":[\"great service\",\"terrible delivery\"]}' localhost:$port/predictions/tiny-0002"
curl -sf -d '{"inputs":["great service","terrible delivery"]}' "localhost:$port/predictions/tiny-0002"; echo
echo; echo "== curl -d '{\"inputs\":\"hello\"}' localhost:$port/predictions/tiny-0003 (embedding model; first 4 of 64 values)"
curl -sf -d '{"inputs":"hello"}' "localhost:$port/predictions/tiny-0003" | python3 -c 'import json,sys; d=json.load(sys.stdin); d["predictions"][0]["embedding"]=d["predictions"][0]["embedding"][:4]; print(json.dumps(d))'
echo; echo "== curl -d '{\"inputs\":\"late again\"}' localhost:$port/async/predictions/tiny-0001 (asynchronous: an id now, the result later)"
accepted=$(curl -sf -H 'Idempotency-Key: demo-1' -d '{"inputs":"late again"}' "localhost:$port/async/predictions/tiny-0001")
echo "$accepted"
status_url=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["status_url"])' "$accepted")
for _ in $(seq 1 100); do
  curl -sf "localhost:$port$status_url" | grep -q '"status":"done"' && break
  sleep 0.1
done
echo; echo "== curl localhost:$port$status_url"
curl -sf "localhost:$port$status_url"; echo

kill -TERM $pid
wait $pid
trap - EXIT
echo; echo "node stopped cleanly (exit 0)"
