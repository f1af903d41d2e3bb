-- Grants: a plan given without a payment (POST /v1/grants), to a user or a tenant, until `until`
-- (for ever when NULL). A revoked grant keeps its row (and its audit rows): `revoked_at` says
-- when it stopped counting. The subject's snapshot holds its grants that are not revoked.
CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    until TIMESTAMP,
    note TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP,
    revoked_by TEXT
);

-- A subject's grants (its snapshot), and the listing, newest first.
CREATE INDEX grants_subject ON grants (subject, created_at);
CREATE INDEX grants_created ON grants (created_at, grant_id);
