#!/usr/bin/env bash
# Gathers the in-cluster load test (`stowage manifests --loadtest-clients N`, then
# `kubectl apply -f deploy/loadtest.yaml`): waits for the Job, collects every client pod's vegeta
# results and reports them together.
#   scripts/loadtest-gather.sh [NAMESPACE] [OUT_DIR]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
ns=${1:-stowage}
out=${2:-out/loadtest-cluster}
mkdir -p "$out"
kubectl -n "$ns" wait --for=condition=complete job/stowage-loadtest --timeout=3600s
: > "$out/results.json"
for pod in $(kubectl -n "$ns" get pods -l app.kubernetes.io/component=loadtest -o name); do
  kubectl -n "$ns" logs "$pod" >> "$out/results.json"
done
vegeta report -type=text < "$out/results.json" | tee "$out/report.txt"
vegeta report -type=json < "$out/results.json" > "$out/report.json"
vegeta report -type='hist[0,10ms,25ms,50ms,66ms,100ms,250ms,500ms,1s]' < "$out/results.json" >> "$out/report.txt"
echo "gather: $(kubectl -n "$ns" get pods -l app.kubernetes.io/component=loadtest -o name | wc -l) clients; $out/report.txt, $out/report.json"
