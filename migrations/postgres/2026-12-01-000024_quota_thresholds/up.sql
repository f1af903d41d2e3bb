-- Quota thresholds (events.quota_thresholds): a consumption that takes a window's use across a
-- configured percentage of its allowance records the crossing in its own transaction; the
-- dispatcher turns each into a `quota.threshold_reached` event (docs/EVENTS.md). Unique per
-- window and threshold: told once per window.
CREATE TABLE quota_crossings (
    crossing_id BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    quota TEXT NOT NULL,
    bucket TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    used BIGINT NOT NULL,
    quota_limit BIGINT NOT NULL,
    period TEXT,
    resets_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    -- When it became an event.
    told_at TIMESTAMP,
    UNIQUE (subject, quota, bucket, threshold)
);
CREATE INDEX quota_crossings_untold ON quota_crossings (crossing_id) WHERE told_at IS NULL;

DROP FUNCTION tollgate_consume(TEXT, TEXT, TEXT, TEXT, BIGINT, TEXT, BIGINT, BOOLEAN, BIGINT, TEXT, TEXT, TIMESTAMP, TEXT, INTEGER, TEXT, TEXT, TIMESTAMP);

-- As in migration 000022, with the thresholds: a fresh consumption that takes the window's
-- use across p% of the allowance records the crossing (once per window: the key is unique).
CREATE FUNCTION tollgate_consume(
    p_subject         TEXT,
    p_requester       TEXT,      -- who asked: the service, user and tenant (the key's scope)
    p_key             TEXT,
    p_quota           TEXT,
    p_amount          BIGINT,
    p_bucket          TEXT,
    p_limit           BIGINT,    -- the allowance per window; NULL: none (or unlimited)
    p_unlimited       BOOLEAN,
    p_purchased       BIGINT,    -- credits bought for the quota
    p_allowance       TEXT,
    p_period          TEXT,
    p_resets_at       TIMESTAMP,
    p_reason          TEXT,
    p_refusal_status  INTEGER,   -- the status and problem code of a refusal
    p_refusal_problem TEXT,
    p_caller          TEXT,
    p_now             TIMESTAMP,
    p_thresholds      INTEGER[]) -- percents of the allowance to tell (events.quota_thresholds)
RETURNS TABLE (
    replayed BOOLEAN, subject TEXT, requester TEXT, idempotency_key TEXT, quota TEXT, amount BIGINT,
    granted BOOLEAN, from_allowance BIGINT, from_balance BIGINT, bucket TEXT,
    status_code INTEGER, caller TEXT, created_at TIMESTAMP, allowance TEXT, period TEXT,
    resets_at TIMESTAMP, used_after BIGINT, balance_after BIGINT, reason TEXT, problem TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_used    BIGINT;        -- of the allowance in this window, before
    v_spent   BIGINT := 0;   -- of the purchased balance, before
    v_take    BIGINT := 0;   -- from the allowance
    v_rest    BIGINT := 0;   -- from the balance
    v_granted BOOLEAN := FALSE;
    v_row     usage_ledger;
BEGIN
    -- Without credits, when the allowance can cover the amount: one upsert creates the
    -- window's counter or adds to it if the amount fits (re-checked on the newest row version
    -- when a concurrent consumption got there first), and holds its row lock to commit.
    IF p_purchased = 0 AND (p_unlimited OR p_amount <= p_limit) THEN
        INSERT INTO quota_counters AS c (subject, quota, bucket, used, updated_at)
        VALUES (p_subject, p_quota, p_bucket, p_amount, p_now)
        ON CONFLICT (subject, quota, bucket) DO UPDATE
            SET used = c.used + p_amount, updated_at = p_now
            WHERE p_unlimited OR c.used + p_amount <= p_limit
        RETURNING c.used - p_amount INTO v_used;
        IF FOUND THEN
            v_take := p_amount;
            v_granted := TRUE;
        END IF;
    END IF;

    IF NOT v_granted THEN
        -- Otherwise lock the counters (creating them at zero), always in this order (window,
        -- then balance), and decide on what they hold.
        INSERT INTO quota_counters AS c (subject, quota, bucket, used, updated_at)
        VALUES (p_subject, p_quota, p_bucket, 0, p_now)
        ON CONFLICT (subject, quota, bucket) DO UPDATE SET used = c.used
        RETURNING c.used INTO v_used;
        IF p_purchased > 0 THEN
            INSERT INTO quota_counters AS c (subject, quota, bucket, used, updated_at)
            VALUES (p_subject, p_quota, 'balance', 0, p_now)
            ON CONFLICT (subject, quota, bucket) DO UPDATE SET used = c.used
            RETURNING c.used INTO v_spent;
        END IF;
        IF p_unlimited THEN
            v_take := p_amount;
        ELSE
            v_take := LEAST(p_amount, GREATEST(COALESCE(p_limit, 0) - v_used, 0));
        END IF;
        v_rest := p_amount - v_take;
        v_granted := v_rest <= GREATEST(p_purchased - v_spent, 0);
        IF v_granted THEN
            IF v_take > 0 THEN
                UPDATE quota_counters SET used = used + v_take, updated_at = p_now
                WHERE subject = p_subject AND quota = p_quota AND bucket = p_bucket;
            END IF;
            IF v_rest > 0 THEN
                UPDATE quota_counters SET used = used + v_rest, updated_at = p_now
                WHERE subject = p_subject AND quota = p_quota AND bucket = 'balance';
            END IF;
        ELSE
            v_take := 0;
            v_rest := 0;
        END IF;
    END IF;

    INSERT INTO usage_ledger AS l (subject, requester, idempotency_key, quota, amount, granted,
        from_allowance, from_balance, bucket, status_code, caller, created_at, allowance,
        period, resets_at, used_after, balance_after, reason, problem)
    VALUES (p_subject, p_requester, p_key, p_quota, p_amount, v_granted, v_take, v_rest, p_bucket,
        CASE WHEN v_granted THEN 200 ELSE p_refusal_status END, p_caller, p_now, p_allowance,
        p_period, p_resets_at, v_used + v_take, GREATEST(p_purchased - v_spent - v_rest, 0),
        p_reason, CASE WHEN v_granted THEN NULL ELSE p_refusal_problem END)
    ON CONFLICT (requester, idempotency_key) DO NOTHING
    RETURNING * INTO v_row;

    IF FOUND THEN
        replayed := FALSE;
        IF v_take > 0 AND NOT p_unlimited AND COALESCE(p_limit, 0) > 0 THEN
            INSERT INTO quota_crossings (subject, quota, bucket, threshold, used, quota_limit,
                period, resets_at, created_at)
            SELECT p_subject, p_quota, p_bucket, t, v_used + v_take, p_limit, p_period,
                p_resets_at, p_now
            FROM unnest(p_thresholds) AS t
            WHERE v_used * 100 < t::BIGINT * p_limit
              AND (v_used + v_take) * 100 >= t::BIGINT * p_limit
            ON CONFLICT DO NOTHING;
        END IF;
    ELSE
        -- The key was used before (or by a concurrent request, now committed): take back what
        -- this call added, under the locks it still holds, and answer the first decision.
        IF v_take > 0 THEN
            UPDATE quota_counters SET used = used - v_take
            WHERE subject = p_subject AND quota = p_quota AND bucket = p_bucket;
        END IF;
        IF v_rest > 0 THEN
            UPDATE quota_counters SET used = used - v_rest
            WHERE subject = p_subject AND quota = p_quota AND bucket = 'balance';
        END IF;
        SELECT * INTO v_row FROM usage_ledger l
        WHERE l.requester = p_requester AND l.idempotency_key = p_key;
        replayed := TRUE;
    END IF;
    subject := v_row.subject;
    requester := v_row.requester;
    idempotency_key := v_row.idempotency_key;
    quota := v_row.quota;
    amount := v_row.amount;
    granted := v_row.granted;
    from_allowance := v_row.from_allowance;
    from_balance := v_row.from_balance;
    bucket := v_row.bucket;
    status_code := v_row.status_code;
    caller := v_row.caller;
    created_at := v_row.created_at;
    allowance := v_row.allowance;
    period := v_row.period;
    resets_at := v_row.resets_at;
    used_after := v_row.used_after;
    balance_after := v_row.balance_after;
    reason := v_row.reason;
    problem := v_row.problem;
    RETURN NEXT;
END
$$;
