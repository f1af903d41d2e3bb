//! Out-of-order, duplicated and concurrent deliveries converge to Stripe's truth.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::helpers::fake_stripe::{invoice, now};
use crate::helpers::{event, spawn_app, TestApp};

/// The ways a subscription can end up on Stripe after a run of changes.
fn final_truth(kind: usize, sub: &mut Value) {
    let item = |s: &mut Value, price: &str, interval: &str| {
        s["items"]["data"][0]["price"]["id"] = json!(price);
        s["items"]["data"][0]["plan"]["id"] = json!(price);
        s["items"]["data"][0]["price"]["recurring"]["interval"] = json!(interval);
    };
    match kind {
        0 => sub["status"] = json!("active"),
        1 => sub["status"] = json!("past_due"),
        2 => {
            sub["status"] = json!("canceled");
            sub["ended_at"] = json!(now());
        }
        3 => sub["cancel_at_period_end"] = json!(true),
        4 => sub["status"] = json!("paused"),
        5 => sub["status"] = json!("unpaid"),
        _ => item(sub, "price_pro_yearly", "year"),
    }
    // A renewal happened along the way.
    sub["items"]["data"][0]["current_period_start"] = json!(now() - 60);
    sub["items"]["data"][0]["current_period_end"] = json!(now() + 40 * 86_400);
}

/// The stored row, in Stripe's terms, for comparison with the fake's truth.
async fn stored(app: &TestApp) -> (String, bool, i64, Option<String>) {
    let (state, snapshot) = app
        .db(|conn| {
            let tables = tollgate::db::state::load(conn, "user:user-1")?;
            // Read past any cache: the stored row itself.
            let mut snapshots =
                tollgate::db::snapshots::read_many(conn, None, &["user:user-1".to_owned()])?;
            Ok((tables, snapshots.remove(0).facts.clone()))
        })
        .await;
    assert_eq!(state.subscriptions.len(), 1, "one subscription row");
    // What the hot path reads is what the tables hold.
    assert_eq!(snapshot, state.facts(), "the snapshot follows the tables");
    let s = &state.subscriptions[0];
    (
        s.status.clone(),
        s.cancel_at_period_end,
        s.current_period_end.unwrap().and_utc().timestamp(),
        s.price_id.clone(),
    )
}

