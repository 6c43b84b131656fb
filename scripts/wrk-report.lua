-- wrk script for scripts/bench-serve.sh: POSTs $WRK_BODY as JSON and, when done, prints one JSON
-- line with the request rate, errors (sockets, timeouts, non-2xx) and latency percentiles in
-- milliseconds to the microsecond (wrk's own summary rounds them to two digits).
-- With WRK_MODELS (ids, comma-separated), each request goes to one of them at random:
-- /predictions/<id> on the URL's host.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY")

local models = {}
for id in string.gmatch(os.getenv("WRK_MODELS") or "", "[^,]+") do
  models[#models + 1] = id
end

if #models > 0 then
  request = function()
    return wrk.format(nil, "/predictions/" .. models[math.random(#models)])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "rps": %.3f, "errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.mean / 1000))
end
