use serde_json::{json, Value};

use crate::helpers::fake_stripe::{invoice, now};
use crate::helpers::{event, spawn_app, TestApp, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET};

/// Checkout completed on Stripe, but only the webhook tells Tollgate (no verify).
async fn subscribed_by_webhook(app: &TestApp, user: &str) -> (String, String) {
    let (token, session_id, sub_id) = app.paid_checkout(user, "pro", "month").await;
    let sub_id = sub_id.unwrap();
    let session = app.stripe.session(&session_id);
    let res = app
        .webhook(&event(
            "evt_checkout",
            "checkout.session.completed",
            session,
        ))
        .await;
    assert_eq!(res.status(), 200);
    (sub_id, token)
}

async fn processed(app: &TestApp, event_id: &'static str) -> (bool, i32, Option<String>) {
    app.db(move |conn| {
        let s = tollgate::db::events::status(conn, event_id)?.expect("event stored");
        Ok((s.processed_at.is_some(), s.attempts, s.last_error))
    })
    .await
}

#[tokio::test]
async fn checkout_completed_webhook_activates_the_subscription() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(true), Some("active"))
    );
    assert_eq!(status["subscription_id"], sub_id.as_str());
    assert_eq!(processed(&app, "evt_checkout").await, (true, 1, None));
    // The handler re-read the session and the subscriptions from Stripe.
    let session_reads = app
        .stripe
        .received()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/checkout/sessions/"))
        .count();
    assert_eq!(session_reads, 1);
    assert!(!app
        .stripe
        .received_on("GET", "/v1/subscriptions")
        .is_empty());
}

#[tokio::test]
async fn forged_and_stale_signatures_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let e = event(
        "evt_forged",
        "invoice.paid",
        invoice("in_1", "cus_test_1", "paid"),
    );
    let res = app.send_webhook(&e, "whsec_attacker", None).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "invalid_signature"
    );

    let res = app
        .send_webhook(&e, WEBHOOK_SECRET, Some(now() - 301))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "stale_signature"
    );

    let res = app
        .http
        .post(app.url("/v1/webhooks/stripe"))
        .body(e.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "missing_signature"
    );

    // A valid signature over a body that was then altered.
    let body = e.to_string();
    let t = now();
    let header = format!(
        "t={t},v1={}",
        crate::helpers::sign(WEBHOOK_SECRET, t, &body)
    );
    let tampered = body.replace("evt_forged", "evt_tampered");
    let res = app
        .http
        .post(app.url("/v1/webhooks/stripe"))
        .header("Stripe-Signature", header)
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    assert_eq!(app.count("stripe_events").await, 0);
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn the_previous_secret_still_verifies_during_rotation() {
    let app = spawn_app().await;
    let res = app
        .send_webhook(
            &event(
                "evt_old_secret",
                "product.created",
                json!({"id": "prod_1", "object": "product"}),
            ),
            OLD_WEBHOOK_SECRET,
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(processed(&app, "evt_old_secret").await.0);
}

#[tokio::test]
async fn a_duplicate_event_answers_2xx_and_changes_nothing() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let updated = event(
        "evt_update",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    let first: Value = app.webhook(&updated).await.json().await.unwrap();
    assert_eq!(first, json!({"received": true, "duplicate": false}));

    // Stripe's truth moves on; a redelivery of the same event id must not re-apply anything.
    app.stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("canceled"));
    let lists_before = app.stripe.received_on("GET", "/v1/subscriptions").len();
    let again = app.webhook(&updated).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"received": true, "duplicate": true})
    );
    assert_eq!(
        app.stripe.received_on("GET", "/v1/subscriptions").len(),
        lists_before
    );
    assert_eq!(app.status(&token).await["reason"], "active");
    assert_eq!(app.count("stripe_events").await, 2);
}

#[tokio::test]
async fn a_failed_stripe_read_is_acknowledged_then_retried_from_the_inbox() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    app.stripe.fail_subscription_lists(1000);
    let e = event(
        "evt_retry",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    // Stored before anything is asked of Stripe: acknowledged, not lost.
    let res = app.webhook(&e).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["duplicate"], false);
    let (done, attempts, error) = processed(&app, "evt_retry").await;
    assert!(!done);
    assert!(attempts >= 1);
    assert!(error.unwrap().contains("fake outage"));
    assert_eq!(app.status(&token).await["cancel_at_period_end"], false);

    // Stripe answers again: the worker applies it by itself, without a redelivery.
    app.stripe.fail_subscription_lists(0);
    let mut state = processed(&app, "evt_retry").await;
    for _ in 0..500 {
        if state.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        state = processed(&app, "evt_retry").await;
    }
    assert!(state.0, "{state:?}");
    assert_eq!(state.2, None);
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["reason"].as_str(),
            status["cancel_at_period_end"].as_bool()
        ),
        (Some("canceling"), Some(true))
    );
    // Stripe's own retry of the delivery is a duplicate.
    let res = app.webhook(&e).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["duplicate"], true);
}

