#!/usr/bin/env bash
# Every outbound event delivery the events tests receive, verified with the Standard Webhooks
# project's own Python library (PyPI `standardwebhooks`): a second implementation of the
# specification, independent of the Rust crate Tollgate signs with and of the tests' own
# verifier; and with the Python and Node.js snippets docs/EVENTS.md gives integrators, as they
# would copy them (scripts/webhooks/verify.py; each must also refuse a forged delivery). Runs
# the events tests with TOLLGATE_TEST_DELIVERY_LOG set, then checks each logged delivery at once
# (the verifiers refuse timestamps older than five minutes).
#
#   bash scripts/verify-deliveries.sh     # installs standardwebhooks into target/webhooks-venv
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="1.1.0"
VENV="target/webhooks-venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/pip" show standardwebhooks 2>/dev/null | grep -q "^Version: $VERSION$"; then
  echo "== installing standardwebhooks $VERSION into $VENV"
  # A fresh one: a venv left by a checkout at another path has scripts that point there.
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "standardwebhooks==$VERSION"
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
echo "== the events tests, logging every delivery"
TOLLGATE_TEST_DELIVERY_LOG="$LOG" cargo test --locked --quiet --test api -- events:: >&2
echo "== verifying each delivery with standardwebhooks $VERSION"
"$VENV/bin/python" scripts/webhooks/verify.py "$LOG"
