#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace.
#   scripts/test.sh [ARGS…]      ARGS go to cargo nextest run (or cargo test), e.g. a test filter
# System packages come from scripts/setup.sh; Python packages (pinned in
# scripts/requirements-test.txt) go into the project's virtual environment (scripts/venv.sh), put
# first on PATH so the tests find its python3, moto_server, kubernetes-validate and hadolint; npm
# packages (tests/clients/package.json) into tests/clients/node_modules.
set -euo pipefail
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
cd "$(dirname "$0")/.."
scripts/setup.sh
PATH="$(scripts/venv.sh scripts/requirements-test.txt):$PATH"
export PATH
# Karpenter's and KEDA's schemas (kubernetes-models packages, pinned in tests/clients'
# package-lock.json), installed again when the lock file changed.
if ! cmp -s tests/clients/package-lock.json tests/clients/node_modules/.stowage-lock 2> /dev/null; then
  npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error >&2
  cp tests/clients/package-lock.json tests/clients/node_modules/.stowage-lock
fi
# ONNX Runtime for the ort engine's tests (loaded at run time).
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
export ORT_DYLIB_PATH STOWAGE_REQUIRE_ORT=1
# The tools above are required: a test that cannot find one fails instead of skipping.
export STOWAGE_REQUIRE_K8S_VALIDATE=1 STOWAGE_REQUIRE_HADOLINT=1 STOWAGE_REQUIRE_TRITONCLIENT=1 STOWAGE_REQUIRE_S3=1
export STOWAGE_REQUIRE_K8S_MODELS=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --locked --no-fail-fast "$@"
else
  cargo test --workspace --all-targets --locked --no-fail-fast "$@"
fi
