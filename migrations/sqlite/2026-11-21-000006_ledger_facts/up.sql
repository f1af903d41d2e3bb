-- The usage ledger records the facts of each decision instead of the text of its answer: the
-- terms it was decided under (allowance, period, reset, the subject's access reason, the
-- refusal's problem code) and the counters after it. The answer, first given or replayed for
-- the same idempotency key, is rendered from them (src/service/quotas.rs). PostgreSQL decides
-- a consumption inside the database in one call; see its migration of the same name.
ALTER TABLE usage_ledger ADD COLUMN allowance TEXT;
ALTER TABLE usage_ledger ADD COLUMN period TEXT;
ALTER TABLE usage_ledger ADD COLUMN resets_at TIMESTAMP;
ALTER TABLE usage_ledger ADD COLUMN used_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN balance_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_ledger ADD COLUMN reason TEXT;
ALTER TABLE usage_ledger ADD COLUMN problem TEXT;

-- Rows written before: their answers hold the same facts.
UPDATE usage_ledger SET
    allowance     = json_extract(response, '$.limit'),
    period        = json_extract(response, '$.period'),
    resets_at     = strftime('%Y-%m-%d %H:%M:%S', json_extract(response, '$.resets_at')),
    used_after    = COALESCE(json_extract(response, '$.used'), 0),
    balance_after = COALESCE(json_extract(response, '$.balance'), 0),
    reason        = json_extract(response, '$.reason'),
    problem       = CASE WHEN granted THEN NULL ELSE json_extract(response, '$.code') END;

ALTER TABLE usage_ledger DROP COLUMN response;

-- Listing a subject's ledger uses the primary key's (subject, ...) prefix.
DROP INDEX usage_ledger_subject_time;
