// The load generator of scripts/bench-webhooks.sh: builds and signs a round's events before
// timing anything (stream.mjs), then sends them over `connections` keep-alive connections, one
// worker per connection pulling from one queue, and records each answer's status and time.
//
// usage: node send.mjs --url http://127.0.0.1:18081/v1/webhooks/stripe --secret whsec_...
//          --fixtures tests/fixtures/stripe --customers 500 --events 3000 --round 1
//          [--connections 16] [--seed 42] [--tag run1] [--out result.json]
//          [--ready FILE --go FILE]
// With --ready and --go: once the events are built and signed, writes FILE (--ready) and
// waits until the --go file exists before sending, so that the caller measures the machine
// from the first send only.
// --round 0 sends one customer.subscription.created per customer (--events is ignored).
// Prints (and writes to --out, atomically: others wait for the file) a JSON summary: count,
// ok, errors (non-2xx answers and failed requests), statuses, duration, events/s, answer-time
// percentiles, and the wall-clock times of the first send and of the last answer.

import { Agent, request } from 'node:http';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { World, signature } from './stream.mjs';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    secret: { type: 'string' },
    fixtures: { type: 'string' },
    customers: { type: 'string', default: '500' },
    events: { type: 'string', default: '3000' },
    round: { type: 'string', default: '1' },
    connections: { type: 'string', default: '16' },
    seed: { type: 'string', default: '42' },
    tag: { type: 'string', default: 'x' },
    out: { type: 'string' },
    label: { type: 'string', default: '' },
    ready: { type: 'string' },
    go: { type: 'string' },
  },
});
const customers = Number(args.customers);
const events = Number(args.events);
const round = Number(args.round);
const connections = Number(args.connections);
if (events % customers !== 0) {
  console.error(`send: ${events} events is not a multiple of ${customers} customers`);
  process.exit(2);
}
const perCustomer = events / customers;

// Everything is built and signed before the clock starts.
const world = new World(args.fixtures, customers);
const stream = world.events(round, perCustomer, Number(args.seed), args.tag);
const now = Math.floor(Date.now() / 1000);
const prepared = stream.map((event) => {
  const body = Buffer.from(JSON.stringify(event));
  return { id: event.id, body, signature: signature(args.secret, now, body.toString('utf8')) };
});

const target = new URL(args.url);
const agent = new Agent({ keepAlive: true, maxSockets: connections, maxFreeSockets: connections });

function post(item) {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const req = request(
      {
        agent,
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': item.body.length,
          'Stripe-Signature': item.signature,
          'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode,
            ns: process.hrtime.bigint() - started,
            at: Date.now(),
            body: res.statusCode >= 300 ? Buffer.concat(chunks).toString('utf8').slice(0, 300) : '',
          }),
        );
        res.on('error', (e) =>
          resolve({ status: 0, ns: process.hrtime.bigint() - started, at: Date.now(), body: String(e) }),
        );
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error('no answer within 60 s')));
    req.on('error', (e) =>
      resolve({ status: 0, ns: process.hrtime.bigint() - started, at: Date.now(), body: String(e) }),
    );
    req.end(item.body);
  });
}

const results = new Array(prepared.length);
let next = 0;
async function worker() {
  while (next < prepared.length) {
    const k = next++;
    results[k] = await post(prepared[k]);
  }
}

if (args.ready && args.go) {
  writeFileSync(args.ready, '');
  while (!existsSync(args.go)) {
    await new Promise((r) => setTimeout(r, 5));
  }
}

const firstSend = Date.now();
const t0 = process.hrtime.bigint();
await Promise.all(Array.from({ length: connections }, worker));
const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
agent.destroy();

const statuses = {};
const errorSamples = [];
let ok = 0;
for (const [k, r] of results.entries()) {
  statuses[r.status] = (statuses[r.status] || 0) + 1;
  if (r.status >= 200 && r.status < 300) ok += 1;
  else if (errorSamples.length < 5) errorSamples.push({ event: prepared[k].id, status: r.status, body: r.body });
}
const ms = results.map((r) => Number(r.ns) / 1e6).sort((a, b) => a - b);
const pct = (p) => ms[Math.max(0, Math.min(ms.length - 1, Math.ceil((p / 100) * ms.length) - 1))];
const lastAck = Math.max(...results.map((r) => r.at));
const summary = {
  label: args.label,
  round,
  type: stream[0].type,
  count: results.length,
  customers,
  per_customer: round === 0 ? 1 : perCustomer,
  connections,
  ok,
  errors: results.length - ok,
  statuses,
  error_samples: errorSamples,
  first_send_ms: firstSend,
  last_ack_ms: lastAck,
  duration_s: elapsed,
  events_per_s: results.length / elapsed,
  latency_ms: {
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    max: ms[ms.length - 1],
    mean: ms.reduce((a, b) => a + b, 0) / ms.length,
  },
};
const text = JSON.stringify(summary, null, 1);
if (args.out) {
  writeFileSync(`${args.out}.tmp`, text);
  renameSync(`${args.out}.tmp`, args.out);
}
console.log(text);
