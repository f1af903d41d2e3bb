#!/usr/bin/env bash
# Benchmarks Tollgate on PostgreSQL with 100,000 subjects and writes docs/BENCHMARKS.md.
#
# Measured with wrk, same threads/connections/duration for every target:
#   - Tollgate: GET /v1/entitlements (service JWT, billing:read) and POST /v1/usage (service
#     JWT, billing:write) for random users among the seeded ones; POST /v1/usage again with
#     quota thresholds configured (what the outbox costs the usage path), and without once more;
#     then GET /v1/entitlements again on an instance with the snapshot cache off;
#   - baselines from examples/bench_baseline.rs on the same database: GET /read (one
#     primary-key SELECT) and POST /update (one UPDATE ... RETURNING);
#   - pgbench -S (select-only) on a separate scale-10 database, for reference.
# For each: requests/s, p50/p99 latency, errors, peak RSS of the server process, and its CPU
# time, PostgreSQL's CPU time and database transactions per request.
#
# Usage: scripts/bench.sh            (about 5 minutes once the release build is done)
# Environment (all optional):
#   BENCH_POSTGRES_URL  server URL, a user that may create databases  (postgres://root@127.0.0.1:5432)
#   BENCH_SUBJECTS      seeded users / baseline rows                  (100000)
#   BENCH_DURATION      measured seconds per target                   (20)
#   BENCH_WARMUP        warm-up seconds before each measurement       (5)
#   BENCH_THREADS       wrk threads, pgbench -j                       (2)
#   BENCH_CONNECTIONS   wrk connections, pgbench -c                   (32)
#   BENCH_RUST_LOG      Tollgate's RUST_LOG                           (info, the default)
#   BENCH_CACHE_ENTRIES Tollgate's snapshot_cache_entries             (1.5 x BENCH_SUBJECTS)
#   BENCH_REPORT        where to write the report                     (docs/BENCHMARKS.md)
#   BENCH_KEEP=1        keep the databases and the work directory afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

PG_SERVER_URL="${BENCH_POSTGRES_URL:-postgres://root@127.0.0.1:5432}"
PG_SERVER_URL="${PG_SERVER_URL%/}"
SUBJECTS="${BENCH_SUBJECTS:-100000}"
DURATION="${BENCH_DURATION:-20}"
WARMUP="${BENCH_WARMUP:-5}"
THREADS="${BENCH_THREADS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
TOLLGATE_LOG="${BENCH_RUST_LOG:-info}"
# Room for every seeded subject: quick_cache's capacity holds per shard, so a cache exactly as
# large as the subjects asked about keeps evicting about 1% of them (see the report).
CACHE_ENTRIES="${BENCH_CACHE_ENTRIES:-$(( SUBJECTS * 3 / 2 ))}"
REPORT="${BENCH_REPORT:-docs/BENCHMARKS.md}"
TOLLGATE_PORT=18080
BASELINE_PORT=18091
DB=tollgate_bench
PGBENCH_DB=tollgate_pgbench
BENCH_DIR="$ROOT/scripts/bench"
CONFIG="$BENCH_DIR/tollgate.toml"
QUOTA=calls
FEATURE=export

WORK="$(mktemp -d /tmp/tollgate-bench.XXXXXX)"
STARTED_PIDS=()
STARTED_POSTGRES=""
BENCH_NAME=bench
# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

