DROP TABLE audit_log;
ALTER TABLE payments DROP COLUMN disputed;
ALTER TABLE payments DROP COLUMN payment_intent_id;
ALTER TABLE payments DROP COLUMN amount_refunded;
