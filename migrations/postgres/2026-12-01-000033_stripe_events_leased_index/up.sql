-- A worker's claim skips customers whose events another worker has leased (their sync is
-- running): it looks them up here, among the few leased pending events, instead of among all
-- pending events.
CREATE INDEX stripe_events_leased ON stripe_events (stripe_customer_id)
    WHERE processed_at IS NULL AND leased_until IS NOT NULL;

-- The inbox's statements are planned from this table's statistics, and at the default
-- thresholds (10% of the table changed) a burst of events into a large table never refreshes
-- them: PostgreSQL keeps believing that hardly any event is pending and walks all pending
-- events where an index would find a few. Analyzed (and vacuumed: processed events leave dead
-- entries in the pending indexes) after a few thousand changes instead.
ALTER TABLE stripe_events SET (
    autovacuum_analyze_scale_factor = 0.002,
    autovacuum_analyze_threshold = 2000,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 5000
);
