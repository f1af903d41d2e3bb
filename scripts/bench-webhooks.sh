#!/usr/bin/env bash
# Benchmarks the webhook intake: the same burst of signed Stripe events against Tollgate and
# against supabase's stripe-sync-engine, in one run, each on its own fresh PostgreSQL database,
# and writes the "Webhook intake" section of docs/BENCHMARKS.md (between the markers
# <!-- webhooks:begin --> and <!-- webhooks:end -->, appended when absent; scripts/bench.sh
# keeps that section when it rewrites the rest).
#
# The stream: BENCH_EVENTS `customer.subscription.updated` events for BENCH_CUSTOMERS customers
# (BENCH_EVENTS / BENCH_CUSTOMERS each: waves in which every customer appears once, in an order
# shuffled with a fixed seed), each a real Stripe event (API version 2026-09-30.endive, shaped
# from tests/fixtures/stripe) signed with a Stripe-Signature header as Stripe signs it. Event j
# of a customer sets its subscription's quantity; the last carries the final state. Sent over
# BENCH_CONNECTIONS keep-alive connections by scripts/bench/webhooks/send.mjs (built and signed
# before the clock starts).
#
# Stripe is a local stub (scripts/bench/webhooks/stripe-stub.mjs) that holds every customer
# (its metadata names the subject, user:bench-<i>) with one subscription at the round's final
# state, answers the reads a sync makes and counts every request by path.
#
# Per target, in this order:
#   - stripe-sync-engine (npm @supabase/stripe-sync-engine, BENCH_SYNC_ENGINE_VERSION, installed
#     in the work directory; its migrations run on its database), run as a one-process Node
#     server (scripts/bench/webhooks/sync-engine-server.mjs) whose POST /webhooks calls the
#     library's processWebhook (signature check, then an upsert of the event's object: it
#     trusts the payload and reads nothing from Stripe; its Stripe client points at the stub,
#     which would count any call);
#   - Tollgate (POST /v1/webhooks/stripe; scripts/bench/webhooks/tollgate.toml: [webhooks] at
#     its defaults, Stripe's request budget at Stripe's live-mode limit, 100/s), then a second
#     Tollgate round, the "storm", in
#     which BENCH_FAIL_RATE of the stub's reads answer 500 (chosen with a fixed seed).
# Before its measured round, each target takes one `customer.subscription.created` per customer
# (quantity 1, not measured but reported): the customers a burst of updates concerns are known
# already, as after their checkout. Each round's new final state tells whether it was applied.
#
# Measured per round: acknowledged events/s and errors (non-2xx or no answer), answer-time
# p50/p99/max, the server process's CPU per event (utime + stime from /proc) and PostgreSQL's
# (every postgres process, less what the poller below cost it) from the first event sent until
# the round was applied, Stripe requests per event (the stub's counts), and the time from the
# last answer until the target's database holds the stub's state (scripts/bench/webhooks/
# wait-applied.mjs: for Tollgate, no event pending in its inbox and every stored subscription's
# quantity equal to the stub's; for stripe-sync-engine, its subscription items).
#
# Usage: scripts/bench-webhooks.sh      (a few minutes once the release build is done)
# Environment (all optional):
#   BENCH_POSTGRES_URL   server URL, a user that may create databases  (postgres://root@127.0.0.1:5432)
#   BENCH_EVENTS         events per measured round                      (3000)
#   BENCH_CUSTOMERS      customers; must divide BENCH_EVENTS            (500)
#   BENCH_CONNECTIONS    concurrent keep-alive connections              (16)
#   BENCH_FAIL_RATE      share of Stripe reads failing in the storm     (0.2)
#   BENCH_SEED           seed of the event order and of the failures   (42)
#   BENCH_TOLLGATE_BIN   Tollgate binary to run; unset: cargo build --release, target/release/tollgate
#   BENCH_RUST_LOG       Tollgate's RUST_LOG                            (info, the default)
#   BENCH_SYNC_ENGINE_VERSION  npm version of @supabase/stripe-sync-engine (0.48.5)
#   BENCH_APPLY_TIMEOUT  seconds to wait for a round to be applied      (180)
#   BENCH_STORM_TIMEOUT  the same for the storm round                   (600)
#   BENCH_REPORT         where to write the section                     (docs/BENCHMARKS.md)
#   BENCH_KEEP=1         keep the databases and the work directory afterwards
#   TOLLGATE_WEBHOOKS__* passed through to Tollgate (e.g. TOLLGATE_WEBHOOKS__CONCURRENCY=16),
#                        named in the report
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PG_SERVER_URL="${BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432}"
PG_SERVER_URL="${PG_SERVER_URL%/}"
EVENTS="${BENCH_EVENTS:-3000}"
CUSTOMERS="${BENCH_CUSTOMERS:-500}"
CONNECTIONS="${BENCH_CONNECTIONS:-16}"
FAIL_RATE="${BENCH_FAIL_RATE:-0.2}"
SEED="${BENCH_SEED:-42}"
TOLLGATE_LOG="${BENCH_RUST_LOG:-info}"
ENGINE_VERSION="${BENCH_SYNC_ENGINE_VERSION:-0.48.5}"
APPLY_TIMEOUT="${BENCH_APPLY_TIMEOUT:-180}"
STORM_TIMEOUT="${BENCH_STORM_TIMEOUT:-600}"
REPORT="${BENCH_REPORT:-docs/BENCHMARKS.md}"
STUB_PORT=18110
TOLLGATE_PORT=18081
ENGINE_PORT=18120
TOLLGATE_DB=tollgate_bench_webhooks
ENGINE_DB=sync_engine_bench_webhooks
HERE="$ROOT/scripts/bench/webhooks"
CONFIG="$HERE/tollgate.toml"
FIXTURES="$ROOT/tests/fixtures/stripe"
STUB="http://127.0.0.1:$STUB_PORT"
# The secret both targets verify signatures with (the one in tollgate.toml).
WEBHOOK_SECRET="$(awk -F'"' '/^webhook_secrets/{print $2; exit}' "$CONFIG")"
# Event ids are unique per run (a kept database may be reused by hand).
RUN_TAG="$(date +%s)"
# The revision measured, taken now (the tree may move while the run goes on).
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes')"

