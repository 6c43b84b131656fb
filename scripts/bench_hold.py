#!/usr/bin/env python3
"""Does a plan hold? (BENCHMARKS.md, "Plans that hold"; run by scripts/bench-plans-hold.sh.)

20 models of several architectures and sizes — the 8 real exports of tests/fixtures/exports
(BERT, DistilBERT, MPNet, XLM-R), 6 synthetic tiny and 2 mini BERTs, and 4 copies of an int8
MiniLM-style model — with Zipf-skewed traffic (exponent 1.1, ranks shuffled), on one instance
type of one vCPU, with a latency target of a P90 of 100 ms. The traffic is scaled up until the
planner needs a second node; the one-node plan at the largest traffic it accepts is served by
`stowage serve` with default flags, pinned to CPU 0, and `stowage verify` (open loop, Poisson,
pinned to CPU 1) sends it 0.5, 1.0 and 1.25 × its planned peak.

    python3 scripts/bench_hold.py WORK_DIR STOWAGE [--before OLD_STOWAGE] [--seconds N]

With --before, the same with OLD_STOWAGE's profile (engine calls alone, at 16 tokens) and
planner (utilization limit only), its plan served by STOWAGE's node, for the before/after rows.
"""
import argparse
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import urllib.request

from benchlib import by_label, free_port

ROOT = pathlib.Path(__file__).resolve().parent.parent
ZIPF = 1.1
TOKENS = 16


