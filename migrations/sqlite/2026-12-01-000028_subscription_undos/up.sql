-- Second subscriptions of one subject to cancel and refund (billing.second_subscription =
-- "cancel_and_refund"): queued in the transaction of the sync that found one, done by a worker
-- in any replica (leased, retried until Stripe answers), once per subscription.
CREATE TABLE subscription_undos (
    stripe_subscription_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    stripe_customer_id TEXT NOT NULL,
    -- The older standing subscription it stood beside (kept).
    beside TEXT NOT NULL,
    -- pending or done.
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at TIMESTAMP NOT NULL,
    leased_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    done_at TIMESTAMP
);
CREATE INDEX subscription_undos_due ON subscription_undos (due_at) WHERE status = 'pending';
