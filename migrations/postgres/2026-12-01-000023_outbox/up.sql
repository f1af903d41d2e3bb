-- Outbound events (docs/EVENTS.md): the transactional outbox. An event is written in the
-- transaction of the change that causes it; its deliveries (one per configured endpoint that
-- wants its type) with it. The dispatcher of any replica claims due deliveries; the sequencer
-- gives committed events their place in GET /v1/events.

-- Each subject's last revision: the upsert that takes the next one locks the row, so writers of
-- one subject's events take revisions one after the other, in commit order.
--
-- It also remembers the entitlement document last told (`entitlements.changed`) and when that
-- document next changes by time alone (a grace period, a trial, a canceled period or a grant
-- ending, a quota window resetting): the scheduler tells those changes when they are due.
CREATE TABLE event_heads (
    subject TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    document TEXT,
    next_change_at TIMESTAMP
);
CREATE INDEX event_heads_due ON event_heads (next_change_at) WHERE next_change_at IS NOT NULL;

CREATE TABLE outbox_events (
    -- Insertion order (not commit order: concurrent transactions commit in any order).
    seq BIGSERIAL PRIMARY KEY,
    -- The webhook-id of every delivery of it.
    event_id TEXT NOT NULL UNIQUE,
    -- The order of GET /v1/events: given by the sequencer after the commit, so that a listing
    -- never passes an event that commits later with a smaller place.
    position BIGINT UNIQUE,
    subject TEXT NOT NULL,
    revision BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    -- The body every delivery sends, exactly.
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (subject, revision)
);
CREATE INDEX outbox_events_unplaced ON outbox_events (seq) WHERE position IS NULL;
CREATE INDEX outbox_events_subject ON outbox_events (subject, position);

CREATE TABLE event_deliveries (
    delivery_id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES outbox_events (event_id),
    endpoint TEXT NOT NULL,
    -- The event's, so that the claim keeps each subject's deliveries in revision order.
    subject TEXT NOT NULL,
    revision BIGINT NOT NULL,
    -- pending, delivered or failed (retried for the whole window without success).
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    -- A claimed delivery belongs to its dispatcher until then (a dead one's claim runs out).
    leased_until TIMESTAMP,
    last_status INTEGER,
    last_error TEXT,
    -- When it was queued, or queued again by an operator: its retry window starts here.
    queued_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX event_deliveries_due ON event_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX event_deliveries_order ON event_deliveries (endpoint, subject, revision) WHERE status = 'pending';
CREATE INDEX event_deliveries_failed ON event_deliveries (delivery_id) WHERE status = 'failed';
CREATE INDEX event_deliveries_event ON event_deliveries (event_id);
