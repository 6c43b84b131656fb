#!/usr/bin/env python3
"""Engine conformance reference: tokenizes sample texts with Hugging Face `tokenizers` and runs the
models with onnxruntime (CPU), a third party to both of Stowage's engines. Writes JSON to stdout.

    stowage synth --preset tiny --count 2 --embedding-every 2 --seed 11 --prefix conf --out /tmp/conf
    python3 scripts/reference.py /tmp/conf > tests/fixtures/reference.json

Needs: pip install onnxruntime==1.31.1 tokenizers numpy
"""
import hashlib, json, os, sys

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

TEXTS = [
    "I love this product, it works great!",
    "terrible delivery: the item arrived broken and late",
    "ok",
    "Unbekannte Wörter und Ünïcödé get [UNK] or split into ##pieces 12345",
]

def main(root):
    out = {"generator": f"scripts/reference.py, onnxruntime {ort.__version__}", "texts": TEXTS, "models": []}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isfile(os.path.join(d, "model.onnx")):
            continue
        data = open(os.path.join(d, "model.onnx"), "rb").read()
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        tok.no_padding()
        enc = tok.encode_batch(TEXTS)
        seq = max(len(e.ids) for e in enc)
        pad = lambda xs: [list(x) + [0] * (seq - len(x)) for x in xs]
        ids = np.array(pad([e.ids for e in enc]), dtype=np.int64)
        mask = np.array(pad([e.attention_mask for e in enc]), dtype=np.int64)
        types = np.array(pad([e.type_ids for e in enc]), dtype=np.int64)
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        output = sess.get_outputs()[0].name
        feed = {"input_ids": ids, "attention_mask": mask}
        if any(i.name == "token_type_ids" for i in sess.get_inputs()):
            feed["token_type_ids"] = types
        y = sess.run([output], feed)[0]
        out["models"].append({
            "id": name,
            "sha256": hashlib.sha256(data).hexdigest(),
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "token_type_ids": types.tolist(),
            "output": output,
            "shape": list(y.shape),
            "values": [float(v) for v in y.ravel()],
        })
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")

if __name__ == "__main__":
    main(sys.argv[1])
