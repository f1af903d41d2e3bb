ALTER TABLE stripe_events RESET (
    autovacuum_analyze_scale_factor,
    autovacuum_analyze_threshold,
    autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold
);
DROP INDEX stripe_events_leased;
