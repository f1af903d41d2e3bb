#!/usr/bin/env python3
"""Writes the "Webhook intake" section of docs/BENCHMARKS.md from a scripts/bench-webhooks.sh
work directory: the text between <!-- webhooks:begin --> and <!-- webhooks:end --> is replaced
(the section is appended when the markers are absent; the file is created when missing).

usage: report.py WORK_DIR REPORT

WORK_DIR holds, per round NAME (engine_created, engine, tollgate_created, tollgate,
tollgate_storm): NAME.send.json (load generator), NAME.applied.json (poller), NAME.stub.json
(the Stripe stub's counts) and NAME.env (CPU, machine); meta.env (machine and parameters) and
tollgate-config.txt (`tollgate check-config --print`).
"""
import importlib.util
import json
import os
import re
import sys

BEGIN = "<!-- webhooks:begin -->"
END = "<!-- webhooks:end -->"

THROUGHPUT_RATIO = 3.0
READS_PER_EVENT = 0.25
APPLIED_WITHIN_S = 10.0
STORM_P99_MS = 100.0


# KEY=VALUE files, read as the main report (scripts/bench/report.py) reads them.
_spec = importlib.util.spec_from_file_location(
    "bench_report", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "report.py"))
_main_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_main_report)
read_env = _main_report.read_env


def load(work, name):
    """A round's figures, or None when it did not run."""
    path = os.path.join(work, f"{name}.send.json")
    if not os.path.exists(path):
        return None
    send = json.load(open(path))
    applied = json.load(open(os.path.join(work, f"{name}.applied.json")))
    stub = json.load(open(os.path.join(work, f"{name}.stub.json")))
    env = read_env(os.path.join(work, f"{name}.env"))
    tck = int(env["clk_tck"])
    count = send["count"]
    # The poller's own queries are PostgreSQL work of the bench, not of the target.
    pg_ticks = max(0, int(env["pg_ticks"]) - int(applied.get("backend_ticks", 0)))
    total = int(env["machine_total"])
    reads = sum(r["count"] for k, r in stub["routes"].items() if k.startswith("GET "))
    return {
        "name": name,
        "count": count,
        "ok": send["ok"],
        "errors": send["errors"],
        "statuses": send["statuses"],
        "error_samples": send["error_samples"],
        "eps": send["events_per_s"],
        "duration_s": send["duration_s"],
        "p50": send["latency_ms"]["p50"],
        "p99": send["latency_ms"]["p99"],
        "max": send["latency_ms"]["max"],
        "cpu_us": int(env["cpu_ticks"]) / tck * 1e6 / count,
        "pg_us": pg_ticks / tck * 1e6 / count,
        "db_us": int(applied.get("database_ticks", 0)) / tck * 1e6 / count,
        # Until the last answer only (the poller had not started its queries).
        "cpu_us_answering": int(env.get("cpu_ticks_answering", 0)) / tck * 1e6 / count,
        "pg_us_answering": int(env.get("pg_ticks_answering", 0)) / tck * 1e6 / count,
        "window_s": int(env["window_ms"]) / 1000,
        "busy": int(env["machine_busy"]) / total if total else float("nan"),
        # Until the last answer: how busy the whole machine was, and its CPU per event.
        "busy_answering": (int(env.get("machine_busy_answering", 0))
                           / max(1, int(env.get("machine_total_answering", 0)))),
        "machine_us_answering": int(env.get("machine_busy_answering", 0)) / tck * 1e6 / count,
        "requests": stub["total"],
        "reads": reads,
        "failed_reads": stub["failed"],
        "routes": stub["routes"],
        "applied": applied["applied"],
        "applied_ms": applied["after_last_ack_ms"],
        "pending": applied["pending"],
        "mismatched": applied["mismatched"],
        "mismatch_samples": applied["mismatch_samples"],
        "waited_s": applied["waited_s"],
        "subscriptions": applied["subscriptions"],
        "log_lines": env.get("log_lines"),
        "log_warn": int(env.get("log_warn", 0) or 0),
        "log_error": int(env.get("log_error", 0) or 0),
        "log_failed_syncs": int(env.get("log_failed_syncs", 0) or 0),
    }


