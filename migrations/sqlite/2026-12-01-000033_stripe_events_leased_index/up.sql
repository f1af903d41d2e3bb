-- A worker's claim skips customers whose events another worker has leased (their sync is
-- running): it looks them up here, among the few leased pending events, instead of among all
-- pending events (a claim then costs the same however long the backlog is).
CREATE INDEX stripe_events_leased ON stripe_events (stripe_customer_id)
    WHERE processed_at IS NULL AND leased_until IS NOT NULL;
