DROP TABLE role_exemptions;
DROP TABLE usage_ledger;
DROP TABLE quota_counters;
