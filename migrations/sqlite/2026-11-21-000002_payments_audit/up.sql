-- Payments come from the customer's charges on Stripe: refunds and disputes are read there too.
ALTER TABLE payments ADD COLUMN amount_refunded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN payment_intent_id TEXT;
ALTER TABLE payments ADD COLUMN disputed BOOLEAN NOT NULL DEFAULT 0;

-- Every change to stored billing state: what changed, and which event or call changed it.
CREATE TABLE audit_log (
    audit_id    TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    changes     TEXT NOT NULL,
    source      TEXT NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
CREATE INDEX audit_log_subject ON audit_log (subject, recorded_at);
CREATE INDEX audit_log_entity ON audit_log (entity_id);
