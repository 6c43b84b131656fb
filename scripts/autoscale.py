#!/usr/bin/env python3
"""The local runtime's autoscaler (scripts/deploy.sh --runtime local): what KEDA does for the nodes
that scale to zero in a cluster, on the same metrics.

  autoscale.py DIR

Every 0.2 s it reads DIR/nodes.tsv (node, pid, URL, gRPC address); a node whose pid is "-" scales to
zero and is this process's to run, with the command line deploy.sh left in DIR/nodes/<node>/argv
(NUL-separated). It reads the gateway's /metrics (DIR/gateway.url):

- a node that is not running and has requests held for it at the gateway
  (stowage_gateway_waiting_requests, or a hold that ended since the last look:
  stowage_gateway_hold_duration_seconds_count) is started: KEDA's activation;
- a running node is active while requests wait for it, are in flight on it
  (stowage_inflight_requests) or were answered since the last look (stowage_requests_total); one
  idle for STOWAGE_IDLE_SECONDS (default 60: KEDA's cooldownPeriod) gets SIGTERM and drains;
  requests that come meanwhile are held at the gateway, and start it again once it has exited.

Its pid is in DIR/autoscaler.pid, the running nodes' in DIR/nodes/<node>/pid; what it does goes to
DIR/logs/autoscaler.log, one line each. On SIGTERM it stops the nodes it started (SIGKILL after
STOWAGE_STOP_TIMEOUT seconds, default 40) and exits.
"""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

EVERY = 0.2
SERIES = re.compile(r'^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$')


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def scrape(url):
    """{(name, labels): value} of a /metrics page; {} when it cannot be read."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(series, name, node=None):
    label = None if node is None else f'node="{node}"'
    return sum(v for (n, labels), v in series.items() if n == name and (label is None or label in labels))


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return ") Z " not in open(f"/proc/{pid}/stat").read()
    except OSError:
        return False


class Node:
    def __init__(self, out, name, url):
        self.out, self.name, self.url = out, name, url
        self.proc = None
        self.draining = False
        self.holds = None
        self.answered = None
        self.active = time.monotonic()

    @property
    def address(self):
        # The gateway names a route map's node by its address.
        return self.url.split("://", 1)[-1]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, why):
        folder = os.path.join(self.out, "nodes", self.name)
        argv = open(os.path.join(folder, "argv"), "rb").read().split(b"\0")[:-1]
        logfile = open(os.path.join(self.out, "logs", f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile, start_new_session=True)
        with open(os.path.join(folder, "pid"), "w") as f:
            f.write(f"{self.proc.pid}\n")
        self.active = time.monotonic()
        self.answered = None
        log(f"start {self.name} (pid {self.proc.pid}): {why}")

    def stop(self, why):
        """SIGTERM: the node drains and exits on its own (`reap` notices)."""
        if self.running() and not self.draining:
            log(f"stop {self.name} (pid {self.proc.pid}): {why}")
            self.proc.terminate()
            self.draining = True

    def reap(self):
        """Forgets a node process that has exited; True when none runs."""
        if self.proc is None:
            return True
        if self.proc.poll() is None:
            return False
        if not self.draining:
            log(f"{self.name} exited ({self.proc.returncode})")
        try:
            os.remove(os.path.join(self.out, "nodes", self.name, "pid"))
        except OSError:
            pass
        self.proc, self.draining = None, False
        return True


def managed(out):
    """{node: url} of the nodes in DIR/nodes.tsv that scale to zero."""
    nodes = {}
    try:
        lines = open(os.path.join(out, "nodes.tsv")).read().splitlines()
    except OSError:
        return nodes
    for line in lines:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "-":
            nodes[fields[0]] = fields[2]
    return nodes


def main(out):
    idle = float(os.environ.get("STOWAGE_IDLE_SECONDS", "60"))
    nodes = {}
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    log(f"autoscaler: idle time {idle:g} s")
    while not stopping:
        wanted = managed(out)
        for name in list(nodes):
            if name not in wanted or nodes[name].url != wanted[name]:
                nodes[name].stop("no longer a node that scales to zero here")
                if nodes[name].reap():
                    del nodes[name]
        for name, url in wanted.items():
            nodes.setdefault(name, Node(out, name, url))
        try:
            gateway_url = open(os.path.join(out, "gateway.url")).read().strip()
        except OSError:
            gateway_url = None
        gateway = scrape(gateway_url) if gateway_url else {}
        now = time.monotonic()
        for n in nodes.values():
            waiting = total(gateway, "stowage_gateway_waiting_requests", n.address)
            holds = total(gateway, "stowage_gateway_hold_duration_seconds_count", n.address)
            held = waiting > 0 or (n.holds is not None and holds > n.holds)
            n.holds = holds
            if n.reap():
                if held:
                    n.start(f"{waiting:g} request(s) waiting at the gateway")
                continue
            if n.draining:
                continue
            series = scrape(n.url)
            answered = total(series, "stowage_requests_total")
            busy = total(series, "stowage_inflight_requests") > 0
            if held or busy or (n.answered is not None and answered > n.answered):
                n.active = now
            if series:
                n.answered = answered
            if now - n.active >= idle:
                n.stop(f"idle for {idle:g} s")
        time.sleep(EVERY)
    for n in nodes.values():
        n.stop("the autoscaler stops")
    deadline = time.monotonic() + float(os.environ.get("STOWAGE_STOP_TIMEOUT", "40"))
    while not all(n.reap() for n in nodes.values()):
        if time.monotonic() > deadline:
            for n in nodes.values():
                if n.proc is not None:
                    n.proc.kill()
        time.sleep(0.1)
    log("autoscaler stopped")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
