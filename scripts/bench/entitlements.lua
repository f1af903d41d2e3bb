-- GET /v1/entitlements?user_id=u<N>&feature=<feature> with a service JWT (scope billing:read).
local feature = os.getenv("BENCH_FEATURE") or "export"
local headers = nil

function make_request()
  if headers == nil then
    headers = { ["Authorization"] = "Bearer " .. token }
  end
  return wrk.format("GET", "/v1/entitlements?user_id=u" .. random_id() .. "&feature=" .. feature,
    headers)
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
