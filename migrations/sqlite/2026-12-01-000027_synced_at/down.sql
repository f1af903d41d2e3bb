ALTER TABLE subject_snapshots DROP COLUMN synced_at;
