-- GET /v1/entitlements?user_id=u<N>&tenant_id=t<N>&feature=<feature> with a service JWT: a check
-- in a tenant, which asks for three subjects (the user, the membership and the tenant). The
-- seeded users hold their plan personally; their memberships and tenants were never billed, as
-- most are in a product whose users work in tenants.
local feature = os.getenv("BENCH_FEATURE") or "export"
local headers = nil

function make_request()
  if headers == nil then
    headers = { ["Authorization"] = "Bearer " .. token }
  end
  local id = random_id()
  return wrk.format("GET", "/v1/entitlements?user_id=u" .. id .. "&tenant_id=t" .. id
    .. "&feature=" .. feature, headers)
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
