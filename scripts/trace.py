"""Export a Hugging Face BERT-style model to the ONNX layout `stowage serve` reads.

Writes OUT/model.onnx (inputs input_ids, attention_mask[, token_type_ids], int64, dynamic batch and
sequence axes; output `logits` for classification or `last_hidden_state` for embeddings),
OUT/tokenizer.json (the fast tokenizer) and OUT/config.json (with id2label), then checks the ONNX
file against the PyTorch model with onnxruntime and prints the largest difference and a catalog
entry. MODEL is a hub id (needs the hub) or a local folder written by `save_pretrained`.
Run through scripts/trace.sh, which installs what this needs.
"""

import argparse
import inspect
import json
import pathlib
import sys

import numpy as np
import onnxruntime
import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="hub id or local folder (save_pretrained)")
    p.add_argument("out", type=pathlib.Path, help="folder to write model.onnx, tokenizer.json, config.json into")
    p.add_argument("--task", choices=["classification", "embedding"], default="classification")
    p.add_argument("--max-length", type=int, default=None, help="truncation length (default: the model's positions)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--fp16", action="store_true", help="store weights in float16 (GPU nodes); inputs and outputs stay as they are")
    p.add_argument("--id", default=None, help="model id for the printed catalog entry (default: the folder name)")
    a = p.parse_args()

    a.out.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(a.model)
    tokenizer = AutoTokenizer.from_pretrained(a.model, use_fast=True)
    if not tokenizer.is_fast:
        print(f"{a.model}: no fast tokenizer (tokenizer.json) for this model", file=sys.stderr)
        return 1
    cls = AutoModelForSequenceClassification if a.task == "classification" else AutoModel
    # Eager attention traces to plain ops; the SDPA path bakes the sample's padding into the graph.
    model = cls.from_pretrained(a.model, config=config, attn_implementation="eager").eval()
    max_length = a.max_length or getattr(config, "max_position_embeddings", 512)

    sample = tokenizer(["I love this product", "the delivery was late and the box was broken"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample and n in inspect.signature(model.forward).parameters]
    output = "logits" if a.task == "classification" else "last_hidden_state"

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            kwargs = dict(zip(names, args))
            # An additive [batch, 1, 1, seq] mask, as BERT exports always had: the library's own
            # mask builder traces to seq × seq index arithmetic that not every engine can plan.
            mask = kwargs["attention_mask"][:, None, None, :].to(torch.float32)
            kwargs["attention_mask"] = (1.0 - mask) * torch.finfo(torch.float32).min
            return getattr(self.inner(**kwargs), output)

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    path = a.out / "model.onnx"
    kwargs = dict(input_names=names, output_names=[output], dynamic_axes=axes, opset_version=a.opset, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: plain ONNX ops, names and axes as given
    wrapped = Wrapped(model).eval()  # export restores the module's mode: it must be eval already
    args = tuple(sample[n] for n in names)
    with torch.no_grad():
        want = wrapped(*args).numpy()
        torch.onnx.export(wrapped, args, str(path), **kwargs)

    if a.fp16:
        import onnx
        from onnxconverter_common import float16

        m = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        onnx.save(m, str(path))

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([output], {n: sample[n].numpy().astype(np.int64) for n in names})[0]
    diff = float(np.abs(got - want).max())
    tolerance = 5e-2 if a.fp16 else 1e-4
    print(f"{path}: largest difference from PyTorch {diff:.2e} (tolerance {tolerance:.0e})", file=sys.stderr)

    tokenizer.model_max_length = max_length
    tokenizer.backend_tokenizer.enable_truncation(max_length)
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.save(str(a.out / "tokenizer.json"))
    cfg = config.to_dict()
    cfg.setdefault("id2label", {str(i): f"LABEL_{i}" for i in range(getattr(config, "num_labels", 2))})
    (a.out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))

    mid = a.id or a.out.name
    print(f'[[models]]\nid = "{mid}"\nartifact = "{path}"\ntokenizer = "{a.out / "tokenizer.json"}"\n'
          f'config = "{a.out / "config.json"}"\npeak_rps = 1.0\n# profile = "..." or [models.footprint.<family>]: run stowage profile')
    return 0 if diff <= tolerance else 2


if __name__ == "__main__":
    sys.exit(main())
