ALTER TABLE subscriptions DROP COLUMN pause_collection_resumes_at;
ALTER TABLE subscriptions DROP COLUMN pause_collection_behavior;
