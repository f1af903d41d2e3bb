-- Full reconciliations started by `POST /v1/admin/sync {"all": true}`, with their progress, so
-- that any replica answers `GET /v1/admin/sync/{job_id}`. The replica running a job writes its
-- counts and `heartbeat_at` every few seconds; a `running` job whose heartbeat stopped belongs
-- to a process that died, and reads as `interrupted`.
CREATE TABLE sync_jobs (
    job_id          TEXT PRIMARY KEY,
    status          TEXT NOT NULL,
    customers_total BIGINT NOT NULL DEFAULT 0,
    customers_done  BIGINT NOT NULL DEFAULT 0,
    drifted         BIGINT NOT NULL DEFAULT 0,
    changes         BIGINT NOT NULL DEFAULT 0,
    failed          BIGINT NOT NULL DEFAULT 0,
    started_at      TIMESTAMP NOT NULL,
    heartbeat_at    TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    error           TEXT
);

-- At most one job runs at a time, across replicas: a second request is answered the running one.
CREATE UNIQUE INDEX sync_jobs_one_running ON sync_jobs (status) WHERE status = 'running';
