DROP INDEX stripe_events_pending;
ALTER TABLE stripe_events DROP COLUMN leased_until;
ALTER TABLE stripe_events DROP COLUMN due_at;
