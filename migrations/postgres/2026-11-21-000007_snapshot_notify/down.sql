DROP TRIGGER subject_snapshots_notify_truncate ON subject_snapshots;
DROP FUNCTION tollgate_snapshots_truncated();
DROP TRIGGER subject_snapshots_notify ON subject_snapshots;
DROP FUNCTION tollgate_snapshot_changed();
