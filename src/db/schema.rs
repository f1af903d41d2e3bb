// The one schema both backends share (see migrations/postgres and migrations/sqlite).

diesel::table! {
    customers (subject) {
        subject -> Text,
        subject_kind -> Text,
        user_id -> Nullable<Text>,
        tenant_id -> Nullable<Text>,
        stripe_customer_id -> Nullable<Text>,
        email -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        removed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    subscriptions (stripe_subscription_id) {
        stripe_subscription_id -> Text,
        subject -> Text,
        stripe_customer_id -> Text,
        status -> Text,
        plan_id -> Nullable<Text>,
        price_id -> Nullable<Text>,
        price_interval -> Nullable<Text>,
        quantity -> BigInt,
        current_period_start -> Nullable<Timestamp>,
        current_period_end -> Nullable<Timestamp>,
        trial_start -> Nullable<Timestamp>,
        trial_end -> Nullable<Timestamp>,
        cancel_at_period_end -> Bool,
        cancel_at -> Nullable<Timestamp>,
        canceled_at -> Nullable<Timestamp>,
        ended_at -> Nullable<Timestamp>,
        latest_invoice_id -> Nullable<Text>,
        payment_failed_at -> Nullable<Timestamp>,
        stripe_created_at -> Timestamp,
        synced_at -> Timestamp,
        period_payment_revoked -> Nullable<Text>,
        manager_user_id -> Nullable<Text>,
        pause_collection_behavior -> Nullable<Text>,
        pause_collection_resumes_at -> Nullable<Timestamp>,
        schedule_id -> Nullable<Text>,
        scheduled_change -> Nullable<Text>,
    }
}

diesel::table! {
    purchases (checkout_session_id) {
        checkout_session_id -> Text,
        subject -> Text,
        stripe_customer_id -> Nullable<Text>,
        plan_id -> Text,
        kind -> Text,
        payment_intent_id -> Nullable<Text>,
        amount -> BigInt,
        currency -> Text,
        status -> Text,
        purchased_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    stripe_events (event_id) {
        event_id -> Text,
        event_type -> Text,
        stripe_customer_id -> Nullable<Text>,
        livemode -> Bool,
        payload -> Text,
        stripe_created_at -> Timestamp,
        received_at -> Timestamp,
        processed_at -> Nullable<Timestamp>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        due_at -> Nullable<Timestamp>,
        leased_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    payments (payment_id) {
        payment_id -> Text,
        subject -> Text,
        stripe_customer_id -> Nullable<Text>,
        kind -> Text,
        amount -> BigInt,
        currency -> Text,
        status -> Text,
        description -> Nullable<Text>,
        occurred_at -> Timestamp,
        created_at -> Timestamp,
        amount_refunded -> BigInt,
        payment_intent_id -> Nullable<Text>,
        disputed -> Bool,
    }
}

diesel::table! {
    audit_log (audit_id) {
        audit_id -> Text,
        subject -> Text,
        entity -> Text,
        entity_id -> Text,
        action -> Text,
        changes -> Text,
        source -> Text,
        recorded_at -> Timestamp,
    }
}

diesel::table! {
    quota_counters (subject, quota, bucket) {
        subject -> Text,
        quota -> Text,
        bucket -> Text,
        used -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    usage_ledger (requester, idempotency_key) {
        subject -> Text,
        requester -> Text,
        idempotency_key -> Text,
        quota -> Text,
        amount -> BigInt,
        granted -> Bool,
        from_allowance -> BigInt,
        from_balance -> BigInt,
        bucket -> Text,
        status_code -> Integer,
        caller -> Text,
        created_at -> Timestamp,
        allowance -> Nullable<Text>,
        period -> Nullable<Text>,
        resets_at -> Nullable<Timestamp>,
        used_after -> BigInt,
        balance_after -> BigInt,
        reason -> Nullable<Text>,
        problem -> Nullable<Text>,
    }
}

diesel::table! {
    subject_snapshots (subject) {
        subject -> Text,
        state -> Text,
        role_exempt -> Bool,
        updated_at -> Timestamp,
        facts_version -> Integer,
        synced_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    grants (grant_id) {
        grant_id -> Text,
        subject -> Text,
        plan_id -> Text,
        until -> Nullable<Timestamp>,
        note -> Text,
        created_by -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    sync_jobs (job_id) {
        job_id -> Text,
        status -> Text,
        customers_total -> BigInt,
        customers_done -> BigInt,
        drifted -> BigInt,
        changes -> BigInt,
        failed -> BigInt,
        started_at -> Timestamp,
        heartbeat_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    event_heads (subject) {
        subject -> Text,
        revision -> BigInt,
        document -> Nullable<Text>,
        next_change_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    outbox_events (seq) {
        seq -> BigInt,
        event_id -> Text,
        position -> Nullable<BigInt>,
        subject -> Text,
        revision -> BigInt,
        event_type -> Text,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    event_deliveries (delivery_id) {
        delivery_id -> BigInt,
        event_id -> Text,
        endpoint -> Text,
        subject -> Text,
        revision -> BigInt,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        leased_until -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        queued_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    quota_crossings (crossing_id) {
        crossing_id -> BigInt,
        subject -> Text,
        quota -> Text,
        bucket -> Text,
        threshold -> Integer,
        used -> BigInt,
        quota_limit -> BigInt,
        period -> Nullable<Text>,
        resets_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        told_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    licenses (license_id) {
        license_id -> Text,
        checkout_session_id -> Text,
        subject -> Text,
        user_id -> Text,
        plan_id -> Text,
        provisioner -> Text,
        status -> Text,
        github_username -> Nullable<Text>,
        github_user_id -> Nullable<BigInt>,
        replaced_usernames -> Nullable<Text>,
        invitation_id -> Nullable<BigInt>,
        team_only -> Bool,
        username_submitted_at -> Nullable<Timestamp>,
        invited_at -> Nullable<Timestamp>,
        invitation_expired_at -> Nullable<Timestamp>,
        accepted_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
        step -> Nullable<Text>,
        step_due_at -> Nullable<Timestamp>,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        leased_until -> Nullable<Timestamp>,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    subscription_remedies (id) {
        id -> Text,
        kind -> Text,
        stripe_subscription_id -> Text,
        subject -> Text,
        stripe_customer_id -> Text,
        beside -> Nullable<Text>,
        invoice_id -> Nullable<Text>,
        price_id -> Nullable<Text>,
        quantity -> Nullable<BigInt>,
        status -> Text,
        attempts -> Integer,
        due_at -> Timestamp,
        leased_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        done_at -> Nullable<Timestamp>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    customers,
    grants,
    subscriptions,
    purchases,
    stripe_events,
    payments,
    audit_log,
    quota_counters,
    usage_ledger,
    subject_snapshots,
    sync_jobs,
    event_heads,
    outbox_events,
    event_deliveries,
    quota_crossings,
    licenses,
    subscription_remedies
);
