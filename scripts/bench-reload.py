#!/usr/bin/env python3
"""A live reload against a restart, on one node (issue: live nodes).

A node serves COUNT synthetic models (plan A) under steady load on KEPT of them; plan B replaces
REPLACED models with new ones and is written over the node's plan file. Measured:
  - reload: from the write until every new model answers 200 (the node watches its plan);
  - restart: a new process on plan B, from its start until /ready (every model loaded);
  - the kept models' latency (P50/P99, errors) in the 10 s before the change and during it;
  - the node's RSS before the change (plan A), its highest during the reload, after it, and a
    fresh node's on plan B.
Prints a Markdown table for BENCHMARKS.md.

  python3 scripts/bench-reload.py [--count 20] [--replaced 5] [--preset mini] [--engine auto]
"""
import argparse
import hashlib
import json
import os
import subprocess
import threading
import time
import urllib.request

from benchlib import ROOT, free_port, rss_mib, status


def plan(catalog_sha, ids):
    return json.dumps({
        "format": "stowage-plan/v1", "catalog_sha256": catalog_sha, "cost_per_hour": 1.0,
        "lower_bound_per_hour": 1.0,
        "solver": {"method": "bench", "seconds": 0.0, "proven_optimal": False, "gap": 0.0},
        "nodes": [{"id": "n1", "instance_type": "bench", "family": "local", "price_per_hour": 1.0,
                   "models": ids, "usage": {"memory": 0.5, "utilization": 0.5}}],
    })


def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def serve(stowage, plan_path, catalog, engine, log):
    port = free_port()
    proc = subprocess.Popen(
        [stowage, "serve", "--plan", plan_path, "--catalog", catalog, "--node", "n1", "--host", "127.0.0.1",
         "--port", str(port), "--engine", engine],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), env={**os.environ, "RUST_LOG": "info"})
    base = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    while status(f"{base}/ready") != 200:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited; see {log}")
        time.sleep(0.05)
    return proc, base, time.monotonic() - start



class Load:
    """One client per kept model, each sending the next request when the last is answered."""

    def __init__(self, base, models):
        self.samples = []  # (time sent, seconds, status)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(base, m)) for m in models]
        for t in self.threads:
            t.start()

    def run(self, base, model):
        url = f"{base}/predictions/{model}?text=a+kept+model+under+steady+load"
        while not self.stop.is_set():
            t = time.monotonic()
            code = status(url)
            self.samples.append((t, time.monotonic() - t, code))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def window(self, a, b):
        s = [x for x in self.samples if a <= x[0] < b]
        lat = sorted(x[1] for x in s if x[2] == 200)
        pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
        return {"requests": len(s), "errors": sum(1 for x in s if x[2] != 200), "p50": pct(0.5), "p99": pct(0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--replaced", type=int, default=5)
    ap.add_argument("--kept-load", type=int, default=2, help="kept models under load (one client each)")
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--engine", default="auto")
    a = ap.parse_args()
    os.chdir(ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], check=True)
    stowage = os.path.join(ROOT, "target/release/stowage")
    work = os.path.join(ROOT, "out/bench-reload")
    models = os.path.join(work, f"{a.preset}-{a.count + a.replaced}")
    catalog = os.path.join(models, "models.toml")
    total = a.count + a.replaced
    if not os.path.exists(catalog) or open(catalog).read().count("[[models]]") != total:
        subprocess.run(["rm", "-rf", models])
        subprocess.run([stowage, "synth", "--out", models, "--count", str(total), "--preset", a.preset],
                       check=True, stdout=subprocess.DEVNULL)
    sha = hashlib.sha256(open(catalog, "rb").read()).hexdigest()
    ids = [f"{a.preset}-{i:04}" for i in range(1, total + 1)]
    first = ids[: a.count]
    second = ids[: a.count - a.replaced] + ids[a.count:]
    os.makedirs(os.path.join(work, "node"), exist_ok=True)
    plan_path = os.path.join(work, "node/plan.json")
    write(plan_path, plan(sha, first))
    node, base, start_a = serve(stowage, plan_path, catalog, a.engine, os.path.join(work, "node.log"))
    kept = first[: a.kept_load]
    load = Load(base, kept)
    time.sleep(12)
    old_rss = rss_mib(node.pid)
    peak = [old_rss]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_mib(node.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    changed = time.monotonic()
    write(plan_path, plan(sha, second))
    new = ids[a.count:]
    while not all(status(f"{base}/predictions/{m}?text=hi") == 200 for m in new):
        time.sleep(0.05)
    reloaded = time.monotonic() - changed
    sampling.set()
    sampler.join()
    time.sleep(1)
    load.finish()
    before = load.window(changed - 10, changed)
    during = load.window(changed, changed + reloaded)
    reloaded_rss = rss_mib(node.pid)
    fresh_path = os.path.join(work, "fresh.json")
    write(fresh_path, plan(sha, second))
    fresh, _, restart = serve(stowage, fresh_path, catalog, a.engine, os.path.join(work, "fresh.log"))
    fresh_rss = rss_mib(fresh.pid)
    node.terminate()
    fresh.terminate()
    print(f"| node of {a.count} {a.preset} models, {a.replaced} replaced ({a.engine}) | |")
    print("| --- | --- |")
    print(f"| start-up on plan A (fresh process, to /ready) | {start_a:.2f} s |")
    print(f"| reload: plan B written → all {a.replaced} new models answer 200 | **{reloaded:.2f} s** |")
    print(f"| restart: a new process on plan B → /ready | {restart:.2f} s |")
    for name, w in (("10 s before the change", before), ("during the reload", during)):
        print(f"| kept models ({len(kept)} clients) {name}: requests, errors, P50 / P99 | "
              f"{w['requests']}, {w['errors']}, {w['p50']:.1f} / {w['p99']:.1f} ms |")
    print(f"| RSS on plan A before the change; highest during the reload (sampled every 10 ms) | {old_rss:.0f} MiB; {peak[0]:.0f} MiB |")
    print(f"| RSS after the reload vs a fresh node on plan B | {reloaded_rss:.0f} MiB vs {fresh_rss:.0f} MiB |")


if __name__ == "__main__":
    main()
