"""A real KServe v2 gRPC client (tritonclient[grpc], from PyPI) against a node's --grpc-port, or a
gateway's: health, metadata and inference on a classifier and an embedding model, text and token
inputs in raw_input_contents (the client's way) and in typed contents (through the service stub
that tritonclient ships), and errors as gRPC status codes. The numbers must be those /predictions
answers over REST. Run by tests/integration/kserve.rs:
    python3 kserve_v2_grpc.py GRPC_HOST:PORT HTTP_HOST:PORT CLASSIFIER EMBEDDER
"""
import json
import sys
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

grpc_url, http_url, classifier, embedder = sys.argv[1:5]
client = grpcclient.InferenceServerClient(grpc_url)
assert client.is_server_live(), "live"
assert client.is_server_ready(), "ready"
assert client.is_model_ready(classifier) and client.is_model_ready(embedder)
meta = client.get_server_metadata()
assert meta.name == "stowage", meta


def predictions(model, body):
    req = urllib.request.Request(f"http://{http_url}/predictions/{model}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))["predictions"]


def status_of(call):
    try:
        call()
    except InferenceServerException as e:
        return e.status(), e.message()
    raise AssertionError("no error")


texts = ["I love this product, the delivery was fast", "terrible, slow delivery and a broken item"]
md = client.get_model_metadata(classifier)
assert [o.name for o in md.outputs] == ["probabilities", "logits"], md
assert any(i.name == "text" and i.datatype == "BYTES" for i in md.inputs), md
rest_md = json.load(urllib.request.urlopen(f"http://{http_url}/v2/models/{classifier}"))
labels = rest_md["parameters"]["labels"]
assert [list(o.shape) for o in md.outputs] == [o["shape"] for o in rest_md["outputs"]], (md, rest_md)
want = np.array([[p["scores"][label] for label in labels] for p in predictions(classifier, {"inputs": texts})])


def text_input(values=texts, name="text"):
    t = grpcclient.InferInput(name, [len(values)], "BYTES")
    t.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return t


# The client's way: raw_input_contents in, raw_output_contents out, every output.
r = client.infer(classifier, [text_input()], request_id="r-1")
assert r.get_response().id == "r-1", r.get_response()
probabilities = r.as_numpy("probabilities")
assert probabilities.shape == (2, len(labels)), probabilities.shape
assert np.allclose(probabilities, want, atol=1e-6), (probabilities, want)
assert r.as_numpy("logits").shape == (2, len(labels))
# One output asked for.
r = client.infer(classifier, [text_input()], outputs=[grpcclient.InferRequestedOutput("logits")])
assert r.as_numpy("probabilities") is None and r.as_numpy("logits").shape == (2, len(labels))
# A text pair.
pair = client.infer(classifier, [text_input(["is it good"]), text_input(["yes it is"], "text_pair")])
want_pair = predictions(classifier, {"inputs": "is it good", "text_pair": "yes it is"})[0]["scores"]
assert np.allclose(pair.as_numpy("probabilities")[0], [want_pair[label] for label in labels], atol=1e-6)

# Token ids (INT64), as a client with its own tokenizer sends them.
ids = np.array([[101, 500, 102, 0]], dtype=np.int64)
mask = np.array([[1, 1, 1, 0]], dtype=np.int64)
inputs = []
for name, value in [("input_ids", ids), ("attention_mask", mask)]:
    t = grpcclient.InferInput(name, list(value.shape), "INT64")
    t.set_data_from_numpy(value)
    inputs.append(t)
r = client.infer(classifier, inputs)
want_ids = predictions(classifier, {"input_ids": ids.tolist(), "attention_mask": mask.tolist()})[0]["scores"]
assert np.allclose(r.as_numpy("probabilities")[0], [want_ids[label] for label in labels], atol=1e-6)

# Typed contents (bytes_contents, int64_contents) instead of raw, through the service stub.
stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(grpc_url))
req = service_pb2.ModelInferRequest(model_name=classifier)
t = req.inputs.add(name="text", datatype="BYTES", shape=[2])
t.contents.bytes_contents.extend(v.encode() for v in texts)
resp = stub.ModelInfer(req)
assert [o.name for o in resp.outputs] == ["probabilities", "logits"], resp.outputs
got = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(resp.outputs[0].shape)
assert np.allclose(got, want, atol=1e-6), (got, want)
req = service_pb2.ModelInferRequest(model_name=classifier)
for name, value in [("input_ids", ids), ("attention_mask", mask)]:
    t = req.inputs.add(name=name, datatype="INT64", shape=list(value.shape))
    t.contents.int64_contents.extend(value.flatten().tolist())
resp = stub.ModelInfer(req)
got = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32)
assert np.allclose(got, [want_ids[label] for label in labels], atol=1e-6)

# An embedding model.
md = client.get_model_metadata(embedder)
assert [o.name for o in md.outputs] == ["embedding"], md
embedding = client.infer(embedder, [text_input()]).as_numpy("embedding")
want = np.array([p["embedding"] for p in predictions(embedder, {"inputs": texts})])
assert embedding.shape == want.shape and np.allclose(embedding, want, atol=1e-6)

# Errors: the gRPC codes of the node's error table, the table's name first in the message.
pixels = grpcclient.InferInput("pixels", [1], "FP32")
pixels.set_data_from_numpy(np.zeros(1, dtype=np.float32))
wrong_type = grpcclient.InferInput("text", [1], "INT64")
wrong_type.set_data_from_numpy(np.zeros(1, dtype=np.int64))
# Raw contents for some inputs but not all; a message over --max-body-bytes (1 MiB by default).
req = service_pb2.ModelInferRequest(model_name=classifier)
req.inputs.add(name="text", datatype="BYTES", shape=[1])
req.inputs.add(name="text_pair", datatype="BYTES", shape=[1])
req.raw_input_contents.append(len(b"one").to_bytes(4, "little") + b"one")
try:
    stub.ModelInfer(req)
    raise AssertionError("raw contents for one input of two")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("malformed_request:"), e
big = service_pb2.ModelInferRequest(model_name=classifier)
big.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x" * (2 << 20))
try:
    stub.ModelInfer(big)
    raise AssertionError("a 2 MiB message")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.OUT_OF_RANGE and "too large" in e.details(), e

for what, call, code, name in [
    ("unknown model", lambda: client.infer("no-such-model", [text_input()]), "StatusCode.NOT_FOUND", "unknown_model"),
    ("unknown model ready", lambda: client.is_model_ready("no-such-model"), "StatusCode.NOT_FOUND", "unknown_model"),
    ("metadata of an unknown model", lambda: client.get_model_metadata("no-such-model"), "StatusCode.NOT_FOUND",
     "unknown_model"),
    ("empty text", lambda: client.infer(classifier, [text_input([""])]), "StatusCode.INVALID_ARGUMENT",
     "invalid_input"),
    ("wrong input name", lambda: client.infer(classifier, [pixels]), "StatusCode.INVALID_ARGUMENT",
     "malformed_request"),
    ("wrong datatype", lambda: client.infer(classifier, [wrong_type]), "StatusCode.INVALID_ARGUMENT",
     "malformed_request"),
    ("unknown output", lambda: client.infer(classifier, [text_input()], outputs=[
        grpcclient.InferRequestedOutput("pixels")]), "StatusCode.INVALID_ARGUMENT", "invalid_input"),
]:
    status, message = status_of(call)
    assert status == code and message.startswith(name + ":"), (what, status, message)
print("kserve v2 grpc: ok")
