ALTER TABLE subscriptions DROP COLUMN scheduled_change;
ALTER TABLE subscriptions DROP COLUMN schedule_id;
