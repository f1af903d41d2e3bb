-- GET /v1/subscriptions lists both tables newest first by keyset: (created, id) descending.
CREATE INDEX subscriptions_listing ON subscriptions (stripe_created_at, stripe_subscription_id);
CREATE INDEX purchases_listing ON purchases (purchased_at, checkout_session_id);
