-- When a sync last read the subject from Stripe (whether or not anything changed): the `as_of`
-- of its status and entitlement answers. NULL: never synced (only grants, or nothing).
ALTER TABLE subject_snapshots ADD COLUMN synced_at TIMESTAMP;
