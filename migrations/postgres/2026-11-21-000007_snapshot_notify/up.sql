-- Every write to a subject's snapshot tells the replicas, so that their snapshot caches drop it
-- (src/db/snapshot_cache.rs). NOTIFY is delivered when the writing transaction commits, and not
-- at all if it rolls back; the payload is the subject's key. A trigger rather than a call in the
-- code, so that writes by other tools (a manual repair, `tollgate sync` in another process) are
-- seen too. PostgreSQL only: on SQLite the cache is off.
CREATE FUNCTION tollgate_snapshot_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tollgate_snapshots', OLD.subject);
    ELSE
        PERFORM pg_notify('tollgate_snapshots', NEW.subject);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER subject_snapshots_notify
AFTER INSERT OR UPDATE OR DELETE ON subject_snapshots
FOR EACH ROW EXECUTE FUNCTION tollgate_snapshot_changed();

-- TRUNCATE has no rows to name: it drops every cached snapshot.
CREATE FUNCTION tollgate_snapshots_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_snapshots', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER subject_snapshots_notify_truncate
AFTER TRUNCATE ON subject_snapshots
FOR EACH STATEMENT EXECUTE FUNCTION tollgate_snapshots_truncated();
