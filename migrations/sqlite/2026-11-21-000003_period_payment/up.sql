-- When the payment for a subscription's current period was refunded or lost to a dispute,
-- the period it paid for grants nothing: `refunded` or `disputed`, else NULL.
ALTER TABLE subscriptions ADD COLUMN period_payment_revoked TEXT;

-- Refunds and disputes find the purchases their payment paid for.
CREATE INDEX purchases_payment_intent ON purchases (payment_intent_id);
