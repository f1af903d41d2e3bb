-- Baseline: POST /update?id=N, one UPDATE ... RETURNING (examples/bench_baseline.rs).
function make_request()
  return wrk.format("POST", "/update?id=" .. random_id())
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
