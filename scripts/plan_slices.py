#!/usr/bin/env python3
"""The local runtime's plan files (scripts/deploy.sh --runtime local).

Each node of a local deployment reads its own slice of the plan, DIR/nodes/<node>/plan.json (the
plan with only that node), with the whole catalog; it reloads itself when that file changes.

  plan_slices.py write PLAN DIR [--catalog C --union PREVIOUS]
      writes DIR/nodes/<node>/plan.json for every node of PLAN, each only if its content changed
      (a new file renamed over the old one, as the node's watch expects), and prints one line per
      node: "<node>\t<new|changed|rehashed|same>" (rehashed: only the catalog's sha256 changed). With --union, a node of both plans also keeps the
      models it had in PREVIOUS that catalog C still has: a model moving between nodes is then
      served by both until the routes switch (make before break).
  plan_slices.py routes PLAN NODES_TSV [--grpc]
      prints routes.json: model id -> the URL of its node (NODES_TSV: node, pid, url and gRPC
      address per line); with --grpc, -> {"url": …, "grpc": …} (the gateway's routes), with
      "min_replicas": 0 for a node that scales to zero, and a list of those for a model with
      replicas (routes.json names its first node).
  plan_slices.py wait URL PLAN NODE SECONDS [--union PREVIOUS --catalog C]
      waits until the node at URL serves exactly the models its slice names, none still loading.
  plan_slices.py gateway URL ROUTES SECONDS
      waits until the gateway at URL routes every model as ROUTES (routes.json) says.
"""
import json
import os
import sys
import time
import tomllib
import urllib.request


def load(path):
    with open(path) as f:
        return json.load(f)


def node_models(plan, node, previous=None, catalog=None):
    """The models node serves: its own in plan, and with a previous plan, also those it had there
    that the catalog still has."""
    mine = next((n for n in plan["nodes"] if n["id"] == node), None)
    models = set(mine["models"]) if mine else set()
    if previous is not None and mine is not None:
        known = catalog_ids(catalog)
        before = next((n for n in previous["nodes"] if n["id"] == node), None)
        if before is not None:
            models |= {m for m in before["models"] if m in known}
    return sorted(models)


def catalog_ids(path):
    with open(path, "rb") as f:
        return {m["id"] for m in tomllib.load(f).get("models", [])}


def slice_of(plan, node, models):
    n = dict(next(n for n in plan["nodes"] if n["id"] == node))
    n["models"] = models
    # A model's shares over its replicas' nodes are the whole plan's: a slice's would not add up.
    n.pop("shares", None)
    # Nothing that changes when only other nodes do (solver time, the changes block): a node's
    # file is rewritten only when its own models change.
    solver = {"method": "slice", "seconds": 0.0, "proven_optimal": False, "gap": 0.0}
    return {"format": plan["format"], "catalog_sha256": plan["catalog_sha256"], "cost_per_hour": n["price_per_hour"],
            "lower_bound_per_hour": n["price_per_hour"], "solver": solver, "nodes": [n]}


def flag(args, name):
    if name in args:
        i = args.index(name)
        return args[i + 1]
    return None


def write(args):
    plan, out = load(args[0]), args[1]
    union, catalog = flag(args, "--union"), flag(args, "--catalog")
    previous = load(union) if union else None
    for n in plan["nodes"]:
        folder = os.path.join(out, "nodes", n["id"])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "plan.json")
        text = json.dumps(slice_of(plan, n["id"], node_models(plan, n["id"], previous, catalog)), indent=2) + "\n"
        try:
            old = open(path).read()
        except FileNotFoundError:
            old = None
        if old == text:
            print(f"{n['id']}\tsame")
            continue
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        if old is None:
            print(f"{n['id']}\tnew")
        elif json.loads(old)["nodes"][0]["models"] == json.loads(text)["nodes"][0]["models"]:
            # Only the catalog's hash changed: the node re-reads it and keeps every model.
            print(f"{n['id']}\trehashed")
        else:
            print(f"{n['id']}\tchanged")


def routes(args):
    plan = load(args[0])
    url = {}
    gateway = args[2:] == ["--grpc"]
    zero = {n["id"] for n in plan["nodes"] if n.get("min_replicas", 1) == 0}
    for line in open(args[1]).read().split("\n"):
        if line:
            node, _, u, grpc = line.split("\t")
            url[node] = {"url": u, "grpc": grpc} if gateway else u
            if gateway and node in zero:
                url[node]["min_replicas"] = 0
    # A model with replicas: the gateway gets each of its nodes; the load tests, the first.
    routes = {}
    for n in plan["nodes"]:
        for m in n["models"]:
            routes.setdefault(m, []).append(url[n["id"]])
    print(json.dumps({m: (nodes if gateway and len(nodes) > 1 else nodes[0]) for m, nodes in routes.items()},
                     indent=1, sort_keys=True))


def poll(url, done, seconds, every):
    """GETs url (JSON) until done(body) holds, at most `seconds`; True if it did. The last body
    read (or None) is kept in poll.seen for the message."""
    deadline = time.monotonic() + seconds
    poll.seen = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                poll.seen = json.load(r)
            if done(poll.seen):
                return True
        except OSError:
            pass
        time.sleep(every)
    return False


def wait(args):
    base, plan, node, seconds = args[0], load(args[1]), args[2], float(args[3])
    union, catalog = flag(args, "--union"), flag(args, "--catalog")
    want = node_models(plan, node, load(union) if union else None, catalog)
    states = lambda body: {m["id"]: m["state"] for m in body["models"]}
    if not poll(f"{base}/models", lambda b: sorted(states(b)) == want and "loading" not in states(b).values(), seconds, 0.2):
        seen = states(poll.seen) if poll.seen else None
        print(f"deploy: {node} did not take its new models in {seconds:.0f} s (serves {seen}, wants {want})", file=sys.stderr)
        return 1
    failed = [m for m, s in states(poll.seen).items() if s == "failed"]
    if failed:
        print(f"deploy: {node}: failed to load {', '.join(failed)} (GET {base}/models says why)", file=sys.stderr)
    return 0


def gateway(args):
    base, want, seconds = args[0], load(args[1]), float(args[2])
    routes = lambda body: {m["id"]: m["url"] for m in body["models"]}
    if not poll(f"{base}/models", lambda b: routes(b) == want, seconds, 0.1):
        print(f"deploy: the gateway at {base} did not take the new routes in {seconds:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    sys.exit({"write": write, "routes": routes, "wait": wait, "gateway": gateway}[command](rest) or 0)
