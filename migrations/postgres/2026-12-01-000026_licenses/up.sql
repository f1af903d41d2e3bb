-- Licenses (docs/LICENSES.md): what a one-time purchase of a plan with `provision = ["github"]`
-- gives its buyer outside Tollgate: read access to a private repository through a GitHub
-- organization team. Created in the purchase's transaction; each GitHub call is a step of the
-- row's durable job (`step`, due at `step_due_at`), leased to one replica at a time.
CREATE TABLE licenses (
    license_id TEXT PRIMARY KEY,
    checkout_session_id TEXT NOT NULL UNIQUE REFERENCES purchases (checkout_session_id),
    -- The buyer: `user:<id>`.
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    provisioner TEXT NOT NULL,
    -- pending, username_submitted, invited, active or revoked.
    status TEXT NOT NULL,
    github_username TEXT,
    github_user_id BIGINT,
    -- Usernames the buyer replaced (space-separated), whose pending invitations the next invite
    -- step cancels.
    replaced_usernames TEXT,
    invitation_id BIGINT,
    -- The buyer was a member of the organization already: the license added them to the team
    -- only, and a revocation removes them from the team only.
    team_only BOOLEAN NOT NULL DEFAULT FALSE,
    username_submitted_at TIMESTAMP,
    invited_at TIMESTAMP,
    invitation_expired_at TIMESTAMP,
    accepted_at TIMESTAMP,
    revoked_at TIMESTAMP,
    -- The GitHub work the license waits for: invite, check or revoke; NULL: none.
    step TEXT,
    step_due_at TIMESTAMP,
    -- Failed attempts of the current step.
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    -- A claimed step belongs to its worker until then (a dead one's claim runs out).
    leased_until TIMESTAMP,
    -- Bumped by every change of what the license should become (a submission, a refund): a
    -- worker records its step's outcome only if the version it claimed still stands.
    version BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX licenses_subject ON licenses (subject, created_at);
CREATE INDEX licenses_status ON licenses (status, created_at);
CREATE INDEX licenses_due ON licenses (step_due_at) WHERE step IS NOT NULL;
