#!/usr/bin/env bash
# Installs ONNX Runtime's shared library from the PyPI wheel into the project's virtual
# environment (scripts/venv.sh) and prints its path, for `stowage serve --ort-library` /
# ORT_DYLIB_PATH:   scripts/ort-lib.sh [--gpu]
# --gpu: the CUDA build (onnxruntime-gpu), in its own environment ($STOWAGE_VENV, default .venv-gpu).
# ort (the Rust crate) is built with `load-dynamic` and API 31, which pairs with onnxruntime 1.31.
set -euo pipefail
here=$(dirname "$0")
requirements=$here/requirements-ort.txt
case "${1:-}" in
  "") ;;
  --gpu) requirements=$here/requirements-ort-gpu.txt; STOWAGE_VENV=${STOWAGE_VENV:-$(cd "$here/.." && pwd)/.venv-gpu}; export STOWAGE_VENV ;;
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "ort-lib: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
bin=$("$here/venv.sh" "$requirements")
"$bin/python3" - <<'PY'
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
if not libs:
    raise SystemExit("no libonnxruntime.so in the onnxruntime wheel")
print(libs[-1])
PY
