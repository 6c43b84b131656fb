#!/usr/bin/env python3
"""Admission by expected wait under overload (issue: hold under attack and overload, item 4).

A node serves COUNT synthetic models on one CPU (taskset); the load runs on another. Its capacity
is measured closed-loop (concurrency 8); then, for each bound (`--max-queue-delay-ms`, 0 = off),
a fresh node takes open-loop Poisson load at FACTOR × capacity for SECONDS (requests sent on
schedule, latency from the scheduled time), and every request's result is kept (vegeta's CSV).
Printed per bound: answered (200) and refused (429) requests, each with its P50/P90/P99 latency.
The bound holds when the answered P99 is within 2 × the bound and refusals come at once.

  python3 scripts/bench-overload.py [--bounds 0,100] [--factor 2] [--seconds 20] [--count 4] [--preset mini]
"""
import argparse
import csv
import os
import subprocess
import tempfile

from benchlib import ROOT, attack, one_cpu_node, write_targets


def pct(xs, p):
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bounds", default="0,100", help="--max-queue-delay-ms values, comma-separated (0: off)")
    ap.add_argument("--factor", type=float, default=2.0)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--engine", default="auto")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--locked", "-q"], cwd=ROOT, check=True)
    stowage = os.path.join(ROOT, "target", "release", "stowage")
    work = tempfile.mkdtemp(prefix="bench-overload-")
    rows = []
    capacity = None
    for bound in [int(b) for b in a.bounds.split(",")]:
        node, base, _, models, backend = one_cpu_node(
            stowage, work, a.count, a.preset, a.engine, ["--max-queue-delay-ms", str(bound)])
        try:
            write_targets(f"{work}/targets", base, models)
            if capacity is None:
                capacity = attack(stowage, f"{work}/targets", ["--concurrency", "8", "--duration", "8"])["throughput_rps"]
            results = f"{work}/results-{bound}.csv"
            attack(stowage, f"{work}/targets", ["--rate", f"{a.factor * capacity:.1f}", "--arrivals", "poisson",
                                               "--duration", str(a.seconds), "--timeout", "30",
                                               "--vegeta-results", results])
        finally:
            node.terminate()
            node.wait()
        by_code = {}
        with open(results) as f:
            for row in csv.reader(f):
                by_code.setdefault(row[1], []).append(int(row[2]) / 1e6)
        rows.append((bound, backend, {c: sorted(v) for c, v in by_code.items()}))
    print(f"node: {a.count} {a.preset} models, one CPU; capacity {capacity:.1f} req/s (closed loop, c8); "
          f"open-loop Poisson at {a.factor:g} × = {a.factor * capacity:.1f} req/s for {a.seconds} s\n")
    print("| --max-queue-delay-ms | engine | answered (200): n, P50 / P90 / P99 ms | refused (429): n, P50 / P99 ms | other |")
    print("|---:|---|---:|---:|---|")
    for bound, backend, codes in rows:
        ok, no = codes.get("200", []), codes.get("429", [])
        other = {c: len(v) for c, v in codes.items() if c not in ("200", "429")}
        print(f"| {bound or 'off'} | {backend} | {len(ok)}, {pct(ok, 50):.1f} / {pct(ok, 90):.1f} / {pct(ok, 99):.1f} | "
              f"{len(no)}, {pct(no, 50):.1f} / {pct(no, 99):.1f} | {other or '—'} |")


if __name__ == "__main__":
    main()
