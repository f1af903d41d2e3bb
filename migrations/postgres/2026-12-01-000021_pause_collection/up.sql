-- Stripe's "pause payment collection" (`pause_collection`): the status stays `active` while
-- invoices are kept as drafts, marked uncollectible or voided. `pause_collection_behavior` is
-- Stripe's behavior (NULL: collection is not paused); it lasts until
-- `pause_collection_resumes_at` (NULL: until lifted).
ALTER TABLE subscriptions ADD COLUMN pause_collection_behavior TEXT;
ALTER TABLE subscriptions ADD COLUMN pause_collection_resumes_at TIMESTAMP;