def sh(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def models(work: pathlib.Path, stowage: str, python: str):
    """Model folders: name -> folder with model.onnx, tokenizer.json, config.json."""
    out = {}
    for d in sorted((ROOT / "tests/fixtures/exports").iterdir()):
        if (d / "model.onnx").exists():
            out[d.name] = d
    synth = work / "synth"
    if not (synth / "mini-0002/model.onnx").exists():
        sh(stowage, "synth", "--out", synth / "tiny", "--count", "6", "--preset", "tiny", "--prefix", "tiny")
        sh(stowage, "synth", "--out", synth / "mini", "--count", "2", "--preset", "mini", "--prefix", "mini")
        sh(python, ROOT / "scripts/quantize.py", synth / "mini/mini-0001", synth / "int8")
    for kind in ("tiny", "mini"):
        for d in sorted((synth / kind).iterdir()):
            if (d / "model.onnx").exists():
                out[d.name] = d
    for i in range(1, 5):
        out[f"int8-{i:02d}"] = synth / "int8"
    return out


def catalog_text(folders, scale, ranks, slo=True, extra_fields=True, cmax=0.83):
    h = sum(1 / r ** ZIPF for r in range(1, len(folders) + 1))
    s = f"[limits]\nmax_memory = 0.90\nmax_utilization = {cmax}\n"
    if extra_fields:
        s += f"request_tokens = {TOKENS}\n"
        if slo:
            s += "slo_p90_ms = 100\n"
    s += '\n[instance_types."c5.1cpu"]\nfamily = "c5"\nprice_per_hour = 0.0425\nmemory_gib = 2\ncompute = 1\n'
    for name, d in folders.items():
        rps = scale * (1 / ranks[name] ** ZIPF) / h
        s += f'\n[[models]]\nid = "{name}"\nartifact = "{d / "model.onnx"}"\ntokenizer = "{d / "tokenizer.json"}"\n'
        s += f'config = "{d / "config.json"}"\npeak_rps = {rps:.6f}\nresidency = "hot"\n'
        if not extra_fields:
            # The earlier profile refused a catalog without footprints: give it placeholders.
            s += "[models.footprint.c5]\nmemory_mib = 1\nservice_ms = 1\n"
    return s


def with_scale(measured: str, scale, ranks, h):
    """A measured catalog with its peak_rps lines set for `scale`."""
    out, name = [], None
    for line in measured.splitlines():
        m = re.match(r'id = "(.*)"', line)
        if m:
            name = m.group(1)
        if line.startswith("peak_rps = ") and name:
            line = f"peak_rps = {scale * (1 / ranks[name] ** ZIPF) / h:.6f}"
        out.append(line)
    return "\n".join(out) + "\n"


def plan_nodes(stowage, catalog: pathlib.Path, plan: pathlib.Path):
    sh(stowage, "plan", "--catalog", catalog, "--out", plan)
    return json.loads(plan.read_text())


def largest_one_node(stowage, measured, ranks, h, work, tag):
    """The largest total traffic (requests/s) the planner puts on one node, to 1 %."""
    lo, hi = 1.0, 4000.0
    cat, plan = work / f"{tag}.toml", work / f"{tag}.json"
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        cat.write_text(with_scale(measured, mid, ranks, h))
        if len(plan_nodes(stowage, cat, plan)["nodes"]) == 1:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.005:
            break
    cat.write_text(with_scale(measured, lo, ranks, h))
    p = plan_nodes(stowage, cat, plan)
    return lo, hi, cat, plan, p


def refusals(port):
    """The node's refusals so far, by reason (stowage_rejected_total)."""
    return {k: int(n) for k, n in by_label(f"http://127.0.0.1:{port}", "stowage_rejected_total", "reason").items()}


def slow_spell(spell):
    """A slow spell of the node's CPU, as this machine has them: `start,seconds` into a pass, a
    busy loop on CPU 0 takes half of it."""
    start, length = spell
    time.sleep(start)
    subprocess.run(["taskset", "-c", "0", "timeout", str(length), "sh", "-c", "while :; do :; done"])


def serve_and_verify(stowage, cat, plan, node, factors, seconds, out: pathlib.Path, env, serve_args=(), spell=None):
    port = free_port()
    log = open(out / "node.log", "w")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", stowage, "serve", "--plan", plan, "--catalog", cat, "--node", node,
         "--host", "127.0.0.1", "--port", str(port), "--no-watch", *serve_args],
        stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        for _ in range(1200):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2).status == 200:
                    break
            except Exception:
                time.sleep(0.25)
                if proc.poll() is not None:
                    raise SystemExit(f"the node exited: see {out / 'node.log'}")
        results = {}
        for f in factors:
            d = out / f"verify-{f}"
            before = refusals(port)
            # verify exits 1 when the node misses its target: that is a result here, not a failure.
            v = subprocess.Popen([str(c) for c in ("taskset", "-c", "1", stowage, "verify", "--plan", plan, "--catalog", cat,
                                  "--url", f"http://127.0.0.1:{port}", "--factor", f, "--duration", seconds,
                                  "--slo-ms", "100", "--out", d)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            if spell:
                slow_spell(spell)
            _, stderr = v.communicate()
            if v.returncode not in (0, 1) or not (d / "verify.json").is_file():
                raise SystemExit(f"verify failed ({v.returncode}): {stderr}")
            results[f] = json.loads((d / "verify.json").read_text())["nodes"][0]
            after = refusals(port)
            results[f]["refused"] = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
        return results
    finally:
        proc.terminate()
        proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("stowage")
    ap.add_argument("--before")
    ap.add_argument("--seconds", type=float, default=45)
    ap.add_argument("--limits", default="0.83", help="max_utilization values to run, comma-separated (0.83: the default)")
    ap.add_argument("--quantile", help="stowage profile --capacity-quantile (default: the profile's own)")
    ap.add_argument("--spell", help="START,SECONDS: a busy loop takes half the node's CPU that far into each pass")
    ap.add_argument("--serve-args", default="", help="more flags for the node's stowage serve (default: none)")
    ap.add_argument("--factors", default="0.5,1.0,1.25", help="multiples of the planned peak to send, comma-separated")
    a = ap.parse_args()
    work = pathlib.Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    env = dict(os.environ)
    folders = models(work, a.stowage, python)
    import random
    rng = random.Random(7)
    order = list(folders)
    rng.shuffle(order)
    ranks = {name: i + 1 for i, name in enumerate(order)}
    h = sum(1 / r ** ZIPF for r in range(1, len(folders) + 1))
    rows = []
    factors = [float(f) for f in a.factors.split(",")]
    limits = [float(x) for x in a.limits.split(",")]
    runs = [("after" if x == 0.83 else f"after-{x}", a.stowage, True, x) for x in limits]
    runs += [("before", a.before, False, 0.83)] if a.before else []
    for tag, binary, new, cmax in runs:
        d = work / tag
        d.mkdir(exist_ok=True)
        cat = d / "measured.toml"
        cat.write_text(catalog_text(folders, 100.0, ranks, slo=new, extra_fields=new, cmax=cmax))
        t0 = time.time()
        if new:
            q = ["--capacity-quantile", a.quantile] if a.quantile else []
            r = sh(binary, "profile", "--catalog", cat, "--family", "c5", "--in-place", *q, env=env)
        else:
            # Today's (before) profile: each engine call alone, at the request's length.
            r = sh(binary, "profile", "--catalog", cat, "--family", "c5", "--tokens", str(TOKENS), "--in-place", env=env)
        (d / "profile.log").write_text(r.stderr)
        profile_s = time.time() - t0
        measured = cat.read_text()
        lo, hi, scat, splan, p = largest_one_node(binary, measured, ranks, h, d, "largest")
        node = p["nodes"][0]
        res = serve_and_verify(a.stowage, scat, splan, node["id"], factors, a.seconds, d, env, a.serve_args.split(),
                               [float(x) for x in a.spell.split(",")] if a.spell else None)
        # The planner's prediction at half the traffic: the plan of that traffic (one node).
        half = d / "half.toml"
        half.write_text(with_scale(measured, lo * 0.5, ranks, h))
        half_plan = plan_nodes(a.stowage if new else binary, half, d / "half.json")
        predicted = {1.0: node.get("predicted"), 0.5: half_plan["nodes"][0].get("predicted")}
        capacity = [ln for ln in r.stderr.splitlines() if " ms saturated (" in ln]
        rows.append({"build": tag, "max_utilization": cmax, "profile": capacity[-1] if capacity else None, "profile_s": profile_s, "one_node_rps": lo, "two_nodes_rps": hi,
                     "utilization": node["usage"]["utilization"], "predicted": predicted, "verify": res})
        print(json.dumps(rows[-1], default=str), flush=True)
    (work / "hold.json").write_text(json.dumps(rows, indent=1, default=str))
    print("| build | max_utilization | largest one-node traffic | plan's utilization | predicted P90 | × peak | offered/s | ok/s | P50 | P90 | P99 | codes | refused by | P90 ≤ 100 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        for f, v in r["verify"].items():
            m = v["measured"]
            lat = m["latency_ms"]
            pred = (r["predicted"].get(float(f)) or {}).get("p90_ms")
            codes = " ".join(f"{k}:{n}" for k, n in m["status_codes"].items())
            refused = " ".join(f"{k}:{n}" for k, n in v.get("refused", {}).items())
            print(f"| {r['build']} | {r['max_utilization']} | {r['one_node_rps']:.1f} req/s | {100 * r['utilization']:.1f} % | "
                  f"{'-' if pred is None else f'{pred:.1f} ms'} | {f} | {v['offered_rps']:.1f} | {m['ok_rps']:.1f} | "
                  f"{lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | {codes} | {refused or '-'} | {'yes' if v['held'] else 'no'} |")


if __name__ == "__main__":
    main()
