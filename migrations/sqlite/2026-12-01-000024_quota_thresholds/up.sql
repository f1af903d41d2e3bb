-- Quota thresholds (events.quota_thresholds): a consumption that takes a window's use across a
-- configured percentage of its allowance records the crossing in its own transaction (SQLite: db::quotas, in Rust); the
-- dispatcher turns each into a `quota.threshold_reached` event (docs/EVENTS.md). Unique per
-- window and threshold: told once per window.
CREATE TABLE quota_crossings (
    crossing_id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    quota TEXT NOT NULL,
    bucket TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    used BIGINT NOT NULL,
    quota_limit BIGINT NOT NULL,
    period TEXT,
    resets_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    -- When it became an event.
    told_at TIMESTAMP,
    UNIQUE (subject, quota, bucket, threshold)
);
CREATE INDEX quota_crossings_untold ON quota_crossings (crossing_id) WHERE told_at IS NULL;

