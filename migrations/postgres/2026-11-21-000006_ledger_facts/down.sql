DROP FUNCTION tollgate_consume(TEXT, TEXT, TEXT, BIGINT, TEXT, BIGINT, BOOLEAN, BIGINT, TEXT,
    TEXT, TIMESTAMP, TEXT, INTEGER, TEXT, TEXT, TIMESTAMP);

-- The answers again, with the fields every answer has.
ALTER TABLE usage_ledger ADD COLUMN response TEXT NOT NULL DEFAULT '{}';
UPDATE usage_ledger SET response = json_build_object(
    'granted', granted, 'quota', quota, 'amount', amount, 'idempotency_key', idempotency_key,
    'from_allowance', from_allowance, 'from_balance', from_balance, 'key', quota,
    'limit', CASE WHEN allowance ~ '^[0-9]+$' THEN to_json(allowance::bigint) ELSE to_json(allowance) END,
    'period', period, 'used', used_after, 'balance', balance_after,
    'resets_at', to_char(resets_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    'reason', reason, 'code', problem, 'status', status_code)::text;
ALTER TABLE usage_ledger ALTER COLUMN response DROP DEFAULT;
ALTER TABLE usage_ledger
    DROP COLUMN allowance, DROP COLUMN period, DROP COLUMN resets_at, DROP COLUMN used_after,
    DROP COLUMN balance_after, DROP COLUMN reason, DROP COLUMN problem;
CREATE INDEX usage_ledger_subject_time ON usage_ledger (subject, created_at);
