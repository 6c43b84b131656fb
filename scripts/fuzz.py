"""Fuzzes a running node's HTTP API: COUNT requests, each a random mutation of a valid one (paths,
methods, query strings, JSON bodies of wrong types and sizes, odd Unicode, raw bytes, broken
request lines and headers, KServe v2 inference bodies with odd shapes and datatypes — dimensions
whose product overflows 64 bits, negative and zero ones), over raw sockets so that malformed HTTP
gets through, while STALLS connections (20 by default) at a time hold a chunked body that never
ends (stalled in a chunk, in a chunk-size line, or after whole chunks), a new round every 5,000
requests: each must get 408 and be closed. Prints the
status mix (with connections closed without an answer: raw garbage, or a body the node refused
early) and what must never happen: a timeout, an undocumented status or 5xx, a JSON error body
without "code", or a node that stops answering /ping.
Exits 1 if any of those happened.
    python3 scripts/fuzz.py HOST:PORT MODEL [COUNT] [SEED] [STALLS]
"""
import collections
import json
import random
import socket
import sys

host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
model = sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
stalls = int(sys.argv[5]) if len(sys.argv) > 5 else 20

# Statuses the API documents (docs/http-api.md); 500 only as inference_failed.
DOCUMENTED = {200, 400, 404, 405, 408, 413, 422, 429, 499, 500, 503}
ODD = ["", " ", "\u0000", "\u200b", "\ufeff", "é", "東京", "👍" * 50, "a" * 3000, "\\", "\"", "%", "%00", "%ZZ",
       "\ud7ff", "null", "-1", "1e309", "[", "{}", "\r\n"]


def value(depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(ODD)
    if kind == 1:
        return rng.choice([0, -1, 2**63, -2**63, 2**64, 1.5, float(rng.randrange(-9, 9)) / 7])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
    if kind in (4, 5):
        return " ".join(rng.choice(["the", "delivery", "was", "fast", "ok", "bad"]) for _ in range(rng.randrange(1, 30)))
    if kind == 6:
        return [value(depth + 1) for _ in range(rng.randrange(0, 40))]
    if kind == 7:
        return [[rng.randrange(-5, 40000) for _ in range(rng.randrange(0, 20))] for _ in range(rng.randrange(0, 5))]
    return {rng.choice(["inputs", "text_pair", "input_ids", "attention_mask", "token_type_ids", "truncate", "x"]): value(depth + 1)
            for _ in range(rng.randrange(0, 4))}


def body():
    fields = ["inputs", "text_pair", "input_ids", "attention_mask", "token_type_ids", "truncate"]
    b = {f: value() for f in rng.sample(fields, rng.randrange(0, 4))}
    text = json.dumps(b, ensure_ascii=rng.random() < 0.5)
    if rng.random() < 0.15:  # break the JSON
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice(["", "}", "\"", "\u0000", ",", "ÿ"]) + text[i + 1:]
    return text.encode("utf-8", "surrogatepass")


def v2_body():
    """A KServe v2 inference body: shapes with huge, negative or zero dimensions, data that does
    or does not match them, odd datatypes."""
    dims = [rng.choice([0, 1, 2, 3, -1, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63 - 1), -2**63, 2**64,
                        rng.randrange(-9, 99)])
            for _ in range(rng.randrange(0, 4))]
    datatype = rng.choice(["BYTES", "BYTES", "INT64", "FP32", "bytes", ""])
    data = [value() if rng.random() < 0.3 else rng.choice(["good", "bad"]) for _ in range(rng.randrange(0, 6))]
    t = {"name": rng.choice(["text", "input_ids", "x"]), "datatype": datatype, "shape": dims, "data": data}
    if rng.random() < 0.1:
        t["parameters"] = {"binary_data_size": rng.choice([0, 4, 2**40, -1])}
    return json.dumps({"inputs": [t] * rng.randrange(0, 3)}).encode()


