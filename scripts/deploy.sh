#!/usr/bin/env bash
# Deploys a plan:
#   scripts/deploy.sh [--runtime local|kubernetes] [--out DIR] PLAN [-- EXTRA FLAGS]
# local (default): one `stowage serve` per node of the plan on free 127.0.0.1 ports, waits until
#   every node is ready, writes DIR/routes.json (model id → node URL) for the load tests, and
#   starts one `stowage gateway` in front of them (every model at one address, written to
#   DIR/gateway.url, and over KServe v2 gRPC at the host:port in DIR/gateway.grpc; it reads
#   DIR/gateway-routes.json, routes.json with each node's gRPC address, again when it changes;
#   the nodes serve gRPC too, on ports of their own). A node whose model fails to load
#   stops the deployment at once, with the node's reason. A node that scales to zero
#   ("min_replicas": 0 in the plan) is not started: scripts/autoscale.py, started beside the
#   gateway, does what KEDA would: it starts the node when the gateway holds a request for it
#   and stops it after STOWAGE_IDLE_SECONDS (60) idle; the gateway holds requests meanwhile,
#   for STOWAGE_HOLD_TIMEOUT_MS at most (its --hold-timeout-ms). On a running deployment it reconciles in
#   place: starts new nodes, rewrites changed nodes' plan slices (they reload themselves; a moving
#   model is served by both nodes until the routes switch), then rewrites routes.json and drains
#   and stops the nodes the plan no longer has. The catalog (--catalog among EXTRA FLAGS, else
#   models.toml beside PLAN) is read where it is: edit it in place.
# kubernetes: `stowage manifests` into DIR/manifests, then `kubectl apply -k`; routes.json holds
#   the in-cluster URLs http://<node>.<namespace>.svc.cluster.local:8080. Applying a new plan
#   changes only the ConfigMaps of nodes whose models change (they reload in place; no pod
#   restarts), creates new nodes, and deletes the nodes the plan no longer has after
#   STOWAGE_PRUNE_DELAY seconds (90: until the kubelets have handed out the new ConfigMaps).
# EXTRA FLAGS go to `stowage serve` (local) or `stowage manifests` (kubernetes). Paths (PLAN, DIR,
# --catalog) are read from the folder the script is called from; DIR defaults to out/deploy in the
# repository. Stop with scripts/stop.sh, inspect with scripts/status.sh (same --out).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
runtime=local
out=$root/out/deploy
extra=()
plan=""
while (($#)); do
  case "$1" in
    --runtime) [ $# -ge 2 ] || refuse "--runtime needs local or kubernetes"; runtime=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || refuse "--out needs a folder"; out=$(from_caller "$2"); shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    -*) refuse "unknown option $1" ;;
    *) [ -z "$plan" ] || refuse "one plan at a time (got $plan and $1)"; plan=$(from_caller "$1"); shift ;;
  esac
done
case "$runtime" in local | kubernetes) ;; *) refuse "--runtime is local or kubernetes, not $runtime" ;; esac
if [ -z "$plan" ] || [ ! -f "$plan" ]; then
  refuse "give a plan.json (got '${plan}')"
