-- Usage idempotency follows the caller, not the grant: an idempotency key belongs to who asked
-- (the service, the user and the tenant it named: `requester`, see billing::quota::requester),
-- so a retry always answers the first decision, even when the subject whose grant paid for it
-- changed in between (the user just bought a personal plan). `subject` stays: it says whose
-- counters the consumption was taken from. SQLite changes a primary key by rebuilding the table.
--
-- Rows written before hold no requester; they get one that no request computes (a JSON array
-- of two strings, where requests use three), so their keys stay unique and are not replayed
-- for a retry that spans this upgrade.
CREATE TABLE usage_ledger_new (
    subject         TEXT NOT NULL,
    requester       TEXT NOT NULL,
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
    PRIMARY KEY (requester, idempotency_key)
);
INSERT INTO usage_ledger_new
SELECT subject, json_array('before-requester', subject), idempotency_key, quota, amount,
       granted, from_allowance, from_balance, bucket, status_code, caller, created_at,
       allowance, period, resets_at, used_after, balance_after, reason, problem
FROM usage_ledger;
DROP TABLE usage_ledger;
ALTER TABLE usage_ledger_new RENAME TO usage_ledger;
