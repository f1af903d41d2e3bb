-- A snapshot's `state` holds the subject's billing facts in a versioned format that only the
-- snapshot module reads and writes (src/db/snapshots.rs, `FACTS_VERSION`). Rows written before
-- it (version 0) held copies of the table rows; they are still read, and rewritten from the
-- tables when a replica starts (`snapshots::backfill`).
ALTER TABLE subject_snapshots ADD COLUMN facts_version INTEGER NOT NULL DEFAULT 0;
