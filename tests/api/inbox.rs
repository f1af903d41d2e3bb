//! The webhook inbox: events are acknowledged once stored, and workers apply each customer's
//! pending events with one re-read of the customer from Stripe.

use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, spawn_app_with, Options, TestApp};

/// Stores `events` as pending in one transaction, as a replica does that acknowledged them
/// while its workers were busy, or just before it was killed: the workers find them all at
/// once. With `leased_until`, as leased by a worker until then; with `due`, as retried then.
async fn store_pending_with(
    app: &TestApp,
    events: Vec<Value>,
    leased: Option<chrono::DateTime<chrono::Utc>>,
    due: Option<chrono::DateTime<chrono::Utc>>,
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
                    Some(chrono::Utc::now()),
                    chrono::Utc::now()
                )?);
                use diesel::prelude::*;
                use tollgate::db::schema::stripe_events::dsl::*;
                let row = stripe_events.find(e["id"].as_str().unwrap());
                if let Some(until) = leased {
                    diesel::update(row)
                        .set(leased_until.eq(Some(tollgate::db::to_db_time(until))))
                        .execute(conn)?;
                }
                if let Some(at) = due {
                    diesel::update(row)
                        .set(due_at.eq(Some(tollgate::db::to_db_time(at))))
                        .execute(conn)?;
                }
            }
            Ok(())
        })
    })
    .await;
}

async fn store_pending(
    app: &TestApp,
    events: Vec<Value>,
    leased: Option<chrono::DateTime<chrono::Utc>>,
) {
    store_pending_with(app, events, leased, None).await;
}

