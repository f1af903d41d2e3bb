-- GET /v1/subscriptions lists both tables newest first by keyset: (created, id) descending.
CREATE INDEX subscriptions_listing ON subscriptions (stripe_created_at, stripe_subscription_id);
CREATE INDEX purchases_listing ON purchases (purchased_at, checkout_session_id);
-- GET /v1/audit without a subject: the whole trail, newest first.
CREATE INDEX audit_log_trail ON audit_log (recorded_at, audit_id);
