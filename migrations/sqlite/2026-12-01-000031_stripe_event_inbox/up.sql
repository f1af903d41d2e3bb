-- The webhook inbox: a verified event is stored and acknowledged at once; workers in every
-- replica lease the pending ones (processed_at IS NULL) that are due, re-read each customer
-- once for all its pending events, and mark them processed in the sync's transaction. A
-- failed attempt moves due_at back (retried with backoff) and records last_error.
ALTER TABLE stripe_events ADD COLUMN due_at TIMESTAMP;
ALTER TABLE stripe_events ADD COLUMN leased_until TIMESTAMP;
UPDATE stripe_events SET due_at = received_at WHERE processed_at IS NULL;
CREATE INDEX stripe_events_pending ON stripe_events (due_at) WHERE processed_at IS NULL;