#[tokio::test]
async fn renewal_moves_the_period_end() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let next_end = now() + 60 * 86_400;
    app.stripe.update_subscription(&sub_id, |s| {
        s["items"]["data"][0]["current_period_start"] = json!(now());
        s["items"]["data"][0]["current_period_end"] = json!(next_end);
    });
    let mut inv = invoice("in_renewal", "cus_test_1", "paid");
    inv["subscription"] = json!(sub_id);
    app.webhook_ok(&event("evt_paid", "invoice.paid", inv))
        .await;
    let status = app.status(&token).await;
    let shown =
        chrono::DateTime::parse_from_rfc3339(status["current_period_end"].as_str().unwrap())
            .unwrap();
    assert_eq!(shown.timestamp(), next_end);
    assert_eq!(status["reason"], "active");
}

#[tokio::test]
async fn cancellation_at_period_end_keeps_access_then_deletion_ends_it() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["cancel_at_period_end"] = json!(true);
        s["canceled_at"] = json!(now());
    });
    app.webhook_ok(&event("evt_cancel", "customer.subscription.updated", sub))
        .await;
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["cancel_at_period_end"].as_bool()
        ),
        (Some(true), Some("canceling"), Some(true))
    );

    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("canceled");
        s["ended_at"] = json!(now());
    });
    app.webhook_ok(&event("evt_deleted", "customer.subscription.deleted", sub))
        .await;
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["plan"].as_str()
        ),
        (Some(false), Some("canceled"), Some("free"))
    );
}

#[tokio::test]
async fn payment_failure_gives_a_grace_period_that_then_expires() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    app.stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("past_due"));
    let failed = event(
        "evt_failed",
        "invoice.payment_failed",
        invoice("in_failed", "cus_test_1", "open"),
    );
    let failed_at = failed["created"].as_i64().unwrap();
    app.webhook_ok(&failed).await;
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["status"].as_str()
        ),
        (Some(true), Some("grace"), Some("past_due"))
    );
    let grace_until =
        chrono::DateTime::parse_from_rfc3339(status["grace_until"].as_str().unwrap()).unwrap();
    assert_eq!(grace_until.timestamp(), failed_at + 24 * 3600);

    // Payment succeeds: active again, no grace.
    app.stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("active"));
    app.webhook_ok(&event(
        "evt_recovered",
        "invoice.payment_succeeded",
        invoice("in_failed", "cus_test_1", "paid"),
    ))
    .await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["reason"].as_str(), status["grace_until"].as_str()),
        (Some("active"), None)
    );
}

#[tokio::test]
async fn a_failure_reported_more_than_the_grace_period_ago_ends_access() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    app.stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("past_due"));
    let mut failed = event(
        "evt_old_failure",
        "invoice.payment_failed",
        invoice("in_failed", "cus_test_1", "open"),
    );
    failed["created"] = json!(now() - 2 * 86_400);
    app.webhook_ok(&failed).await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("grace_expired"))
    );
}

#[tokio::test]
async fn trial_will_end_and_unknown_events_are_recorded_and_acknowledged() {
    let app = spawn_app().await;
    let (sub_id, _) = subscribed_by_webhook(&app, "user-1").await;
    let res = app
        .webhook(&event(
            "evt_trial",
            "customer.subscription.trial_will_end",
            app.stripe.subscription(&sub_id),
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert!(processed(&app, "evt_trial").await.0);
    let res = app
        .webhook(&event(
            "evt_unknown",
            "radar.early_fraud_warning.created",
            json!({"id": "issfr_1", "object": "radar.early_fraud_warning"}),
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert!(processed(&app, "evt_unknown").await.0);
}

#[tokio::test]
async fn events_for_customers_tollgate_did_not_create_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let res = app
        .webhook(&event(
            "evt_foreign",
            "invoice.paid",
            invoice("in_x", "cus_foreign", "paid"),
        ))
        .await;
    assert_eq!(res.status(), 200);
    assert!(processed(&app, "evt_foreign").await.0);
    assert_eq!(app.count("customers").await, 0);
    assert_eq!(app.count("subscriptions").await, 0);
}

#[tokio::test]
async fn lifetime_purchase_by_webhook_grants_lifetime_access() {
    let app = spawn_app().await;
    let (token, session_id, _) = app.paid_checkout("user-1", "lifetime", "once").await;

    let res = app
        .webhook(&event(
            "evt_lifetime",
            "checkout.session.completed",
            app.stripe.session(&session_id),
        ))
        .await;
    assert_eq!(res.status(), 200);
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["lifetime"].as_bool()
        ),
        (Some(true), Some("lifetime"), Some(true))
    );
}

#[tokio::test]
async fn malformed_but_signed_bodies_are_refused() {
    let app = spawn_app().await;
    let body = "{\"not\": \"an event\"}";
    let t = now();
    let header = format!("t={t},v1={}", crate::helpers::sign(WEBHOOK_SECRET, t, body));
    let res = app
        .http
        .post(app.url("/v1/webhooks/stripe"))
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "invalid_payload"
    );
    assert_eq!(app.count("stripe_events").await, 0);
}

