-- The baseline's table (examples/bench_baseline.rs): :subjects rows, ids 1..N.
-- Usage: psql -v subjects=100000 -f baseline.sql
\set ON_ERROR_STOP on
DROP TABLE IF EXISTS bench_counters;
CREATE TABLE bench_counters (
    id    BIGINT PRIMARY KEY,
    used  BIGINT NOT NULL,
    label TEXT NOT NULL
);
INSERT INTO bench_counters (id, used, label)
SELECT i, 0, 'user:u' || i FROM generate_series(1, :subjects) AS i;
ANALYZE bench_counters;
