#!/usr/bin/env bash
# The README's walkthrough ("First checkout in five minutes"), run as a newcomer runs it: the
# fake Stripe example, Tollgate in development-token mode against it, a development token, a
# checkout, paying it by opening its URL, verify, and the status. It fails if any step answers
# something else than the README shows. CI runs it after the tests.
#
# The commands are the README's; only the database and the development key live in a
# temporary directory (so that a developer's data/ is left alone), and the ports can be moved
# with TOLLGATE_PORT and FAKE_STRIPE_PORT when 8080 or 12111 is taken.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${TOLLGATE_PORT:-8080}"
FAKE_PORT="${FAKE_STRIPE_PORT:-12111}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "walkthrough: $*" >&2
  for log in "$work"/*.log; do echo "--- $log" >&2; tail -n 20 "$log" >&2; done
  exit 1
}
wait_for() {
  for _ in $(seq 1 120); do
    if curl -fs "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  fail "$1 did not answer"
}

export TOLLGATE_DATABASE__URL="sqlite://$work/tollgate.db"
export TOLLGATE_DEV__KEY_FILE="$work/dev-token.key"

# Compile first, without a time limit, so that the waits below measure start-up and not a
# build (on a fresh machine the README's `cargo run` compiles before it serves). Each as it is
# run below: built together, the example's dev-dependencies could leave the service built
# with other features than `cargo run` asks for, and it would compile again inside the wait.
cargo build --locked -q --bin tollgate
cargo build --locked -q --example fake_stripe

# Terminal 1: the fake Stripe.
cargo run -q --example fake_stripe -- "$FAKE_PORT" >"$work/fake_stripe.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 120); do grep -q "listening" "$work/fake_stripe.log" && break; sleep 0.5; done
grep -q "listening" "$work/fake_stripe.log" || fail "the fake Stripe did not start"

# Terminal 2: Tollgate against it, accepting development tokens.
(
  export TOLLGATE_STRIPE__API_BASE="http://127.0.0.1:$FAKE_PORT" STRIPE_SECRET_KEY=sk_test_fake STRIPE_WEBHOOK_SECRET=whsec_fake
  export STRIPE_MONTHLY_PRICE_ID=price_pro_monthly STRIPE_YEARLY_PRICE_ID=price_pro_yearly STRIPE_LIFETIME_PRICE_ID=price_lifetime
  TOLLGATE_DEV__TOKENS=true TOLLGATE_SERVER__PORT="$PORT" exec cargo run -q
) >"$work/tollgate.log" 2>&1 &
pids+=($!)
wait_for "http://localhost:$PORT/readyz"

# Terminal 3: a token, a checkout, paying it, verify, status.
USER_JWT=$(cargo run -q -- dev-token --sub alice)
checkout=$(curl -s -X POST "localhost:$PORT/v1/checkout" -H "Authorization: Bearer $USER_JWT" \
  -H 'Content-Type: application/json' -d '{"plan":"pro","interval":"month"}')
echo "checkout: $checkout"
session=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["session_id"])' <<<"$checkout") \
  || fail "no session_id in the checkout answer"
url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' <<<"$checkout")
[[ "$url" == "http://127.0.0.1:$FAKE_PORT/pay/$session" ]] || fail "unexpected checkout url $url"
location=$(curl -s -o /dev/null -w '%{redirect_url}' "$url")
echo "paid, redirected to: $location"
[[ "$location" == *"session_id=$session"* ]] || fail "paying did not redirect to the success URL"
verify=$(curl -s -H "Authorization: Bearer $USER_JWT" "localhost:$PORT/v1/checkout/verify?session_id=$session")
echo "verify: $verify"
status=$(curl -s -H "Authorization: Bearer $USER_JWT" "localhost:$PORT/v1/status")
echo "status: $status"
python3 - "$status" <<'PY' || fail "the status does not show the paid plan"
import json, sys
s = json.loads(sys.argv[1])
assert (s["plan"], s["access"], s["reason"], s["status"]) == ("pro", True, "active", "active"), s
PY
echo "walkthrough: ok"
