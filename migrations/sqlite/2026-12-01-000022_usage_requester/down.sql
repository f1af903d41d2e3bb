-- Keys are unique per subject again; of keys two requesters shared on one subject, the oldest
-- row stays.
CREATE TABLE usage_ledger_old (
    subject         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    quota           TEXT NOT NULL,
    amount          BIGINT NOT NULL,
    granted         BOOLEAN NOT NULL,
    from_allowance  BIGINT NOT NULL,
    from_balance    BIGINT NOT NULL,
    bucket          TEXT NOT NULL,
    status_code     INTEGER NOT NULL,
    caller          TEXT NOT NULL,
    created_at      TIMESTAMP NOT NULL,
    allowance       TEXT,
    period          TEXT,
    resets_at       TIMESTAMP,
    used_after      BIGINT NOT NULL DEFAULT 0,
    balance_after   BIGINT NOT NULL DEFAULT 0,
    reason          TEXT,
    problem         TEXT,
    PRIMARY KEY (subject, idempotency_key)
);
INSERT OR IGNORE INTO usage_ledger_old
SELECT subject, idempotency_key, quota, amount, granted, from_allowance, from_balance, bucket,
       status_code, caller, created_at, allowance, period, resets_at, used_after, balance_after,
       reason, problem
FROM usage_ledger ORDER BY created_at, requester;
DROP TABLE usage_ledger;
ALTER TABLE usage_ledger_old RENAME TO usage_ledger;