cleanup() { bench_cleanup $? "$DB" "$PGBENCH_DB"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

psql_db() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_SERVER_URL/$DB" "$@"; }

# ---------------------------------------------------------------------------------- tools
need_tools() {
  if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk"
    apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
  fi
  for tool in wrk curl python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
  done
}

# ------------------------------------------------------------------------------ probes
peak_rss_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status"; }
# Peak RSS starts again from the current RSS (Linux: clear_refs 5).
reset_peak_rss() { echo 5 > "/proc/$1/clear_refs" 2>/dev/null || echo "bench: cannot reset the peak RSS of $1; it covers the process's life" >&2; }
db_xacts() {
  psql_db -At -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
}

# measure NAME URL LUA PID [TOKEN]: a warm-up, then the measured wrk run; writes NAME.wrk
# (wrk's output) and NAME.env (server-side figures) under $WORK. With COLD=1 in the
# environment: no warm-up, and the peak RSS is not reset (a cold start, measured as it comes).
measure() {
  local name="$1" url="$2" lua="$3" pid="$4" token="${5:-}"
  local env=(BENCH_LUA_DIR="$BENCH_DIR" BENCH_SUBJECTS="$SUBJECTS" BENCH_TOKEN="$token"
    BENCH_QUOTA="$QUOTA" BENCH_FEATURE="$FEATURE" BENCH_THREADS="$THREADS")
  local x0 x1 c0 c1 m0 m1 p0 p1
  x0="$(db_xacts)"
  if [[ -n "${COLD:-}" ]]; then
    log "$name: no warm-up (cold start), ${DURATION}s measured ($url)"
    echo 'BENCH_JSON {"requests":0,"duration_us":0,"bytes":0,"non_2xx":0,"connect_errors":0,"read_errors":0,"write_errors":0,"timeouts":0,"p50_us":0,"p90_us":0,"p99_us":0,"p999_us":0,"max_us":0,"mean_us":0}' \
      >"$WORK/$name.warmup.wrk"
  else
    log "$name: ${WARMUP}s warm-up, ${DURATION}s measured ($url)"
    reset_peak_rss "$pid"
    env "${env[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$BENCH_DIR/$lua" "$url" \
      -- "warm-$name-$$" >"$WORK/$name.warmup.wrk"
  fi
  c0="$(cpu_ticks "$pid")"
  p0="$(pg_ticks)"
  m0="$(machine_ticks)"
  env "${env[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s "$BENCH_DIR/$lua" "$url" -- "run-$name-$$" | tee "$WORK/$name.wrk" | grep -v '^BENCH_JSON' >&2
  c1="$(cpu_ticks "$pid")"
  p1="$(pg_ticks)"
  m1="$(machine_ticks)"
  kill -0 "$pid" 2>/dev/null || die "the server died during $name"
  local rss
  rss="$(peak_rss_kb "$pid")"
  # Backends report their statistics when idle for a while (PostgreSQL: at most 10 s later).
  sleep 11
  x1="$(db_xacts)"
  {
    echo "peak_rss_kb=$rss"
    echo "cpu_ticks=$((c1 - c0))"
    echo "pg_ticks=$((p1 - p0))"
    echo "clk_tck=$(getconf CLK_TCK)"
    echo "machine_busy=$(( ${m1% *} - ${m0% *} ))"
    echo "machine_total=$(( ${m1#* } - ${m0#* } ))"
    echo "db_xacts=$((x1 - x0))"
    echo "warmup_file=$name.warmup.wrk"
  } >"$WORK/$name.env"
}

# ------------------------------------------------------------------------------- start
need_tools
start_postgres
mkdir -p "$(dirname "$REPORT")"

log "building release binaries"
cargo build --release --locked --bin tollgate --example bench_baseline
TOLLGATE_BIN="$ROOT/target/release/tollgate"
BASELINE_BIN="$ROOT/target/release/examples/bench_baseline"

# The bench config's auth settings sign the service token.
read -r JWT_SECRET JWT_ISSUER JWT_AUDIENCE < <(python3 - "$CONFIG" <<'EOF'
import sys, tomllib
auth = tomllib.load(open(sys.argv[1], "rb"))["auth"]
aud = auth["audience"]
print(auth["hs256_secret"], auth["issuer"], aud[0] if isinstance(aud, list) else aud)
EOF
)
TOKEN="$(python3 "$BENCH_DIR/mint_jwt.py" "$JWT_SECRET" "$JWT_ISSUER" "$JWT_AUDIENCE" \
  "billing:read billing:write" 7200)"

log "fresh database $DB, migrated by tollgate and seeded with $SUBJECTS subjects"
psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
psql_admin -c "CREATE DATABASE $DB"
DB_URL="$PG_SERVER_URL/$DB"
# Only what the benchmark sets: no STRIPE_*, TOLLGATE_* or DATABASE_URL from the caller's shell.
tollgate_env=(env -i PATH="$PATH" HOME="${HOME:-/root}" RUST_LOG="$TOLLGATE_LOG"
  DATABASE_URL="$DB_URL" TOLLGATE_SERVER__PORT="$TOLLGATE_PORT"
  TOLLGATE_DATABASE__SNAPSHOT_CACHE_ENTRIES="$CACHE_ENTRIES")
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" migrate
seed_start=$(date +%s)
psql_db -v subjects="$SUBJECTS" -f "$BENCH_DIR/seed.sql"
psql_db -v subjects="$SUBJECTS" -f "$BENCH_DIR/baseline.sql"
# Rows seeded by SQL have no subject snapshots (what the hot path reads): migrating again
# writes them from the tables, as it does for data from before snapshots.
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" migrate
log "seeded in $(( $(date +%s) - seed_start ))s: $(psql_db -At -c "SELECT count(*) FROM customers") customers, $(psql_db -At -c "SELECT count(*) FROM subscriptions") subscriptions, $(psql_db -At -c "SELECT count(*) FROM bench_counters") baseline rows"

# ------------------------------------------------------------------------------ Tollgate
# A first, unmeasured instance logs every statement (libpq `options`, these connections only):
# it checks that the seeded users have access, probes POST /v1/usage, and records what one
# request of each kind runs on PostgreSQL. The measured instance logs no statements.
PG_LOG="${BENCH_PG_LOG:-$(ls -t /var/log/postgresql/postgresql-*-main.log 2>/dev/null | head -n1 || true)}"
LOGGED_DB_URL="$DB_URL?options=-c%20log_statement%3Dall"

# sample NAME CURL_ARGS...: one request; the statements it ran go to $WORK/NAME.statements.
sample() {
  local name="$1"
  shift
  if [[ ! -r "$PG_LOG" ]]; then
    return 0
  fi
  local offset
  offset="$(wc -l <"$PG_LOG")"
  curl -sf -o /dev/null "$@" || die "sample request $name failed"
  sleep 0.5
  # The snapshot cache's listener (its own connection) runs a heartbeat now and then: not part
  # of any request.
  local listener
  listener="$(psql_db -At -c "SELECT string_agg(pid::text, '|') FROM pg_stat_activity WHERE application_name = 'tollgate_snapshot_listener'")"
  tail -n +"$((offset + 1))" "$PG_LOG" | grep -E "@$DB LOG:  (statement|execute [^:]*): " \
    | grep -vE "\[(${listener:-none})\]" >"$WORK/$name.statements" || true
}

log "starting Tollgate with statement logging to check the seed and sample statements"
# The events dispatcher's periodic checks (outbox, crossings, deadlines) run on their own
# schedule, not per request: a long poll keeps them out of the sampled statements.
env -i PATH="$PATH" HOME="${HOME:-/root}" RUST_LOG="$TOLLGATE_LOG" \
  DATABASE_URL="$LOGGED_DB_URL" TOLLGATE_SERVER__PORT="$TOLLGATE_PORT" \
  TOLLGATE_EVENTS__POLL_INTERVAL_MS=600000 \
  "$TOLLGATE_BIN" --config "$CONFIG" serve >"$WORK/tollgate-sample.log" 2>&1 &
SAMPLE_PID=$!
STARTED_PIDS+=("$SAMPLE_PID")
wait_ready "http://127.0.0.1:$TOLLGATE_PORT/readyz" "$SAMPLE_PID" tollgate "$WORK/tollgate-sample.log"

# Seeded users must really have access to the bench plan, or the numbers mean nothing.
for user in u1 "u$((SUBJECTS / 2))" "u$SUBJECTS"; do
  body="$(curl -sf -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$TOLLGATE_PORT/v1/entitlements?user_id=$user")" \
    || die "GET /v1/entitlements?user_id=$user failed"
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d.get("access") is True and d.get("plan")=="bench" else 1)' "$body" \
    || die "seeded user $user has no access to the bench plan: $body"
  body="$(curl -sf -H "Authorization: Bearer $TOKEN" \
    "http://127.0.0.1:$TOLLGATE_PORT/v1/entitlements?user_id=$user&feature=$FEATURE")" \
    || die "GET /v1/entitlements?user_id=$user&feature=$FEATURE failed"
  [[ "$body" == *'"allowed":true'* ]] || die "seeded user $user is not allowed $FEATURE: $body"
