ALTER TABLE subject_snapshots DROP COLUMN facts_version;