WORK="$(mktemp -d /tmp/tollgate-bench-webhooks.XXXXXX)"
STARTED_PIDS=()
STARTED_POSTGRES=""
BENCH_NAME=bench-webhooks
# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

cleanup() { bench_cleanup $? "$TOLLGATE_DB" "$ENGINE_DB"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------- tools
need_tools() {
  for tool in node npm psql pg_isready curl python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
  done
  [[ -n "${BENCH_TOLLGATE_BIN:-}" ]] || command -v cargo >/dev/null 2>&1 \
    || die "cargo is required (or set BENCH_TOLLGATE_BIN)"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [[ "$major" -ge 18 ]] || die "Node 18 or newer is required (found $(node --version))"
  (( EVENTS % CUSTOMERS == 0 )) || die "BENCH_EVENTS ($EVENTS) must be a multiple of BENCH_CUSTOMERS ($CUSTOMERS)"
  for port in "$STUB_PORT" "$TOLLGATE_PORT" "$ENGINE_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
      die "port $port is taken (another run of this script?)"
    fi
  done
}

# ------------------------------------------------------------------------------ probes
now_ms() { date +%s%3N; }

stub() { curl -sf -X "$1" "$STUB$2"; }

# round NAME KIND URL PID DB ROUND FAIL_RATE TIMEOUT: sets the stub's state to ROUND's final one
# (FAIL_RATE of its reads failing), sends ROUND's events to URL and waits until DB holds the
# stub's state. Writes NAME.send.json (load generator), NAME.applied.json (poller),
# NAME.stub.json (Stripe requests) and NAME.env (CPU) under $WORK.
round() {
  local name="$1" kind="$2" url="$3" pid="$4" db="$5" round="$6" fail_rate="$7" timeout="$8"
  local c0 c1 ca p0 p1 pa m0 m1 ma t0 t1 poller
  stub POST "/__stage?round=$round&fail_rate=$fail_rate&seed=$SEED" >/dev/null
  stub POST /__reset >/dev/null
  rm -f "$WORK/$name".*
  node "$HERE/wait-applied.mjs" --pg-dir "$ENGINE_DIR" --db "$PG_SERVER_URL/$db" --kind "$kind" \
    --stub "$STUB" --trigger "$WORK/$name.send.json" --out "$WORK/$name.applied.json" \
    --ready "$WORK/$name.ready" --timeout "$timeout" >/dev/null 2>"$WORK/$name.poller.log" &
  poller=$!
  STARTED_PIDS+=("$poller")
  for _ in $(seq 1 200); do
    [[ -f "$WORK/$name.ready" ]] && break
    kill -0 "$poller" 2>/dev/null || { cat "$WORK/$name.poller.log" >&2; die "the poller of $name exited"; }
    sleep 0.05
  done
  [[ -f "$WORK/$name.ready" ]] || die "the poller of $name did not connect"
  local count="$EVENTS"
  [[ "$round" == 0 ]] && count="$CUSTOMERS"
  log "$name: $count events to $url${fail_rate:+ (Stripe reads failing: $fail_rate)}"
  # The load generator builds and signs the events first; the clock starts when it sends.
  local sender
  node "$HERE/send.mjs" --url "$url" --secret "$WEBHOOK_SECRET" --fixtures "$FIXTURES" \
    --customers "$CUSTOMERS" --events "$EVENTS" --round "$round" --connections "$CONNECTIONS" \
    --seed "$SEED" --tag "$RUN_TAG" --label "$name" --out "$WORK/$name.send.json" \
    --ready "$WORK/$name.send-ready" --go "$WORK/$name.send-go" >/dev/null &
  sender=$!
  while [[ ! -f "$WORK/$name.send-ready" ]]; do
    kill -0 "$sender" 2>/dev/null || die "the load generator failed for $name"
    sleep 0.02
  done
  c0="$(cpu_ticks "$pid")"
  p0="$(pg_ticks)"
  m0="$(machine_ticks)"
  t0="$(now_ms)"
  touch "$WORK/$name.send-go"
  wait "$sender" || die "the load generator failed for $name"
  # Until the last answer (Tollgate applies events after it).
  ca="$(cpu_ticks "$pid")"
  pa="$(pg_ticks)"
  ma="$(machine_ticks)"
  python3 - "$WORK/$name.send.json" <<'EOF' >&2
import json, sys
s = json.load(open(sys.argv[1]))
l = s["latency_ms"]
print(f"   {s['count']} sent, {s['ok']} acknowledged, {s['errors']} errors, "
      f"{s['events_per_s']:,.0f} events/s, p50 {l['p50']:.1f} ms, p99 {l['p99']:.1f} ms, "
      f"max {l['max']:.1f} ms")
for e in s["error_samples"]:
    print(f"   error: {e}")
EOF
  log "$name: waiting until the database holds the stub's state (at most ${timeout}s)"
  while [[ ! -f "$WORK/$name.applied.json" ]]; do
    kill -0 "$poller" 2>/dev/null || { cat "$WORK/$name.poller.log" >&2; die "the poller of $name exited"; }
    sleep 0.05
  done
  c1="$(cpu_ticks "$pid")"
  p1="$(pg_ticks)"
  m1="$(machine_ticks)"
  t1="$(now_ms)"
  touch "$WORK/$name.applied.json.quit"
  wait "$poller" 2>/dev/null || true
  kill -0 "$pid" 2>/dev/null || die "the server died during $name"
  stub GET /__stats >"$WORK/$name.stub.json"
  {
    echo "cpu_ticks=$((c1 - c0))"
    echo "pg_ticks=$((p1 - p0))"
    echo "cpu_ticks_answering=$((ca - c0))"
    echo "pg_ticks_answering=$((pa - p0))"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "machine_busy=$(( ${m1% *} - ${m0% *} ))"
    echo "machine_total=$(( ${m1#* } - ${m0#* } ))"
    echo "machine_busy_answering=$(( ${ma% *} - ${m0% *} ))"
    echo "machine_total_answering=$(( ${ma#* } - ${m0#* } ))"
    echo "window_ms=$((t1 - t0))"
    echo "fail_rate=${fail_rate:-0}"
  } >"$WORK/$name.env"
  python3 - "$WORK/$name.applied.json" "$WORK/$name.stub.json" <<'EOF' >&2
import json, sys
a = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
routes = ", ".join(f"{k} {v['count']}" + (f" ({v['failed']} failed)" if v["failed"] else "")
                   for k, v in sorted(s["routes"].items())) or "none"
if a["applied"]:
    print(f"   applied {a['after_last_ack_ms']} ms after the last answer; Stripe requests: {routes}")
else:
    print(f"   NOT applied within {a['waited_s']} s: {a['pending']} events pending, "
          f"{a['mismatched']} of {a['subscriptions']} subscriptions differ from the stub "
          f"(e.g. {a['mismatch_samples'][:3]}); Stripe requests: {routes}")
EOF
}

# ------------------------------------------------------------------------------- start
need_tools
start_postgres
mkdir -p "$(dirname "$REPORT")"

if [[ -n "${BENCH_TOLLGATE_BIN:-}" ]]; then
  TOLLGATE_BIN="$BENCH_TOLLGATE_BIN"
  [[ -x "$TOLLGATE_BIN" ]] || die "BENCH_TOLLGATE_BIN=$TOLLGATE_BIN is not an executable"
  log "Tollgate binary: $TOLLGATE_BIN (from BENCH_TOLLGATE_BIN)"
else
  log "building the release binary"
  cargo build --release --locked --bin tollgate
  TOLLGATE_BIN="$ROOT/target/release/tollgate"
fi
# A debug build says so in the report (its figures are not Tollgate's).
if [[ "$TOLLGATE_BIN" == */debug/* ]]; then BUILD_PROFILE=debug; else BUILD_PROFILE=release; fi

ENGINE_DIR="$WORK/sync-engine"
log "installing @supabase/stripe-sync-engine@$ENGINE_VERSION (npm) in $ENGINE_DIR"
mkdir -p "$ENGINE_DIR"
(cd "$ENGINE_DIR" && npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error \
  "@supabase/stripe-sync-engine@$ENGINE_VERSION" >"$WORK/npm.log" 2>&1) \
  || { tail -n 20 "$WORK/npm.log" >&2; die "npm install failed"; }
pkg_version() { node -p "require('$ENGINE_DIR/node_modules/$1/package.json').version"; }
ENGINE_INSTALLED="$(pkg_version @supabase/stripe-sync-engine)"
STRIPE_NODE_VERSION="$(pkg_version stripe)"
PG_NODE_VERSION="$(pkg_version pg)"
log "stripe-sync-engine $ENGINE_INSTALLED, stripe-node $STRIPE_NODE_VERSION, pg $PG_NODE_VERSION"

log "starting the Stripe stub on port $STUB_PORT ($CUSTOMERS customers)"
node "$HERE/stripe-stub.mjs" --port "$STUB_PORT" --customers "$CUSTOMERS" \
  --per-customer "$((EVENTS / CUSTOMERS))" --fixtures "$FIXTURES" >"$WORK/stub.log" 2>&1 &
STUB_PID=$!
STARTED_PIDS+=("$STUB_PID")
wait_ready "$STUB/__health" "$STUB_PID" "the Stripe stub" "$WORK/stub.log" 150

for db in "$TOLLGATE_DB" "$ENGINE_DB"; do
  psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
  psql_admin -c "CREATE DATABASE $db"
done

# Other work on the machine skews every figure: record how busy it was just before measuring.
measure_idle_machine

# ------------------------------------------------------------------------ stripe-sync-engine
ENGINE_URL="$PG_SERVER_URL/$ENGINE_DB"
log "stripe-sync-engine: migrating $ENGINE_DB"
node "$HERE/sync-engine-server.mjs" --dir "$ENGINE_DIR" --db "$ENGINE_URL" --secret "$WEBHOOK_SECRET" \
  --stripe "$STUB" --migrate-only >"$WORK/sync-engine-migrate.log" 2>&1 \
  || { cat "$WORK/sync-engine-migrate.log" >&2; die "stripe-sync-engine's migrations failed"; }
tail -n 1 "$WORK/sync-engine-migrate.log" >&2
node "$HERE/sync-engine-server.mjs" --dir "$ENGINE_DIR" --db "$ENGINE_URL" --secret "$WEBHOOK_SECRET" \
  --stripe "$STUB" --port "$ENGINE_PORT" >"$WORK/sync-engine.log" 2>&1 &
ENGINE_PID=$!
STARTED_PIDS+=("$ENGINE_PID")
wait_ready "http://127.0.0.1:$ENGINE_PORT/health" "$ENGINE_PID" stripe-sync-engine "$WORK/sync-engine.log" 150
ENGINE_HOOK="http://127.0.0.1:$ENGINE_PORT/webhooks"
round engine_created sync-engine "$ENGINE_HOOK" "$ENGINE_PID" "$ENGINE_DB" 0 "" "$APPLY_TIMEOUT"
round engine sync-engine "$ENGINE_HOOK" "$ENGINE_PID" "$ENGINE_DB" 1 "" "$APPLY_TIMEOUT"
stop_pid "$ENGINE_PID"

# ------------------------------------------------------------------------------ Tollgate
TOLLGATE_URL="$PG_SERVER_URL/$TOLLGATE_DB"
# Without TLS, as stripe-sync-engine's node-postgres connects (libpq's default, `prefer`, would
# encrypt every statement on this loopback connection when the server offers TLS).
# Only what the benchmark sets, and the caller's TOLLGATE_WEBHOOKS__* (named in the report).
PASSED=()
while IFS='=' read -r name _; do
  [[ "$name" == TOLLGATE_WEBHOOKS__* ]] && PASSED+=("$name=${!name}")
done < <(env)
tollgate_env=(env -i PATH="$PATH" HOME="${HOME:-/root}" RUST_LOG="$TOLLGATE_LOG"
  DATABASE_URL="$TOLLGATE_URL?sslmode=disable" STRIPE_API_BASE="$STUB/" TOLLGATE_SERVER__PORT="$TOLLGATE_PORT"
  "${PASSED[@]}")
log "Tollgate: check-config, migrate"
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" check-config --print >"$WORK/tollgate-config.txt" 2>&1 \
  || { cat "$WORK/tollgate-config.txt" >&2; die "tollgate check-config failed"; }
tail -n 1 "$WORK/tollgate-config.txt" >&2
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" migrate >"$WORK/tollgate-migrate.log" 2>&1 \
  || { cat "$WORK/tollgate-migrate.log" >&2; die "tollgate migrate failed"; }
log "starting Tollgate ($BUILD_PROFILE) on port $TOLLGATE_PORT"
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" serve >"$WORK/tollgate-server.log" 2>&1 &
TOLLGATE_PID=$!
STARTED_PIDS+=("$TOLLGATE_PID")
wait_ready "http://127.0.0.1:$TOLLGATE_PORT/readyz" "$TOLLGATE_PID" tollgate "$WORK/tollgate-server.log" 150
TOLLGATE_HOOK="http://127.0.0.1:$TOLLGATE_PORT/v1/webhooks/stripe"
round tollgate_created tollgate "$TOLLGATE_HOOK" "$TOLLGATE_PID" "$TOLLGATE_DB" 0 "" "$APPLY_TIMEOUT"
mark_log() { wc -l <"$WORK/tollgate-server.log"; }
l0="$(mark_log)"
round tollgate tollgate "$TOLLGATE_HOOK" "$TOLLGATE_PID" "$TOLLGATE_DB" 1 "" "$APPLY_TIMEOUT"
l1="$(mark_log)"
round tollgate_storm tollgate "$TOLLGATE_HOOK" "$TOLLGATE_PID" "$TOLLGATE_DB" 2 "$FAIL_RATE" "$STORM_TIMEOUT"
l2="$(mark_log)"
curl -s "http://127.0.0.1:$TOLLGATE_PORT/metrics" >"$WORK/tollgate-metrics.txt" || true
stop_pid "$TOLLGATE_PID"
# What Tollgate logged during each measured round (warnings and errors).
log_lines() { sed -n "$(( $1 + 1 )),$2p" "$WORK/tollgate-server.log"; }
for part in "tollgate $l0 $l1" "tollgate_storm $l1 $l2"; do
  read -r name from to <<<"$part"
  log_lines "$from" "$to" >"$WORK/$name.server.log"
  {
    echo "log_lines=$((to - from))"
    echo "log_warn=$(grep -c ' WARN ' "$WORK/$name.server.log" || true)"
    echo "log_error=$(grep -c ' ERROR ' "$WORK/$name.server.log" || true)"
    echo "log_failed_syncs=$(grep -c 'applying webhook events failed' "$WORK/$name.server.log" || true)"
  } >>"$WORK/$name.env"
done
grep -E ' (WARN|ERROR) ' "$WORK/tollgate_storm.server.log" | head -n 3 | cut -c1-400 >&2 || true

# -------------------------------------------------------------------------------- report
cat >"$WORK/meta.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$COMMIT
nproc=$(nproc)
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
mem_total_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
pg_version=$(psql_admin -At -c "SHOW server_version")
pg_settings=$(psql_admin -At -c "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync')")
node_version=$(node --version)
engine_version=$ENGINE_INSTALLED
stripe_node_version=$STRIPE_NODE_VERSION
pg_node_version=$PG_NODE_VERSION
tollgate_bin=$TOLLGATE_BIN
build_profile=$BUILD_PROFILE
rust_log=$TOLLGATE_LOG
passed_env=${PASSED[*]:-}
events=$EVENTS
customers=$CUSTOMERS
connections=$CONNECTIONS
fail_rate=$FAIL_RATE
seed=$SEED
busy_before=$BUSY_BEFORE
load_before=$LOAD_BEFORE
EOF
python3 "$HERE/report.py" "$WORK" "$REPORT"
log "wrote the webhook section of $REPORT"
