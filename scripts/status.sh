#!/usr/bin/env bash
# Shows what scripts/deploy.sh runs:  scripts/status.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=out/deploy
[ "${1:-}" = "--out" ] && out=$2
case "$(cat "$out/runtime" 2> /dev/null || echo none)" in
  local)
    printf '%-28s %-8s %-28s %s\n' node pid url ready
    while IFS=$'\t' read -r node pid url; do
      alive=$(kill -0 "$pid" 2> /dev/null && echo "$pid" || echo "dead")
      ready=$(curl -s "$url/ready" || echo unreachable)
      printf '%-28s %-8s %-28s %s\n' "$node" "$alive" "$url" "$ready"
    done < "$out/nodes.tsv"
    ;;
  kubernetes)
    namespace=$(sed -n 's/^namespace: //p' "$out/manifests/kustomization.yaml")
    kubectl get deployments,pods,services -n "$namespace" -l app.kubernetes.io/name=stowage
    ;;
  *) echo "status: nothing deployed from $out" ;;
esac
