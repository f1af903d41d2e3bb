DROP INDEX stripe_events_pending_customer;
DROP TABLE leases;
