#!/usr/bin/env bash
# What a very long text costs the node: five POSTs of a 900 KB text (180,000 words) to a tiny
# synthetic classifier (128 positions), on one inference thread on CPU 0, alone and as the second
# text of a pair (a short query and a long passage, as a reranker gets them). Prints the mean
# request time seen by curl and the mean tokenization time from the node's own metric.
#   scripts/bench-long-text.sh [STOWAGE_BINARY]      (default: a release build of this tree)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
bin=${1:+$(from_caller "$1")}
if [ -z "$bin" ]; then
  cargo build --release --locked -q
  bin=./target/release/stowage
fi
dir=out/bench/long-text
[ -f "$dir/tiny-0001/model.onnx" ] || "$bin" synth --out "$dir" --count 1 --preset tiny >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RUST_LOG=warn taskset -c 0 "$bin" serve --catalog "$dir/models.toml" --engine tract --host 127.0.0.1 \
  --port "$port" --inference-threads 1 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$body"' EXIT
body=$(mktemp)
until curl -sf "localhost:$port/ready" >/dev/null; do kill -0 $pid; sleep 0.2; done
before=0
for form in text pair; do
  python3 -c "import json, sys; words = ' '.join(['love'] * 180000)
print(json.dumps({'inputs': words} if sys.argv[1] == 'text' else {'inputs': 'is the delivery fast', 'text_pair': words}))" \
    "$form" > "$body"
  total=0
  for _ in 1 2 3 4 5; do
    t=$(curl -sf -o /dev/null -w '%{time_total}' --data-binary "@$body" "localhost:$port/predictions/tiny-0001")
    total=$(python3 -c "print($total + $t)")
  done
  tok=$(curl -sf "localhost:$port/metrics" | awk '/^stowage_tokenization_duration_seconds_sum / {print $NF}')
  python3 -c "print(f'{\"$form\":5} body $(stat -c %s "$body") bytes: request mean {$total / 5 * 1000:.1f} ms, tokenization mean {($tok - $before) / 5 * 1000:.2f} ms')"
  before=$tok
done
