#!/usr/bin/env python3
"""Builds the load-test report from scripts/loadtest.sh's raw results: report.md (a table like the
reference's), plot.svg (latency against throughput) and report.json. Standard library only."""
import argparse, glob, json, os, statistics
from collections import Counter

def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(-(-len(xs) * p // 1)) - 1))] if xs else 0.0

def curl_stats(path):
    rows = [l.split() for l in open(path) if l.strip()]
    ms = [float(r[2]) * 1000 for r in rows if r[1] == "200"]
    dead = sorted({r[0] for r in rows if r[1] == "000"})
    return {"requests": len(rows), "ok": len(ms), "p50_ms": pct(ms, .5), "p90_ms": pct(ms, .9),
            "mean_ms": statistics.mean(ms) if ms else 0.0, "unreachable": dead}

def steps(d, cpus):
    out = []
    for f in glob.glob(os.path.join(d, "steps", "c-*.json")):
        s = json.load(open(f))
        out.append({"step": f"c={s['concurrency']}", "x": s["concurrency"], "throughput": s["throughput_rps"], "success": s["success_ratio"],
                    **{k: s["latency_ms"][k] for k in ("p50", "p90", "p95", "p99")}, "codes": s["status_codes"], "client_cpu": s["client_cpu_share"]})
    for f in glob.glob(os.path.join(d, "steps", "open-*.json")):
        s = json.load(open(f))
        out.append({"step": f"{s['rate']:g}/s", "x": s["rate"], "throughput": s["throughput_rps"], "success": s["success_ratio"],
                    **{k: s["latency_ms"][k] for k in ("p50", "p90", "p95", "p99")}, "codes": s["status_codes"],
                    "client_cpu": s["client_cpu_share"], "behind": s["client"]["behind"]})
    for f in glob.glob(os.path.join(d, "steps", "rate-*.vegeta.json")):
        v = json.load(open(f))
        rate = int(os.path.basename(f).split("-")[1].split(".")[0])
        user, system, wall = (float(x) for x in open(f.replace(".vegeta.json", ".cpu")).read().split()[-3:])
        lat = v["latencies"]
        out.append({"step": f"{rate}/s", "x": rate, "throughput": v["throughput"], "success": v["success"],
                    "p50": lat["50th"] / 1e6, "p90": lat["90th"] / 1e6, "p95": lat["95th"] / 1e6, "p99": lat["99th"] / 1e6,
                    "codes": v.get("status_codes", {}), "client_cpu": (user + system) / (wall * cpus)})
    return sorted(out, key=lambda s: s["x"])

def nice_ticks(top, n=5):
    """Round tick values (1, 2 or 5 × 10^k apart) from 0 past `top`."""
    import math
    raw = max(top, 1e-9) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [step * i for i in range(int(math.ceil(top / step)) + 1)]

def log_ticks(lo, hi):
    """1-2-5 values between lo and hi, for a logarithmic axis."""
    import math
    out, k = [], math.floor(math.log10(lo))
    while 10 ** k <= hi * 10:
        out += [m * 10 ** k for m in (1, 2, 5) if lo <= m * 10 ** k <= hi]
        k += 1
    return out

def plot(rows, slo, path):
    """Latency percentiles (log axis, so 1 ms and 1 s both read) against throughput, and below it
    the error rate of each step (the share of answers that were not 200)."""
    import math
    w, h, l, r_, top, mid, b = 680, 460, 64, 24, 30, 300, 40
    xt = nice_ticks(max([r["throughput"] for r in rows] or [1]))
    xmax = xt[-1] or 1
    lats = [v for r in rows for v in (r["p50"], r["p90"], r["p99"]) if v > 0] + [slo]
    lo = 10 ** math.floor(math.log10(min(lats))) if lats else 0.1
    hi = 10 ** math.ceil(math.log10(max(lats))) if lats else 1000
    X = lambda v: l + (w - l - r_) * v / xmax
    Y = lambda v: mid - (mid - top) * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo) or 1)
    # The error-rate panel: 0 at eb, its top (a round share above the worst step's) at et.
    eb, et = h - b, mid + 50
    etop = nice_ticks(max([1 - r["success"] for r in rows] + [0.01]), 2)[-1]
    E = lambda share: eb - (eb - et) * share / etop
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{l}" y="18" font-size="13" font-weight="bold">Latency and errors against throughput</text>',
           f'<line x1="{l}" y1="{mid}" x2="{w-r_}" y2="{mid}" stroke="#333"/><line x1="{l}" y1="{top}" x2="{l}" y2="{mid}" stroke="#333"/>',
           f'<line x1="{l}" y1="{eb}" x2="{w-r_}" y2="{eb}" stroke="#333"/><line x1="{l}" y1="{et}" x2="{l}" y2="{eb}" stroke="#333"/>',
           f'<text x="{(w+l)/2}" y="{h-8}" text-anchor="middle">throughput (successful requests/s)</text>',
           f'<text x="14" y="{(mid+top)/2}" transform="rotate(-90 14 {(mid+top)/2})" text-anchor="middle">latency (ms, log scale)</text>',
           f'<text x="14" y="{(eb+et)/2}" transform="rotate(-90 14 {(eb+et)/2})" text-anchor="middle">errors</text>',
           f'<line x1="{l}" y1="{Y(slo):.1f}" x2="{w-r_}" y2="{Y(slo):.1f}" stroke="#c00" stroke-dasharray="5,3"/>',
           f'<text x="{w-r_-2}" y="{Y(slo)-4:.1f}" fill="#c00" text-anchor="end">SLO {slo:g} ms (P90)</text>']
    for v in xt:
        svg.append(f'<line x1="{X(v):.1f}" y1="{eb}" x2="{X(v):.1f}" y2="{eb+4}" stroke="#333"/>')
        svg.append(f'<text x="{X(v):.1f}" y="{eb+15}" text-anchor="middle">{v:g}</text>')
    for v in log_ticks(lo, hi):
        svg.append(f'<line x1="{l}" y1="{Y(v):.1f}" x2="{w-r_}" y2="{Y(v):.1f}" stroke="#eee"/>')
        svg.append(f'<text x="{l-4}" y="{Y(v)+4:.1f}" text-anchor="end">{v:g}</text>')
    for share in nice_ticks(etop, 2):
        svg.append(f'<text x="{l-4}" y="{E(share)+4:.1f}" text-anchor="end">{share:.0%}</text>')
    for key, color in (("p50", "#2a7"), ("p90", "#06c"), ("p99", "#a3a")):
        pts = " ".join(f"{X(r['throughput']):.1f},{Y(r[key]):.1f}" for r in rows)
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for r in rows:
            svg.append(f'<circle cx="{X(r["throughput"]):.1f}" cy="{Y(r[key]):.1f}" r="2.5" fill="{color}"><title>{r["step"]}: {key} {r[key]:.2f} ms</title></circle>')
        svg.append(f'<text x="{l + 10}" y="{44 + 14 * ("p50","p90","p99").index(key)}" fill="{color}">{key.upper()}</text>')
    for i, r in enumerate(rows):
        errors = 1 - r["success"]
        x = X(r["throughput"])
        svg.append(f'<rect x="{x-4:.1f}" y="{E(errors):.1f}" width="8" height="{eb-E(errors):.1f}" fill="#d55">'
                   f'<title>{r["step"]}: {errors:.1%} errors</title></rect>')
        # Labels of steps at close throughputs take turns in four rows.
        svg.append(f'<text x="{x:.1f}" y="{et - 5 - 11 * (i % 4):.1f}" text-anchor="middle" fill="#a22">{r["step"]}: {errors:.1%}</text>')
    svg.append("</svg>")
    open(path, "w").write("\n".join(svg) + "\n")