def request():
    if rng.random() < 0.15:
        data = v2_body()
        raw = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
        return raw, True
    path = rng.choice([f"/predictions/{model}", f"/predictions/{model}", "/predictions/", "/predictions/nope",
                       f"/predictions/{model}/x", "/models", f"/models/{model}", "/ping", "/ready", "/metrics",
                       "/" + rng.choice(ODD)])
    if rng.random() < 0.4:
        path += "?" + rng.choice(["text", "seq_0", "text_pair", "x"]) + "=" + rng.choice(ODD + ["hello+there", "%E2%80%8B"])
    method = rng.choice(["GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "GARBAGE"])
    data = body() if method == "POST" or rng.random() < 0.1 else b""
    headers = [f"Host: {host}", "Connection: close"]
    if data or rng.random() < 0.1:
        declared = len(data) if rng.random() < 0.9 else rng.choice([0, len(data) + 10 ** 6, "abc", -1])
        headers.append(f"Content-Length: {declared}")
        if declared != len(data):
            data = data[: max(0, min(len(data), declared if isinstance(declared, int) else 0))]
    if rng.random() < 0.5:
        headers.append("Content-Type: " + rng.choice(["application/json", "text/plain", "", "application/json; charset=latin1"]))
    if rng.random() < 0.05:
        headers.append(rng.choice(["X: " + "a" * 20000, "Bad Header", "Transfer-Encoding: chunked", "\u0000: 1"]))
    line = f"{method} {path} HTTP/1.1" if rng.random() > 0.03 else rng.choice(["GET", "\u0000\u0001", "GET / HTTP/9.9", ""])
    raw = (line + "\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode("utf-8", "surrogatepass") + data
    complete = line.endswith(" HTTP/1.1") and "Transfer-Encoding: chunked" not in headers and all(not h.startswith("Content-Length") or h == f"Content-Length: {len(data)}" for h in headers)
    if rng.random() < 0.02:
        raw, complete = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), False
    return raw, complete


def send(raw, complete=True, timeout=15):
    s = socket.create_connection((host, port), timeout=timeout)
    got = b""
    try:
        try:
            s.sendall(raw)
            # Requests the node must read to the end (a body shorter than declared, bytes that are
            # not HTTP) and half of the others half-close after sending (a FIN): the node may
            # answer those 499 without running them; the rest wait with the connection open.
            if not complete or rng.random() < 0.5:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node answered early (a body it will not read) and closed: read what it said
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got
    finally:
        s.close()


STALLED_BODIES = [b'5\r\n{"inp\r\n', b'5\r\n{"i', b'1', b'5\r\n{"inp\r\n3\r\nuts\r\n', b'', b'2;ext=1\r\n{"']


def stalled():
    """A connection holding a chunked body that never ends (on the node's REST or v2 route)."""
    s = socket.create_connection((host, port), timeout=30)
    path = rng.choice([f"/predictions/{model}", f"/v2/models/{model}/infer"])
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
              "Transfer-Encoding: chunked\r\n\r\n".encode() + rng.choice(STALLED_BODIES))
    return s


def check_stalled(held):
    """Each stalled connection answered 408 at the body deadline and closed (by now, or soon)."""
    for s in held:
        got = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError as e:
            problems.append(f"stalled connection: not closed ({e}): {got[:80]!r}")
            continue
        finally:
            s.close()
        if got.startswith(b"HTTP/1.1 408"):
            statuses["stalled chunked, 408 and closed"] += 1
        else:
            problems.append(f"stalled connection: {got[:80]!r}")


statuses = collections.Counter()
problems = []
held = []
for i in range(count):
    if i % 5000 == 0 and stalls:
        check_stalled(held)
        held = [stalled() for _ in range(stalls)]
    if i and i % 100000 == 0:
        print(f"{i} requests, {len(problems)} problems", file=sys.stderr, flush=True)
    raw, complete = request()
    try:
        got = send(raw, complete)
    except OSError as e:
        problems.append(f"request {i}: {e}: {raw[:120]!r}")
        continue
    if not got:
        statuses["closed without an answer"] += 1
        continue
    head, _, rest = got.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        problems.append(f"request {i}: not HTTP: {got[:120]!r}")
        continue
    statuses[status] += 1
    if status not in DOCUMENTED:
        problems.append(f"request {i}: undocumented status {status}: {raw[:160]!r}")
    if status >= 500 and status != 503 and b"inference_failed" not in rest:
        problems.append(f"request {i}: {status} {rest[:200]!r} for {raw[:160]!r}")
    # KServe v2 routes answer errors as {"error"} alone (the protocol's form).
    v2 = raw.split(b" ", 2)[1:2] and raw.split(b" ", 2)[1].startswith(b"/v2/")
    if status >= 400 and not raw.startswith(b"HEAD ") and not v2 and b"application/json" in head.lower() and b'"code"' not in rest:
        problems.append(f"request {i}: JSON error without a code: {rest[:200]!r}")

check_stalled(held)

alive = send(f"GET /ping HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()).startswith(b"HTTP/1.1 200")
print(f"{count} requests, seed {sys.argv[4] if len(sys.argv) > 4 else 1}")
for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0])):
    print(f"  {k}: {v}")
print(f"node alive after: {alive}; problems: {len(problems)}")
for p in problems[:20]:
    print("  " + p)
sys.exit(0 if alive and not problems else 1)