done
log "seeded users have access: $body"
sample entitlements -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$TOLLGATE_PORT/v1/entitlements?user_id=u7&feature=$FEATURE"
# The same check again: now answered from the replica's snapshot cache.
sample entitlements_cached -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$TOLLGATE_PORT/v1/entitlements?user_id=u7&feature=$FEATURE"

# POST /v1/usage: measured only where it exists (an unknown path answers 404 "no endpoint").
usage_body() { printf '{"user_id":"%s","quota":"%s","amount":1,"idempotency_key":"%s"}' "$1" "$QUOTA" "$2"; }
probe_status="$(curl -s -o "$WORK/usage_probe.json" -w '%{http_code}' -X POST \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  --data "$(usage_body u1 "bench-probe-$$")" "http://127.0.0.1:$TOLLGATE_PORT/v1/usage")"
probe_body="$(cat "$WORK/usage_probe.json")"
USAGE_EXISTS=1
if [[ "$probe_status" == 404 && "$probe_body" == *"no endpoint"* ]]; then
  log "POST /v1/usage does not exist: usage not measured"
  USAGE_EXISTS=""
else
  log "POST /v1/usage probe: $probe_status $probe_body"
  [[ "$probe_status" == 200 ]] || log "WARNING: the usage probe did not answer 200; errors will show in the report"
  if [[ "$probe_status" == 200 ]]; then
    sample usage -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
      --data "$(usage_body u7 "bench-sample-$$")" "http://127.0.0.1:$TOLLGATE_PORT/v1/usage"
  fi
