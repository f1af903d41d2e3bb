// A local stand-in for the Stripe API for scripts/bench-webhooks.sh: N customers, one
// subscription each, at the state the bench's current stage ends in. It answers the reads a
// sync makes (customer, subscription list, and empty charge/invoice lists should they be asked
// for), counts every request it receives by method and path pattern, and can fail a share of
// the reads with Stripe's 500 answer, chosen by a seeded generator.
//
// usage: node stripe-stub.mjs --port 18110 --customers 500 --fixtures tests/fixtures/stripe
//                             [--per-customer 6]
// Control (not counted):
//   GET  /__stats                     counts since the last reset (JSON)
//   POST /__reset                     zeroes the counts
//   POST /__stage?round=R&fail_rate=F&seed=S
//                                     the subscriptions' state becomes round R's final one and
//                                     F (0..1) of the reads answer 500 from now on
//   GET  /__state                     {"subscriptions": {"sub_...": quantity, ...}}
//   GET  /__health                    200

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import { World, customerId, quantityOf, seeded, subscriptionId } from './stream.mjs';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '18110' },
    customers: { type: 'string', default: '500' },
    'per-customer': { type: 'string', default: '6' },
    fixtures: { type: 'string' },
  },
});
const customers = Number(args.customers);
const perCustomer = Number(args['per-customer']);
const world = new World(args.fixtures, customers);

let round = 0;
let failRate = 0;
let random = seeded(1);
let stats = newStats();

function newStats() {
  return { since: new Date().toISOString(), total: 0, failed: 0, routes: {} };
}

const customerIndex = new Map();
const subscriptionIndex = new Map();
for (let i = 1; i <= customers; i++) {
  customerIndex.set(customerId(i), i);
  subscriptionIndex.set(subscriptionId(i), i);
}

const quantity = () => quantityOf(round, perCustomer, perCustomer);

function list(data, url) {
  return { object: 'list', data, has_more: false, url };
}

function stripeError(status, type, message, code) {
  const error = { type, message };
  if (code) error.code = code;
  return [status, { error }];
}

/** [status, body] for a Stripe API request, or null when no route matches. */
function route(method, path, query) {
  const parts = path.split('/').filter(Boolean);
  if (method !== 'GET' || parts[0] !== 'v1') return null;
  const [, resource, id, sub] = parts;
  if (resource === 'customers' && id && !sub) {
    const i = customerIndex.get(id);
    return i
      ? [200, world.customer(i)]
      : stripeError(404, 'invalid_request_error', `No such customer: '${id}'`, 'resource_missing');
  }
  if (resource === 'customers' && !id) {
    const limit = Math.min(Number(query.get('limit') || 10), customers);
    const data = [];
    for (let i = customers; i > customers - limit; i--) data.push(world.customer(i));
    return [200, { ...list(data, '/v1/customers'), has_more: limit < customers }];
  }
  if (resource === 'subscriptions' && !id) {
    const i = customerIndex.get(query.get('customer') || '');
    return [200, list(i ? [world.subscription(i, quantity())] : [], '/v1/subscriptions')];
  }
  if (resource === 'subscriptions' && id && !sub) {
    const i = subscriptionIndex.get(id);
    return i
      ? [200, world.subscription(i, quantity())]
      : stripeError(404, 'invalid_request_error', `No such subscription: '${id}'`, 'resource_missing');
  }
  if (resource === 'subscription_items' && !id) {
    const i = subscriptionIndex.get(query.get('subscription') || '');
    const items = i ? world.subscription(i, quantity()).items.data : [];
    return [200, list(items, '/v1/subscription_items')];
  }
  // The customer has no charges, invoices or sessions: what a sync that asks for them gets.
  if (['charges', 'invoices', 'disputes', 'refunds'].includes(resource) && !id) {
    return [200, list([], `/v1/${resource}`)];
  }
  if (resource === 'checkout' && id === 'sessions' && !sub) {
    return [200, list([], '/v1/checkout/sessions')];
  }
  return null;
}

/** `GET /v1/customers/{id}`: the path with ids replaced, for counting. */
function pattern(method, path) {
  const shape = path
    .split('/')
    .map((part) => (/^[a-z]+_[A-Za-z0-9_]+$/.test(part) ? '{id}' : part))
    .join('/');
  return `${method} ${shape}`;
}

function count(key, status, failed) {
  stats.total += 1;
  const r = (stats.routes[key] ??= { count: 0, failed: 0, status: {} });
  r.count += 1;
  r.status[status] = (r.status[status] || 0) + 1;
  if (failed) {
    r.failed += 1;
    stats.failed += 1;
  }
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Request-Id': `req_stub${stats.total}`,
    'Stripe-Version': '2026-09-30.endive',
  });
  res.end(text);
}

function control(req, res, url) {
  const q = url.searchParams;
  switch (`${req.method} ${url.pathname}`) {
    case 'GET /__health':
      return send(res, 200, { ok: true });
    case 'GET /__stats':
      return send(res, 200, { ...stats, round, fail_rate: failRate });
    case 'POST /__reset':
      stats = newStats();
      return send(res, 200, { ok: true });
    case 'POST /__stage':
      round = Number(q.get('round') ?? round);
      failRate = Number(q.get('fail_rate') ?? 0);
      random = seeded(Number(q.get('seed') ?? 1));
      return send(res, 200, { round, fail_rate: failRate, quantity: quantity() });
    case 'GET /__state': {
      const subscriptions = {};
      for (let i = 1; i <= customers; i++) subscriptions[subscriptionId(i)] = quantity();
      return send(res, 200, { round, subscriptions });
    }
    default:
      return send(res, 404, { error: 'no such control endpoint' });
  }
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://stub');
  req.resume();
  req.on('end', () => {
    if (url.pathname.startsWith('/__')) return control(req, res, url);
    const key = pattern(req.method, url.pathname);
    const answer = route(req.method, url.pathname, url.searchParams);
    if (!answer) {
      count(`${key} (unmatched)`, 404, false);
      const [status, body] = stripeError(
        404,
        'invalid_request_error',
        `Unrecognized request URL (${req.method}: ${url.pathname}): the bench stub does not serve it`,
      );
      return send(res, status, body);
    }
    if (req.method === 'GET' && failRate > 0 && random() < failRate) {
      count(key, 500, true);
      const [status, body] = stripeError(
        500,
        'api_error',
        'An unknown error occurred (injected by the bench stub)',
      );
      return send(res, status, body);
    }
    count(key, answer[0], false);
    return send(res, answer[0], answer[1]);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`stripe stub on http://127.0.0.1:${args.port}/ with ${customers} customers`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
