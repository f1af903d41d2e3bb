//! The webhook inbox: events are acknowledged once stored, and workers apply each customer's
//! pending events with one re-read of the customer from Stripe.

use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, TestApp};

/// Stores `events` as pending in one transaction, as a replica does that acknowledged them
/// while its workers were busy, or just before it was killed: the workers find them all at
/// once. With `leased_until`, as leased by a worker until then.
async fn store_pending(
    app: &TestApp,
    events: Vec<Value>,
    leased: Option<chrono::DateTime<chrono::Utc>>,
) {
    app.db(move |conn| {
        tollgate::db::write_transaction(conn, |conn| {
            for e in &events {
                let body = e.to_string();
                let row = tollgate::db::events::NewEvent {
                    id: e["id"].as_str().unwrap(),
                    event_type: e["type"].as_str().unwrap(),
                    customer_id: e["data"]["object"]["customer"].as_str(),
                    livemode: false,
                    created: chrono::Utc::now(),
                    payload: &body,
                };
                assert!(tollgate::db::events::record(
                    conn,
                    row,
                    true,
                    chrono::Utc::now()
                )?);
                if let Some(until) = leased {
                    use diesel::prelude::*;
                    use tollgate::db::schema::stripe_events::dsl::*;
                    diesel::update(stripe_events.find(e["id"].as_str().unwrap()))
                        .set(leased_until.eq(Some(tollgate::db::to_db_time(until))))
                        .execute(conn)?;
                }
            }
            Ok(())
        })
    })
    .await;
}

/// Waits until every one of `ids` is processed.
async fn all_applied(app: &TestApp, ids: &[String]) {
    for id in ids {
        app.applied(id).await;
        let id = id.clone();
        let status = app
            .db(move |conn| tollgate::db::events::status(conn, &id))
            .await
            .unwrap();
        assert!(status.processed_at.is_some(), "{status:?}");
    }
}

fn subscription_reads(app: &TestApp, customer: &str) -> usize {
    app.stripe
        .received_on("GET", "/v1/subscriptions")
        .iter()
        .filter(|r| r.form.get("customer").map(String::as_str) == Some(customer))
        .count()
}

#[tokio::test]
async fn a_burst_for_one_customer_is_applied_by_one_stripe_re_read() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let customer = app.stripe.subscription(&sub_id)["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app.user_token("user-1");
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    let before = subscription_reads(&app, &customer);
    let burst: Vec<Value> = (0..6)
        .map(|i| {
            event(
                &format!("evt_burst_{i}"),
                "customer.subscription.updated",
                app.stripe.subscription(&sub_id),
            )
        })
        .collect();
    let ids: Vec<String> = burst
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    store_pending(&app, burst, None).await;

    all_applied(&app, &ids).await;
    assert_eq!(subscription_reads(&app, &customer) - before, 1);
    let status = app.status(&token).await;
    assert_eq!(status["reason"], "canceling", "{status}");
    // The one sync that applied them names them in the audit trail's source.
    let id = sub_id.clone();
    let sources: Vec<String> = app
        .db(move |conn| {
            Ok(tollgate::db::audit::for_entity(conn, &id)?
                .into_iter()
                .map(|row| row.source)
                .filter(|source| source.contains("evt_burst_"))
                .collect())
        })
        .await;
    assert_eq!(
        sources,
        ["events:evt_burst_0 customer.subscription.updated and 5 more"]
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("tollgate_webhook_lag_seconds_bucket"));
    assert!(metrics.contains("tollgate_webhook_syncs_total{outcome=\"processed\"}"));
}

#[tokio::test]
async fn events_stored_by_a_replica_that_stopped_are_applied_by_another() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    // Acknowledged by a replica that was killed before its worker took it, and leased by a
    // worker that died holding it: the lease runs out and another worker applies it.
    let e = event(
        "evt_orphan",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    let expired = chrono::Utc::now() - chrono::Duration::seconds(1);
    store_pending(&app, vec![e], Some(expired)).await;
    app.applied("evt_orphan").await;
    assert_eq!(app.status(&token).await["reason"], "canceling");
}
