#!/usr/bin/env bash
# Contract check: the OpenAPI document that Tollgate serves is exactly what it does.
#
# Starts Tollgate on SQLite with the test suite's fake Stripe and fake identity provider
# (`examples/contract_env.rs`), then runs schemathesis against the served /openapi.json twice,
# once with an end user's token and once with a service token holding every scope, with every
# check enabled (see scripts/contract/schemathesis.toml). Fails on any failure of any check.
#
#   bash scripts/contract.sh            # installs schemathesis into target/contract-venv
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
VENV="target/contract-venv"
WORK="$(mktemp -d)"

if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  # A fresh one: a venv left by a checkout at another path has scripts that point there.
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

echo "== building the contract target"
cargo build --locked --quiet --example contract_env
target/debug/examples/contract_env "$WORK" >"$WORK/target.log" 2>&1 &
TARGET_PID=$!
trap 'kill "$TARGET_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  [ -f "$WORK/address" ] && break
  kill -0 "$TARGET_PID" 2>/dev/null || { cat "$WORK/target.log"; exit 1; }
  sleep 0.2
done
[ -f "$WORK/address" ] || { echo "the contract target did not start" >&2; cat "$WORK/target.log"; exit 1; }
ADDRESS="$(cat "$WORK/address")"

status=0
for who in user service; do
  echo "== schemathesis with the ${who} token against ${ADDRESS}/openapi.json"
  if ! "$VENV/bin/st" --config-file scripts/contract/schemathesis.toml --no-color run \
      "${ADDRESS}/openapi.json" \
      --header "Authorization: Bearer $(cat "$WORK/${who}_token")"; then
    status=1
  fi
done
exit "$status"
