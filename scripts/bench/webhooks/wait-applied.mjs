// Waits until a target's database holds the Stripe stub's state, from the moment the load
// generator wrote its summary (its last answer): for Tollgate, no webhook event pending in its
// inbox and every subscription's stored quantity equal to the stub's; for stripe-sync-engine
// (which writes during the request), every subscription item's quantity equal to the stub's.
//
// usage: node wait-applied.mjs --pg-dir DIR --db postgres://... --kind tollgate|sync-engine
//          --stub http://127.0.0.1:18110 --trigger send.json --out applied.json
//          [--ready ready.file] [--timeout 120] [--interval-ms 20]
// `pg` is loaded from DIR/node_modules (the stripe-sync-engine install brings it). The poller
// connects first and writes --ready; it polls only once --trigger exists. It writes --out when
// done, then keeps its connection until `<out>.quit` exists, so that whoever measures
// PostgreSQL's CPU reads it while this backend still lives; `backend_ticks` (the CPU its polls
// cost PostgreSQL, in clock ticks) is to be taken off that measure. `database_ticks` is the CPU
// of the target's own connections over the round (other databases' work left out).

import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    'pg-dir': { type: 'string' },
    db: { type: 'string' },
    kind: { type: 'string' },
    stub: { type: 'string' },
    trigger: { type: 'string' },
    out: { type: 'string' },
    ready: { type: 'string' },
    timeout: { type: 'string', default: '120' },
    'interval-ms': { type: 'string', default: '20' },
  },
});
const require = createRequire(join(args['pg-dir'], 'package.json'));
const { Client } = require('pg');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ticks = (pid) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
};

const client = new Client({ connectionString: args.db, application_name: 'bench_wait_applied' });
await client.connect();
const backend = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
// The stub's state for this round is set before the round starts.
const expected = (await (await fetch(`${args.stub}/__state`)).json()).subscriptions;
const ids = Object.keys(expected);
// The CPU of the target's own connections (the backends on its database, this one excepted),
// apart from the rest of PostgreSQL (other databases, background processes): read just before
// the round starts and when it is applied. A backend that ends in between is not counted.
const connections = async () =>
  (
    await client.query({
      name: 'backends',
      text: 'SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
    })
  ).rows.map((r) => r.pid);
const before = new Map((await connections()).map((pid) => [pid, ticks(pid)]));
if (args.ready) writeFileSync(args.ready, String(backend));

while (!existsSync(args.trigger)) await sleep(2);
const sent = JSON.parse(readFileSync(args.trigger, 'utf8'));
const t0 = ticks(backend);

const queries = {
  tollgate: {
    pending: 'SELECT count(*)::int AS n FROM stripe_events WHERE processed_at IS NULL',
    state:
      'SELECT stripe_subscription_id AS id, quantity::int AS quantity FROM subscriptions WHERE stripe_subscription_id = ANY($1)',
  },
  'sync-engine': {
    pending: null,
    state:
      'SELECT subscription AS id, quantity FROM stripe.subscription_items WHERE subscription = ANY($1) AND NOT COALESCE(deleted, false)',
  },
}[args.kind];

const deadline = Date.now() + Number(args.timeout) * 1000;
let polls = 0;
let pending = 0;
let mismatched = [];
let appliedAt = null;
for (;;) {
  polls += 1;
  pending = queries.pending
    ? (await client.query({ name: 'pending', text: queries.pending })).rows[0].n
    : 0;
  const rows = (await client.query({ name: 'state', text: queries.state, values: [ids] })).rows;
  const stored = new Map(rows.map((r) => [r.id, Number(r.quantity)]));
  mismatched = ids.filter((id) => stored.get(id) !== expected[id]);
  if (pending === 0 && mismatched.length === 0) {
    appliedAt = Date.now();
    break;
  }
  if (Date.now() > deadline) break;
  await sleep(Number(args['interval-ms']));
}
const t1 = ticks(backend);
const after = await connections();
const databaseTicks = after.reduce((sum, pid) => sum + ticks(pid) - (before.get(pid) ?? 0), 0);

let samples = [];
if (mismatched.length) {
  const stored = new Map(
    (await client.query(queries.state, [mismatched.slice(0, 5)])).rows.map((r) => [r.id, r.quantity]),
  );
  samples = mismatched.slice(0, 5).map((id) => ({ id, expected: expected[id], stored: stored.get(id) ?? null }));
}
const result = {
  kind: args.kind,
  applied: appliedAt !== null,
  applied_at_ms: appliedAt,
  // From the load generator's last answer; 0 when everything was applied by then.
  after_last_ack_ms: appliedAt === null ? null : Math.max(0, appliedAt - sent.last_ack_ms),
  waited_s: Number(args.timeout),
  pending,
  mismatched: mismatched.length,
  mismatch_samples: samples,
  subscriptions: ids.length,
  polls,
  backend_pid: backend,
  backend_ticks: t1 - t0,
  // The target's connections, from just before the round until it was applied.
  database_backends: after.length,
  database_ticks: databaseTicks,
};
writeFileSync(`${args.out}.tmp`, JSON.stringify(result, null, 1));
renameSync(`${args.out}.tmp`, args.out);
console.log(JSON.stringify(result));
const quitBy = Date.now() + 600_000;
while (!existsSync(`${args.out}.quit`) && Date.now() < quitBy) await sleep(10);
await client.end();
