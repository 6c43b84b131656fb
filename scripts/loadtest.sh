#!/usr/bin/env bash
# The load test of a deployed plan, like the reference's:
#   scripts/loadtest.sh [--routes FILE] [--out DIR] [--steps "1 2 4 8 16"] [--rates "50 100 200"]
#                       [--open-loop] [--duration SECS] [--slo-ms 100] [--order random|zipf]
#                       [--client-cpu-max 0.5] PLAN
#  1. curl tests: one request to every model, sequentially and in random order (best-case latency)
#  2. a sweep: vegeta at each --rates step (open loop) when vegeta is installed; else with
#     --open-loop `stowage attack --rate` at each --rates step (open loop, Poisson arrivals,
#     latency from each request's scheduled time), else `stowage attack` at each --steps
#     concurrency (closed loop: it slows down with the server, so it hides queueing)
#  3. report: DIR/report.md (table like the reference's), DIR/plot.svg, DIR/report.json; the highest
#     step whose P90 stays under the SLO; steps where the client used more than --client-cpu-max of
#     the machine are marked client-bound and never reported as the server's capacity.
# Routes come from scripts/deploy.sh (default out/deploy/routes.json). Paths are read from the
# caller's folder; a route that does not answer is reported and the run goes on.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
routes=$root/out/deploy/routes.json
out=$root/out/loadtest
steps="1 2 4 8 16"
rates="50 100 200 400"
duration=10
slo=100
order=random
cpu_max=0.5
open_loop=false
plan=""
while (($#)); do
  case "$1" in
    --routes) routes=$(from_caller "$2"); shift 2 ;;
    --out) out=$(from_caller "$2"); shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --slo-ms) slo=$2; shift 2 ;;
    --order) order=$2; shift 2 ;;
    --client-cpu-max) cpu_max=$2; shift 2 ;;
    --open-loop) open_loop=true; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) refuse "unknown option $1" ;;
    *) [ -z "$plan" ] || refuse "one plan at a time (got $plan and $1)"; plan=$(from_caller "$1"); shift ;;
  esac
done
if [ -z "$plan" ] || [ ! -f "$plan" ] || [ ! -f "$routes" ]; then
  echo "loadtest: give a plan.json and its routes (scripts/deploy.sh writes $routes)" >&2
  exit 2
fi
stowage=$(release_binary)
cd "$root"
rm -rf "$out"
mkdir -p "$out/steps"
body='{"inputs": "I love this product, the delivery was fast"}'

echo "loadtest: curl tests" >&2
python3 -c 'import json,sys; [print(m, u) for m, u in sorted(json.load(open(sys.argv[1])).items())]' "$routes" > "$out/models.txt"
for mode in sequential random; do
  list=$out/models.txt
  if [ "$mode" = random ]; then shuf --random-source=<(yes) "$out/models.txt" > "$out/models-random.txt"; list=$out/models-random.txt; fi
  while read -r model url; do
    # A route that does not answer is a 000 in the table (curl's exit code is not the run's).
    curl -s -o /dev/null -w "$model %{http_code} %{time_total}\n" -H 'Content-Type: application/json' -d "$body" \
      "$url/predictions/$model" || true
  done < "$list" > "$out/curl-$mode.txt"
done
dead=$(awk '$2 == "000" {print $1}' "$out/curl-sequential.txt" | sort -u | tr '\n' ' ')
[ -z "$dead" ] || echo "loadtest: no answer from the route of: $dead(they count as errors in the sweep)" >&2

"$stowage" targets --plan "$plan" --routes "$routes" --requests 20000 --order "$order" > "$out/targets.json"
if command -v vegeta > /dev/null; then
  for r in $rates; do
    echo "loadtest: vegeta at $r req/s for ${duration}s" >&2
    /usr/bin/time -f '%U %S %e' -o "$out/steps/rate-$r.cpu" \
      vegeta attack -format=json -targets="$out/targets.json" -rate="$r" -duration="${duration}s" > "$out/steps/rate-$r.bin"
    vegeta report -type=json < "$out/steps/rate-$r.bin" > "$out/steps/rate-$r.vegeta.json"
  done
elif $open_loop; then
  for r in $rates; do
    echo "loadtest: stowage attack, open loop at $r req/s for ${duration}s" >&2
    "$stowage" attack --targets "$out/targets.json" --rate "$r" --arrivals poisson --duration "$duration" \
      --vegeta-results "$out/steps/open-$r.results.csv" > "$out/steps/open-$r.json"
  done
else
  for c in $steps; do
    echo "loadtest: stowage attack, concurrency $c for ${duration}s" >&2
    # Also vegeta's CSV results: `vegeta report` and `vegeta plot` read them where vegeta is.
    "$stowage" attack --targets "$out/targets.json" --concurrency "$c" --duration "$duration" \
      --vegeta-results "$out/steps/c-$c.results.csv" > "$out/steps/c-$c.json"
  done
fi
python3 scripts/loadtest_report.py --plan "$plan" --dir "$out" --slo-ms "$slo" --client-cpu-max "$cpu_max"
echo "loadtest: wrote $out/report.md, $out/plot.svg and $out/report.json" >&2
