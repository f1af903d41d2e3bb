-- Quota counters: how much of a quota a subject used in one window (`day:2026-11-21`,
-- `month:2026-11`, `period:<unix start>`, `none`) or of its purchased balance (`balance`).
-- A new window starts at zero, so resets need no job.
CREATE TABLE quota_counters (
    subject    TEXT NOT NULL,
    quota      TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    used       BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (subject, quota, bucket)
);

-- Every consumption and every refusal, keyed by the caller's idempotency key: a repeated key
-- answers `response` again without consuming.
CREATE TABLE usage_ledger (
    subject         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    quota           TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    granted         BOOLEAN NOT NULL,
    from_allowance  BIGINT NOT NULL,
    from_balance    BIGINT NOT NULL,
    bucket          TEXT NOT NULL,
    status_code     INTEGER NOT NULL,
    response        TEXT NOT NULL,
    caller          TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    PRIMARY KEY (subject, idempotency_key)
);
CREATE INDEX usage_ledger_subject_time ON usage_ledger (subject, created_at);

-- What the hot path reads: one row per subject with its subscriptions and purchases (JSON, as
-- stored in their tables) and whether the user's own token last showed an exempt role (e.g. a
-- grandfathered group; services, which do not hold the user's claims, apply it from here).
-- Rewritten in the same transaction as every change to the subject's billing state, so an
-- entitlement check is one primary-key read. Subjects with state but no row are filled in
-- after migrating (`tollgate migrate` and start-up).
CREATE TABLE subject_snapshots (
    subject     TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    role_exempt BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at  TIMESTAMP NOT NULL
);