def applied_text(t):
    if t["applied"]:
        return f"{t['applied_ms'] / 1000:.2f} s"
    return (f"**not within {t['waited_s']} s** ({t['pending']} pending, "
            f"{t['mismatched']} of {t['subscriptions']} differ)")


def row(label, t):
    if t is None:
        return f"| {label} | not run | | | | | | | | | | |"
    return (f"| {label} | {t['count']:,} | {t['eps']:,.0f} | {t['errors']} | {t['p50']:.1f} ms | "
            f"{t['p99']:.1f} ms | {t['max']:.1f} ms | {t['cpu_us']:,.0f} µs | {t['db_us']:,.0f} µs | "
            f"{t['pg_us']:,.0f} µs | "
            f"{t['requests'] / t['count']:.2f} | {applied_text(t)} |")


def routes_text(t):
    if not t["routes"]:
        return "none"
    parts = []
    for key, r in sorted(t["routes"].items()):
        text = f"`{key}` {r['count']:,}"
        if r["failed"]:
            text += f" ({r['failed']:,} answered 500 by the stub)"
        parts.append(text)
    return ", ".join(parts)


def times(a, b):
    return f"{a / b:.2f}×" if b else "n/a"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def settings_in_force(work):
    """[webhooks] and Stripe's request budget from `tollgate check-config --print`, as text."""
    found = [f"`{key} = {value}`" for key, value in settings(work).items()]
    return ", ".join(found) if found else "unknown"


