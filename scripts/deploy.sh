#!/usr/bin/env bash
# Deploys a plan.
#   scripts/deploy.sh [--runtime local|kubernetes] [--out DIR] [-- EXTRA FLAGS] PLAN
# local (default): one `stowage serve` per node of the plan on free 127.0.0.1 ports, waits until
#   every node is ready, writes DIR/routes.json (model id → node URL) for the load tests, and
#   starts one `stowage gateway` in front of them (every model at one address, written to
#   DIR/gateway.url; it re-reads routes.json when it changes).
# kubernetes: `stowage manifests` into DIR/manifests, then `kubectl apply -k`; routes.json holds
#   the in-cluster URLs http://<node>.<namespace>.svc.cluster.local:8080.
# EXTRA FLAGS go to `stowage serve` (local) or `stowage manifests` (kubernetes).
# Stop with scripts/stop.sh, inspect with scripts/status.sh (same --out).
set -euo pipefail
cd "$(dirname "$0")/.."
runtime=local
out=out/deploy
extra=()
plan=""
while (($#)); do
  case "$1" in
    --runtime) runtime=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) plan=$1; shift ;;
  esac
done
if [ -z "$plan" ] || [ ! -f "$plan" ]; then
  echo "deploy: give a plan.json (got '${plan}')" >&2
  exit 2
fi
stowage=${STOWAGE_BIN:-./target/release/stowage}
[ -x "$stowage" ] || cargo build --release --locked -q
mkdir -p "$out"
nodes=$(python3 -c 'import json,sys; print(" ".join(n["id"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$plan")

case "$runtime" in
  local)
    if [ -s "$out/nodes.tsv" ]; then
      echo "deploy: $out already runs a plan; scripts/stop.sh --out $out first" >&2
      exit 1
    fi
    echo local > "$out/runtime"
    mkdir -p "$out/logs"
    : > "$out/nodes.tsv"
    for node in $nodes; do
      port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
      setsid "$stowage" serve --plan "$plan" --node "$node" --host 127.0.0.1 --port "$port" "${extra[@]}" \
        > "$out/logs/$node.log" 2>&1 < /dev/null &
      printf '%s\t%s\t%s\n' "$node" "$!" "http://127.0.0.1:$port" >> "$out/nodes.tsv"
    done
    deadline=$((SECONDS + ${STOWAGE_DEPLOY_TIMEOUT:-300}))
    # Waits until process PID answers URL/ready; else shows logs/NAME.log, stops everything, fails.
    wait_ready() {
      local name=$1 pid=$2 url=$3
      until curl -sf "$url/ready" > /dev/null; do
        if ! kill -0 "$pid" 2> /dev/null || ((SECONDS > deadline)); then
          echo "deploy: $name did not become ready; its log:" >&2
          tail -n 20 "$out/logs/$name.log" >&2
          scripts/stop.sh --out "$out" >&2
          exit 1
        fi
        sleep 0.2
      done
    }
    while IFS=$'\t' read -r node pid url; do
      wait_ready "$node" "$pid" "$url"
    done < "$out/nodes.tsv"
    python3 - "$plan" "$out/nodes.tsv" > "$out/routes.json" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
url = dict(line.split("\t")[0::2] for line in open(sys.argv[2]).read().split("\n") if line)
print(json.dumps({m: url[n["id"]] for n in plan["nodes"] for m in n["models"]}, indent=1, sort_keys=True))
PY
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    setsid "$stowage" gateway --routes "$out/routes.json" --host 127.0.0.1 --port "$port" \
      > "$out/logs/gateway.log" 2>&1 < /dev/null &
    echo "$!" > "$out/gateway.pid"
    wait_ready gateway "$(cat "$out/gateway.pid")" "http://127.0.0.1:$port"
    echo "http://127.0.0.1:$port" > "$out/gateway.url"
    echo "deploy: $(wc -l < "$out/nodes.tsv") nodes ready; routes in $out/routes.json; every model at $(cat "$out/gateway.url") (gateway); logs in $out/logs/"
    ;;
  kubernetes)
    echo kubernetes > "$out/runtime"
    "$stowage" manifests --plan "$plan" --out "$out/manifests" "${extra[@]}"
    # Server-side apply: the gateway's plan ConfigMap outgrows the 256 KiB that client-side apply
    # keeps in an annotation near 10,000 models (every object stays under 1 MiB).
    kubectl apply --server-side -k "$out/manifests"
    namespace=$(sed -n 's/^namespace: //p' "$out/manifests/kustomization.yaml")
    python3 - "$plan" "$namespace" > "$out/routes.json" <<'PY'
import json, sys
plan, ns = json.load(open(sys.argv[1])), sys.argv[2]
print(json.dumps({m: f"http://{n['id']}.{ns}.svc.cluster.local:8080" for n in plan["nodes"] for m in n["models"]}, indent=1, sort_keys=True))
PY
    echo "deploy: applied $out/manifests; routes in $out/routes.json"
    ;;
  *) echo "deploy: --runtime is local or kubernetes" >&2; exit 2 ;;
esac
