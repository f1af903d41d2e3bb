DROP TABLE subject_snapshots;
DROP TABLE usage_ledger;
DROP TABLE quota_counters;
