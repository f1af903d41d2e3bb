# Shell helpers shared by scripts/bench.sh and scripts/bench-webhooks.sh (sourced; not run).
# The caller sets BENCH_NAME (its name in messages), PG_SERVER_URL and STARTED_POSTGRES=""
# before sourcing, and STARTED_PIDS, a list of the processes cleanup stops.

log() { printf '== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

psql_admin() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_SERVER_URL/postgres" "$@"; }

stop_pid() {
  local pid="$1"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

start_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    return 0
  fi
  log "PostgreSQL is down: starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt-get update -q && apt-get install -y -q postgresql
  fi
  STARTED_POSTGRES="$(ls /etc/postgresql | head -n1)"
  pg_ctlcluster --skip-systemctl-redirect "$STARTED_POSTGRES" main start
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q && return 0
    sleep 1
  done
  die "PostgreSQL did not come up"
}

# wait_ready URL PID NAME LOGFILE [TRIES]: until URL answers 200 (every 0.2 s, TRIES times,
# 100 by default), or dies with the end of LOGFILE when PID exits or the time is up.
wait_ready() {
  local url="$1" pid="$2" name="$3" logfile="$4" tries="${5:-100}"
  for _ in $(seq 1 "$tries"); do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 30 "$logfile" >&2
      die "$name exited during start-up (its log is above)"
    fi
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" == 200 ]]; then
      return 0
    fi
    sleep 0.2
  done
  tail -n 30 "$logfile" >&2
  die "$name did not become ready at $url"
}

# Sets BUSY_BEFORE (the machine's busy percent over 3 s) and LOAD_BEFORE (its load averages),
# and warns when other work keeps it busy.
measure_idle_machine() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(machine_ticks)
  sleep 3
  read -r b1 t1 < <(machine_ticks)
  BUSY_BEFORE="$(( 100 * (b1 - b0) / (t1 - t0) ))"
  LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
  log "before measuring: CPU ${BUSY_BEFORE}% busy, load average $LOAD_BEFORE"
  [[ "$BUSY_BEFORE" -lt 15 ]] || log "WARNING: the machine is busy with other work; figures will be lower"
}

# The process's CPU time (user + system) in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Busy and total jiffies of the whole machine.
machine_ticks() { awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; total=busy+$5+$6; print busy, total}' /proc/stat; }
# CPU time (user + system, clock ticks) of every PostgreSQL server process.
pg_ticks() {
  local total=0 pid
  for pid in $(pgrep -x postgres 2>/dev/null); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# bench_cleanup STATUS DB...: on exit, stops STARTED_PIDS, drops the databases DB... and the
# work directory $WORK (unless BENCH_KEEP=1), stops the PostgreSQL the script started, and
# says so when the run failed with STATUS.
bench_cleanup() {
  local status="$1" pid db
  shift
  set +e
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [[ "${BENCH_KEEP:-}" != 1 ]]; then
    if pg_isready -d "$PG_SERVER_URL/postgres" -q 2>/dev/null; then
      for db in "$@"; do
        psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
      done
    fi
    rm -rf "$WORK"
  else
    log "kept databases $* and $WORK"
  fi
  if [[ -n "$STARTED_POSTGRES" ]]; then
    log "stopping the PostgreSQL this script started"
    pg_ctlcluster --skip-systemctl-redirect "$STARTED_POSTGRES" main stop
  fi
  if [[ $status -ne 0 ]]; then
    printf '%s: failed (exit %d)\n' "$BENCH_NAME" "$status" >&2
  fi
}
