-- One row per billing subject (user, tenant or membership); one Stripe customer each, for ever.
CREATE TABLE customers (
    subject            TEXT PRIMARY KEY,
    subject_kind       TEXT NOT NULL,
    user_id            TEXT,
    tenant_id          TEXT,
    stripe_customer_id TEXT UNIQUE,
    email              TEXT,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

-- A mirror of each Stripe subscription, upserted from Stripe's current state.
CREATE TABLE subscriptions (
    stripe_subscription_id TEXT PRIMARY KEY,
    subject                TEXT NOT NULL REFERENCES customers (subject),
    stripe_customer_id     TEXT NOT NULL,
    status                 TEXT NOT NULL,
    plan_id                TEXT,
    price_id               TEXT,
    price_interval         TEXT,
    quantity               BIGINT NOT NULL,
    current_period_start   TIMESTAMP,
    current_period_end     TIMESTAMP,
    trial_start            TIMESTAMP,
    trial_end              TIMESTAMP,
    cancel_at_period_end   BOOLEAN NOT NULL,
    cancel_at              TIMESTAMP,
    canceled_at            TIMESTAMP,
    ended_at               TIMESTAMP,
    latest_invoice_id      TEXT,
    payment_failed_at      TIMESTAMP,
    stripe_created_at      TIMESTAMP NOT NULL,
    synced_at              TIMESTAMP NOT NULL
);
CREATE INDEX subscriptions_subject ON subscriptions (subject);
CREATE INDEX subscriptions_customer ON subscriptions (stripe_customer_id);

-- One-time payments (lifetime plans, credit packs), keyed by their Checkout Session.
CREATE TABLE purchases (
    checkout_session_id TEXT PRIMARY KEY,
    subject             TEXT NOT NULL REFERENCES customers (subject),
    stripe_customer_id  TEXT,
    plan_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    payment_intent_id   TEXT,
    amount              BIGINT NOT NULL,
    currency            TEXT NOT NULL,
    status              TEXT NOT NULL,
    purchased_at        TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);
CREATE INDEX purchases_subject ON purchases (subject);

-- Every webhook event received, by Stripe's id; processed_at is set in the transaction that
-- applied it, so an event answered 2xx is never lost and a duplicate changes nothing.
CREATE TABLE stripe_events (
    event_id           TEXT PRIMARY KEY,
    event_type         TEXT NOT NULL,
    stripe_customer_id TEXT,
    livemode           BOOLEAN NOT NULL,
    payload            TEXT NOT NULL,
    stripe_created_at  TIMESTAMP NOT NULL,
    received_at        TIMESTAMP NOT NULL,
    processed_at       TIMESTAMP,
    attempts           INTEGER NOT NULL,
    last_error         TEXT
);

-- Money that moved: paid invoices, one-time payments, refunds.
CREATE TABLE payments (
    payment_id         TEXT PRIMARY KEY,
    subject            TEXT NOT NULL REFERENCES customers (subject),
    stripe_customer_id TEXT,
    kind               TEXT NOT NULL,
    amount             BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    status             TEXT NOT NULL,
    description        TEXT,
    occurred_at        TIMESTAMP NOT NULL,
    created_at         TIMESTAMP NOT NULL
);
CREATE INDEX payments_subject ON payments (subject, occurred_at);