#[tokio::test]
async fn a_deleted_customer_ends_access_and_the_next_checkout_creates_a_new_one() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let customer = app.stripe.delete_customer("cus_test_1");
    let res = app
        .webhook(&event("evt_customer_deleted", "customer.deleted", customer))
        .await;
    assert_eq!(res.status(), 200);
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["subscription_id"].as_str()
        ),
        (Some(false), Some("canceled"), Some(sub_id.as_str()))
    );
    let linked = app
        .db(|conn| {
            Ok(tollgate::db::customers::find(
                conn,
                &tollgate::billing::subject::Subject::user("user-1"),
            )?
            .unwrap()
            .stripe_customer_id)
        })
        .await;
    assert_eq!(linked, None);
    let trail = app
        .db(|conn| tollgate::db::audit::for_entity(conn, "cus_test_1"))
        .await;
    assert_eq!((trail.len(), trail[0].action.as_str()), (1, "deleted"));

    // Subscribing again creates a fresh customer (a new idempotency key, not a replay).
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    assert_eq!(status["reason"], "active");
    let created = app.stripe.received_on("POST", "/v1/customers");
    assert_eq!(created.len(), 2);
    assert_ne!(created[0].idempotency_key, created[1].idempotency_key);
    assert_eq!(app.stripe.customer_count(), 1);
}

#[tokio::test]
async fn a_stale_customer_deleted_event_for_a_live_customer_only_resyncs() {
    let app = spawn_app().await;
    let (_, token) = subscribed_by_webhook(&app, "user-1").await;
    let customer = json!({"id": "cus_test_1", "object": "customer"});
    app.webhook_ok(&event("evt_not_really", "customer.deleted", customer))
        .await;
    assert_eq!(app.status(&token).await["reason"], "active");
    let linked = app
        .db(|conn| {
            Ok(tollgate::db::customers::find(
                conn,
                &tollgate::billing::subject::Subject::user("user-1"),
            )?
            .unwrap()
            .stripe_customer_id)
        })
        .await;
    assert_eq!(linked.as_deref(), Some("cus_test_1"));
}

#[tokio::test]
async fn a_failure_discovered_late_counts_grace_from_the_period_start() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    // The renewal failed two days ago; only a subscription update (no payment_failed) arrives.
    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("past_due");
        s["items"]["data"][0]["current_period_start"] = json!(now() - 2 * 86_400);
    });
    app.webhook_ok(&event("evt_late", "customer.subscription.updated", sub))
        .await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("grace_expired"))
    );
    // A later payment_failed event of the same period does not restart the grace period.
    let failed = event(
        "evt_late_failed",
        "invoice.payment_failed",
        invoice("in_late", "cus_test_1", "open"),
    );
    app.webhook_ok(&failed).await;
    assert_eq!(app.status(&token).await["reason"], "grace_expired");
}

/// When each billing row of the subject was last written: the snapshot's `updated_at`, every
/// subscription's `synced_at`, every payment's and purchase's row, and the audit trail's size.
async fn billing_writes(app: &TestApp) -> (Vec<String>, i64) {
    let rows = app
        .db(|conn| {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Written {
                #[diesel(sql_type = diesel::sql_types::Text)]
                what: String,
            }
            let rows: Vec<Written> = diesel::sql_query(
                "SELECT 'snapshot ' || subject || ' ' || CAST(updated_at AS TEXT) AS what FROM subject_snapshots \
                 UNION ALL SELECT 'subscription ' || stripe_subscription_id || ' ' || CAST(synced_at AS TEXT) || ' ' || status FROM subscriptions \
                 UNION ALL SELECT 'payment ' || payment_id || ' ' || status || ' ' || CAST(amount_refunded AS TEXT) FROM payments \
                 ORDER BY 1",
            )
            .load(conn)?;
            Ok(rows.into_iter().map(|r| r.what).collect::<Vec<_>>())
        })
        .await;
    (rows, app.count("audit_log").await)
}

#[tokio::test]
async fn an_event_that_changes_nothing_on_stripe_rewrites_no_billing_row() {
    let app = spawn_app().await;
    let (sub_id, token) = subscribed_by_webhook(&app, "user-1").await;
    let before = billing_writes(&app).await;
    assert!(
        before
            .0
            .iter()
            .any(|r| r.starts_with("snapshot user:user-1")),
        "{before:?}"
    );
    // An hour later, Stripe tells of the same subscription again (another event id).
    app.set_now(chrono::Utc::now() + chrono::Duration::hours(1));
    let sub = app.stripe.subscription(&sub_id);
    app.webhook_ok(&event("evt_same", "customer.subscription.updated", sub))
        .await;
    assert_eq!(processed(&app, "evt_same").await, (true, 1, None));
    assert_eq!(billing_writes(&app).await, before);

    // A change is written, and only then.
    let sub = app
        .stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    app.webhook_ok(&event("evt_cancel", "customer.subscription.updated", sub))
        .await;
    let after = billing_writes(&app).await;
    assert_ne!(after.0, before.0);
    assert_eq!(after.1, before.1 + 1, "one audit row: the subscription");
    assert_eq!(app.status(&token).await["cancel_at_period_end"], true);
}
