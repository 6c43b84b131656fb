#!/usr/bin/env python3
"""The peer Stowage is measured against: a seed-style multi-model server as the reference built
its nodes — FastAPI on one uvicorn worker, every model of a catalog in its own ONNX Runtime
session with one intra-op thread, Hugging Face's tokenizer, the model run inline in an async
handler (one request at a time), softmax over `id2label`. It answers what a Stowage node
answers at `GET|POST /predictions/{model}` (`{"inputs": "text" | [...]}` or `?text=`).

    python3 scripts/peer_server.py CATALOG PORT     (needs scripts/requirements-bench.txt)

Used by scripts/bench-peer.sh; not a part of Stowage.
"""
import json
import pathlib
import sys
import tomllib

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from tokenizers import Tokenizer


def load(catalog_path: pathlib.Path) -> dict:
    catalog = tomllib.loads(catalog_path.read_text())
    base = catalog_path.parent
    models = {}
    for m in catalog["models"]:
        artifact = base / m["artifact"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_file(str(base / m["tokenizer"] if "tokenizer" in m else artifact.parent / "tokenizer.json"))
        config = json.loads((artifact.parent / "config.json").read_text())
        labels = [config["id2label"][str(i)] for i in range(len(config.get("id2label", {})))]
        inputs = [i.name for i in session.get_inputs()]
        models[m["id"]] = (session, tokenizer, labels, inputs)
    return models


app = FastAPI()
MODELS: dict = {}


def predict(model_id: str, texts: list) -> dict:
    if model_id not in MODELS:
        raise HTTPException(404, f"no model {model_id!r}")
    session, tokenizer, labels, inputs = MODELS[model_id]
    encodings = tokenizer.encode_batch(texts)
    width = max(len(e.ids) for e in encodings)
    pad = lambda rows: np.array([r + [0] * (width - len(r)) for r in rows], dtype=np.int64)
    feed = {
        "input_ids": pad([e.ids for e in encodings]),
        "attention_mask": pad([e.attention_mask for e in encodings]),
        "token_type_ids": pad([e.type_ids for e in encodings]),
    }
    logits = session.run(None, {k: v for k, v in feed.items() if k in inputs})[0]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    out = []
    for p in probs:
        best = int(p.argmax())
        out.append({"label": labels[best], "score": float(p[best]), "scores": dict(zip(labels, map(float, p)))})
    return {"model": model_id, "predictions": out}


@app.get("/predictions/{model_id}")
async def get(model_id: str, text: str):
    return predict(model_id, [text])


@app.post("/predictions/{model_id}")
async def post(model_id: str, request: Request):
    body = await request.json()
    texts = body["inputs"] if isinstance(body["inputs"], list) else [body["inputs"]]
    return predict(model_id, texts)


@app.get("/ping")
async def ping():
    return {"status": "Healthy"}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) == 2 else 2)
    MODELS.update(load(pathlib.Path(sys.argv[1])))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), workers=1, log_level="warning")
