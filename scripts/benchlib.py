"""Helpers the Python benchmark scripts share (bench-reload.py, bench-cold.py, bench-cold-churn.py, …)."""
import os
import re
import socket
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def status(url, timeout=120):
    """The HTTP status of a GET (its body read and dropped), or 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def metric(base, series):
    """The value of one series (name and labels, as exposed) on `base`/metrics; 0 when absent."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def by_label(base, name, label):
    """The series `name` on `base`/metrics summed by the value of their `label`: {value: sum}."""
    pattern = re.compile(rf'{re.escape(name)}\{{.*\b{re.escape(label)}="([^"]*)".*\}} (\S+)')
    out = {}
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            m = pattern.match(line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


TEXTS = [f"the delivery was {w} and the support team answered within {n} hours" for w, n in
         [("late", 3), ("quick", 1), ("fine", 12), ("awful", 48), ("great", 2)]]


def one_cpu_node(stowage, work, count, preset, engine, flags, env=None):
    """Synthesizes COUNT models of PRESET into WORK/m (once) and starts a node on CPU 0 (one
    inference thread, one HTTP worker) with FLAGS; waits until it is ready. Returns (process,
    base URL, port, model ids, the engine it runs). Its log is WORK/serve.log."""
    import json
    import subprocess
    import time
    if not os.path.exists(f"{work}/m/models.toml"):
        subprocess.run([stowage, "synth", "--count", str(count), "--preset", preset, "--out", f"{work}/m"],
                       check=True, capture_output=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    node = subprocess.Popen(
        ["taskset", "-c", "0", stowage, "serve", "--catalog", f"{work}/m/models.toml", "--host", "127.0.0.1",
         "--port", str(port), "--engine", engine, "--inference-threads", "1", "--workers", "1", *flags],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/serve.log", "w"),
        env=env or {**os.environ, "RUST_LOG": "warn"})
    while status(f"{base}/ready") != 200:
        if node.poll() is not None:
            raise SystemExit(f"the node exited; see {work}/serve.log")
        time.sleep(0.1)
    with urllib.request.urlopen(f"{base}/models", timeout=30) as r:
        backend = json.loads(r.read())["models"][0]["backend"]
    models = [f"{preset}-{i:04}" for i in range(1, count + 1)]
    return node, base, port, models, backend


def write_targets(path, base, models):
    """vegeta JSON targets: POST /predictions of each model, the texts in turn."""
    import base64
    import json
    with open(path, "w") as f:
        for i, m in enumerate(models * 5):
            body = base64.b64encode(json.dumps({"inputs": TEXTS[i % len(TEXTS)]}).encode()).decode()
            f.write(json.dumps({"method": "POST", "url": f"{base}/predictions/{m}", "body": body,
                                "header": {"Content-Type": ["application/json"]}}) + "\n")


def attack(stowage, targets, args, cpu="1"):
    """`stowage attack` on CPU `cpu`; its JSON report."""
    import json
    import subprocess
    out = subprocess.run(["taskset", "-c", cpu, stowage, "attack", "--targets", targets, *args],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)
