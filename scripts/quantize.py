#!/usr/bin/env python3
"""Writes the int8 form of a model folder, as small BERTs are usually shipped: the weights of
MatMul and Gemm nodes dynamically quantized to int8 (onnxruntime.quantization.quantize_dynamic;
activations are quantized at run time), the tokenizer and config copied beside it.

    python3 scripts/quantize.py IN_DIR OUT_DIR     (needs scripts/requirements-bench.txt)
"""
import pathlib
import shutil
import sys

import logging

from onnxruntime.quantization import QuantType, quantize_dynamic


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    dst.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process first, on every run
    quantize_dynamic(str(src / "model.onnx"), str(dst / "model.onnx"), weight_type=QuantType.QInt8)
    for name in ("tokenizer.json", "config.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    before, after = (src / "model.onnx").stat().st_size, (dst / "model.onnx").stat().st_size
    print(f"{dst / 'model.onnx'}: {after / 2**20:.1f} MiB (fp32 {before / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
