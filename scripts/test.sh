#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# ONNX Runtime for the ort engine's tests (loaded at run time; see scripts/ort-lib.sh).
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
export ORT_DYLIB_PATH STOWAGE_REQUIRE_ORT=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --locked --no-fail-fast "$@"
else
  cargo test --workspace --all-targets --locked --no-fail-fast "$@"
fi