def main():
    a = argparse.ArgumentParser()
    a.add_argument("--plan"); a.add_argument("--dir"); a.add_argument("--slo-ms", type=float); a.add_argument("--client-cpu-max", type=float)
    a = a.parse_args()
    plan = json.load(open(a.plan))
    cpus = os.cpu_count() or 1
    seq, rnd = curl_stats(os.path.join(a.dir, "curl-sequential.txt")), curl_stats(os.path.join(a.dir, "curl-random.txt"))
    rows = steps(a.dir, cpus)
    for r in rows:
        r["client_bound"] = r["client_cpu"] > a.client_cpu_max
        r["within_slo"] = r["p90"] <= a.slo_ms and r["success"] >= 0.99
    best = max((r for r in rows if r["within_slo"] and not r["client_bound"]), key=lambda r: r["throughput"], default=None)
    types = Counter(n["instance_type"] for n in plan["nodes"])
    nodes = ", ".join(f"{c} × {t}" for t, c in sorted(types.items()))
    models = sum(len(n["models"]) for n in plan["nodes"])
    md = [f"# Load test: {models} models on {nodes}", "",
          "| nodes × type | models | sequential P50 | random P50 | throughput (P90 ≤ SLO) | P90 at that load | $/h |", "|---|---:|---:|---:|---:|---:|---:|",
          f"| {nodes} | {models} | {seq['p50_ms']:.1f} ms | {rnd['p50_ms']:.1f} ms | {best['throughput']:.0f} req/s ({best['step']}) | {best['p90']:.1f} ms | ${plan['cost_per_hour']:.3f} |" if best else
          f"| {nodes} | {models} | {seq['p50_ms']:.1f} ms | {rnd['p50_ms']:.1f} ms | no step within the SLO | — | ${plan['cost_per_hour']:.3f} |",
          "", f"Curl tests: sequential {seq['ok']}/{seq['requests']} OK (P50 {seq['p50_ms']:.1f} ms, P90 {seq['p90_ms']:.1f} ms); "
          f"random order {rnd['ok']}/{rnd['requests']} OK (P50 {rnd['p50_ms']:.1f} ms, P90 {rnd['p90_ms']:.1f} ms)."
          + (f" No answer from the route of: {', '.join(seq['unreachable'])}." if seq["unreachable"] else ""), "",
          f"Sweep (SLO: P90 ≤ {a.slo_ms:g} ms with ≥ 99% success; steps where the client used more than {a.client_cpu_max:.0%} of the machine's CPU are client-bound and not counted):", "",
          "| step | throughput req/s | success | P50 ms | P90 ms | P95 ms | P99 ms | status codes | client CPU | verdict |", "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        verdict = "client-bound: not reported" if r["client_bound"] else ("within SLO" if r["within_slo"] else "over SLO")
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["codes"].items()))
        md.append(f"| {r['step']} | {r['throughput']:.1f} | {r['success']:.1%} | {r['p50']:.1f} | {r['p90']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {codes} | {r['client_cpu']:.0%} | {verdict} |")
    open(os.path.join(a.dir, "report.md"), "w").write("\n".join(md) + "\n")
    plot([r for r in rows if not r["client_bound"]] or rows, a.slo_ms, os.path.join(a.dir, "plot.svg"))
    json.dump({"plan": {"nodes": dict(types), "models": models, "cost_per_hour": plan["cost_per_hour"]}, "curl": {"sequential": seq, "random": rnd},
               "steps": rows, "best": best, "slo_ms": a.slo_ms}, open(os.path.join(a.dir, "report.json"), "w"), indent=1)
    print("\n".join(md))

main()