/// The Stripe customer of the subscription `sub_id`.
fn customer_of(app: &TestApp, sub_id: &str) -> String {
    app.stripe.subscription(sub_id)["customer"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `n` `customer.subscription.updated` events `{prefix}_0` … for the subscription as Stripe
/// holds it now, and their ids.
fn updates(app: &TestApp, sub_id: &str, prefix: &str, n: usize) -> (Vec<Value>, Vec<String>) {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            event(
                &format!("{prefix}_{i}"),
                "customer.subscription.updated",
                app.stripe.subscription(sub_id),
            )
        })
        .collect();
    let ids = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    (events, ids)
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

fn reads(app: &TestApp, path: &str, customer: &str) -> usize {
    app.stripe
        .received_on("GET", path)
        .iter()
        .filter(|r| r.form.get("customer").map(String::as_str) == Some(customer))
        .count()
}

/// Waits (up to 5 s) until Stripe was asked for `customer`'s subscriptions more than `before`
/// times, and answers how many times it was.
async fn subscriptions_read_after(app: &TestApp, customer: &str, before: usize) -> usize {
    for _ in 0..1000 {
        if reads(app, "/v1/subscriptions", customer) > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    reads(app, "/v1/subscriptions", customer)
}

#[tokio::test]
async fn a_burst_for_one_customer_is_applied_by_one_stripe_re_read() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let customer = customer_of(&app, &sub_id);
    let token = app.user_token("user-1");
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    let before = (
        reads(&app, "/v1/subscriptions", &customer),
        reads(&app, "/v1/charges", &customer),
    );
    assert!(before.1 > 0, "the verify after checkout read the charges");
    let (burst, ids) = updates(&app, &sub_id, "evt_burst", 6);
    store_pending(&app, burst, None).await;

    all_applied(&app, &ids).await;
    // One Stripe read for the six: subscription events need the subscriptions, not the charges.
    assert_eq!(reads(&app, "/v1/subscriptions", &customer) - before.0, 1);
    assert_eq!(reads(&app, "/v1/charges", &customer) - before.1, 0);
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

#[tokio::test]
async fn operators_see_the_backlog_and_the_events_that_keep_failing() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let customer = customer_of(&app, &sub_id);
    let admin = app.idp.service_token("billing:admin");
    let backlog = |token: String| {
        let app = &app;
        async move {
            let res = app
                .get("/v1/admin/webhooks/stuck?limit=5", Some(&token))
                .await;
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (code, empty) = backlog(admin.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(
        (&empty["pending"], &empty["stuck"]),
        (&json!(0), &json!([]))
    );

    app.stripe.fail_subscription_lists(1000);
    let e = event(
        "evt_stuck",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    assert_eq!(app.webhook(&e).await.status(), 200);
    let (code, stuck) = backlog(admin.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(stuck["pending"], 1, "{stuck}");
    let listed = &stuck["stuck"][0];
    assert_eq!(
        (&listed["event_id"], &listed["type"], &listed["customer_id"]),
        (
            &json!("evt_stuck"),
            &json!("customer.subscription.updated"),
            &json!(customer)
        )
    );
    assert!(listed["attempts"].as_i64().unwrap() >= 1);
    assert!(
        listed["last_error"]
            .as_str()
            .unwrap()
            .contains("fake outage"),
        "{listed}"
    );
    assert!(listed["next_attempt_at"].is_string());
    assert!(stuck["oldest_pending_received_at"].is_string());

    // Only operators read it; a bad limit is refused.
    let (code, _) = backlog(app.idp.service_token("billing:read")).await;
    assert_eq!(code, 403);
    let res = app
        .get("/v1/admin/webhooks/stuck?limit=0", Some(&admin))
        .await;
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_limit");

    // Stripe answers again: the backlog drains by itself.
    app.stripe.fail_subscription_lists(0);
    let mut drained = Value::Null;
    for _ in 0..500 {
        drained = backlog(admin.clone()).await.1;
        if drained["pending"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        (&drained["pending"], &drained["stuck"]),
        (&json!(0), &json!([]))
    );
}

#[tokio::test]
async fn a_verify_during_a_backlog_is_answered_at_once_and_applies_the_pending_events() {
    let app = spawn_app().await;
    let (token, session_id, _) = app.paid_checkout("user-1", "pro", "month").await;
    let session = app.stripe.session(&session_id);
    // Its webhook waits in the inbox behind a backlog (due only in an hour).
    let completed = event("evt_waiting", "checkout.session.completed", session);
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    store_pending_with(&app, vec![completed], None, Some(later)).await;

    let res = app.verify(&token, &session_id).await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("pro"), Some(true))
    );
    // The verify's sync applied the waiting event too: nothing is left for the workers.
    let status = app
        .db(|conn| tollgate::db::events::status(conn, "evt_waiting"))
        .await
        .unwrap();
    assert!(status.processed_at.is_some(), "{status:?}");
}

#[tokio::test]
async fn two_replicas_drain_one_inbox_applying_each_event_once() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        // Small batches, so that both replicas' workers take part.
        extra_toml: "[webhooks]\nclaim_batch = 4\n".into(),
        ..crate::helpers::Options::default()
    })
    .await;
    if !app.uses_postgres() {
        // Replicas share PostgreSQL; SQLite serves a single instance.
        return;
    }
    let _other = app.another_instance().await;
    // Ten customers whose subscriptions Stripe now says cancel at the period's end, three
    // events each, stored at once.
    let mut burst = Vec::new();
    let mut customers = Vec::new();
    for n in 0..10 {
        let subject = format!("user:user-{n}");
        let (customer, sub_id) =
            app.stripe
                .add_customer_with_subscription(&subject, "price_pro_monthly", "month");
        app.stripe
            .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
        for i in 0..3 {
            burst.push(event(
                &format!("evt_drain_{n}_{i}"),
                "customer.subscription.updated",
                app.stripe.subscription(&sub_id),
            ));
        }
        customers.push(customer);
    }
    let ids: Vec<String> = burst
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    store_pending(&app, burst, None).await;
    all_applied(&app, &ids).await;
    for id in &ids {
        let id = id.clone();
        let status = app
            .db(move |conn| tollgate::db::events::status(conn, &id))
            .await
            .unwrap();
        // Applied once: marking it processed counts an attempt, and only once.
        assert_eq!(status.attempts, 1, "{status:?}");
    }
    for (n, customer) in customers.iter().enumerate() {
        // At most one re-read per event, and at least one per customer.
        let read = reads(&app, "/v1/subscriptions", customer);
        assert!((1..=3).contains(&read), "{customer}: {read} reads");
        let token = app.user_token(&format!("user-{n}"));
        assert_eq!(app.status(&token).await["reason"], "canceling");
    }
}

#[tokio::test]
async fn stripe_answering_429_slows_the_workers_and_nothing_is_lost() {
    let app = spawn_app().await;
    let mut subs = Vec::new();
    for user in ["user-1", "user-2", "user-3"] {
        let sub_id = app.subscribed(user, "pro", "month").await;
        app.stripe
            .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
        subs.push(sub_id);
    }
    let since = app.stripe.received().len();
    app.stripe.rate_limit_subscription_lists(3);
    let events: Vec<Value> = subs
        .iter()
        .enumerate()
        .map(|(i, sub_id)| {
            event(
                &format!("evt_limited_{i}"),
                "customer.subscription.updated",
                app.stripe.subscription(sub_id),
            )
        })
        .collect();
    store_pending(&app, events, None).await;

    // However the workers meet the 429s (together or one after another, retried by the client
    // or by the inbox), every event is applied in the end.
    for i in 0..3 {
        let id = format!("evt_limited_{i}");
        let mut processed = false;
        for _ in 0..600 {
            let id = id.clone();
            let status = app
                .db(move |conn| tollgate::db::events::status(conn, &id))
                .await
                .unwrap();
            if status.processed_at.is_some() {
                processed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(processed, "{id} was not applied");
    }
    for user in ["user-1", "user-2", "user-3"] {
        let status = app.status(&app.user_token(user)).await;
        assert_eq!(status["reason"], "canceling", "{user}: {status}");
    }
    let listings: Vec<_> = app.stripe.received()[since..]
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/subscriptions")
        .cloned()
        .collect();
    // The three refused listings and one accepted per customer: nothing more was asked.
    assert_eq!(listings.len(), 6, "{listings:?}");
    // The first 429 paused the replica's background work: every listing Stripe accepted came
    // after the pause (one second), none at once.
    let first = listings[0].at;
    let accepted_after: Vec<_> = listings[3..].iter().map(|r| r.at - first).collect();
    assert!(
        accepted_after
            .iter()
            .all(|gap| *gap >= std::time::Duration::from_millis(950)),
        "{accepted_after:?}"
    );
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("tollgate_stripe_attempts_total{outcome=\"rate_limited\"}"));
    assert!(metrics.contains("tollgate_stripe_budget_wait_seconds_bucket{priority=\"webhooks\""));
}

#[tokio::test]
async fn a_sync_waiting_on_stripe_holds_no_database_connection() {
    // One connection: a sync that kept it (for a lock, say) while Stripe answers slowly would
    // leave the readers below waiting for the pool, then failing.
    let app = spawn_app_with(Options {
        extra_toml: "[database]\nmax_connections = 1\n".into(),
        ..Options::default()
    })
    .await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let listed = app.stripe.received_on("GET", "/v1/subscriptions").len();
    app.stripe
        .delay_subscription_lists(std::time::Duration::from_secs(30));
    let e = event(
        "evt_slow",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    store_pending(&app, vec![e], None).await;
    for _ in 0..1000 {
        if app.stripe.received_on("GET", "/v1/subscriptions").len() > listed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        app.stripe.received_on("GET", "/v1/subscriptions").len() > listed,
        "the worker did not ask Stripe"
    );
    // While the worker waits on Stripe, the database serves everyone else: each of these
    // subjects is read from the database (none is cached), more of them than the pool holds.
    for i in 0..6 {
        let status = app.status(&app.user_token(&format!("reader-{i}"))).await;
        assert_eq!(status["plan"], "free", "{status}");
        assert!(app.stripe.received_on("GET", "/v1/subscriptions").len() > listed);
    }
    // Ready all the while: a backlog is the workers' business, not a reason to take the
    // replica out of the load balancer.
    assert_eq!(app.get("/readyz", None).await.status(), 200);
    // The event is still waiting for its sync, which is still waiting for Stripe.
    let status = app
        .db(|conn| tollgate::db::events::status(conn, "evt_slow"))
        .await
        .unwrap();
    assert!(status.processed_at.is_none(), "{status:?}");
    assert_eq!(status.attempts, 0, "{status:?}");
}

#[tokio::test]
async fn events_arriving_while_their_customer_is_synced_make_one_more_sync() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let customer = customer_of(&app, &sub_id);
    let before = reads(&app, "/v1/subscriptions", &customer);
    // Stripe is slow: the first sync is still reading when the other events arrive.
    app.stripe
        .delay_subscription_lists(std::time::Duration::from_millis(1500));
    let (events, ids) = updates(&app, &sub_id, "evt_during", 6);
    let mut events = events.into_iter();
    store_pending(&app, vec![events.next().unwrap()], None).await;
    assert_eq!(
        subscriptions_read_after(&app, &customer, before).await,
        before + 1
    );
    for e in events {
        store_pending(&app, vec![e], None).await;
        // One at a time, each seen by the worker's next look (every 50 ms here).
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    all_applied(&app, &ids).await;
    // The first event's sync, then one more for the five that came during it.
    assert_eq!(reads(&app, "/v1/subscriptions", &customer) - before, 2);
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_by_another_holder_and_its_first_holder_writes_nothing() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return; // One SQLite process needs no leases.
    }
    use std::time::Duration;
    use tollgate::db::leases;
    app.db(|conn| {
        assert!(leases::take(
            conn,
            "customer:cus_lease",
            "first",
            Duration::from_millis(50)
        )?);
        // Held: no one else takes it.
        assert!(!leases::take(
            conn,
            "customer:cus_lease",
            "second",
            Duration::from_secs(10)
        )?);
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.db(|conn| {
        // Lapsed (its holder stalled or died): the next one takes it.
        assert!(leases::take(
            conn,
            "customer:cus_lease",
            "second",
            Duration::from_secs(10)
        )?);
        // The first holder's write is refused, its renewal and release change nothing.
        let refused = tollgate::db::write_transaction(conn, |conn| {
            leases::confirm(conn, "customer:cus_lease", "first")
        });
        assert!(refused.is_err());
        assert!(!leases::renew(
            conn,
            "customer:cus_lease",
            "first",
            Duration::from_secs(10)
        )?);
        leases::release(conn, "customer:cus_lease", "first")?;
        tollgate::db::write_transaction(conn, |conn| {
            leases::confirm(conn, "customer:cus_lease", "second")
        })?;
        leases::release(conn, "customer:cus_lease", "second")?;
        // Released: free at once.
        assert!(leases::take(
            conn,
            "customer:cus_lease",
            "third",
            Duration::from_secs(10)
        )?);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deliveries_arriving_together_are_each_stored_once_and_each_answered() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let before = app.count("stripe_events").await;
    // 40 events, each delivered twice, all at once: written together, in a few transactions.
    let (events, ids) = updates(&app, &sub_id, "evt_together", 40);
    let deliveries = events.iter().chain(events.iter()).map(|e| async {
        let res = app
            .send_webhook(e, crate::helpers::WEBHOOK_SECRET, None)
            .await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        (
            e["id"].as_str().unwrap().to_owned(),
            body["duplicate"].as_bool().unwrap(),
        )
    });
    let answers = futures::future::join_all(deliveries).await;
    for e in &events {
        let id = e["id"].as_str().unwrap();
        let firsts = answers.iter().filter(|(a, dup)| a == id && !dup).count();
        let copies = answers.iter().filter(|(a, dup)| a == id && *dup).count();
        assert_eq!((firsts, copies), (1, 1), "{id}: {answers:?}");
    }
    assert_eq!(app.count("stripe_events").await - before, 40);
    all_applied(&app, &ids).await;
}

#[tokio::test]
async fn a_stored_event_that_no_longer_reads_does_not_hold_up_its_customer() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    // Stored by a version that read it; this one cannot (no `created`).
    let mut unreadable = event(
        "evt_unreadable",
        "customer.subscription.updated",
        app.stripe.subscription(&sub_id),
    );
    unreadable.as_object_mut().unwrap().remove("created");
    store_pending(&app, vec![unreadable], None).await;
    app.applied("evt_unreadable").await;
    // The customer's next event is applied at once, not after the unreadable one's lease.
    let (events, ids) = updates(&app, &sub_id, "evt_after_unreadable", 1);
    store_pending(&app, events, None).await;
    all_applied(&app, &ids).await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(status["reason"], "canceling", "{status}");
    // Left pending with the reason, for a version that reads it and for operators.
    let stuck = app
        .db(|conn| tollgate::db::events::status(conn, "evt_unreadable"))
        .await
        .unwrap();
    assert!(stuck.processed_at.is_none());
    assert!(
        stuck
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not parse")),
        "{stuck:?}"
    );
}

#[tokio::test]
async fn work_whose_lease_another_holder_took_is_stopped() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return; // One SQLite process needs no leases.
    }
    let db = app.app.db.clone();
    let inside = db.clone();
    let result = db
        .with_customer_lock("checkout:user:stolen", |_lease| async move {
            // Another holder has it now, as after the lease lapsed unrenewed.
            inside
                .run(|conn| {
                    use diesel::RunQueryDsl;
                    let taken = diesel::sql_query(
                        "UPDATE leases SET holder = 'another' WHERE name = 'checkout:user:stolen'",
                    )
                    .execute(conn)?;
                    assert_eq!(taken, 1);
                    Ok(())
                })
                .await?;
            // Work that would go on for long (Stripe calls, say): the next renewal stops it.
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            Ok("finished")
        })
        .await;
    let error = result.expect_err("the work went on without its lease");
    assert!(error.to_string().contains("was lost"), "{error:#}");
    // The other holder's lease was left alone.
    let holder = app
        .db(|conn| {
            use diesel::RunQueryDsl;
            #[derive(diesel::QueryableByName)]
            struct Holder {
                #[diesel(sql_type = diesel::sql_types::Text)]
                holder: String,
            }
            Ok(
                diesel::sql_query("SELECT holder FROM leases WHERE name = 'checkout:user:stolen'")
                    .load::<Holder>(conn)?
                    .into_iter()
                    .map(|h| h.holder)
                    .collect::<Vec<_>>(),
            )
        })
        .await;
    assert_eq!(holder, ["another"]);
}

/// An app whose stored events wait `ms` before they are due (`webhooks.coalesce_ms`).
async fn spawn_coalescing(ms: u64) -> TestApp {
    spawn_app_with(Options {
        extra_toml: format!("[webhooks]\ncoalesce_ms = {ms}\n"),
        ..Options::default()
    })
    .await
}

/// The event is stored and no worker has tried it yet.
async fn pending(app: &TestApp, id: &str) -> bool {
    let id = id.to_owned();
    app.db(move |conn| tollgate::db::events::status(conn, &id))
        .await
        .is_some_and(|s| s.processed_at.is_none() && s.attempts == 0)
}

#[tokio::test]
async fn events_stripe_sends_together_wait_the_coalescing_window_and_make_one_sync() {
    let app = spawn_coalescing(6_000).await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let customer = customer_of(&app, &sub_id);
    let token = app.user_token("user-1");
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    let before = reads(&app, "/v1/subscriptions", &customer);
    // Delivered one by one over about half a second, each acknowledged at once.
    let (events, ids) = updates(&app, &sub_id, "evt_together", 4);
    for e in &events {
        let res = app
            .send_webhook(e, crate::helpers::WEBHOOK_SECRET, None)
            .await;
        assert_eq!(res.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    }
    // Stored, not applied yet: the window runs for 6 s from each event's storing (wide, for a
    // loaded machine).
    for id in &ids {
        assert!(pending(&app, id).await, "{id} is pending");
    }
    assert_eq!(reads(&app, "/v1/subscriptions", &customer), before);

    all_applied(&app, &ids).await;
    // The first event's window ended with the others still waiting in theirs: one sync took
    // them all.
    assert_eq!(reads(&app, "/v1/subscriptions", &customer) - before, 1);
    let status = app.status(&token).await;
    assert_eq!(status["reason"], "canceling", "{status}");
}

#[tokio::test]
async fn a_verify_in_the_coalescing_window_applies_the_waiting_events_at_once() {
    let app = spawn_coalescing(60_000).await;
    let (token, session_id, _) = app.paid_checkout("user-1", "pro", "month").await;
    let session = app.stripe.session(&session_id);
    let completed = event("evt_in_window", "checkout.session.completed", session);
    let res = app
        .send_webhook(&completed, crate::helpers::WEBHOOK_SECRET, None)
        .await;
    assert_eq!(res.status(), 200);
    assert!(pending(&app, "evt_in_window").await);

    // The user does not wait for the window.
    let res = app.verify(&token, &session_id).await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("pro"), Some(true))
    );
    assert!(
        !pending(&app, "evt_in_window").await,
        "applied by the verify"
    );
}

#[tokio::test]
async fn a_customer_being_synced_with_many_events_waiting_holds_up_no_other_customer() {
    // A claim looks among the 3 earliest due events only.
    let app = spawn_app_with(Options {
        extra_toml: "[webhooks]\nclaim_batch = 3\n".into(),
        ..Options::default()
    })
    .await;
    let busy_sub = app.subscribed("user-1", "pro", "month").await;
    let other_sub = app.subscribed("user-2", "pro", "month").await;
    let (busy, other) = (customer_of(&app, &busy_sub), customer_of(&app, &other_sub));
    let (busy_before, other_before) = (
        reads(&app, "/v1/subscriptions", &busy),
        reads(&app, "/v1/subscriptions", &other),
    );
    app.stripe
        .delay_subscription_lists(std::time::Duration::from_secs(3));
    let (first, mut ids) = updates(&app, &busy_sub, "evt_busy_first", 1);
    store_pending(&app, first, None).await;
    assert_eq!(
        subscriptions_read_after(&app, &busy, busy_before).await,
        busy_before + 1
    );
    // While its sync waits on Stripe: more of its events than a claim looks at, all due
    // before one event of another customer.
    let (more, more_ids) = updates(&app, &busy_sub, "evt_busy_more", 6);
    store_pending(&app, more, None).await;
    let (theirs, their_ids) = updates(&app, &other_sub, "evt_other", 1);
    store_pending(&app, theirs, None).await;

    // The other customer is re-read while the first sync still waits.
    assert_eq!(
        subscriptions_read_after(&app, &other, other_before).await,
        other_before + 1
    );
    assert!(
        pending(&app, &ids[0]).await,
        "the other customer was not held up until the first sync ended"
    );
    ids.extend(more_ids);
    ids.extend(their_ids);
    all_applied(&app, &ids).await;
}

#[tokio::test]
async fn a_verify_applies_any_number_of_waiting_events() {
    let app = spawn_app().await;
    let (token, session_id, _) = app.paid_checkout("user-1", "pro", "month").await;
    let session = app.stripe.session(&session_id);
    // More waiting events of its customer than one statement may name (SQLite refuses an OR
    // of ids deeper than 1,000), all due only in an hour.
    let customer = session["customer"].as_str().unwrap().to_owned();
    let events: Vec<Value> = (0..1_100)
        .map(|i| {
            event(
                &format!("evt_many_{i:04}"),
                "customer.subscription.updated",
                json!({"id": "sub_unseen", "object": "subscription", "customer": customer}),
            )
        })
        .collect();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    store_pending_with(&app, events, None, Some(later)).await;

    let res = app.verify(&token, &session_id).await;
    assert_eq!(res.status(), 200);
    let (pending, _) = app.db(tollgate::db::events::backlog).await;
    assert_eq!(pending, 0, "the verify applied every waiting event");
}
