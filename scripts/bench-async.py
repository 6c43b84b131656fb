#!/usr/bin/env python3
"""Asynchronous requests on one node (issue: async durable queue).

A node serves COUNT synthetic models on one CPU (taskset), its queue in a temporary --async-dir;
the clients run on another CPU. Measured, in this order:
  1. sync capacity: closed loop (`stowage attack --concurrency 8`), requests/s;
  2. async alone: JOBS_ALONE = 2 × capacity jobs submitted by 8 threads with nothing else running:
     submission latency (the 202, on disk), time until all are done, so the drain rate and the
     node time a job costs beyond a synchronous request;
  3. the baseline: open-loop synchronous load at SHARE × capacity for 15 s (P50/P90/P99);
  4. the burst: BURST × capacity jobs submitted at once while the same synchronous load runs:
     rejected submissions, time until all are done, the drain rate against the capacity left
     ((1 − SHARE) × capacity), and the synchronous P99 during the drain against the baseline's.
Prints a Markdown table for BENCHMARKS.md.

  python3 scripts/bench-async.py [--count 4] [--preset mini] [--engine auto] [--share 0.3] [--burst 10]
                                 [--async-concurrency N]
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import tempfile
import threading
import time

from benchlib import ROOT, TEXTS, attack, free_port, one_cpu_node, status, write_targets


def submitter(port, jobs, texts, models, latencies, codes, lock):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in jobs:
        body = json.dumps({"inputs": texts[i % len(texts)]})
        t = time.monotonic()
        conn.request("POST", f"/async/predictions/{models[i % len(models)]}", body,
                     {"Content-Type": "application/json", "Idempotency-Key": f"bench-{i}"})
        r = conn.getresponse()
        r.read()
        with lock:
            latencies.append(time.monotonic() - t)
            codes[r.status] = codes.get(r.status, 0) + 1


def submit(port, first, n, texts, models, threads=8):
    """Submits jobs first..first+n from `threads` threads; (latencies, codes by status, seconds)."""
    latencies, codes, lock = [], {}, threading.Lock()
    ids = list(range(first, first + n))
    parts = [ids[k::threads] for k in range(threads)]
    start = time.monotonic()
    ts = [threading.Thread(target=submitter, args=(port, p, texts, models, latencies, codes, lock)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sorted(latencies), codes, time.monotonic() - start


def done_jobs(base):
    text = urllib_get(f"{base}/metrics")
    return sum(float(v) for v in re.findall(r'^stowage_async_completed_total\{[^}]*status="done"[^}]*\} (\S+)$', text, re.M))


def urllib_get(url):
    import urllib.request
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read().decode()


def wait_done(base, total, since, limit=600):
    while done_jobs(base) < total:
        if time.monotonic() - since > limit:
            raise SystemExit(f"jobs not done in {limit} s")
        time.sleep(0.02)
    return time.monotonic() - since


def pct(xs, p):
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--share", type=float, default=0.3)
    ap.add_argument("--burst", type=float, default=10)
    ap.add_argument("--async-concurrency", type=int, default=None)
    ap.add_argument("--sqs", action="store_true",
                    help="queue on SQS with results in S3, both served by moto_server on loopback (on the clients' CPU); "
                         "measures submission and the drain alone only")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    stowage = os.path.join(ROOT, "target", "release", "stowage")
    work = tempfile.mkdtemp(prefix="bench-async-")
    texts = TEXTS
    queue_flags, moto = ["--async-dir", f"{work}/q"], None
    env = {**os.environ, "RUST_LOG": "warn"}
    if a.sqs:
        moto, queue_flags = sqs_queue(env)
    flags = queue_flags + (["--async-concurrency", str(a.async_concurrency)] if a.async_concurrency else [])
    node, base, port, models, backend = one_cpu_node(stowage, work, a.count, a.preset, a.engine, flags, env)
    try:
        write_targets(f"{work}/targets", base, models)
        targets = f"{work}/targets"
        cap = attack(stowage, targets, ["--concurrency", "8", "--duration", "8"], "1")
        capacity = cap["throughput_rps"]
        one = attack(stowage, targets, ["--concurrency", "1", "--duration", "8"], "1")["throughput_rps"]
        # 2. async alone
        n_alone = int(2 * capacity)
        start = time.monotonic()
        lat, codes, submit_s = submit(port, 0, n_alone, texts, models)
        alone_s = wait_done(base, n_alone, start)
        if a.sqs:
            report(a, backend, capacity, one, n_alone, submit_s, lat, codes, alone_s, None)
            return
        # 3. baseline
        rate = a.share * capacity
        base_r = attack(stowage, targets, ["--rate", f"{rate:.1f}", "--arrivals", "poisson", "--duration", "15"], "1")
        # 4. burst under the same load
        n_burst = int(a.burst * capacity)
        expect = n_burst / ((1 - a.share) * capacity)
        result = {}

        def load():
            result["r"] = attack(stowage, targets, ["--rate", f"{rate:.1f}", "--arrivals", "poisson",
                                                    "--duration", str(int(expect * 1.2) + 5)], "1")
        t = threading.Thread(target=load)
        t.start()
        time.sleep(2)  # the load is on before the burst
        start = time.monotonic()
        blat, bcodes, bsubmit_s = submit(port, n_alone, n_burst, texts, models)
        burst_s = wait_done(base, n_alone + n_burst, start)
        t.join()
        during = result["r"]
    finally:
        node.terminate()
        node.wait()
        if moto:
            moto.terminate()
    report(a, backend, capacity, one, n_alone, submit_s, lat, codes, alone_s,
           (rate, base_r, n_burst, bsubmit_s, bcodes, burst_s, during))


def sqs_queue(env):
    """moto_server on CPU 1 with a bucket and a queue; (process, serve's queue flags). Sets fake
    credentials in env."""
    import urllib.request
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen(["taskset", "-c", "1", "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while status(url) == 0:
        time.sleep(0.1)
    env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"})
    auth = "AWS4-HMAC-SHA256 Credential=test/20261206/us-east-1/{}/aws4_request, SignedHeaders=host, Signature=0"
    urllib.request.urlopen(urllib.request.Request(f"{url}/jobs", method="PUT", headers={"Authorization": auth.format("s3")}))
    body = b"Action=CreateQueue&QueueName=bench"
    r = urllib.request.urlopen(urllib.request.Request(url, data=body, headers={
        "Authorization": auth.format("sqs"), "Content-Type": "application/x-www-form-urlencoded"})).read().decode()
    queue = re.search(r"<QueueUrl>(.*?)</QueueUrl>", r).group(1)
    return moto, ["--async-queue-url", queue, "--async-results", "s3://jobs/results/", "--s3-endpoint", url]


def report(a, backend, capacity, one, n_alone, submit_s, lat, codes, alone_s, burst):
    ms = lambda s: f"{s * 1e3:.2f}"
    lat_of = lambda r, p: r["latency_ms"][p]
    queue = "SQS + S3 (moto on the clients' CPU)" if a.sqs else "embedded (redb)"
    print(f"node: {a.count} {a.preset} models ({backend}), one CPU, {queue} queue, --async-concurrency {a.async_concurrency or 'default (1)'}; clients on another; {time.strftime('%Y-%m-%d')}\n")
    print("| measure | value |\n|---|---:|")
    print(f"| sync capacity (closed loop, c8) | {capacity:.1f} req/s (c1, no batching: {one:.1f}) |")
    print(f"| async alone: {n_alone} jobs, submitted in | {submit_s:.2f} s ({n_alone / submit_s:.0f}/s; 202 p50 {ms(pct(lat, 50))} ms, p99 {ms(pct(lat, 99))} ms; codes {codes}) |")
    print(f"| async alone: all done after | {alone_s:.2f} s: {n_alone / alone_s:.1f} jobs/s = {n_alone / alone_s / capacity:.2f} × capacity |")
    print(f"| node time per job beyond an unbatched sync request (c1) | {ms(1 / (n_alone / alone_s) - 1 / one)} ms |")
    if burst is None:
        return
    rate, base_r, n_burst, bsubmit_s, bcodes, burst_s, during = burst
    print(f"| sync alone, open loop {rate:.1f} req/s ({a.share:.0%}): P50 / P90 / P99 | {lat_of(base_r, 'p50'):.1f} / {lat_of(base_r, 'p90'):.1f} / {lat_of(base_r, 'p99'):.1f} ms |")
    print(f"| burst: {n_burst} jobs ({a.burst:g} × capacity), submitted in | {bsubmit_s:.2f} s; codes {bcodes} |")
    print(f"| burst: all done after | {burst_s:.2f} s: {n_burst / burst_s:.1f} jobs/s = {n_burst / burst_s / ((1 - a.share) * capacity):.2f} × the capacity left |")
    print(f"| sync during the drain: P50 / P90 / P99 | {lat_of(during, 'p50'):.1f} / {lat_of(during, 'p90'):.1f} / {lat_of(during, 'p99'):.1f} ms ({lat_of(during, 'p99') / lat_of(base_r, 'p99'):.2f} × alone); codes {during['status_codes']} |")


if __name__ == "__main__":
    main()
