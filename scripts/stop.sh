#!/usr/bin/env bash
# Stops what scripts/deploy.sh started:  scripts/stop.sh [--out DIR]      (DIR default out/deploy)
# local: SIGTERM to the autoscaler (it stops the nodes that scale to zero it runs), the gateway
# and every node (they drain and exit), SIGKILL to any still running after STOWAGE_STOP_TIMEOUT
# seconds (default 40); kubernetes: kubectl delete -k DIR/manifests.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
out=$root/out/deploy
while (($#)); do
  case "$1" in
    --out) [ $# -ge 2 ] || refuse "--out needs a folder"; out=$(from_caller "$2"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) refuse "unknown argument $1" ;;
  esac
done
runtime=$(cat "$out/runtime" 2> /dev/null || echo none)
case "$runtime" in
  local)
    [ -f "$out/nodes.tsv" ] || { echo "stop: nothing runs from $out"; exit 0; }
    # The autoscaler first: it stops the nodes that scale to zero it started.
    if [ -f "$out/autoscaler.pid" ]; then
      autoscaler=$(cat "$out/autoscaler.pid")
      kill -TERM "$autoscaler" 2> /dev/null || true
      gone=$((SECONDS + ${STOWAGE_STOP_TIMEOUT:-40} + 5))
      while kill -0 "$autoscaler" 2> /dev/null && ((SECONDS < gone)); do sleep 0.1; done
      kill -KILL "$autoscaler" 2> /dev/null || true
      rm -f "$out/autoscaler.pid"
    fi
    if [ -f "$out/gateway.pid" ]; then
      gateway=$(cat "$out/gateway.pid")
      kill -TERM "$gateway" 2> /dev/null || true
      for _ in $(seq 100); do kill -0 "$gateway" 2> /dev/null || break; sleep 0.1; done
      kill -KILL "$gateway" 2> /dev/null || true
      rm -f "$out/gateway.pid" "$out/gateway.url" "$out/gateway.grpc"
    fi
    while IFS=$'\t' read -r _ pid _; do [ "$pid" = - ] || kill -TERM "$pid" 2> /dev/null || true; done < "$out/nodes.tsv"
    deadline=$((SECONDS + ${STOWAGE_STOP_TIMEOUT:-40}))
    while IFS=$'\t' read -r node pid _; do
      [ "$pid" != - ] || continue
      while kill -0 "$pid" 2> /dev/null; do
        if ((SECONDS > deadline)); then
          echo "stop: $node (pid $pid) did not drain in time; killing it" >&2
          kill -KILL "$pid" 2> /dev/null || true
          break
        fi
        sleep 0.1
      done
    done < "$out/nodes.tsv"
    echo "stop: stopped $(wc -l < "$out/nodes.tsv") nodes"
    rm -f "$out/nodes.tsv" "$out/runtime"
    ;;
  kubernetes)
    kubectl delete -k "$out/manifests"
    rm -f "$out/runtime"
    ;;
  *) echo "stop: nothing deployed from $out" ;;
esac