fi
stop_pid "$SAMPLE_PID"

# Other work on the machine skews every figure: record how busy it was just before measuring.
measure_idle_machine

log "starting Tollgate (release) on port $TOLLGATE_PORT"
"${tollgate_env[@]}" "$TOLLGATE_BIN" --config "$CONFIG" serve >"$WORK/tollgate.log" 2>&1 &
TOLLGATE_PID=$!
STARTED_PIDS+=("$TOLLGATE_PID")
wait_ready "http://127.0.0.1:$TOLLGATE_PORT/readyz" "$TOLLGATE_PID" tollgate "$WORK/tollgate.log"
# Idle: what a replica costs when nobody asks (its snapshot listener waits on its socket).
IDLE_SECONDS=10
i0="$(cpu_ticks "$TOLLGATE_PID")"
sleep "$IDLE_SECONDS"
i1="$(cpu_ticks "$TOLLGATE_PID")"
IDLE_CPU_PCT="$(python3 -c "print(f'{100 * ($i1 - $i0) / $(getconf CLK_TCK) / $IDLE_SECONDS:.2f}')")"
log "idle for ${IDLE_SECONDS}s: ${IDLE_CPU_PCT}% of a core"
# Cold: the cache starts empty and fills as the run goes.
COLD=1 measure entitlements_cold "http://127.0.0.1:$TOLLGATE_PORT" entitlements.lua "$TOLLGATE_PID" "$TOKEN"
# Warm: every seeded user, membership and tenant is read once first.
TOUCH_SECONDS=$(( SUBJECTS / 2000 + 5 ))
log "warming the cache: every id's user, membership and tenant (${TOUCH_SECONDS}s)"
env BENCH_LUA_DIR="$BENCH_DIR" BENCH_SUBJECTS="$SUBJECTS" BENCH_TOKEN="$TOKEN" BENCH_FEATURE="$FEATURE" \
  BENCH_THREADS="$THREADS" wrk -t"$THREADS" -c"$THREADS" -d"${TOUCH_SECONDS}s" \
  -s "$BENCH_DIR/touch.lua" "http://127.0.0.1:$TOLLGATE_PORT" -- "touch-$$" >"$WORK/touch.wrk"
