DROP INDEX purchases_payment_intent;
ALTER TABLE subscriptions DROP COLUMN period_payment_revoked;
