#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md from a scripts/bench.sh work directory.

usage: report.py WORK_DIR TEMPLATE OUTPUT

WORK_DIR holds, per target, NAME.wrk (wrk's output with the BENCH_JSON line of common.lua)
and NAME.env (server-side figures written by bench.sh), pgbench.out and pgbench_tx.* (pgbench
per-transaction logs), and meta.env (machine and parameters).
"""
import glob
import json
import math
import os
import re
import string
import sys

# (name, required ratio of its baseline, baseline name)
ENTITLEMENT_RATIO = 0.80
OUTBOX_RATIO = 0.90
USAGE_RATIO = 0.60
ENTITLEMENT_P99_MS = 10.0
CACHE_BYTES_PER_SUBJECT = 1024


def read_env(path):
    values = {}
    if not os.path.exists(path):
        return values
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if "=" in line:
                key, value = line.split("=", 1)
                values[key] = value
    return values


def wrk_json(path):
    with open(path) as f:
        for line in f:
            if line.startswith("BENCH_JSON "):
                return json.loads(line[len("BENCH_JSON "):])
    raise SystemExit(f"{path}: no BENCH_JSON line (did wrk run the script?)")


def wrk_target(work, name):
    env = read_env(os.path.join(work, f"{name}.env"))
    if env.get("status") == "missing":
        return {"status": "missing"}
    run = wrk_json(os.path.join(work, f"{name}.wrk"))
    warm = wrk_json(os.path.join(work, env["warmup_file"]))
    seconds = run["duration_us"] / 1e6
    socket_errors = (run["connect_errors"] + run["read_errors"] + run["write_errors"]
                     + run["timeouts"])
    cpu_seconds = int(env["cpu_ticks"]) / int(env["clk_tck"])
    total = int(env["machine_total"])
    return {
        "status": "measured",
        "requests": run["requests"],
        "rps": run["requests"] / seconds,
        "p50_ms": run["p50_us"] / 1000,
        "p99_ms": run["p99_us"] / 1000,
        "mean_ms": run["mean_us"] / 1000,
        "non_2xx": run["non_2xx"] + warm["non_2xx"],
        "socket_errors": socket_errors,
        "errors": run["non_2xx"] + socket_errors,
        "warmup_errors": warm["non_2xx"] + warm["connect_errors"] + warm["read_errors"]
        + warm["write_errors"] + warm["timeouts"],
        "peak_rss_mb": int(env["peak_rss_kb"]) / 1024,
        "cpu_us_per_req": cpu_seconds * 1e6 / max(run["requests"], 1),
        "pg_us_per_req": int(env.get("pg_ticks", 0)) / int(env["clk_tck"]) * 1e6
        / max(run["requests"], 1),
        "cpu_cores": cpu_seconds / seconds,
        "machine_busy": int(env["machine_busy"]) / total if total else float("nan"),
        "xacts_per_req": int(env["db_xacts"]) / max(run["requests"] + warm["requests"], 1),
        "probe_status": env.get("probe_status"),
    }


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def pgbench_target(work):
    out_path = os.path.join(work, "pgbench.out")
    if not os.path.exists(out_path):
        return {"status": "missing"}
    out = open(out_path).read()
    tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out).group(1))
    failed = re.search(r"number of failed transactions: (\d+)", out)
    latencies = []
    for path in glob.glob(os.path.join(work, "pgbench_tx.*")):
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    return {
        "status": "measured",
        "rps": tps,
        "p50_ms": percentile(latencies, 50) / 1000,
        "p99_ms": percentile(latencies, 99) / 1000,
        "errors": int(failed.group(1)) if failed else 0,
    }


STATEMENT = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)$")


def summarise(sql):
    """`SELECT … FROM subscriptions`, `INSERT INTO usage_ledger … ON CONFLICT`, `BEGIN`, ..."""
    sql = sql.strip()
    upper = sql.upper()
    table = None
    for pattern in (r'^(SELECT)\b.*?\bFROM "?(\w+)"?', r'^(INSERT INTO) "?(\w+)"?',
                    r'^(UPDATE) "?(\w+)"?', r'^(DELETE FROM) "?(\w+)"?'):
        m = re.match(pattern, sql, re.IGNORECASE | re.DOTALL)
        if m:
            verb, table = m.group(1).upper(), m.group(2)
            break
    if table is None:
        return sql if len(sql) <= 40 else sql[:40] + " …"
    text = f"{verb} … FROM {table}" if verb == "SELECT" else f"{verb} {table}"
    if verb == "UPDATE" and " SET " in upper:
        text += " SET …"
    for keyword in ("ON CONFLICT", "RETURNING", "FOR UPDATE"):
        if keyword in upper:
            text += (" " if text.endswith("…") else " … ") + keyword
    return text


def statements(work, name):
    """The statements one sampled request ran, summarised (an empty list when it ran none);
    None when not sampled."""
    path = os.path.join(work, f"{name}.statements")
    if not os.path.exists(path):
        return None
    found = []
    with open(path) as f:
        for line in f:
            m = STATEMENT.search(line.rstrip("\n"))
            if m:
                found.append(summarise(m.group(1)))
    return found


def fmt_rps(t):
    return f"{t['rps']:,.0f}"


def row(label, t, with_server=True):
    if t["status"] != "measured":
        return f"| {label} | not measured: endpoint missing | | | | | | | |"
    server = (
        f"{t['peak_rss_mb']:.1f} MB | {t['cpu_us_per_req']:.0f} µs | "
        f"{t['pg_us_per_req']:.0f} µs | {t['xacts_per_req']:.2f}"
        if with_server else "n/a | n/a | n/a | 1 (by construction)"
    )
    return (f"| {label} | {fmt_rps(t)} | {t['p50_ms']:.2f} ms | {t['p99_ms']:.2f} ms | "
            f"{t['errors']} | {server} |")


def ratio_row(t, base, required):
    if t["status"] != "measured" or base["status"] != "measured":
        return "| ratio to the baseline | pending | | | | | | | |"
    r = t["rps"] / base["rps"]
    return (f"| **ratio to the baseline** | **{r:.1%}** (target ≥ {required:.0%}) | "
            f"{t['p50_ms'] / base['p50_ms']:.2f}× | {t['p99_ms'] / base['p99_ms']:.2f}× | | "
            f"{t['peak_rss_mb'] / base['peak_rss_mb']:.2f}× | "
            f"{t['cpu_us_per_req'] / base['cpu_us_per_req']:.2f}× | "
            f"{t['pg_us_per_req'] / base['pg_us_per_req'] if base['pg_us_per_req'] else math.nan:.2f}× | "
            f"{t['xacts_per_req'] / base['xacts_per_req']:.2f}× |")


def yes_no(ok):
    return "met" if ok else "**MISSED**"


def why_throughput(kind, t, base, base_label, stmts, base_stmts):
    if stmts and base_stmts is not None and base_stmts:
        trips = (f"ran {len(stmts)} statements on PostgreSQL, each a round trip "
                 f"({'; '.join(f'`{x}`' for x in stmts)}), against the baseline's "
                 f"{len(base_stmts)} ({'; '.join(f'`{x}`' for x in base_stmts)})")
    else:
        trips = (f"ran {t['xacts_per_req']:.2f} database transactions against the baseline's "
                 f"{base['xacts_per_req']:.2f}")
    return (
        f"Per {kind}, Tollgate spent {t['cpu_us_per_req']:.0f} µs of its own CPU against "
        f"{base['cpu_us_per_req']:.0f} µs for the baseline's {base_label}, PostgreSQL spent "
        f"{t['pg_us_per_req']:.0f} µs against {base['pg_us_per_req']:.0f} µs, and {trips}. The "
        f"machine was {t['machine_busy']:.0%} busy during Tollgate's run and "
        f"{base['machine_busy']:.0%} during the baseline's: with wrk, PostgreSQL and the server "
        f"sharing 2 cores, throughput follows what each request costs in total (server CPU, "
        f"PostgreSQL's work per statement, the load generator), so the extra statements and CPU "
        f"are the gap."
    )


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    work, template_path, output = sys.argv[1:]
    meta = read_env(os.path.join(work, "meta.env"))
    ent = wrk_target(work, "entitlements")
    cold = wrk_target(work, "entitlements_cold")
    tenant = wrk_target(work, "entitlements_tenant")
    status = wrk_target(work, "entitlements_status")
    uncached = wrk_target(work, "entitlements_uncached")
    usage = wrk_target(work, "usage")
    usage_fresh = wrk_target(work, "usage_fresh")
    usage_thresholds = wrk_target(work, "usage_thresholds")
    usage_again = wrk_target(work, "usage_again")
    read = wrk_target(work, "read")
    update = wrk_target(work, "update")
    pgb = pgbench_target(work)
    stmts = {name: statements(work, name)
             for name in ("entitlements", "entitlements_cached", "usage", "read", "update")}

    # (key, label, target, ratio required or None for a figure without a target)
    checks = [
        ("warm", "Tollgate `GET /v1/entitlements?user_id=…&feature=export`, warm cache", ent,
         ENTITLEMENT_RATIO),
        ("cold", "the same, cold start (empty cache, filled as the run goes)", cold, None),
        ("tenant", "Tollgate `…&tenant_id=…&feature=export` (three subjects), warm cache", tenant,
         ENTITLEMENT_RATIO),
        ("status", "Tollgate `GET /v1/entitlements?user_id=…` (full status with quotas), warm "
         "cache", status, ENTITLEMENT_RATIO),
        ("off", "Tollgate feature check, snapshot cache off (`snapshot_cache_entries = 0`)",
         uncached, ENTITLEMENT_RATIO),
    ]
    rows = [
        "| target | requests/s | p50 | p99 | errors | peak RSS | server CPU per request "
        "| PostgreSQL CPU per request | DB transactions per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("baseline `GET /read` (one primary-key `SELECT`)", read),
    ]
    for _, label, t, required in checks:
        if t["status"] != "measured":
            continue
        rows.append(row(label, t))
        rows.append(ratio_row(t, read, required or ENTITLEMENT_RATIO).replace(
            "(target ≥ 80%)", "(target ≥ 80%)" if required else "(no target)"))
    rows += [
        row("Tollgate `POST /v1/usage` (1 unit, unique idempotency key)", usage),
        row("baseline `POST /update` (one `UPDATE … RETURNING`)", update),
        ratio_row(usage, update, USAGE_RATIO),
    ]
    outbox_runs = (usage_fresh, usage_thresholds, usage_again)
    if all(t["status"] == "measured" for t in outbox_runs):
        rows += [
            row("Tollgate `POST /v1/usage`, fresh instance, no thresholds", usage_fresh),
            row("the same with `events.quota_thresholds = { calls = [80, 100] }`",
                usage_thresholds),
            row("the same without thresholds, again", usage_again),
        ]
    rows += [
        (f"| `pgbench -S` (reference; tps, no HTTP) | {fmt_rps(pgb)} | {pgb['p50_ms']:.2f} ms | "
         f"{pgb['p99_ms']:.2f} ms | {pgb['errors']} | n/a | n/a | n/a | 1 (by construction) |")
        if pgb["status"] == "measured" else "| `pgbench -S` | not measured | | | | | | | |",
    ]
    table = "\n".join(rows)

    verdicts = []
    missed = []
    names = {"warm": "Feature checks", "tenant": "Tenant checks", "status": "Full status",
             "off": "Feature checks with the cache off"}
    for key, label, t, required in checks:
        if required is None or t["status"] != "measured":
            continue
        what = names[key]
        ratio = t["rps"] / read["rps"]
        ok = ratio >= required
        verdicts.append(f"| {what.lower()}: throughput | ≥ {required:.0%} of the primary-key-read "
                        f"baseline | {ratio:.1%} | {yes_no(ok)} |")
        if not ok:
            missed.append(
                f"- **{what}: throughput is missed**: {fmt_rps(t)}/s is {ratio:.1%} of the "
                f"baseline's {fmt_rps(read)} reads/s (target {required:.0%}). "
                + why_throughput("check", t, read, "one `SELECT`",
                                 stmts["entitlements"] if key == "off" else None, stmts["read"]))
        ok = t["p99_ms"] < ENTITLEMENT_P99_MS
        verdicts.append(f"| {what.lower()}: p99 latency | < {ENTITLEMENT_P99_MS:.0f} ms | "
                        f"{t['p99_ms']:.2f} ms | {yes_no(ok)} |")
        if not ok:
            conns = int(meta.get("connections", "0") or 0)
            missed.append(
                f"- **{what}: p99 is missed**: {t['p99_ms']:.2f} ms against "
                f"{ENTITLEMENT_P99_MS:.0f} ms (the baseline's p99 was {read['p99_ms']:.2f} ms "
                f"under the same load). wrk keeps {conns} requests in flight on a saturated "
                f"machine, so latency is set by throughput: {conns} ÷ {fmt_rps(t)}/s = "
                f"{conns / t['rps'] * 1000:.1f} ms on average (the measured mean was "
                f"{t['mean_ms']:.1f} ms).")
        ok = t["errors"] == 0
        verdicts.append(f"| {what.lower()}: errors | 0 | {t['errors']} | {yes_no(ok)} |")
        if not ok:
            missed.append(f"- **{what} had errors**: {t['non_2xx']} non-2xx answers and "
                          f"{t['socket_errors']} socket errors or timeouts.")
    per_subject = None
    if ent["status"] == "measured" and uncached["status"] == "measured":
        per_subject = ((ent["peak_rss_mb"] - uncached["peak_rss_mb"]) * 1024 * 1024
                       / int(meta.get("subjects", "1")))
        ok = per_subject <= CACHE_BYTES_PER_SUBJECT
        verdicts.append(f"| snapshot cache: memory per cached subject | ≤ "
                        f"{CACHE_BYTES_PER_SUBJECT:,} bytes (half the 2 KiB before) | "
                        f"{per_subject:,.0f} bytes | {yes_no(ok)} |")
        if not ok:
            missed.append(f"- **Memory per cached subject is missed**: {per_subject:,.0f} bytes "
                          f"(peak RSS with every subject cached minus the cache-off instance's, "
                          f"over the subjects).")
    if usage["status"] == "measured" and update["status"] == "measured":
        u_ratio = usage["rps"] / update["rps"]
        ok = u_ratio >= USAGE_RATIO
        verdicts.append(f"| usage consumption: throughput | ≥ {USAGE_RATIO:.0%} of the update "
                        f"baseline | {u_ratio:.1%} | {yes_no(ok)} |")
        if not ok:
            missed.append(
                f"- **Usage throughput is missed**: {fmt_rps(usage)} consumptions/s is "
                f"{u_ratio:.1%} of the baseline's {fmt_rps(update)} updates/s (target "
                f"{USAGE_RATIO:.0%}). "
                + why_throughput("consumption", usage, update, "one `UPDATE … RETURNING`",
                               stmts["usage"], stmts["update"]))
        ok = usage["errors"] == 0
        verdicts.append(f"| usage consumption: errors | 0 | {usage['errors']} | {yes_no(ok)} |")
        if not ok:
            probe = usage.get("probe_status")
            missed.append(
                f"- **Usage consumption had errors**: {usage['non_2xx']} non-2xx answers and "
                f"{usage['socket_errors']} socket errors or timeouts"
                + (f" (the probe request before the run answered {probe})." if probe else "."))
    else:
        verdicts.append(f"| usage consumption: throughput | ≥ {USAGE_RATIO:.0%} of the update "
                        f"baseline | pending | not measured: `POST /v1/usage` is missing |")
        verdicts.append("| usage consumption: errors | 0 | pending | not measured: endpoint "
                        "missing |")
        missed.append("- **Usage consumption was not measured**: `POST /v1/usage` did not exist "
                      "in the build this run measured (it answered 404 `no endpoint`). Run "
                      "`scripts/bench.sh` again once it exists; the script measures it "
                      "automatically.")
    if all(t["status"] == "measured" for t in outbox_runs):
        without = (usage_fresh["rps"] + usage_again["rps"]) / 2
        o_ratio = usage_thresholds["rps"] / without
        ok = o_ratio >= OUTBOX_RATIO
        verdicts.append(
            f"| usage with quota thresholds (the outbox's cost) | ≥ {OUTBOX_RATIO:.0%} of usage "
            f"without (mean of the runs before and after) | {o_ratio:.1%} "
            f"({fmt_rps(usage_thresholds)} vs {without:,.0f}/s) | {yes_no(ok)} |")
        if not ok:
            missed.append(
                f"- **The outbox costs the usage path more than {1 - OUTBOX_RATIO:.0%}**: "
                f"{fmt_rps(usage_thresholds)} consumptions/s with thresholds against "
                f"{without:,.0f}/s without ({o_ratio:.1%}).")
    if cold["status"] == "measured":
        missed.append(
            f"- A cold start (not a target): a replica that just started has an empty cache; "
            f"its first {meta.get('duration', '?')} s served {fmt_rps(cold)} checks/s "
            f"({cold['rps'] / read['rps']:.1%} of the baseline) with "
            f"{cold['xacts_per_req']:.2f} database transactions per check, as the cache fills.")
    if not any(line.startswith("- **") for line in missed):
        missed.insert(0, "- Every target was met in this run.")

    warm_errors = sum(t.get("warmup_errors", 0)
                      for t in (ent, cold, tenant, status, uncached, usage, usage_fresh,
                                usage_thresholds, usage_again, read, update)
                      if t["status"] == "measured")
    notes = []
    if warm_errors:
        notes.append(f"- Warm-up runs (not measured) had {warm_errors} errors in total.")
    busy = meta.get("busy_before", "")
    if busy.isdigit() and int(busy) >= 15:
        notes.append(f"- The machine was not idle just before measuring ({busy}% CPU busy, load "
                     f"average {meta.get('load_before', '?')}): other work shared the cores, so "
                     "every figure, baselines included, may be lower than on an idle machine, and "
                     "the ratios less exact.")

    labels = {
        "entitlements": "Tollgate `GET /v1/entitlements`, first check of the subject",
        "entitlements_cached": "Tollgate `GET /v1/entitlements`, the same check again",
        "read": "baseline `GET /read`",
        "usage": "Tollgate `POST /v1/usage`",
        "update": "baseline `POST /update`",
    }
    lines = ["| request | statements | in order |", "|---|---:|---|"]
    for name, label in labels.items():
        found = stmts[name]
        if found:
            lines.append(f"| {label} | {len(found)} | "
                         + " → ".join(f"`{x}`" for x in found) + " |")
        elif found is not None:
            lines.append(f"| {label} | 0 | none: answered from the snapshot cache |")
        else:
            lines.append(f"| {label} | not sampled | |")
    statements_table = "\n".join(lines)

    values = dict(meta)
    values.update({
        "subjects_fmt": f"{int(meta.get('subjects', '0')):,}",
        "cache_entries_fmt": f"{int(meta.get('cache_entries', '0')):,}",
        "mem_total_gb": f"{int(meta.get('mem_total_kb', '0')) / 1024 / 1024:.1f}",
        "results_table": table,
        "verdict_table": "\n".join(
            ["| target | required | measured | verdict |", "|---|---|---:|---|"] + verdicts),
        "missed": "\n".join(missed),
        "run_notes": "\n".join(notes) if notes else "- None.",
        "statements_table": statements_table,
        "ent_xacts": f"{ent['xacts_per_req']:.2f}",
        "per_subject": f"{per_subject:,.0f}" if per_subject is not None else "n/a",
        "touched": read_env(os.path.join(work, "touch.env")).get("touched", "?"),
        "webhook_table": (open(os.path.join(work, "webhook_statements.md")).read().strip()
                          if os.path.exists(os.path.join(work, "webhook_statements.md"))
                          else "Not measured in this run."),
        "read_xacts": f"{read['xacts_per_req']:.2f}",
    })
    template = string.Template(open(template_path).read())
    text = template.safe_substitute(values)
    # The webhook section is written by scripts/bench-webhooks.sh: kept as it was.
    kept = webhooks_section(output)
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept + "\n"
    with open(output, "w") as f:
        f.write(text)


def webhooks_section(path):
    """The block between <!-- webhooks:begin --> and <!-- webhooks:end --> of the report
    being replaced (scripts/bench-webhooks.sh writes it), or None."""
    if not os.path.exists(path):
        return None
    old = open(path).read()
    begin, end = old.find("<!-- webhooks:begin -->"), old.find("<!-- webhooks:end -->")
    if begin == -1 or end < begin:
        return None
    return old[begin:end + len("<!-- webhooks:end -->")]


if __name__ == "__main__":
    main()