touched="$(grep '^BENCH_JSON' "$WORK/touch.wrk" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()[11:])["requests"])')"
[[ "$touched" -ge "$SUBJECTS" ]] || log "WARNING: the warming pass asked for $touched ids of $SUBJECTS"
echo "touched=$touched" >"$WORK/touch.env"
measure entitlements "http://127.0.0.1:$TOLLGATE_PORT" entitlements.lua "$TOLLGATE_PID" "$TOKEN"
measure entitlements_tenant "http://127.0.0.1:$TOLLGATE_PORT" entitlements_tenant.lua "$TOLLGATE_PID" "$TOKEN"
measure entitlements_status "http://127.0.0.1:$TOLLGATE_PORT" entitlements_status.lua "$TOLLGATE_PID" "$TOKEN"
if [[ -n "$USAGE_EXISTS" ]]; then
  measure usage "http://127.0.0.1:$TOLLGATE_PORT" usage.lua "$TOLLGATE_PID" "$TOKEN"
  echo "probe_status=$probe_status" >>"$WORK/usage.env"
else
  for missing in usage usage_fresh usage_thresholds usage_again; do echo "status=missing" >"$WORK/$missing.env"; done
fi
stop_pid "$TOLLGATE_PID"

# What the outbox costs the usage path: on fresh instances alike (each cache fills as it goes),
# usage without thresholds, with quota thresholds configured (events.quota_thresholds: each
# consumption checks whether it crossed 80% or 100% of the allowance, and records a crossing
# for quota.threshold_reached), then without again, so that the ratio is taken against the mean
# of the runs around it (the ledger grows from run to run).
if [[ -n "$USAGE_EXISTS" ]]; then
  for variant in usage_fresh usage_thresholds usage_again; do
    extra=()
    [[ "$variant" == usage_thresholds ]] && extra=(TOLLGATE_EVENTS__QUOTA_THRESHOLDS__CALLS="[80, 100]")
    log "starting Tollgate (release) for $variant"
    "${tollgate_env[@]}" "${extra[@]}" "$TOLLGATE_BIN" --config "$CONFIG" serve \
      >"$WORK/tollgate-$variant.log" 2>&1 &
    TOLLGATE_PID=$!
    STARTED_PIDS+=("$TOLLGATE_PID")
    wait_ready "http://127.0.0.1:$TOLLGATE_PORT/readyz" "$TOLLGATE_PID" tollgate "$WORK/tollgate-$variant.log"
    measure "$variant" "http://127.0.0.1:$TOLLGATE_PORT" usage.lua "$TOLLGATE_PID" "$TOKEN"
    stop_pid "$TOLLGATE_PID"
  done
fi

# The same checks with the snapshot cache off: every check reads its snapshot from PostgreSQL
# (what a check on a subject no replica has seen lately costs).
log "starting Tollgate (release) with the snapshot cache off"
"${tollgate_env[@]}" TOLLGATE_DATABASE__SNAPSHOT_CACHE_ENTRIES=0 "$TOLLGATE_BIN" --config "$CONFIG" serve \
  >"$WORK/tollgate-uncached.log" 2>&1 &
TOLLGATE_PID=$!
STARTED_PIDS+=("$TOLLGATE_PID")
wait_ready "http://127.0.0.1:$TOLLGATE_PORT/readyz" "$TOLLGATE_PID" tollgate "$WORK/tollgate-uncached.log"
measure entitlements_uncached "http://127.0.0.1:$TOLLGATE_PORT" entitlements.lua "$TOLLGATE_PID" "$TOKEN"
stop_pid "$TOLLGATE_PID"

# ------------------------------------------------------------------------------ baseline
baseline_env=(env -i PATH="$PATH" HOME="${HOME:-/root}")
log "sampling the baseline's statements"
"${baseline_env[@]}" DATABASE_URL="$LOGGED_DB_URL" "$BASELINE_BIN" "$BASELINE_PORT" \
  >"$WORK/baseline-sample.log" 2>&1 &
