#!/usr/bin/env bash
# Installs ONNX Runtime's shared library from the PyPI wheel (CPU build; `--gpu` for the CUDA
# build, onnxruntime-gpu) and prints its path, for `stowage serve --ort-library` / ORT_DYLIB_PATH.
# ort (the Rust crate) is built with `load-dynamic` and API 31, which pairs with onnxruntime 1.31.
set -euo pipefail
version=${ORT_VERSION:-1.31.1}
package=onnxruntime
[ "${1:-}" = "--gpu" ] && package=onnxruntime-gpu
python3 - "$package" "$version" <<'PY' >/dev/null 2>&1 || python3 -m pip install -q --disable-pip-version-check "$package==$version" >&2
import importlib.metadata as m, sys
assert m.version(sys.argv[1]) == sys.argv[2]
PY
python3 - <<'PY'
import glob, os, onnxruntime
libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))
if not libs:
    raise SystemExit("no libonnxruntime.so in the onnxruntime wheel")
print(libs[-1])
PY
