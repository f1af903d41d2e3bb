-- Named leases: the per-customer lock of a sync (`customer:cus_...`), the subject's checkout
-- lock and reconciliation's single run across replicas. A holder takes the row in a short
-- statement, renews it while its work runs, and deletes it at the end; no connection and no
-- database lock is held in between (Stripe calls and their backoff run outside any). A crashed
-- holder's lease lapses at leased_until. The sync's write checks, in its transaction, that it
-- still holds its lease (a fence against a holder whose lease lapsed mid-way).
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    leased_until TIMESTAMP NOT NULL
);

-- The inbox's workers take all of a customer's pending events together and skip customers
-- another worker is syncing: both look pending events up by customer.
CREATE INDEX stripe_events_pending_customer ON stripe_events (stripe_customer_id)
    WHERE processed_at IS NULL;