fn truth(sub: &Value) -> (String, bool, i64, Option<String>) {
    (
        sub["status"].as_str().unwrap().to_owned(),
        sub["cancel_at_period_end"].as_bool().unwrap(),
        sub["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap(),
        sub["items"]["data"][0]["price"]["id"]
            .as_str()
            .map(str::to_owned),
    )
}

/// The events a lifecycle sends, each carrying the (now stale) object of its moment.
fn lifecycle(app: &TestApp, sub_id: &str) -> [Value; 7] {
    let initial = app.stripe.subscription(sub_id);
    let mut past_due = initial.clone();
    past_due["status"] = json!("past_due");
    let mut canceling = initial.clone();
    canceling["cancel_at_period_end"] = json!(true);
    let mut inv = invoice("in_1", "cus_test_1", "paid");
    inv["subscription"] = json!(sub_id);
    [
        event(
            "evt_created",
            "customer.subscription.created",
            initial.clone(),
        ),
        event(
            "evt_failed",
            "invoice.payment_failed",
            invoice("in_1", "cus_test_1", "open"),
        ),
        event("evt_past_due", "customer.subscription.updated", past_due),
        event("evt_paid", "invoice.paid", inv),
        event("evt_canceling", "customer.subscription.updated", canceling),
        event(
            "evt_trial_will_end",
            "customer.subscription.trial_will_end",
            initial.clone(),
        ),
        event("evt_deleted", "customer.subscription.deleted", initial),
    ]
}

/// Replays a recorded lifecycle's events in `order` (then the `again` ones once more), with
/// Stripe already holding the final state; after every delivery the stored state is Stripe's.
async fn replay(order: Vec<usize>, again: Vec<usize>, final_kind: usize) {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let recorded = lifecycle(&app, &sub_id);

    let final_sub = app
        .stripe
        .update_subscription(&sub_id, |s| final_truth(final_kind, s));
    let mut processed: HashMap<String, usize> = HashMap::new();
    for i in order.iter().chain(again.iter()) {
        let e = &recorded[*i];
        let res = app.webhook(e).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        if body["duplicate"] == false {
            *processed
                .entry(e["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        assert_eq!(stored(&app).await, truth(&final_sub), "after {}", e["id"]);
    }
    assert!(
        processed.values().all(|n| *n == 1),
        "every event processed once: {processed:?}"
    );
    assert_eq!(processed.len(), order.len());
}

/// Delivers the lifecycle's events all at once (in `order`, then the `again` ones), on
/// PostgreSQL alternately to two replicas whose workers drain one inbox concurrently; once
/// every event is applied, the stored state is Stripe's and each event was applied once.
async fn deliver_at_once(order: Vec<usize>, again: Vec<usize>, final_kind: usize) {
    let app = spawn_app().await;
    let other = if app.uses_postgres() {
        app.another_instance().await
    } else {
        app.address.clone()
    };
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let recorded = lifecycle(&app, &sub_id);
    let final_sub = app
        .stripe
        .update_subscription(&sub_id, |s| final_truth(final_kind, s));
    let deliveries = order.iter().chain(again.iter()).enumerate().map(|(n, i)| {
        let base = if n % 2 == 0 { &app.address } else { &other };
        app.webhook_to(base, &recorded[*i])
    });
    for res in futures::future::join_all(deliveries).await {
        assert_eq!(res.status(), 200);
    }
    for i in &order {
        let id = recorded[*i]["id"].as_str().unwrap().to_owned();
        app.applied(&id).await;
        let status = app
            .db(move |conn| tollgate::db::events::status(conn, &id))
            .await
            .unwrap();
        // Applied once: marking it processed counts an attempt, and only once.
        assert!(status.processed_at.is_some());
        assert_eq!(status.attempts, 1);
    }
    assert_eq!(stored(&app).await, truth(&final_sub));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_order_of_events_with_duplicates_converges_to_stripes_state(
        order in Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        again in prop::collection::vec(0usize..7, 0..5),
        final_kind in 0usize..7,
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(replay(order, again, final_kind));
    }

    #[test]
    fn events_delivered_at_once_converge_through_concurrent_workers(
        order in Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
        again in prop::collection::vec(0usize..7, 0..5),
        final_kind in 0usize..7,
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(deliver_at_once(order, again, final_kind));
    }
}

#[tokio::test]
async fn two_instances_receiving_the_same_events_process_each_once() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        // Replicas share PostgreSQL; SQLite serves a single instance (its lock is in-process).
        return;
    }
    let other = app.another_instance().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let sub = app
        .stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));

    let events: Vec<Value> = (0..8)
        .map(|i| {
            event(
                &format!("evt_both_{i}"),
                "customer.subscription.updated",
                sub.clone(),
            )
        })
        .collect();
    let deliveries = events
        .iter()
        .flat_map(|e| [app.webhook_to(&app.address, e), app.webhook_to(&other, e)]);
    let responses = futures::future::join_all(deliveries).await;
    let mut first_time: HashMap<String, usize> = HashMap::new();
    for (res, e) in responses
        .into_iter()
        .zip(events.iter().flat_map(|e| [e, e]))
    {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        if body["duplicate"] == false {
            *first_time
                .entry(e["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(first_time.len(), 8);
    assert!(first_time.values().all(|n| *n == 1), "{first_time:?}");
    for i in 0..8 {
        let id = format!("evt_both_{i}");
        let attempts = app
            .db(move |conn| Ok(tollgate::db::events::status(conn, &id)?.unwrap().attempts))
            .await;
        assert_eq!(attempts, 1);
    }
    assert_eq!(app.count("customers").await, 1);
    assert_eq!(app.count("subscriptions").await, 1);
    assert_eq!(
        app.status(&app.user_token("user-1")).await["reason"],
        "canceling"
    );
}

#[tokio::test]
async fn concurrent_first_checkouts_on_two_instances_create_one_customer() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    let token = app.user_token("user-1");
    let body = json!({"plan": "pro", "interval": "month"});
    let attempts = (0..6).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            other.clone()
        };
        app.http
            .post(format!("{base}/v1/checkout"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    });
    let results = futures::future::join_all(attempts).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().status() == 201));
    assert_eq!(app.stripe.customer_count(), 1);
    assert_eq!(app.count("customers").await, 1);
}
