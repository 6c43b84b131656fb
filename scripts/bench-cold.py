#!/usr/bin/env python3
"""Cold models on one node (BENCHMARKS.md, "Cold models"): cold-start latency from local disk,
and what the churn does to a hot model.

A node serves COUNT cold models of PRESET (a pool that holds POOL of them) and one hot model.
One client keeps the hot model busy (next request when answered) for SECONDS in each phase:
  1. alone;
  2. for each INTERVAL (seconds; 0: back to back), while a second client — its own process, so
     that the two never share an interpreter lock — asks the cold models in rotation, waiting
     INTERVAL between requests; every cold request misses the pool and loads its model from
     local disk (evicting the least recently used): its latency is the cold start, the hot
     model's is what that rate of loads costs it;
  3. alone again; then the node's RSS against the pool and the hot set.
Prints a Markdown table.

  python3 scripts/bench-cold.py [--count 6] [--pool 2] [--preset mini] [--seconds 20] [--intervals 0,1,3,10]
"""
import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time

from benchlib import ROOT, free_port, metric, rss_mib, status


def timed(url):
    t = time.monotonic()
    code = status(url)
    return code, (time.monotonic() - t) * 1000


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(p * len(v)))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--intervals", default="0,1,3,10")
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

    def hot_load(seconds):
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            out.append(timed(hot_url))
        return out

    def churn(interval):
        """The hot load while the cold client runs (in its own process) at `interval`."""
        # The rotation goes on where the last phase left it: every cold request misses.
        turn = cold[len(cold_starts) % len(cold):] + cold[:len(cold_starts) % len(cold)]
        client = subprocess.Popen([sys.executable, __file__, "--cold-client", base, ",".join(turn), str(interval)],
                                  stdout=subprocess.PIPE, text=True)
        loads0 = metric(base, 'stowage_cold_loads_total{result="loaded"}')
        started = time.monotonic()
        during = hot_load(a.seconds)
        client.terminate()
        starts = [tuple(x) for x in json.loads(client.communicate()[0] or "[]")]
        loads = metric(base, 'stowage_cold_loads_total{result="loaded"}') - loads0
        return during, starts, loads / (time.monotonic() - started)

    ok = lambda xs: [ms for code, ms in xs if code == 200]
    errors = lambda xs: sum(1 for code, _ in xs if code != 200)
    row = lambda what, xs: (f"| {what} | {pct(ok(xs), 0.5):.1f} / {pct(ok(xs), 0.99):.1f} ms "
                            f"({len(xs)} requests), {errors(xs)} |")
    rows = [row("alone", hot_load(a.seconds))]
    cold_starts = []
    for interval in [float(x) for x in a.intervals.split(",")]:
        during, starts, rate = churn(interval)
        cold_starts += starts
        label = "back to back" if interval == 0 else f"{interval:g} s apart"
        rows.append(row(f"cold requests {label}: {rate:.2f} loads/s", during))
    rows.append(row("alone again", hot_load(a.seconds)))
    loads = metric(base, 'stowage_cold_loads_total{result="loaded"}')
    evictions = metric(base, "stowage_cold_evictions_total")
    resident = metric(base, "stowage_cold_resident_bytes") / 2**20
    rss = rss_mib(node.pid)
    node.terminate()
    node.wait()
    print(f"{a.count} cold {a.preset} models ({weights / 2**20:.0f} MiB of weights each), a pool of {a.pool} "
          f"({pool_mib:.0f} MiB), 1 hot; {a.seconds:g} s a phase\n")
    print(f"- cold requests (each a miss: a load from local disk + warm-up + the request): P50 / P99 "
          f"{pct(ok(cold_starts), 0.5):.0f} / {pct(ok(cold_starts), 0.99):.0f} ms ({len(cold_starts)} requests), "
          f"{errors(cold_starts)} errors; cold loads {loads:.0f}, evictions {evictions:.0f}")
    print(f"- RSS at the end {rss:.0f} MiB; the pool's cold models then {resident:.0f} MiB\n")
    print("| hot model (one client, next request when answered) | P50 / P99, errors |")
    print("| --- | --- |")
    print("\n".join(rows))


def cold_client(base, ids, interval):
    """Asks `ids` in rotation, `interval` seconds apart, until SIGTERM (the request in flight is
    finished first); prints [[code, ms], …]."""
    done, stop = [], []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    for i in itertools.count():
        if stop:
            break
        done.append(timed(f"{base}/predictions/{ids[i % len(ids)]}?text=a+cold+model"))
        end = time.monotonic() + interval
        while not stop and time.monotonic() < end:
            time.sleep(0.05)
    print(json.dumps(done))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--cold-client":
        cold_client(sys.argv[2], sys.argv[3].split(","), float(sys.argv[4]))
    else:
        main()
