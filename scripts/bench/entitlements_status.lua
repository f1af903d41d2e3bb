-- GET /v1/entitlements?user_id=u<N> with a service JWT: the full status (plan, access, period,
-- quotas with what is used), not one feature's verdict.
local headers = nil

function make_request()
  if headers == nil then
    headers = { ["Authorization"] = "Bearer " .. token }
  end
  return wrk.format("GET", "/v1/entitlements?user_id=u" .. random_id(), headers)
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
