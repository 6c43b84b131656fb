#!/usr/bin/env bash
# What exporting traces costs per request: the release build served without --otlp-endpoint (A)
# and with it (B), every request's spans sent to an OTLP sink on loopback (a Python HTTP server
# that takes and counts the exports), through scripts/bench-ab.sh (node on CPU 0, wrk on CPU 1,
# c1 and c16, ROUNDS rounds alternating). The sink runs on CPU 1 beside wrk.
#   scripts/bench-otlp.sh [SECONDS] [ROUNDS] [PRESET]   e.g. scripts/bench-otlp.sh 6 5 tiny
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
positional_only "$@"
cd "$root"
bin=$(release_binary)
work=$(mktemp -d)
trap 'kill "${sink:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 python3 - "$port" "$work/sink.txt" <<'PY' &
import http.server, sys
posts = [0, 0]
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        posts[0] += 1; posts[1] += n
        open(sys.argv[2], "w").write(f"{posts[0]} exports, {posts[1]} bytes\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
sink=$!
printf '#!/bin/sh\nexec %q --otlp-endpoint http://127.0.0.1:%s "$@"\n' "$bin" "$port" > "$work/with-otlp"
chmod +x "$work/with-otlp"
echo "A: $bin; B: $bin --otlp-endpoint (sink on 127.0.0.1:$port)"
scripts/bench-ab.sh "$bin" "$work/with-otlp" "$@"
echo "sink: $(cat "$work/sink.txt" 2>/dev/null || echo 'nothing received')"
