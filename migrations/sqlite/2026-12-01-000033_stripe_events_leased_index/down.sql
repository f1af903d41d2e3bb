DROP INDEX stripe_events_leased;
