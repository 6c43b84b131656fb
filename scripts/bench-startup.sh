#!/usr/bin/env bash
# Time to ready for one node of COUNT synthetic models stored in a local S3 server (moto on
# loopback): the download bandwidth alone (curl, same parallelism, no loading), the engine load
# alone (a restart from a valid cache), and a cold start from S3 (empty cache), with the ratio
# cold / (bytes ÷ bandwidth + load alone). Page caches are dropped before each run when possible.
# Prints a Markdown table (used in BENCHMARKS.md).
#   scripts/bench-startup.sh [COUNT] [PRESET] [ENGINE]      e.g. scripts/bench-startup.sh 20 base ort
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
count=${1:-20}
preset=${2:-base}
engine=${3:-ort}
parallel=${FETCH_PARALLELISM:-4}
PATH="$(scripts/venv.sh)":$PATH  # moto_server, from the project's virtual environment
if [ "$engine" = ort ]; then export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}; fi
stowage=$(release_binary)
work=out/bench-startup
models=$work/$preset-$count
if [ "$(grep -c '^\[\[models\]\]' "$models/models.toml" 2>/dev/null)" != "$count" ]; then
  rm -rf "$models"
  "$stowage" synth --out "$models" --count "$count" --preset "$preset" >/dev/null
fi
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
endpoint=http://127.0.0.1:$port
# moto keeps large objects in temporary files: put them on the work disk, not in a RAM /tmp.
mkdir -p "$work/tmp"
TMPDIR=$PWD/$work/tmp moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
pid=""
trap 'kill $moto $pid 2>/dev/null || true' EXIT
until curl -s -o /dev/null "$endpoint"; do sleep 0.2; done
"$stowage" upload --catalog "$models" --bucket bench --create-bucket --s3-endpoint "$endpoint" \
  --out "$work/s3.toml" 2>/dev/null
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
bytes=$(du -cb "$models"/*/* | tail -1 | cut -f1)
weights=$(du -cb "$models"/*/model.onnx | tail -1 | cut -f1)

# 1. Download bandwidth: every object, $parallel at a time, to /dev/null (curl signs with SigV4).
keys=$(sed -n 's/^\(artifact\|tokenizer\|config\) = "s3:\/\/bench\/\(.*\)"$/\2/p' "$work/s3.toml")
drop_caches
t0=$(now)
printf '%s\n' "$keys" | xargs -P "$parallel" -I{} curl -sf -o /dev/null \
  --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$endpoint/bench/{}"
t1=$(now)
# The same to files on the cache's disk (what a node must do), then removed.
mkdir -p "$work/scratch"
drop_caches
t2=$(now)
# shellcheck disable=SC2016 # expanded by the inner sh
printf '%s\n' "$keys" | xargs -P "$parallel" -I{} sh -c 'curl -sf --create-dirs -o "$1/$2" \
  --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$0/bench/$2"' \
  "$endpoint" "$work/scratch" {}
sync
t3=$(now)
rm -rf "$work/scratch"

# 2 and 3: a node from an empty cache (cold), then restarted on that cache (load alone).
start_node() {
  local log=$1 p
  p=$(free_port)
  drop_caches
  local s
  s=$(now)
  RUST_LOG=info "$stowage" serve --catalog "$work/s3.toml" --engine "$engine" --host 127.0.0.1 --port "$p" \
    --cache-dir "$work/cache" --s3-endpoint "$endpoint" --fetch-parallelism "$parallel" 2>"$log" &
  pid=$!
  until curl -sf "127.0.0.1:$p/ready" >/dev/null; do kill -0 $pid; sleep 0.1; done
  ready=$(python3 -c "print($(now) - $s)")
  rss=$(awk '/VmRSS/ {print $2 * 1024}' /proc/$pid/status)
  kill -TERM $pid
  wait $pid || true
  pid=""
}
rm -rf "$work/cache"
start_node "$work/cold.log"
cold=$ready
cold_rss=$rss
start_node "$work/warm.log"
warm=$ready
grep -q '"s3"' "$work/warm.log" && { echo "warm start downloaded again: see $work/warm.log" >&2; exit 1; }

python3 - "$count" "$preset" "$engine" "$parallel" "$bytes" "$weights" "$t0" "$t1" "$t2" "$t3" "$cold" "$warm" "$cold_rss" <<'PY'
import sys
count, preset, engine, par = sys.argv[1:5]
b, w, t0, t1, t2, t3, cold, warm, rss = map(float, sys.argv[5:14])
mib = 1048576
net, disk = t1 - t0, t3 - t2
print("| models | engine | fetch parallelism | MiB | download alone s (MiB/s): to /dev/null · to disk | load alone s | cold start s | ratio cold / (download + load): /dev/null · disk | RSS / weights |")
print("|---|---|---:|---:|---|---:|---:|---|---:|")
print(f"| {count} × {preset} | {engine} | {par} | {b/mib:.0f} | {net:.1f} ({b/mib/net:.0f}) · {disk:.1f} ({b/mib/disk:.0f}) | {warm:.1f} | {cold:.1f} "
      f"| **{cold/(net + warm):.2f}** · {cold/(disk + warm):.2f} | {rss/w:.2f} (+{(rss-w)/mib:.0f} MiB) |")
PY
