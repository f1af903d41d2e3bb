-- Tenant-scoped subscriptions are managed only by the member who subscribed: the user id the
-- subscription's Stripe metadata names (`tollgate_manager`), mirrored here by every sync.
ALTER TABLE subscriptions ADD COLUMN manager_user_id TEXT;

-- A removed tenant or membership (DELETE /v1/tenants/...): when, so that a removed tenant is
-- never billed again and a retry knows the removal was already recorded.
ALTER TABLE customers ADD COLUMN removed_at TIMESTAMP;

-- Removing a tenant finds its tenant and membership subjects.
CREATE INDEX customers_tenant ON customers (tenant_id);
