// The webhook benchmark's world, shared by the Stripe stub (stripe-stub.mjs) and the load
// generator (send.mjs): customers, their one subscription each, and the signed event stream.
//
// Objects are shaped from Stripe's published examples (tests/fixtures/stripe, the fixtures the
// test suite's fake Stripe uses) with the fields that matter set, so that they deserialize with
// async-stripe (API version 2026-09-30.endive) as real answers do.
//
// Quantities tell the stages apart: a subscription is created with quantity 1 (stage 0, the
// `customer.subscription.created` events that make each customer known first); event j (1..K)
// of round r (1, 2, ...) sets it to 1 + K*(r-1) + j, so the last event of a customer in round r
// carries the round's final state, 1 + K*r.

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const API_VERSION = '2026-09-30.endive';
export const PRICE_ID = 'price_bench_monthly';
export const SUBJECT_KEY = 'tollgate_subject';

const pad = (i) => String(i).padStart(5, '0');
export const customerId = (i) => `cus_bench${pad(i)}`;
export const subscriptionId = (i) => `sub_bench${pad(i)}`;
export const subjectOf = (i) => `user:bench-${i}`;

/** The quantity that event `step` (1..perCustomer) of `round` sets; round 0 is the creation. */
export function quantityOf(round, step, perCustomer) {
  return round === 0 ? 1 : 1 + perCustomer * (round - 1) + step;
}

/** A small seeded generator (mulberry32): the same seed gives the same stream and failures. */
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffle(items, random) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

export class World {
  /** `fixtures`: the directory of Stripe's example objects (tests/fixtures/stripe). */
  constructor(fixtures, customers) {
    this.customers = customers;
    this.customerTemplate = JSON.parse(readFileSync(join(fixtures, 'customer.json'), 'utf8'));
    this.subscriptionTemplate = JSON.parse(
      readFileSync(join(fixtures, 'subscription.json'), 'utf8'),
    );
    // A current monthly period around now, the same for every subscription.
    this.start = Math.floor(Date.now() / 1000) - 3600;
  }

  customer(i) {
    const c = structuredClone(this.customerTemplate);
    c.id = customerId(i);
    c.created = this.start - 86_400;
    c.email = `bench-${i}@example.com`;
    c.discount = null;
    c.metadata = { [SUBJECT_KEY]: subjectOf(i) };
    return c;
  }

  /** Customer `i`'s subscription (`sub_bench<i>`) with `quantity`, as Stripe lists it. */
  subscription(i, quantity) {
    const s = structuredClone(this.subscriptionTemplate);
    const id = subscriptionId(i);
    const end = this.start + 30 * 86_400;
    Object.assign(s, {
      id,
      customer: customerId(i),
      status: 'active',
      created: this.start,
      start_date: this.start,
      billing_cycle_anchor: this.start,
      cancel_at: null,
      cancel_at_period_end: false,
      canceled_at: null,
      ended_at: null,
      trial_start: null,
      trial_end: null,
      pause_collection: null,
      pending_update: null,
      schedule: null,
      discounts: [],
      transfer_data: null,
      next_pending_invoice_item_invoice: null,
      pending_invoice_item_interval: null,
      latest_invoice: `in_bench${String(i).padStart(5, '0')}`,
      metadata: { bench: 'webhooks' },
    });
    const item = s.items.data[0];
    item.id = `si_bench${String(i).padStart(5, '0')}`;
    item.subscription = id;
    item.created = this.start;
    item.quantity = quantity;
    item.price.id = PRICE_ID;
    item.price.product = 'prod_bench';
    item.price.unit_amount = 900;
    item.price.unit_amount_decimal = '900';
    item.price.recurring.interval = 'month';
    item.plan.id = PRICE_ID;
    item.plan.interval = 'month';
    item.plan.interval_count = 1;
    item.plan.amount = 900;
    item.plan.amount_decimal = '900';
    item.plan.currency = 'usd';
    item.plan.product = 'prod_bench';
    item.current_period_start = this.start;
    item.current_period_end = end;
    s.items.url = `/v1/subscription_items?subscription=${id}`;
    return s;
  }

  /**
   * The events of one round, in sending order: `perCustomer` waves, each with every customer
   * once in an order shuffled with the seed (a burst interleaves customers; one customer's
   * events keep their order, the last carrying the final state). Round 0 is one
   * `customer.subscription.created` per customer (quantity 1).
   */
  events(round, perCustomer, seed, runTag) {
    const random = seeded(seed + round * 7919);
    const type = round === 0 ? 'customer.subscription.created' : 'customer.subscription.updated';
    const waves = round === 0 ? 1 : perCustomer;
    const now = Math.floor(Date.now() / 1000);
    const out = [];
    for (let step = 1; step <= waves; step++) {
      const order = shuffle(
        Array.from({ length: this.customers }, (_, k) => k + 1),
        random,
      );
      for (const i of order) {
        const quantity = quantityOf(round, step, perCustomer);
        const object = this.subscription(i, quantity);
        const data = { object };
        if (round > 0) {
          data.previous_attributes = {
            items: {
              data: [{ ...object.items.data[0], quantity: quantity - 1 }],
              has_more: false,
              object: 'list',
              total_count: 1,
              url: object.items.url,
            },
          };
        }
        out.push({
          id: `evt_bench${runTag}r${round}s${step}c${String(i).padStart(5, '0')}`,
          object: 'event',
          api_version: API_VERSION,
          // Created with its subscription, an hour ago; a round's events of one customer a
          // second apart, the last the newest (stripe-sync-engine keeps the newest by it).
          created: round === 0 ? this.start : now - waves - 1 + step,
          data,
          livemode: false,
          pending_webhooks: 1,
          request: { id: `req_bench${runTag}r${round}c${i}`, idempotency_key: null },
          type,
        });
      }
    }
    return out;
  }
}

/** Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>" with the secret>`. */
export function signature(secret, timestamp, payload) {
  const v1 = createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex');
  return `t=${timestamp},v1=${v1}`;
}