SAMPLE_PID=$!
STARTED_PIDS+=("$SAMPLE_PID")
wait_ready "http://127.0.0.1:$BASELINE_PORT/readyz" "$SAMPLE_PID" bench_baseline "$WORK/baseline-sample.log"
sample read "http://127.0.0.1:$BASELINE_PORT/read?id=$SUBJECTS"
sample update -X POST "http://127.0.0.1:$BASELINE_PORT/update?id=$SUBJECTS"
stop_pid "$SAMPLE_PID"

log "starting the baseline (examples/bench_baseline.rs) on port $BASELINE_PORT"
"${baseline_env[@]}" DATABASE_URL="$DB_URL" "$BASELINE_BIN" "$BASELINE_PORT" \
  >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
STARTED_PIDS+=("$BASELINE_PID")
wait_ready "http://127.0.0.1:$BASELINE_PORT/readyz" "$BASELINE_PID" bench_baseline "$WORK/baseline.log"
measure read "http://127.0.0.1:$BASELINE_PORT" baseline_read.lua "$BASELINE_PID"
measure update "http://127.0.0.1:$BASELINE_PORT" baseline_update.lua "$BASELINE_PID"
stop_pid "$BASELINE_PID"

# ------------------------------------------------------------------------------- pgbench
log "pgbench -S: initialising $PGBENCH_DB at scale 10"
psql_admin -c "DROP DATABASE IF EXISTS $PGBENCH_DB WITH (FORCE)"
psql_admin -c "CREATE DATABASE $PGBENCH_DB"
pgbench -i -s 10 -q "$PG_SERVER_URL/$PGBENCH_DB" >"$WORK/pgbench_init.log" 2>&1
pgbench -S -c "$CONNECTIONS" -j "$THREADS" -T "$WARMUP" -n "$PG_SERVER_URL/$PGBENCH_DB" >/dev/null 2>&1
log "pgbench -S -c $CONNECTIONS -j $THREADS -T $DURATION"
(cd "$WORK" && pgbench -S -c "$CONNECTIONS" -j "$THREADS" -T "$DURATION" -n \
  --log --log-prefix=pgbench_tx "$PG_SERVER_URL/$PGBENCH_DB") | tee "$WORK/pgbench.out" >&2

# ------------------------------------------------------------------- statements per webhook
log "counting the statements of a webhook (examples/webhook_statements.rs, fake Stripe)"
TOLLGATE_TEST_POSTGRES_URL="$PG_SERVER_URL" cargo run -q --locked --example webhook_statements \
  -- "$WORK/webhook_statements.md" >&2

# -------------------------------------------------------------------------------- report
cat >"$WORK/meta.env" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock migrations 2>/dev/null || echo ' (with uncommitted changes)')
nproc=$(nproc)
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
mem_total_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
kernel=$(uname -r)
pg_version=$(psql_admin -At -c "SHOW server_version")
pg_settings=$(psql_admin -At -c "SELECT string_agg(name || '=' || setting || COALESCE(unit, ''), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('shared_buffers', 'max_connections', 'synchronous_commit', 'fsync')")
wrk_version=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')
rustc_version=$(rustc --version)
load_before=$LOAD_BEFORE
busy_before=$BUSY_BEFORE
subjects=$SUBJECTS
duration=$DURATION
warmup=$WARMUP
threads=$THREADS
connections=$CONNECTIONS
rust_log=$TOLLGATE_LOG
cache_entries=$CACHE_ENTRIES
pool_size=$(awk -F' *= *' '/^max_connections/{print $2; exit}' "$CONFIG")
workers=$(nproc)
log_lines=$(wc -l <"$WORK/tollgate.log")
idle_cpu_pct=$IDLE_CPU_PCT
idle_seconds=$IDLE_SECONDS
EOF
python3 "$BENCH_DIR/report.py" "$WORK" "$BENCH_DIR/BENCHMARKS.md.in" "$REPORT"
log "wrote $REPORT"
