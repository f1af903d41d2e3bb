// supabase's stripe-sync-engine behind a minimal HTTP endpoint, for scripts/bench-webhooks.sh:
// POST /webhooks hands the raw body and the Stripe-Signature header to the library's
// processWebhook (which checks the signature with the webhook secret, then upserts the event's
// object into PostgreSQL, trusting the payload), and answers 200, or 400 for a refused
// signature, or 500 for anything else. The library's own Stripe client is pointed at the bench's
// Stripe stub, so that any call it made to Stripe would be seen and counted there.
//
// usage: node sync-engine-server.mjs --dir DIR --db postgres://... --port 18120
//          --secret whsec_... --stripe http://127.0.0.1:18110 [--migrate-only]
// DIR is where `npm install @supabase/stripe-sync-engine` was run. --migrate-only runs the
// library's migrations (schema `stripe`) and exits non-zero when its tables are not there.

import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    dir: { type: 'string' },
    db: { type: 'string' },
    port: { type: 'string', default: '18120' },
    secret: { type: 'string' },
    stripe: { type: 'string' },
    'pool-max': { type: 'string', default: '10' },
    'migrate-only': { type: 'boolean', default: false },
  },
});
const require = createRequire(join(args.dir, 'package.json'));
const { StripeSync, runMigrations } = require('@supabase/stripe-sync-engine');
const stripeModule = require('stripe');
const Stripe = stripeModule.default ?? stripeModule.Stripe ?? stripeModule;

// The library takes a pino logger; its calls go to standard error here.
const logger = {
  info: (...a) => console.error('info', ...a.map((x) => (typeof x === 'string' ? x : JSON.stringify(x)))),
  warn: (...a) => console.error('warn', ...a.map(String)),
  error: (...a) => console.error('error', ...a.map((x) => (x instanceof Error ? x.stack : String(x)))),
  debug: () => {},
  trace: () => {},
  child() {
    return this;
  },
};

if (args['migrate-only']) {
  await runMigrations({ databaseUrl: args.db, schema: 'stripe', logger });
  const { Client } = require('pg');
  const client = new Client({ connectionString: args.db });
  await client.connect();
  const { rows } = await client.query(
    "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'stripe'",
  );
  await client.end();
  if (rows[0].n === 0) {
    console.error('sync-engine: the migrations created no table in schema stripe');
    process.exit(1);
  }
  console.log(`sync-engine: migrated, ${rows[0].n} tables in schema stripe`);
  process.exit(0);
}

const secretKey = 'sk_test_bench_sync_engine';
const sync = new StripeSync({
  poolConfig: { connectionString: args.db, max: Number(args['pool-max']) },
  stripeSecretKey: secretKey,
  stripeWebhookSecret: args.secret,
  // No logger: the library logs nothing per event by default.
});
// Its Stripe client, on the stub (it should make no call for these events).
const stub = new URL(args.stripe);
sync.stripe = new Stripe(secretKey, {
  host: stub.hostname,
  port: Number(stub.port),
  protocol: stub.protocol.replace(':', ''),
  appInfo: { name: 'Stripe Postgres Sync' },
});

let failures = 0;
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      return res.end('{"status":"ok"}');
    }
    if (req.method !== 'POST' || req.url !== '/webhooks') {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      return res.end('{"error":"not found"}');
    }
    const body = Buffer.concat(chunks);
    try {
      await sync.processWebhook(body, req.headers['stripe-signature']);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"received":true}');
    } catch (e) {
      const refused = e?.type === 'StripeSignatureVerificationError';
      failures += 1;
      if (failures <= 5) console.error(`webhook failed: ${e?.stack ?? e}`);
      res.writeHead(refused ? 400 : 500, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: String(e?.message ?? e) }));
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`stripe-sync-engine on http://127.0.0.1:${args.port}/webhooks`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, async () => {
    await sync.postgresClient?.pool?.end?.().catch(() => {});
    process.exit(0);
  });
}
