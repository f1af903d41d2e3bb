-- Seeds :subjects users into Tollgate's schema (after `tollgate migrate`): user ids u1..uN,
-- subject keys `user:u<N>` (src/billing/subject.rs), each a customer linked to a Stripe
-- customer id and holding one active subscription to the `bench` plan of
-- scripts/bench/tollgate.toml, in its current monthly period.
-- Usage: psql -v subjects=100000 -f seed.sql
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO customers (subject, subject_kind, user_id, tenant_id, stripe_customer_id, email,
                       created_at, updated_at)
SELECT 'user:u' || i, 'user', 'u' || i, NULL, 'cus_bench' || i, 'u' || i || '@bench.invalid',
       (now() AT TIME ZONE 'utc') - interval '40 days', (now() AT TIME ZONE 'utc') - interval '5 days'
FROM generate_series(1, :subjects) AS i;

INSERT INTO subscriptions (stripe_subscription_id, subject, stripe_customer_id, status, plan_id,
                           price_id, price_interval, quantity, current_period_start,
                           current_period_end, trial_start, trial_end, cancel_at_period_end,
                           cancel_at, canceled_at, ended_at, latest_invoice_id,
                           payment_failed_at, stripe_created_at, synced_at)
SELECT 'sub_bench' || i, 'user:u' || i, 'cus_bench' || i, 'active', 'bench',
       'price_bench_monthly', 'month', 1,
       (now() AT TIME ZONE 'utc') - interval '5 days', (now() AT TIME ZONE 'utc') + interval '25 days',
       NULL, NULL, FALSE, NULL, NULL, NULL, 'in_bench' || i, NULL,
       (now() AT TIME ZONE 'utc') - interval '40 days', (now() AT TIME ZONE 'utc') - interval '5 days'
FROM generate_series(1, :subjects) AS i;
COMMIT;
ANALYZE;
