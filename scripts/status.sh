#!/usr/bin/env bash
# Shows what scripts/deploy.sh runs:  scripts/status.sh [--out DIR]      (DIR default out/deploy)
# local: each node's pid (or "dead"; "zero" for a node scaled to zero), URL, gRPC address and
# /ready answer; kubernetes: kubectl get
# of its objects.
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
case "$(cat "$out/runtime" 2> /dev/null || echo none)" in
  local)
    printf '%-28s %-8s %-28s %-28s %s\n' node pid url grpc ready
    while IFS=$'\t' read -r node pid url grpc; do
      if [ "$pid" = - ]; then
        # Scales to zero: the autoscaler's, running or not.
        pid=$(cat "$out/nodes/$node/pid" 2> /dev/null || echo none)
        alive=$(kill -0 "$pid" 2> /dev/null && echo "$pid" || echo "zero")
      else
        alive=$(kill -0 "$pid" 2> /dev/null && echo "$pid" || echo "dead")
      fi
      ready=$(curl -s "$url/ready" || echo unreachable)
      printf '%-28s %-8s %-28s %-28s %s\n' "$node" "$alive" "$url" "${grpc:--}" "$ready"
    done < "$out/nodes.tsv"
    ;;
  kubernetes)
    namespace=$(sed -n 's/^namespace: //p' "$out/manifests/kustomization.yaml")
    kubectl get deployments,pods,services -n "$namespace" -l app.kubernetes.io/name=stowage
    ;;
  *) echo "status: nothing deployed from $out" ;;
esac
