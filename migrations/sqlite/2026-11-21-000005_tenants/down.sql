DROP INDEX customers_tenant;
ALTER TABLE customers DROP COLUMN removed_at;
ALTER TABLE subscriptions DROP COLUMN manager_user_id;
