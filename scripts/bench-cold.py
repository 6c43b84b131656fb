#!/usr/bin/env python3
"""Cold models on one node (BENCHMARKS.md, "Cold models"): cold-start latency from local disk,
and what the churn does to a hot model.

A node serves COUNT cold models of PRESET (a pool that holds POOL of them) and one hot model.
  1. the hot model alone under steady load (one client, next request when answered), 10 s;
  2. the same load while a second client asks the cold models in rotation, so that each request
     misses the pool and loads its model (evicting the least recently used): the cold requests'
     latency is the cold start; the hot model's is what the churn costs it;
  3. the node's RSS at the end against the pool and the hot set.
Prints a Markdown table.

  python3 scripts/bench-cold.py [--count 6] [--pool 2] [--preset mini] [--seconds 10]
"""
import argparse
import json
import os
import subprocess
import threading
import time
import urllib.request

from benchlib import ROOT, free_port, status


def timed(url):
    t = time.monotonic()
    code = status(url)
    return code, (time.monotonic() - t) * 1000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def metric(base, series):
    with urllib.request.urlopen(f"{base}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    os.chdir(ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], check=True)
    stowage = os.path.join(ROOT, "target/release/stowage")
    models = os.path.join(ROOT, f"out/bench-cold/{a.preset}-{a.count + 1}")
    catalog = os.path.join(models, "models.toml")
    total = a.count + 1
    if not os.path.exists(catalog) or open(catalog).read().count("[[models]]") != total:
        subprocess.run(["rm", "-rf", models])
        subprocess.run([stowage, "synth", "--out", models, "--count", str(total), "--preset", a.preset],
                       check=True, stdout=subprocess.DEVNULL)
        text = open(catalog).read()
        hot = f"{a.preset}-{total:04}"
        text = text.replace(f'[[models]]\nid = "{hot}"', f'[[models]]\nresidency = "hot"\nid = "{hot}"')
        text = text.replace('[[models]]\nid = ', '[[models]]\nresidency = "cold"\nid = ')
        open(catalog, "w").write(text)
    ids = [f"{a.preset}-{i:04}" for i in range(1, total + 1)]
    cold, hot = ids[:-1], ids[-1]
    weights = os.path.getsize(os.path.join(models, cold[0], "model.onnx"))
    pool_mib = a.pool * 1.15 * weights / 2**20 + 1
    port = free_port()
    log = open(os.path.join(ROOT, "out/bench-cold/node.log"), "w")
    node = subprocess.Popen([stowage, "serve", "--catalog", catalog, "--host", "127.0.0.1", "--port", str(port),
                             "--cold-pool-mib", f"{pool_mib:.1f}"], stdout=subprocess.DEVNULL, stderr=log,
                            env={**os.environ, "RUST_LOG": "info"})
    base = f"http://127.0.0.1:{port}"
    while status(f"{base}/ready") != 200:
        time.sleep(0.1)
    hot_url = f"{base}/predictions/{hot}?text=a+hot+model+under+steady+load"

    def hot_load(seconds, out):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(timed(hot_url))

    alone = []
    hot_load(a.seconds, alone)
    during, cold_starts = [], []
    stop = threading.Event()
    t = threading.Thread(target=hot_load, args=(a.seconds, during))
    t.start()
    i = 0
    while t.is_alive():
        m = cold[i % len(cold)]
        cold_starts.append(timed(f"{base}/predictions/{m}?text=a+cold+model"))
        i += 1
    t.join()
    loads = metric(base, 'stowage_cold_loads_total{result="loaded"}')
    evictions = metric(base, "stowage_cold_evictions_total")
    resident = metric(base, "stowage_cold_resident_bytes") / 2**20
    rss = 0.0
    for line in open(f"/proc/{node.pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    node.terminate()
    node.wait()
    ok = lambda xs: [ms for code, ms in xs if code == 200]
    errors = lambda xs: sum(1 for code, _ in xs if code != 200)
    print(f"| {a.count} cold {a.preset} models ({weights / 2**20:.0f} MiB of weights each), pool of {a.pool} ({pool_mib:.0f} MiB), 1 hot | |")
    print("| --- | --- |")
    print(f"| cold requests (each a miss: a load from local disk + the request): P50 / P99, errors | "
          f"{pct(ok(cold_starts), 0.5):.0f} / {pct(ok(cold_starts), 0.99):.0f} ms ({len(cold_starts)} requests), {errors(cold_starts)} |")
    print(f"| cold loads, evictions (stowage_cold_*) | {loads:.0f}, {evictions:.0f} |")
    print(f"| hot model alone: P50 / P99 ({len(alone)} requests) | {pct(ok(alone), 0.5):.1f} / {pct(ok(alone), 0.99):.1f} ms |")
    print(f"| hot model during the cold churn: P50 / P99 ({len(during)} requests), errors | "
          f"{pct(ok(during), 0.5):.1f} / {pct(ok(during), 0.99):.1f} ms, {errors(during)} |")
    print(f"| RSS at the end; the pool's cold models now | {rss:.0f} MiB; {resident:.0f} MiB |")


if __name__ == "__main__":
    main()
