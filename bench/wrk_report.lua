-- wrk script for the benchmark: adds the API-key header when BENCH_API_KEY is set (the key
-- travels in the environment, never on a command line), and prints one machine-readable line.
local key = os.getenv("BENCH_API_KEY")
if key ~= nil and key ~= "" then
    wrk.headers["X-API-Key"] = key
end

done = function(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
        summary.requests, summary.duration, errors.status,
        errors.connect + errors.read + errors.write + errors.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
