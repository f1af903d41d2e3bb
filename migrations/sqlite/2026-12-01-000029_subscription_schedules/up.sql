-- The subscription schedule that manages a subscription on Stripe (Stripe refuses direct
-- changes of its cancellation while one does), and the change it makes at the period end
-- (JSON: price_id, plan_id, price_interval, quantity, at), e.g. a downgrade kept to the end
-- of the paid period.
ALTER TABLE subscriptions ADD COLUMN schedule_id TEXT;
ALTER TABLE subscriptions ADD COLUMN scheduled_change TEXT;
