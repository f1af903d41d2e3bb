-- Warms a replica's snapshot cache: every thread walks its own stride of the ids 1..N in order
-- (thread k asks for k, k + threads, ...), each a check in a tenant, so that the user, the
-- membership and the tenant of every seeded id are read once. Run long enough to pass N.
local feature = os.getenv("BENCH_FEATURE") or "export"
local threads_n = tonumber(os.getenv("BENCH_THREADS") or "2")
local headers = nil

function make_request()
  if headers == nil then
    headers = { ["Authorization"] = "Bearer " .. token }
  end
  local id = ((seq - 1) * threads_n + (thread_id or 1) - 1) % subjects + 1
  return wrk.format("GET", "/v1/entitlements?user_id=u" .. id .. "&tenant_id=t" .. id
    .. "&feature=" .. feature, headers)
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
