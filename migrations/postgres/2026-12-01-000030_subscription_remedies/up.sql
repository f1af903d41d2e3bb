-- Work Tollgate does on Stripe to a subscription after a sync decided it (one queue, leased to
-- one worker at a time across replicas, retried until Stripe answers, done once per id):
--   second_subscription: cancel and refund a second subscription of one subject
--     (billing.second_subscription = "cancel_and_refund"); id "second_subscription:<sub>";
--   revert_upgrade: move a subscription back to the price and seats it had before an upgrade
--     whose invoice was refunded; id "revert_upgrade:<invoice>".
-- Replaces subscription_undos (its rows are carried over).
CREATE TABLE subscription_remedies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    stripe_subscription_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    stripe_customer_id TEXT NOT NULL,
    -- second_subscription: the older standing subscription it stood beside (kept).
    beside TEXT,
    -- revert_upgrade: the refunded upgrade's invoice, and the price and seats to go back to.
    invoice_id TEXT,
    price_id TEXT,
    quantity BIGINT,
    -- pending or done.
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at TIMESTAMP NOT NULL,
    leased_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    done_at TIMESTAMP
);
INSERT INTO subscription_remedies (id, kind, stripe_subscription_id, subject, stripe_customer_id,
    beside, status, attempts, due_at, leased_until, last_error, created_at, done_at)
SELECT 'second_subscription:' || stripe_subscription_id, 'second_subscription',
    stripe_subscription_id, subject, stripe_customer_id, beside, status, attempts, due_at,
    leased_until, last_error, created_at, done_at
FROM subscription_undos;
DROP TABLE subscription_undos;
CREATE INDEX subscription_remedies_due ON subscription_remedies (due_at) WHERE status = 'pending';
