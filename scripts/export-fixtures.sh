#!/usr/bin/env bash
# Rebuilds tests/fixtures/exports/: small Hugging Face architectures with random weights, exported
# with torch.onnx as users export them, with onnxruntime references (scripts/export_fixtures.py).
# Nothing is downloaded from a model hub. PyTorch, transformers, onnx and onnxruntime go into a
# virtual environment (STOWAGE_EXPORT_VENV, default .venv-export; several GB: PyPI's torch wheels
# bring the CUDA libraries). The fixtures are committed; CI does not run this.
#   scripts/export-fixtures.sh [OUT]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
venv=${STOWAGE_EXPORT_VENV:-.venv-export}
if ! "$venv/bin/python" -c 'import torch, transformers, onnx, onnxruntime' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'torch==2.11.*' 'transformers>=4.44,<6' 'onnx>=1.16' \
    'onnxruntime==1.31.1' 'tokenizers>=0.20'
fi
out=$(from_caller "${1:-$root/tests/fixtures/exports}")
"$venv/bin/python" scripts/export_fixtures.py "$out"
