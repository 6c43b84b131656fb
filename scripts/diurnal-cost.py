#!/usr/bin/env python3
"""The cost of one day of a plan under a daily traffic curve, static vs with nodes that scale to
zero (BENCHMARKS.md, "Pay for traffic"). A model, not a measurement:

  diurnal-cost.py CATALOG PLAN [--idle SECONDS] [--curve consumer|business]

- each model's traffic at hour h is its peak_rps × f(h): `consumer`, a smooth day peaking at
  14:00 with a night trough at 5 % of the peak; `business`, its peak from 08:00 to 20:00 and
  nothing outside;
- a node that does not scale to zero costs its price all day, as every node of a static plan;
- a node that scales to zero ("min_replicas": 0) is up while requests keep coming within the
  idle time T of each other (KEDA's cooldownPeriod; `--idle`, default 300 s): with Poisson
  arrivals at the node's rate λ(h), the share of the hour it is down is e^(−λ(h)·T) (the time past
  T in the gaps between requests), so it costs price × (1 − e^(−λ(h)·T)) that hour; a node's
  start and drain (seconds) are left out.

Prints one Markdown row: nodes (of them scaling to zero), the static cost of the day, the cost
with scale to zero, and the saving.
"""
import json
import math
import sys
import tomllib


def curve(name, h):
    """f(h): the share of the peak at hour h (0..23, the hour's middle)."""
    t = h + 0.5
    if name == "consumer":
        return 0.05 + 0.95 * (0.5 - 0.5 * math.cos(2 * math.pi * (t - 2) / 24))
    if name == "business":
        return 1.0 if 8 <= t < 20 else 0.0
    raise SystemExit(f"unknown curve {name}: consumer or business")


def main(args):
    idle, name = 300.0, "consumer"
    if "--idle" in args:
        i = args.index("--idle")
        idle = float(args[i + 1])
        del args[i : i + 2]
    if "--curve" in args:
        i = args.index("--curve")
        name = args[i + 1]
        del args[i : i + 2]
    if len(args) != 2:
        raise SystemExit(__doc__)
    with open(args[0], "rb") as f:
        rps = {m["id"]: m["peak_rps"] for m in tomllib.load(f)["models"]}
    plan = json.load(open(args[1]))
    static = scaled = 0.0
    zero = 0
    for n in plan["nodes"]:
        price = n["price_per_hour"]
        static += 24 * price
        if n.get("min_replicas", 1) != 0:
            scaled += 24 * price
            continue
        zero += 1
        peak = sum(rps[m] * n.get("shares", {}).get(m, 1.0) for m in n["models"])
        scaled += sum(price * (1 - math.exp(-peak * curve(name, h) * idle)) for h in range(24))
    saving = 100 * (static - scaled) / static if static else 0.0
    print(f"| {len(plan['nodes'])} ({zero}) | {static:.2f} | {scaled:.2f} | {saving:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1:])