fi
# Paths among the extra flags are the caller's too.
for ((i = 0; i < ${#extra[@]}; i++)); do
  case "${extra[i]}" in
    --catalog | --cache-dir | --admin-token-file | --ort-library) [ $((i + 1)) -lt ${#extra[@]} ] && extra[i + 1]=$(from_caller "${extra[i + 1]}") ;;
  esac
done
stowage=$(release_binary)
cd "$root"
mkdir -p "$out"
nodes=$(python3 -c 'import json,sys; print(" ".join(n["id"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$plan")
# The nodes that scale to zero.
zero=" $(python3 -c 'import json,sys; print(" ".join(n["id"] for n in json.load(open(sys.argv[1]))["nodes"] if n.get("min_replicas", 1) == 0))' "$plan") "

case "$runtime" in
  local)
    # The catalog: --catalog among the extra flags, else models.toml beside the plan. Nodes read
    # it where it is (its relative artifact paths resolve from its folder) and their own slice of
    # the plan from $out/nodes/<node>/plan.json; they reload when either changes.
    catalog=""
    rest=()
    for ((i = 0; i < ${#extra[@]}; i++)); do
      if [ "${extra[i]}" = --catalog ]; then
        catalog=${extra[i + 1]}
        i=$((i + 1))
      else
        rest+=("${extra[i]}")
      fi
    done
    extra=("${rest[@]+"${rest[@]}"}")
    catalog=$(realpath "${catalog:-$(dirname "$plan")/models.toml}")
    slices=(python3 scripts/plan_slices.py)
    mkdir -p "$out/logs"
    deadline=$((SECONDS + ${STOWAGE_DEPLOY_TIMEOUT:-300}))
    # Stops everything that runs from $out and fails, after saying why (and the log's tail).
    give_up() {
      local name=$1
      echo "deploy: $2; the end of $out/logs/$name.log:" >&2
      tail -n 20 "$out/logs/$name.log" >&2
      scripts/stop.sh --out "$out" >&2
      exit 1
    }
    # Waits until process PID answers URL/ready. A model that failed to load, a process that
    # exited or the deadline (STOWAGE_DEPLOY_TIMEOUT, 300 s) stops everything with the reason.
    wait_ready() {
      local name=$1 pid=$2 url=$3 ready failed
      while true; do
        ready=$(curl -s "$url/ready" || true)
        case "$ready" in *'"status":"ready"'*) return ;; esac
        failed=$(curl -sf "$url/models" 2> /dev/null | python3 -c 'import json, sys
try:
    models = json.load(sys.stdin)["models"]
except Exception:
    sys.exit()
for m in models:
    if m.get("state") == "failed":
        print("model %s failed to load: %s" % (m["id"], m.get("error", "(no reason)")))' || true)
        [ -z "$failed" ] || give_up "$name" "$name: $failed"
        kill -0 "$pid" 2> /dev/null || give_up "$name" "$name exited before it was ready"
        ((SECONDS <= deadline)) || give_up "$name" "$name was not ready within ${STOWAGE_DEPLOY_TIMEOUT:-300} s"
        sleep 0.2
      done
    }
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
    # Starts node NAME on free ports (HTTP, gRPC) and appends it to $out/nodes.next: node, pid,
    # URL, gRPC address.
    start_node() {
      local node=$1 port grpc
      port=$(free_port)
      grpc=$(free_port)
      setsid "$stowage" serve --plan "$out/nodes/$node/plan.json" --catalog "$catalog" --node "$node" \
        --host 127.0.0.1 --port "$port" --grpc-port "$grpc" --async-dir "$out/nodes/$node/jobs" \
        "${extra[@]+"${extra[@]}"}" >> "$out/logs/$node.log" 2>&1 < /dev/null &
      printf '%s\t%s\t%s\t%s\n' "$node" "$!" "http://127.0.0.1:$port" "http://127.0.0.1:$grpc" >> "$out/nodes.next"
    }
    # Readies node NAME, which scales to zero, without starting it: its ports, and the command line
    # scripts/autoscale.py starts it with (DIR/nodes/NAME/argv); appends it to $out/nodes.next
    # with pid "-". It leaves at once when stopped: no load balancer to wait for.
    prepare_zero_node() {
      local node=$1 port grpc
      port=$(free_port)
      grpc=$(free_port)
      printf '%s\0' "$stowage" serve --plan "$out/nodes/$node/plan.json" --catalog "$catalog" --node "$node" \
        --host 127.0.0.1 --port "$port" --grpc-port "$grpc" --async-dir "$out/nodes/$node/jobs" \
        --shutdown-delay-seconds 0 "${extra[@]+"${extra[@]}"}" > "$out/nodes/$node/argv"
      printf '%s\t-\t%s\t%s\n' "$node" "http://127.0.0.1:$port" "http://127.0.0.1:$grpc" >> "$out/nodes.next"
    }
    # KEDA's part, locally: scripts/autoscale.py starts and stops the nodes that scale to zero.
    start_autoscaler() {
      if ! kill -0 "$(cat "$out/autoscaler.pid" 2> /dev/null || echo none)" 2> /dev/null; then
        setsid python3 scripts/autoscale.py "$out" >> "$out/logs/autoscaler.log" 2>&1 < /dev/null &
        echo "$!" > "$out/autoscaler.pid"
      fi
    }
    # Writes routes.json (model → node URL) and gateway-routes.json (with the gRPC addresses) for
    # the plan from the node list $1, each replacing the old one at once.
    write_routes() {
      "${slices[@]}" routes "$plan" "$1" > "$out/routes.json.tmp"
      "${slices[@]}" routes "$plan" "$1" --grpc > "$out/gateway-routes.json.tmp"
      mv "$out/gateway-routes.json.tmp" "$out/gateway-routes.json"
      mv "$out/routes.json.tmp" "$out/routes.json"
    }
    : > "$out/nodes.next"
    if [ -s "$out/nodes.tsv" ]; then
      # A running deployment: reconcile in place. New nodes start; nodes whose models change get
      # their new slice (first with their old models too, so a model that moves is served by both
      # until the routes switch); nodes no longer in the plan drain and stop; the rest is untouched.
      if [ "$(cat "$out/catalog" 2> /dev/null)" != "$catalog" ]; then
        echo "deploy: $out runs catalog $(cat "$out/catalog" 2> /dev/null); edit that file in place, or scripts/stop.sh --out $out and deploy again" >&2
        exit 1
      fi
      previous=$out/plan.json
      changes=$("${slices[@]}" write "$plan" "$out" --catalog "$catalog" --union "$previous")
      started=0 reloaded=0 same=0
      for node in $nodes; do
        line=$(awk -F'\t' -v n="$node" '$1 == n' "$out/nodes.tsv")
        pid=$(cut -f2 <<< "$line")
        if [ -n "$line" ] && [ "$pid" != - ] && kill -0 "$pid" 2> /dev/null; then
          # Running: it stays as it is (a node that now scales to zero too, until redeployed).
          echo "$line" >> "$out/nodes.next"
        elif [[ "$zero" == *" $node "* ]]; then
          if [ "$pid" = - ]; then echo "$line" >> "$out/nodes.next"; else prepare_zero_node "$node"; fi
        else
          # New, or no longer scaling to zero (the autoscaler stops its process once it is off
          # nodes.tsv): started here.
          start_node "$node"
          started=$((started + 1))
        fi
      done
      while IFS=$'\t' read -r node pid url _; do
        [ "$pid" != - ] || continue
        wait_ready "$node" "$pid" "$url"
        "${slices[@]}" wait "$url" "$plan" "$node" $((deadline - SECONDS)) --union "$previous" --catalog "$catalog" || exit 1
      done < "$out/nodes.next"
      write_routes "$out/nodes.next"
      if [ -s "$out/gateway.url" ]; then
        "${slices[@]}" gateway "$(cat "$out/gateway.url")" "$out/routes.json" $((deadline - SECONDS)) || exit 1
      fi
      # The routes point at the new places: drop what moved away, stop the nodes that are gone.
      changes+=$'\n'$("${slices[@]}" write "$plan" "$out")
      while IFS=$'\t' read -r node pid url _; do
        [ "$pid" != - ] || continue
        "${slices[@]}" wait "$url" "$plan" "$node" $((deadline - SECONDS)) || exit 1
      done < "$out/nodes.next"
      stopped=0
      while IFS=$'\t' read -r node pid _; do
        if ! grep -q "^$node	" "$out/nodes.next" && [ "$pid" != - ]; then
          kill -TERM "$pid" 2> /dev/null || true
          gone=$((SECONDS + ${STOWAGE_STOP_TIMEOUT:-40}))
          while kill -0 "$pid" 2> /dev/null; do
            ((SECONDS < gone)) || { kill -KILL "$pid" 2> /dev/null || true; break; }
            sleep 0.1
          done
          rm -rf "${out:?}/nodes/$node"
          stopped=$((stopped + 1))
        fi
      done < "$out/nodes.tsv"
      for node in $nodes; do
        if grep -q "^$node	changed" <<< "$changes"; then
          reloaded=$((reloaded + 1))
        elif ! grep -q "^$node	new" <<< "$changes"; then
          same=$((same + 1))
        fi
      done
      mv "$out/nodes.next" "$out/nodes.tsv"
      cp "$plan" "$out/plan.json"
      start_autoscaler
      echo "deploy: in place: $reloaded nodes reloaded, $started started, $stopped stopped, $same unchanged; routes in $out/routes.json; every model at $(cat "$out/gateway.url") (gateway)"
      exit 0
    fi
    echo local > "$out/runtime"
    echo "$catalog" > "$out/catalog"
    rm -rf "$out/nodes"
    "${slices[@]}" write "$plan" "$out" > /dev/null
    cp "$plan" "$out/plan.json"
    for node in $nodes; do
      if [[ "$zero" == *" $node "* ]]; then prepare_zero_node "$node"; else start_node "$node"; fi
    done
    mv "$out/nodes.next" "$out/nodes.tsv"
    while IFS=$'\t' read -r node pid url _; do
      [ "$pid" != - ] || continue
      wait_ready "$node" "$pid" "$url"
    done < "$out/nodes.tsv"
    write_routes "$out/nodes.tsv"
    port=$(free_port)
    grpc=$(free_port)
    setsid "$stowage" gateway --routes "$out/gateway-routes.json" --host 127.0.0.1 --port "$port" \
      --grpc-port "$grpc" > "$out/logs/gateway.log" 2>&1 < /dev/null &
    echo "$!" > "$out/gateway.pid"
    wait_ready gateway "$(cat "$out/gateway.pid")" "http://127.0.0.1:$port"
    echo "http://127.0.0.1:$port" > "$out/gateway.url"
    echo "127.0.0.1:$grpc" > "$out/gateway.grpc"
    start_autoscaler
    asleep=$(awk -F'\t' '$2 == "-"' "$out/nodes.tsv" | wc -l)
    note=""
    [ "$asleep" = 0 ] || note=" ($asleep more scaled to zero: started on their first request)"
    echo "deploy: $(awk -F'\t' '$2 != "-"' "$out/nodes.tsv" | wc -l) nodes ready$note; routes in $out/routes.json; every model at $(cat "$out/gateway.url") (gateway; KServe v2 gRPC at $(cat "$out/gateway.grpc")); logs in $out/logs/"
    ;;
  kubernetes)
    echo kubernetes > "$out/runtime"
    "$stowage" manifests --plan "$plan" --out "$out/manifests" "${extra[@]}"
    # --karpenter: the NodePools (cluster-scoped) first, so that the pods find instances.
    if [ -f "$out/manifests/karpenter.yaml" ]; then
      kubectl apply --server-side -f "$out/manifests/karpenter.yaml"
    fi
    # Server-side apply: the gateway's plan ConfigMap outgrows the 256 KiB that client-side apply
    # keeps in an annotation near 10,000 models (every object stays under 1 MiB).
    kubectl apply --server-side -k "$out/manifests"
    namespace=$(sed -n 's/^namespace: //p' "$out/manifests/kustomization.yaml")
    python3 - "$plan" "$namespace" > "$out/routes.json" <<'PY'
import json, sys
plan, ns = json.load(open(sys.argv[1])), sys.argv[2]
print(json.dumps({m: f"http://{n['id']}.{ns}.svc.cluster.local:8080" for n in plan["nodes"] for m in n["models"]}, indent=1, sort_keys=True))
PY
    # Nodes of the previous plan that this one no longer has: their objects go, once the kubelets
    # have had time to hand the new ConfigMaps to the nodes and the gateway (about a minute:
    # the kubelet's sync period plus its ConfigMap cache), so that no route points at them.
    if [ -f "$out/plan.json" ]; then
      gone=$(python3 -c 'import json,sys; a={n["id"] for n in json.load(open(sys.argv[1]))["nodes"]}; b={n["id"] for n in json.load(open(sys.argv[2]))["nodes"]}; print(" ".join(sorted(a-b)))' "$out/plan.json" "$plan")
      if [ -n "$gone" ]; then
        echo "deploy: removing nodes no longer planned in ${STOWAGE_PRUNE_DELAY:-90} s: $gone"
        sleep "${STOWAGE_PRUNE_DELAY:-90}"
        for node in $gone; do
          kubectl delete -n "$namespace" --ignore-not-found deployment/"$node" service/"$node" \
            poddisruptionbudget/"$node" horizontalpodautoscaler/"$node" configmap/"$node-plan"
        done
      fi
    fi
    cp "$plan" "$out/plan.json"
    echo "deploy: applied $out/manifests; routes in $out/routes.json"
    ;;
  *) echo "deploy: --runtime is local or kubernetes" >&2; exit 2 ;;
esac
