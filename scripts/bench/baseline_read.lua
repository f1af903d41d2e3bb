-- Baseline: GET /read?id=N, one primary-key SELECT (examples/bench_baseline.rs).
function make_request()
  return wrk.format("GET", "/read?id=" .. random_id())
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
