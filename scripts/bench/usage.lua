-- POST /v1/usage with a service JWT (scope billing:write): one unit of the bench quota for a
-- random user, with an idempotency key unique per request (run label, thread, sequence).
local quota = os.getenv("BENCH_QUOTA") or "calls"
local headers = nil

function make_request()
  if headers == nil then
    headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
    }
  end
  local body = string.format(
    '{"user_id":"u%d","quota":"%s","amount":1,"idempotency_key":"bench-%s-%d-%d"}',
    random_id(), quota, run_label, thread_id or 0, seq)
  return wrk.format("POST", "/v1/usage", headers, body)
end

dofile((os.getenv("BENCH_LUA_DIR") or "scripts/bench") .. "/common.lua")
