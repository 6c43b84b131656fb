#!/usr/bin/env python3
"""Compares two runs files of scripts/bench-serve.sh (out/bench/serve-runs.txt), taken on the same
machine: per point, the HTTP/engine throughput ratio and the p50 overhead of each round (the two
sides of a round run back to back, so machine drift cancels), before and after. A point is within
noise when the ranges of per-round values of the two runs overlap: the change moved it less than
the rounds of one run differ among themselves.
    scripts/bench-compare.py BEFORE_RUNS AFTER_RUNS
"""
import json
import statistics
import sys


def points(path):
    out = {}
    for line in open(path):
        preset, engine, c, side, data = line.split(" ", 4)
        out.setdefault((preset, engine, int(c)), {"engine": [], "http": []})[side].append(json.loads(data))
    return out


def per_round(p):
    ratio = [h["rps"] / e["rps"] for e, h in zip(p["engine"], p["http"])]
    over = [h["p50_ms"] / e["p50_ms"] - 1 for e, h in zip(p["engine"], p["http"])]
    # What the node adds around its own inference at concurrency 1 (ms per request).
    added = [h["mean_ms"] - 1000 * h["node_inference"][0] / max(h["node_inference"][1], 1) for h in p["http"]]
    return ratio, over, added


def span(values, fmt):
    return f"{fmt(statistics.median(values))} [{fmt(min(values))}, {fmt(max(values))}]"


def overlap(a, b):
    return min(a) <= max(b) and min(b) <= max(a)


before, after = points(sys.argv[1]), points(sys.argv[2])
print("| preset | engine | concurrency | HTTP/engine req/s before | after | p50 overhead before | after | node adds (c=1) ms before | after | within noise |")
print("|---|---|---:|---|---|---|---|---|---|---|")
verdicts = []
for key in before:
    if key not in after:
        continue
    rb, ob, ab = per_round(before[key])
    ra, oa, aa = per_round(after[key])
    same = overlap(rb, ra) and overlap(ob, oa) and (key[2] != 1 or overlap(ab, aa))
    verdicts.append(same)
    r3 = lambda v: f"{v:.3f}"
    pc = lambda v: f"{100 * v:+.1f}%"
    ms = lambda v: f"{v:.3f}"
    c1 = key[2] == 1
    print(f"| {key[0]} | {key[1]} | {key[2]} | {span(rb, r3)} | {span(ra, r3)} | {span(ob, pc)} | {span(oa, pc)} "
          f"| {span(ab, ms) if c1 else ''} | {span(aa, ms) if c1 else ''} | {'yes' if same else 'NO'} |")
print()
print(f"{sum(verdicts)} of {len(verdicts)} points within noise (medians, [min, max] over rounds)")
