-- The answers again, with the fields every answer has.
ALTER TABLE usage_ledger ADD COLUMN response TEXT NOT NULL DEFAULT '{}';
UPDATE usage_ledger SET response = json_object(
    'granted', json(CASE WHEN granted THEN 'true' ELSE 'false' END), 'quota', quota,
    'amount', amount, 'idempotency_key', idempotency_key, 'from_allowance', from_allowance,
    'from_balance', from_balance, 'key', quota,
    'limit', CASE WHEN allowance GLOB '[0-9]*' THEN CAST(allowance AS INTEGER) ELSE allowance END,
    'period', period, 'used', used_after, 'balance', balance_after,
    'resets_at', strftime('%Y-%m-%dT%H:%M:%SZ', resets_at),
    'reason', reason, 'code', problem, 'status', status_code);
ALTER TABLE usage_ledger DROP COLUMN allowance;
ALTER TABLE usage_ledger DROP COLUMN period;
ALTER TABLE usage_ledger DROP COLUMN resets_at;
ALTER TABLE usage_ledger DROP COLUMN used_after;
ALTER TABLE usage_ledger DROP COLUMN balance_after;
ALTER TABLE usage_ledger DROP COLUMN reason;
ALTER TABLE usage_ledger DROP COLUMN problem;
CREATE INDEX usage_ledger_subject_time ON usage_ledger (subject, created_at);