def settings(work):
    """{"webhooks.concurrency": "8", "stripe.requests_per_second": "40.0", ...}"""
    path = os.path.join(work, "tollgate-config.txt")
    if not os.path.exists(path):
        return {}
    text = open(path).read()
    found = {}
    section = None
    for line in text.splitlines():
        m = re.match(r"^\[([a-z_.]+)\]\s*$", line.strip())
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^([a-z_]+)\s*=\s*(.+)$", line.strip())
        if not m:
            continue
        key, value = m.groups()
        if section == "webhooks" or (section == "stripe" and (
                "per_second" in key or key.endswith("_share") or key == "timeout_seconds")):
            found[f"{section}.{key}"] = value
    return found


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def section(work):
    meta = read_env(os.path.join(work, "meta.env"))
    engine = load(work, "engine")
    engine_created = load(work, "engine_created")
    tollgate = load(work, "tollgate")
    created = load(work, "tollgate_created")
    storm = load(work, "tollgate_storm")
    events = int(meta["events"])
    customers = int(meta["customers"])
    per = events // customers
    fail_rate = float(meta["fail_rate"])
    debug = meta.get("build_profile") == "debug"

    lines = [BEGIN, "## Webhook intake", ""]
    lines += [
        "Written by `scripts/bench-webhooks.sh` (template: `scripts/bench/webhooks/report.py`); "
        "do not edit by hand, run the script again. `scripts/bench.sh` keeps this section when it "
        f"rewrites the rest. Measured on {meta['date']} at commit `{meta['commit']}`, with "
        f"Tollgate's **{meta['build_profile']}** build (`{meta['tollgate_bin']}`).",
        "",
    ]
    if debug:
        lines += [
            "> **A debug build was measured**: Tollgate's figures below are a debug binary's "
            "(unoptimised, several times slower than the release build), so they check that "
            "every stage of the benchmark works, not Tollgate's speed. Run the script without "
            "`BENCH_TOLLGATE_BIN` for the release figures.",
            "",
        ]
    mem_gb = int(meta.get("mem_total_kb", "0") or 0) / 1024 / 1024
    lines += [
        "| | |",
        "|---|---|",
        f"| machine | {meta['nproc']} cores, {meta['cpu_model']}, {mem_gb:.1f} GiB |",
        f"| PostgreSQL | {meta['pg_version']}, local, {meta['pg_settings']} |",
        f"| Node | {meta['node_version']}: load generator, Stripe stub, stripe-sync-engine |",
        f"| stripe-sync-engine | `@supabase/stripe-sync-engine` {meta['engine_version']} (npm), "
        f"stripe-node {meta['stripe_node_version']}, pg {meta['pg_node_version']} |",
        f"| Tollgate | `RUST_LOG={meta['rust_log']}`, {settings_in_force(work)}"
        + (f", from the environment: `{meta['passed_env']}`" if meta.get("passed_env") else "")
        + " |",
        f"| just before measuring | CPU {meta['busy_before']}% busy, load average "
        f"{meta['load_before']} |",
        "",
        "### The stream",
        "",
        f"- {events:,} `customer.subscription.updated` events for {customers:,} customers, "
        f"{per} each, in {per} waves in which every customer appears once (order shuffled with "
        f"seed {meta['seed']}): each a Stripe event of API version `2026-09-30.endive` whose "
        "object is the customer's subscription (shaped from Stripe's example objects in "
        "`tests/fixtures/stripe`), with `previous_attributes`, signed with a `Stripe-Signature` "
        "header as Stripe signs it (`t=…,v1=` HMAC-SHA256 of `t.payload`). Each event of a "
        "customer sets its subscription's quantity (one more each time); the last carries the "
        "final state. Built and signed before the clock starts, sent by "
        f"`scripts/bench/webhooks/send.mjs` over {meta['connections']} keep-alive connections "
        "(one worker each, pulling from one queue); the same sender for both targets.",
        f"- Before that round, unmeasured for the targets, each target takes one "
        f"`customer.subscription.created` per customer (quantity 1), so that the customers of the "
        "burst are known, as after their checkout; its figures are in the last rows.",
        "- Stripe is a local stub (`scripts/bench/webhooks/stripe-stub.mjs`, Node): every "
        "customer (metadata `tollgate_subject = user:bench-<i>`) with one subscription at the "
        "round's final state; it answers the reads a sync makes and counts every request it "
        "receives by path.",
        "- stripe-sync-engine runs as one Node process (`scripts/bench/webhooks/"
        "sync-engine-server.mjs`) whose `POST /webhooks` calls the library's "
        "`processWebhook(body, signature)`: it checks the signature and upserts the event's "
        "subscription and its items into its `stripe` schema (its migrations run first), "
        "trusting the payload; its Stripe client points at the stub. Its pool has 10 "
        "connections, like Tollgate's; both connect to PostgreSQL without TLS "
        "(node-postgres's default; Tollgate's `DATABASE_URL` says `sslmode=disable`).",
        "- Tollgate stores each event in its inbox and answers; once an event is due "
        "(`webhooks.coalesce_ms` after it was stored) its workers re-read its customer's "
        "subscriptions from the stub, once for all of the customer's pending events, and write "
        "what changed. The **storm** round runs "
        f"on the same Tollgate afterwards with {fail_rate:.0%} of the stub's reads answering 500 "
        "(Stripe's error body; chosen with the seed).",
        "- Applied: after the last answer, `scripts/bench/webhooks/wait-applied.mjs` polls the "
        "target's database until no event is pending (Tollgate's `stripe_events`) and every "
        "subscription's stored quantity equals the stub's (Tollgate's `subscriptions`, "
        "stripe-sync-engine's `stripe.subscription_items`). Its time is from the last answer "
        "(0 when everything was applied by then; polled every 20 ms).",
        "- CPU per event, from the first event sent until the round was applied, divided by the "
        "round's events: the server process's user + system time (`/proc/<pid>/stat`); "
        "PostgreSQL's, for the target's own connections (the backends on its database) and for "
        "all PostgreSQL processes (other databases and background writers included, as "
        "`scripts/bench.sh` counts it), both less what the poller's queries cost. Stripe requests "
        "per event: every request the stub received during the round (retries included) over "
        "the events.",
        "",
        "### Results",
        "",
        "| target | events | acknowledged events/s | errors | p50 answer | p99 answer | max answer "
        "| server CPU per event | PostgreSQL CPU per event: its connections | the same: all "
        "of PostgreSQL | Stripe requests per event | applied after the last answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        row("stripe-sync-engine", engine),
        row("Tollgate", tollgate),
    ]
    if engine and tollgate:
        lines.append(
            f"| **Tollgate ÷ stripe-sync-engine** | | **{tollgate['eps'] / engine['eps']:.2f}×** | | "
            f"{tollgate['p50'] / engine['p50']:.2f}× | {tollgate['p99'] / engine['p99']:.2f}× | "
            f"{tollgate['max'] / engine['max']:.2f}× | "
            f"{times(tollgate['cpu_us'], engine['cpu_us'])} | "
            f"{times(tollgate['db_us'], engine['db_us'])} | "
            f"{times(tollgate['pg_us'], engine['pg_us'])} | | |")
    lines += [
        row(f"Tollgate, storm ({fail_rate:.0%} of Stripe reads fail)", storm),
        row("first sight, stripe-sync-engine (`customer.subscription.created`, one per "
            "customer)", engine_created),
        row("first sight, Tollgate (the same)", created),
        "",
        "Stripe requests received by the stub, by round:",
        "",
        "| round | requests | by path |",
        "|---|---:|---|",
    ]
    for label, t in (("stripe-sync-engine", engine), ("Tollgate", tollgate),
                     ("Tollgate, storm", storm),
                     ("first sight, stripe-sync-engine", engine_created),
                     ("first sight, Tollgate", created)):
        if t:
            lines.append(f"| {label} | {t['requests']:,} | {routes_text(t)} |")

    # Targets.
    checks = []
    if engine and tollgate:
        ratio = tollgate["eps"] / engine["eps"]
        checks.append(("acknowledged events/s, Tollgate ÷ stripe-sync-engine",
                       f"≥ {THROUGHPUT_RATIO:.0f}×",
                       f"{ratio:.2f}× ({tollgate['eps']:,.0f} vs {engine['eps']:,.0f}/s)",
                       ratio >= THROUGHPUT_RATIO))
    if tollgate:
        checks.append(("errors (non-2xx or no answer), Tollgate", "0",
                       f"{tollgate['errors']}"
                       + (f" (stripe-sync-engine: {engine['errors']})" if engine else ""),
                       tollgate["errors"] == 0))
        rpe = tollgate["reads"] / tollgate["count"]
        checks.append(("Stripe reads per event, Tollgate", f"≤ {READS_PER_EVENT}",
                       f"{rpe:.2f} ({tollgate['reads']:,} reads for {tollgate['count']:,} events)",
                       rpe <= READS_PER_EVENT))
        within = tollgate["applied"] and tollgate["applied_ms"] / 1000 <= APPLIED_WITHIN_S
        checks.append((f"all {tollgate['count']:,} events applied after the last answer",
                       f"within {APPLIED_WITHIN_S:.0f} s", applied_text(tollgate), within))
    if storm:
        checks.append(("storm: p99 webhook answer", f"< {STORM_P99_MS:.0f} ms",
                       f"{storm['p99']:.1f} ms (p50 {storm['p50']:.1f} ms, max "
                       f"{storm['max']:.1f} ms)", storm["p99"] < STORM_P99_MS))
        checks.append(("storm: errors", "0", f"{storm['errors']}", storm["errors"] == 0))
        checks.append(("storm: nothing lost (every event applied, the state equal to the "
                       "stub's)", "all, eventually",
                       (f"all, {storm['applied_ms'] / 1000:.2f} s after the last answer"
                        if storm["applied"] else applied_text(storm))
                       + f"; {storm['failed_reads']:,} of {storm['reads']:,} reads answered 500",
                       storm["applied"]))
    lines += ["", "### Targets", "", "| target | required | measured | verdict |",
              "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {verdict(d)} |" for a, b, c, d in checks]

    # What the figures say about each missed target (facts of this run, no diagnosis).
    missed = []
    if engine and tollgate and tollgate["eps"] < THROUGHPUT_RATIO * engine["eps"]:
        missed.append(
            f"- **Throughput**: Tollgate acknowledged {tollgate['eps']:,.0f} events/s, "
            f"{tollgate['eps'] / engine['eps']:.2f}× stripe-sync-engine's {engine['eps']:,.0f}. Per "
            f"event over the round, Tollgate's process used {tollgate['cpu_us']:,.0f} µs of CPU "
            f"against {engine['cpu_us']:,.0f} µs, and PostgreSQL {tollgate['db_us']:,.0f} µs for "
            f"its connections against {engine['db_us']:,.0f} µs (Tollgate's figures include "
            "applying the events after the answers; stripe-sync-engine applies them within "
            "them); until the last answer, Tollgate's process used "
            f"{tollgate['cpu_us_answering']:,.0f} µs per event and all of PostgreSQL "
            f"{tollgate['pg_us_answering']:,.0f} µs (stripe-sync-engine: "
            f"{engine['cpu_us_answering']:,.0f} µs and {engine['pg_us_answering']:,.0f} µs). "
            "The load generator, the server and PostgreSQL share the machine's "
            f"{meta['nproc']} cores: until the last answer the machine was "
            f"{tollgate['busy_answering']:.0%} busy with Tollgate's round and "
            f"{engine['busy_answering']:.0%} with stripe-sync-engine's, and everything else "
            "on it (the load generator, the Stripe stub, the kernel) took "
            f"{rest_us(tollgate):,.0f} µs per event in Tollgate's round and "
            f"{rest_us(engine):,.0f} µs in stripe-sync-engine's. A round whose events cost "
            "C µs of the machine's CPU each cannot be answered faster than "
            f"{meta['nproc']} × 10⁶ / C events/s: "
            f"{ceiling(tollgate, meta):,.0f}/s for Tollgate's, "
            f"{ceiling(engine, meta):,.0f}/s for stripe-sync-engine's (3× the latter would need "
            f"Tollgate's events to cost {engine['machine_us_answering'] / 3:,.0f} µs of CPU "
            "each, load generator included)."
            + (" Tollgate ran as a debug build." if debug else ""))
    config = settings(work)
    rate = number(config.get("stripe.requests_per_second"))
    share = number(config.get("stripe.background_share"))
    budget = rate * share if rate and share else None
    if tollgate and tollgate["reads"] > READS_PER_EVENT * tollgate["count"]:
        missed.append(
            f"- **Stripe reads**: {tollgate['reads']:,} reads for {tollgate['count']:,} events of "
            f"{customers:,} customers: {tollgate['reads'] / customers:.1f} reads per customer "
            f"for its {per} events ({tollgate['count'] / max(tollgate['reads'], 1):.2f} events "
            "per read), by path: " + routes_text(tollgate) + ". The target allows "
            f"{READS_PER_EVENT * tollgate['count']:,.0f}, "
            f"{READS_PER_EVENT * tollgate['count'] / customers:.1f} per customer.")
    if tollgate and not (tollgate["applied"]
                         and tollgate["applied_ms"] / 1000 <= APPLIED_WITHIN_S):
        text = (f"- **Time to applied**: {applied_text(tollgate)} after the last answer "
                f"(the answers took {tollgate['duration_s']:.1f} s).")
        if budget:
            text += (f" The inbox may send Stripe `stripe.requests_per_second` × "
                     f"`stripe.background_share` = {budget:g} requests/s: the round's "
                     f"{tollgate['requests']:,} requests need {tollgate['requests'] / budget:.1f} s "
                     f"at that rate, and the target's {READS_PER_EVENT * tollgate['count']:,.0f} "
                     f"reads {READS_PER_EVENT * tollgate['count'] / budget:.1f} s.")
        missed.append(text)
    if storm and storm["p99"] >= STORM_P99_MS:
        missed.append(f"- **Storm answers**: p99 {storm['p99']:.1f} ms (p50 {storm['p50']:.1f} ms,"
                      f" max {storm['max']:.1f} ms).")
    if storm and not storm["applied"]:
        missed.append(f"- **Storm, nothing lost**: {applied_text(storm)}.")
    lines += ["", "### Where a target is missed", ""] + (
        missed or ["- Every target was met in this run."])

    notes = []
    if debug:
        notes.append("- Tollgate ran as a **debug** build: its CPU and throughput figures are not "
                     "the release build's.")
    busy = meta.get("busy_before", "")
    if busy.isdigit() and int(busy) >= 15:
        notes.append(f"- The machine was not idle just before measuring ({busy}% CPU busy, load "
                     f"average {meta.get('load_before', '?')}): other work shared the cores (and "
                     "PostgreSQL), so the figures, CPU per event included, are less exact.")
    for label, t in (("stripe-sync-engine", engine), ("Tollgate", tollgate),
                     ("Tollgate, storm", storm)):
        if t:
            notes.append(f"- {label}: the measured window (first event sent → applied) lasted "
                         f"{t['window_s']:.1f} s, the answers {t['duration_s']:.1f} s; the "
                         f"machine was {t['busy']:.0%} busy over the window. Until the last "
                         f"answer: server CPU {t['cpu_us_answering']:,.0f} µs and all of "
                         f"PostgreSQL {t['pg_us_answering']:,.0f} µs per event.")
        if t and t["errors"]:
            notes.append(f"- {label}: answers {t['statuses']}; e.g. "
                         + "; ".join(f"`{e['status']} {e['body'][:150]}`"
                                     for e in t["error_samples"][:3]))
        if t and not t["applied"] and t["mismatch_samples"]:
            notes.append(f"- {label}: not applied; e.g. {t['mismatch_samples'][:3]}")
    coalesce = number(config.get("webhooks.coalesce_ms"))
    if tollgate and coalesce:
        when = ("before any of them was due" if tollgate["duration_s"] * 1000 <= coalesce
                else "while the first were applied")
        notes.append(
            f"- Tollgate's stored events wait `webhooks.coalesce_ms` = {coalesce:g} ms before "
            f"they are due; this round's answers took {tollgate['duration_s']:.1f} s, so it was "
            f"answered {when}. A burst longer than the window is answered while it is applied, "
            "the workers' CPU beside the answers': `TOLLGATE_WEBHOOKS__COALESCE_MS=0 "
            "scripts/bench-webhooks.sh` measures that from the first event.")
    elif tollgate and coalesce == 0:
        notes.append("- `webhooks.coalesce_ms = 0`: Tollgate's workers applied the events from "
                     "the first one on, beside the answers.")
    for label, t in (("Tollgate", tollgate), ("Tollgate, storm", storm)):
        if t and t["log_lines"] is not None:
            notes.append(f"- {label}: Tollgate's log over the round: {int(t['log_lines']):,} "
                         f"lines, {t['log_warn']} warnings ({t['log_failed_syncs']} of them a "
                         f"failed sync, retried) and {t['log_error']} errors.")
    unmatched = sorted({k for t in (engine, tollgate, storm, engine_created, created) if t
                        for k in t["routes"] if k.endswith("(unmatched)")})
    if unmatched:
        notes.append("- The stub did not serve (answered 404): "
                     + ", ".join(f"`{k}`" for k in unmatched) + ".")
    lines += ["", "### Notes on this run", ""] + (notes or ["- None."])
    lines += [
        "",
        "### Re-running",
        "",
        "```sh",
        "scripts/bench-webhooks.sh   # builds the release binary; needs PostgreSQL on "
        "127.0.0.1:5432, Node 18+ and npm",
        "```",
        "",
        "Settings through the environment: `BENCH_EVENTS`, `BENCH_CUSTOMERS`, "
        "`BENCH_CONNECTIONS`, `BENCH_FAIL_RATE`, `BENCH_SEED`, `BENCH_TOLLGATE_BIN`, "
        "`BENCH_RUST_LOG`, `BENCH_SYNC_ENGINE_VERSION`, `BENCH_POSTGRES_URL`, `BENCH_REPORT`, "
        "`BENCH_KEEP=1`, and `TOLLGATE_WEBHOOKS__*` passed through to Tollgate (see the head of "
        "the script).",
        END,
    ]
    return "\n".join(lines)


def replace_section(text, block):
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        return text[:start] + block + text[end + len(END):]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def rest_us(r):
    """CPU per event, until the last answer, of all but the server and PostgreSQL."""
    return max(0.0, r["machine_us_answering"] - r["cpu_us_answering"] - r["pg_us_answering"])


def ceiling(r, meta):
    """Events/s the machine could answer at most at the round's CPU cost per event."""
    cost = r["machine_us_answering"]
    return int(meta["nproc"]) * 1e6 / cost if cost else float("nan")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    work, report = sys.argv[1:]
    block = section(work)
    text = open(report).read() if os.path.exists(report) else "# Benchmarks\n"
    with open(report, "w") as f:
        f.write(replace_section(text, block))


if __name__ == "__main__":
    main()
