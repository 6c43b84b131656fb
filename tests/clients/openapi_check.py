"""The OpenAPI documents of a node and a gateway (GET /openapi.json), checked three ways:
valid OpenAPI (openapi-spec-validator, from PyPI); every real answer below (status and JSON body,
from the running node and gateway) valid against its operation's schema in the document; and
the same routes and statuses as docs/http-api.md's tables. Run by tests/integration/openapi.rs:
    python3 openapi_check.py NODE_URL GATEWAY_URL DOCS CLASSIFIER EMBEDDER
"""
import json
import re
import sys
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

node, gateway, docs_path, classifier, embedder = sys.argv[1:6]


def fetch(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def document(base):
    status, raw = fetch("GET", f"{base}/openapi.json")
    assert status == 200, (base, status)
    doc = json.loads(raw)
    validate(doc)
    return doc


def template(path):
    """The document's path of a concrete one: each `{…}` segment matches any segment."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def checker(doc):
    text = json.dumps(doc).replace('"#/components/', '"urn:stowage#/components/')
    linked = json.loads(text)
    registry = Registry().with_resource("urn:stowage", Resource.from_contents(linked, DRAFT202012))
    paths = {template(p): ops for p, ops in linked["paths"].items()}

    def check(method, path, status, raw):
        concrete = template(re.sub(r"/[^/]+", lambda m: m.group(0), path.split("?")[0]))
        ops = next((o for p, o in paths.items() if re.fullmatch(p.replace("{}", "[^/]+"), path.split("?")[0])), None)
        assert ops is not None, f"{path}: no such path in the document"
        op = ops.get(method.lower())
        assert op is not None, f"{method} {path}: not in the document"
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {path}: {status} is not in the document ({list(op['responses'])})"
        content = response.get("content", {})
        if "application/json" in content and raw:
            schema = content["application/json"]["schema"]
            errors = list(Draft202012Validator(schema, registry=registry).iter_errors(json.loads(raw)))
            assert not errors, f"{method} {path} {status}: {errors[0].message} in {raw[:300]!r}"
        return concrete

    return check


text = ["I love this product, the delivery was fast"]
v2_text = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": text}]}
calls = [
    ("GET", f"/predictions/{classifier}?text=fine", None, 200),
    ("POST", f"/predictions/{classifier}", {"inputs": text}, 200),
    ("POST", f"/predictions/{embedder}", {"inputs": text}, 200),
    ("POST", f"/predictions/{classifier}", {"inputs": [""]}, 422),
    ("POST", f"/predictions/{classifier}", {"bogus": 1}, 400),
    ("POST", "/predictions/no-such-model", {"inputs": text}, 404),
    ("POST", f"/async/predictions/{classifier}", {"inputs": text}, 202),
    ("GET", f"/async/results/{classifier}.00000000000000000000000000000000", None, 404),
    ("GET", "/ping", None, 200),
    ("HEAD", "/ping", None, 200),
    ("GET", "/ready", None, 200),
    ("GET", "/v2", None, 200),
    ("GET", "/v2/health/live", None, 200),
    ("GET", "/v2/health/ready", None, 200),
    ("GET", f"/v2/models/{classifier}", None, 200),
    ("GET", f"/v2/models/{embedder}", None, 200),
    ("GET", "/v2/models/no-such-model", None, 404),
    ("GET", f"/v2/models/{classifier}/ready", None, 200),
    ("POST", f"/v2/models/{classifier}/infer", v2_text, 200),
    ("POST", f"/v2/models/{embedder}/infer", v2_text, 200),
    ("POST", f"/v2/models/{classifier}/infer", {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP32", "data": [0]}]}, 400),
    ("GET", "/metrics", None, 200),
    ("GET", "/openapi.json", None, 200),
]
node_only = [("GET", "/models", None, 200), ("GET", f"/models/{classifier}", None, 200), ("GET", "/models/nope", None, 404)]
gateway_only = [("GET", "/models", None, 200)]
seen = {}
for base, extra, name in [(node, node_only, "node"), (gateway, gateway_only, "gateway")]:
    doc = document(base)
    check = checker(doc)
    for method, path, body, want in calls + extra:
        status, raw = fetch(method, base + path, body)
        assert status == want, (name, method, path, status, raw[:300])
        check(method, path, status, raw)
    seen[name] = doc

# The docs' routes and statuses.
docs = open(docs_path).read()


def routes_of(section):
    """(METHOD, templated path) of the first column of the tables in a section of the docs."""
    found = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cell = line.split("|")[1]
        # The routes a cell opens with (`GET /a`, `GET /b`), not those its prose names.
        for method, path in re.findall(r"(?:^\s*|`,\s*)`(GET|POST|HEAD|PUT|DELETE) (/[^`?\s]*)", cell):
            found.add((method, template(path)))
            if "also `HEAD`" in cell:
                found.add(("HEAD", template(path)))
    return found


def section(title):
    start = docs.index(f"\n## {title}")
    end = docs.find("\n## ", start + 1)
    return docs[start:end if end > 0 else None]


def operations(doc):
    return {(m.upper(), template(p)) for p, ops in doc["paths"].items() for m in ops}


node_docs = routes_of(docs[: docs.index("\n## Responses")]) | routes_of(section("Open Inference Protocol (KServe v2)"))
assert operations(seen["node"]) == node_docs, (
    f"node: only in the document {sorted(operations(seen['node']) - node_docs)}, "
    f"only in the docs {sorted(node_docs - operations(seen['node']))}")
gateway_own = routes_of(section("The gateway"))
forwarded = {r for r in node_docs if r[1].startswith(("/predictions", "/async", "/v2/models"))}
assert operations(seen["gateway"]) == gateway_own | forwarded, (
    f"gateway: only in the document {sorted(operations(seen['gateway']) - gateway_own - forwarded)}, "
    f"only in the docs {sorted(gateway_own | forwarded - operations(seen['gateway']))}")
table = set(re.findall(r"^\| (\d{3}) \| `", docs, re.M))
statuses = {s for doc in seen.values() for ops in doc["paths"].values() for op in ops.values() for s in op["responses"]}
errors = {s for s in statuses if s >= "400"}
assert errors <= table, f"statuses the docs' error table lacks: {sorted(errors - table)}"
# Every status of the table a route's operation can answer: not the admin API's 401 and 409, nor
# 405 (any path, for a method it does not take).
rest = table - {"401", "405", "409"}
assert rest <= errors, f"statuses of the table no route answers: {sorted(rest - errors)}"
print("openapi: ok")
