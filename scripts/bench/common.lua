-- Shared by the wrk scripts of scripts/bench.sh. Each script sets `make_request` and then
-- loads this file. Environment: BENCH_SUBJECTS (how many users/rows exist, ids 1..N),
-- BENCH_TOKEN (service JWT, Tollgate targets only). wrk arguments after `--`: a run label,
-- used to keep idempotency keys unique across runs.

subjects = tonumber(os.getenv("BENCH_SUBJECTS") or "100000")
token = os.getenv("BENCH_TOKEN") or ""

local threads = {}
local counter = 0

-- Runs once per thread in the main Lua state: number the threads.
function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
  table.insert(threads, thread)
end

-- Runs in each thread's own Lua state.
function init(args)
  run_label = args[1] or tostring(os.time())
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919)
  seq = 0
end

function random_id()
  return math.random(1, subjects)
end

function request()
  seq = seq + 1
  return make_request()
end

-- One machine-readable line for bench.sh (latencies in microseconds).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
