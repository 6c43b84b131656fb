"""A real KServe v2 client (tritonclient[http], from PyPI) against a node: health, metadata,
inference on a classifier and an embedding model, in the binary tensor extension (the client's
default) and in JSON, text and token inputs, and errors. The numbers must be those /predictions
answers. Run by tests/integration/kserve.rs: python3 kserve_v2.py HOST:PORT CLASSIFIER EMBEDDER
"""
import json
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, classifier, embedder = sys.argv[1:4]
client = httpclient.InferenceServerClient(url)
assert client.is_server_live(), "live"
assert client.is_server_ready(), "ready"
assert client.is_model_ready(classifier) and client.is_model_ready(embedder)
assert not client.is_model_ready("no-such-model")
meta = client.get_server_metadata()
assert meta["name"] == "stowage", meta


def predictions(model, body):
    req = urllib.request.Request(f"http://{url}/predictions/{model}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["predictions"]


texts = ["I love this product, the delivery was fast", "terrible, slow delivery and a broken item"]
md = client.get_model_metadata(classifier)
assert [o["name"] for o in md["outputs"]] == ["probabilities", "logits"], md
assert any(i["name"] == "text" and i["datatype"] == "BYTES" for i in md["inputs"]), md
labels = md["parameters"]["labels"]
want = np.array([[p["scores"][label] for label in labels] for p in predictions(classifier, {"inputs": texts})])


def text_input(binary, values=texts, name="text"):
    t = httpclient.InferInput(name, [len(values)], "BYTES")
    t.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_), binary_data=binary)
    return t


# The client's defaults: binary tensors both ways, every output.
r = client.infer(classifier, [text_input(True)])
probabilities = r.as_numpy("probabilities")
assert probabilities.shape == (2, len(labels)), probabilities.shape
assert np.allclose(probabilities, want, atol=1e-6), (probabilities, want)
assert r.as_numpy("logits").shape == (2, len(labels))
# JSON both ways, one output asked for.
r = client.infer(classifier, [text_input(False)], outputs=[httpclient.InferRequestedOutput("probabilities", binary_data=False)])
assert np.allclose(r.as_numpy("probabilities"), want, atol=1e-6)
assert r.as_numpy("logits") is None
# A text pair.
pair = client.infer(classifier, [text_input(True, ["is it good"]), text_input(True, ["yes it is"], "text_pair")])
want_pair = predictions(classifier, {"inputs": "is it good", "text_pair": "yes it is"})[0]["scores"]
assert np.allclose(pair.as_numpy("probabilities")[0], [want_pair[label] for label in labels], atol=1e-6)

# Token ids (INT64), as a client with its own tokenizer sends them.
ids = np.array([[101, 500, 102, 0]], dtype=np.int64)
mask = np.array([[1, 1, 1, 0]], dtype=np.int64)
inputs = []
for name, value in [("input_ids", ids), ("attention_mask", mask)]:
    t = httpclient.InferInput(name, list(value.shape), "INT64")
    t.set_data_from_numpy(value)
    inputs.append(t)
r = client.infer(classifier, inputs)
want_ids = predictions(classifier, {"input_ids": ids.tolist(), "attention_mask": mask.tolist()})[0]["scores"]
assert np.allclose(r.as_numpy("probabilities")[0], [want_ids[label] for label in labels], atol=1e-6)

# An embedding model.
md = client.get_model_metadata(embedder)
assert [o["name"] for o in md["outputs"]] == ["embedding"], md
r = client.infer(embedder, [text_input(True)])
embedding = r.as_numpy("embedding")
want = np.array([p["embedding"] for p in predictions(embedder, {"inputs": texts})])
assert embedding.shape == want.shape and np.allclose(embedding, want, atol=1e-6)

# Errors: as the protocol writes them, with the statuses the node's table gives.
for model, inputs, status in [
    ("no-such-model", [text_input(True)], "404"),
    (classifier, [text_input(True, [""])], "422"),
    (classifier, [httpclient.InferInput("pixels", [1], "FP32")], "400"),
]:
    try:
        if inputs[0].name() == "pixels":
            inputs[0].set_data_from_numpy(np.zeros(1, dtype=np.float32))
        client.infer(model, inputs)
        raise AssertionError(f"{model}: no error")
    except InferenceServerException as e:
        assert e.status() == status and e.message(), (status, e.status(), e.message())
print("kserve v2: ok")
