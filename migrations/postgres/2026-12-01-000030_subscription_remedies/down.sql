CREATE TABLE subscription_undos (
    stripe_subscription_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    stripe_customer_id TEXT NOT NULL,
    beside TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at TIMESTAMP NOT NULL,
    leased_until TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    done_at TIMESTAMP
);
INSERT INTO subscription_undos (stripe_subscription_id, subject, stripe_customer_id, beside,
    status, attempts, due_at, leased_until, last_error, created_at, done_at)
SELECT stripe_subscription_id, subject, stripe_customer_id, beside, status, attempts, due_at,
    leased_until, last_error, created_at, done_at
FROM subscription_remedies WHERE kind = 'second_subscription';
DROP TABLE subscription_remedies;
CREATE INDEX subscription_undos_due ON subscription_undos (due_at) WHERE status = 'pending';
