#!/usr/bin/env python3
"""Cold-pool memory under concurrent churn (BENCHMARKS.md, "Cold-pool memory"): does the node's
real memory stay within what the plan gives it?

A node serves COUNT cold synthetic models (and one hot one) through a pool that holds POOL of
them (1.15 × a model's ONNX file each, + 1 MiB: as `cold.rs` counts). THREADS clients ask random
cold models, each its next request when the last is answered, for SECONDS, so that nearly every
request misses the pool and loads (evicting the least recently used). The node's RSS is sampled
every 100 ms. Printed: the node's RSS serving (after start, before any cold load), its peak, its
P99 and its last value, against the bound the node promises (docs/http-api.md, "Cold models"):
serving RSS + the pool + one load's working memory beyond the pool (WORKING × the largest file,
as `cold.rs` counts it), with `--engine auto` one more model (a model's first load is timed in
both engines) + SLACK_MIB (what a process grows by on its own: HTTP buffers, tokenizers' caches,
metrics).

  python3 scripts/bench-cold-churn.py [--count 50] [--pool 3.5] [--threads 8] [--seconds 60]
      [--layers 2] [--hidden 256] [--vocab 8000] [--engine auto] [--flags '…']
"""
import argparse
import json
import os
import random
import shlex
import subprocess
import threading
import time

from benchlib import ROOT, free_port, metric, rss_mib, status

SLACK_MIB = 32
WORKING = 2.4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--pool", type=float, default=3.5)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--flags", default="", help="more `stowage serve` flags")
    a = ap.parse_args()
    os.chdir(ROOT)
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], check=True)
    stowage = os.path.join(ROOT, "target/release/stowage")
    total = a.count + 1
    models = os.path.join(ROOT, f"out/bench-cold-churn/{a.layers}x{a.hidden}-{a.vocab}-{total}")
    catalog = os.path.join(models, "models.toml")
    if not os.path.exists(catalog):
        subprocess.run(["rm", "-rf", models])
        subprocess.run([stowage, "synth", "--out", models, "--count", str(total), "--preset", "mini",
                        "--layers", str(a.layers), "--hidden", str(a.hidden), "--heads", "4",
                        "--vocab", str(a.vocab), "--prefix", "m"], check=True, stdout=subprocess.DEVNULL)
        text = open(catalog).read()
        hot = f"m-{total:04}"
        text = text.replace(f'[[models]]\nid = "{hot}"', f'[[models]]\nresidency = "hot"\nid = "{hot}"')
        text = text.replace('[[models]]\nid = ', '[[models]]\nresidency = "cold"\nid = ')
        open(catalog, "w").write(text)
    cold = [f"m-{i:04}" for i in range(1, total)]
    weights = max(os.path.getsize(os.path.join(models, m, "model.onnx")) for m in cold)
    pool_mib = a.pool * 1.15 * weights / 2**20 + 1
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(ROOT, "out/bench-cold-churn/node.log"), "w")
    node = subprocess.Popen([stowage, "serve", "--catalog", catalog, "--host", "127.0.0.1", "--port", str(port),
                             "--engine", a.engine, "--cold-pool-mib", f"{pool_mib:.1f}", *shlex.split(a.flags)],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    while status(f"{base}/ready") != 200:
        if node.poll() is not None:
            raise SystemExit("the node exited; see out/bench-cold-churn/node.log")
        time.sleep(0.1)
    for _ in range(50):
        status(f"{base}/predictions/m-{total:04}?text=a+hot+model")
    serving = rss_mib(node.pid)

    samples, codes, answered, stop = [], {}, [], threading.Event()

    def sampler():
        while not stop.is_set():
            samples.append(rss_mib(node.pid))
            time.sleep(0.1)

    def client(seed):
        rng = random.Random(seed)
        while not stop.is_set():
            t = time.monotonic()
            code = status(f"{base}/predictions/{rng.choice(cold)}?text=a+cold+model", timeout=60)
            codes[code] = codes.get(code, 0) + 1
            if code == 200:
                answered.append((time.monotonic() - t) * 1000)

    threads = [threading.Thread(target=sampler)] + [threading.Thread(target=client, args=(i,))
                                                     for i in range(a.threads)]
    for t in threads:
        t.start()
    time.sleep(a.seconds)
    stop.set()
    for t in threads:
        t.join()
    loads = metric(base, 'stowage_cold_loads_total{result="loaded"}')
    resident = metric(base, "stowage_cold_resident_bytes") / 2**20
    last = rss_mib(node.pid)
    node.terminate()
    node.wait()
    samples.sort()
    answered.sort()
    pct = lambda v, p: round(v[int(p * (len(v) - 1))], 1) if v else None
    # `auto` loads a model's first time in both engines to time them (the verdict is then kept).
    second = 1.15 * weights / 2**20 if a.engine == "auto" else 0
    bound = serving + pool_mib + WORKING * weights / 2**20 + second + SLACK_MIB
    print(json.dumps({
        "models": a.count, "weights_mib": round(weights / 2**20, 1), "pool_mib": round(pool_mib, 1),
        "threads": a.threads, "seconds": a.seconds, "engine": a.engine, "flags": a.flags,
        "cold_loads": loads, "codes": codes, "answered_p50_ms": pct(answered, 0.5),
        "answered_p99_ms": pct(answered, 0.99), "pool_resident_mib_at_end": round(resident, 1),
        "rss_serving_mib": round(serving), "rss_peak_mib": round(samples[-1]),
        "rss_p99_mib": round(samples[int(0.99 * (len(samples) - 1))]), "rss_last_mib": round(last),
        "bound_mib": round(bound), "samples": len(samples),
        "samples_over_bound": sum(1 for x in samples if x > bound), "within": samples[-1] <= bound}))


if __name__ == "__main__":
    main()
