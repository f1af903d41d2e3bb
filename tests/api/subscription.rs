use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, spawn_app_with, Options, TestApp};

#[tokio::test]
async fn cancel_then_resume_round_trips_through_stripe() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");

    let res = app
        .post_json("/v1/subscription/cancel", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["cancel_at_period_end"].as_bool()
        ),
        (Some(true), Some("canceling"), Some(true))
    );
    let updates = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].form["cancel_at_period_end"], "true");

    // Cancelling again asks Stripe nothing more.
    assert_eq!(
        app.post_json("/v1/subscription/cancel", Some(&token), &json!({}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.stripe
            .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
            .len(),
        1
    );

    let res = app
        .post_json("/v1/subscription/resume", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (
            status["reason"].as_str(),
            status["cancel_at_period_end"].as_bool()
        ),
        (Some("active"), Some(false))
    );
    let updates = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(updates[1].form["cancel_at_period_end"], "false");
}

#[tokio::test]
async fn resume_withdraws_a_cancellation_scheduled_for_a_date() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    // The customer chose an end date in the portal: `cancel_at`, not `cancel_at_period_end`.
    let end = crate::helpers::fake_stripe::now() + 5 * 86_400;
    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["cancel_at"] = json!(end);
        s["canceled_at"] = json!(crate::helpers::fake_stripe::now());
    });
    app.webhook_ok(&event(
        "evt_cancel_at",
        "customer.subscription.updated",
        sub,
    ))
    .await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["reason"].as_str(), status["cancel_at"].is_null()),
        (Some("canceling"), false)
    );

    let res = app
        .post_json("/v1/subscription/resume", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["reason"].as_str(), status["cancel_at"].is_null()),
        (Some("active"), true)
    );
    let updates = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(updates.len(), 1);
    assert_eq!(
        updates[0].form.get("cancel_at").map(String::as_str),
        Some("")
    );
    assert!(app.stripe.subscription(&sub_id)["cancel_at"].is_null());
}

#[tokio::test]
async fn a_paused_subscription_is_resumed() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let paused = app
        .stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("paused"));
    let res = app
        .webhook(&event("evt_paused", "customer.subscription.paused", paused))
        .await;
    assert_eq!(res.status(), 200);
    let token = app.user_token("user-1");
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("paused"))
    );

    let res = app
        .post_json("/v1/subscription/resume", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        app.stripe
            .received_on("POST", &format!("/v1/subscriptions/{sub_id}/resume"))
            .len(),
        1
    );
    assert_eq!(
        (status["status"].as_str(), status["reason"].as_str()),
        (Some("active"), Some("active"))
    );
}

#[tokio::test]
async fn a_paused_payment_collection_ends_paid_access_until_the_subscriber_resumes_it() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    // "Pause payment collection" in the Dashboard: the status stays `active`.
    let paused = app.stripe.update_subscription(&sub_id, |s| {
        s["pause_collection"] = json!({"behavior": "mark_uncollectible", "resumes_at": null});
    });
    assert_eq!(paused["status"], "active");
    let res = app
        .webhook(&event(
            "evt_collection_paused",
            "customer.subscription.updated",
            paused,
        ))
        .await;
    assert_eq!(res.status(), 200);
    let token = app.user_token("user-1");
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["status"].as_str(),
            status["plan"].as_str()
        ),
        (Some(false), Some("paused"), Some("active"), Some("free"))
    );
    let service = app.idp.service_token("billing:read");
    let export = app
        .get(
            "/v1/entitlements?user_id=user-1&feature=export",
            Some(&service),
        )
        .await;
    assert_eq!(export.status(), 200);
    let export: Value = export.json().await.unwrap();
    assert_eq!(
        (export["allowed"].as_bool(), export["reason"].as_str()),
        (Some(false), Some("paused"))
    );

    // The subscriber resumes: the pause is lifted on Stripe and paid access returns.
    let res = app
        .post_json("/v1/subscription/resume", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let lifted = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0].form["pause_collection"], "");
    assert!(app.stripe.subscription(&sub_id)["pause_collection"].is_null());
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(true), Some("active"))
    );
}

#[tokio::test]
async fn a_product_may_keep_access_while_collection_is_paused_until_it_resumes_by_date() {
    let app = spawn_app_with(Options {
        extra_toml: "[billing]\naccess_while_collection_paused = true\n".into(),
        ..Options::default()
    })
    .await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let resumes_at = crate::helpers::fake_stripe::now() + 7 * 86_400;
    let paused = app.stripe.update_subscription(&sub_id, |s| {
        s["pause_collection"] = json!({"behavior": "void", "resumes_at": resumes_at});
    });
    app.webhook_ok(&event(
        "evt_collection_paused",
        "customer.subscription.updated",
        paused,
    ))
    .await;
    let token = app.user_token("user-1");
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(true), Some("active"))
    );
    // The pause is mirrored all the same.
    let stored: (Option<String>, bool) = app
        .db(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::subscriptions::dsl as s;
            Ok(s::subscriptions
                .filter(s::stripe_subscription_id.eq(sub_id))
                .select((
                    s::pause_collection_behavior,
                    s::pause_collection_resumes_at.is_not_null(),
                ))
                .first(conn)?)
        })
        .await;
    assert_eq!(stored, (Some("void".to_owned()), true));
}

#[tokio::test]
async fn refunding_an_upgrade_takes_it_back() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    // Two more seats: an upgrade, charged at once.
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "month", "quantity": 3}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(status["quantity"], 3, "{status}");
    let updates = || {
        app.stripe
            .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
    };
    assert_eq!(updates().len(), 1);
    // The upgrade's proration invoice was paid by its own charge; support refunds it.
    let upgrade_payment = app.stripe.latest_payment_intent(&sub_id);
    let refunded = app.stripe.refund(&upgrade_payment);
    app.webhook_ok(&event(
        "evt_upgrade_refunded",
        "charge.refunded",
        refunded.clone(),
    ))
    .await;

    // A worker takes the upgrade back on Stripe, prorating nothing (the refund returned
    // the difference), and the subscriber holds the seat they paid for.
    let mut status = Value::Null;
    for _ in 0..200 {
        status = app.status(&token).await;
        if status["quantity"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            status["plan"].as_str(),
            status["quantity"].as_i64(),
            status["reason"].as_str()
        ),
        (Some("pro"), Some(1), Some("active")),
        "{status}"
    );
    let sent = updates();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let back = &sent[1].form;
    assert_eq!(
        (
            back["items[0][price]"].as_str(),
            back["items[0][quantity]"].as_str(),
            back["proration_behavior"].as_str(),
        ),
        ("price_pro_monthly", "1", "none")
    );
    assert!(!back.contains_key("payment_behavior"));
    // Audited once, with what it moved from and to.
    let mut reverted = Vec::new();
    for _ in 0..100 {
        let id = sub_id.clone();
        reverted = app
            .db(move |conn| {
                Ok(tollgate::db::audit::for_entity(conn, &id)?
                    .into_iter()
                    .filter(|row| row.action == "upgrade_reverted")
                    .collect::<Vec<_>>())
            })
            .await;
        if !reverted.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reverted.len(), 1, "{reverted:?}");
    let said: Value = serde_json::from_str(&reverted[0].changes).unwrap();
    assert_eq!(
        (
            &said["from_quantity"],
            &said["quantity"],
            &said["price"],
            &said["moved"]
        ),
        (
            &json!(3),
            &json!(1),
            &json!("price_pro_monthly"),
            &json!(true)
        )
    );

    // The refund delivered again, or a later sync, takes back nothing more.
    app.webhook_ok(&event(
        "evt_upgrade_refunded_again",
        "charge.refunded",
        refunded,
    ))
    .await;
    assert_eq!(app.count("subscription_remedies").await, 1);
    assert_eq!(updates().len(), 2);
    // Refunding the upgrade took nothing else back: the period stays paid.
    let status = app.status(&token).await;
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("pro"), Some(true))
    );
}

#[tokio::test]
async fn an_upgrade_is_charged_at_once_and_granted_only_when_paid() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "maker", "month").await;
    let token = app.user_token("user-1");
    // The card is declined: Stripe keeps the upgrade pending and the subscription unchanged.
    app.stripe.decline_cards(true);
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 402);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "upgrade_not_paid", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("POST /v1/portal"),
        "{problem}"
    );
    let update = &app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))[0];
    assert_eq!(
        (
            update.form["proration_behavior"].as_str(),
            update.form["payment_behavior"].as_str(),
            update.form["items[0][price]"].as_str()
        ),
        (
            "always_invoice",
            "pending_if_incomplete",
            "price_pro_monthly"
        )
    );
    let on_stripe = app.stripe.subscription(&sub_id);
    assert!(on_stripe["pending_update"]["expires_at"].is_i64());
    let status = app.status(&token).await;
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("maker"), Some(true)),
        "the old plan stays: {status}"
    );

    // Paid: the higher plan is granted.
    app.stripe.decline_cards(false);
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(status["plan"], "pro", "{status}");
    assert!(app.stripe.subscription(&sub_id)["pending_update"].is_null());
}

#[tokio::test]
async fn a_downgrade_takes_effect_at_once_billed_as_configured() {
    for (configured, sent) in [("", "create_prorations"), ("none", "none")] {
        let mut extra_toml = "[billing]\ndowngrade_at = \"now\"\n".to_owned();
        if !configured.is_empty() {
            extra_toml.push_str(&format!("downgrade_proration = \"{configured}\"\n"));
        }
        let app = spawn_app_with(Options {
            extra_toml,
            ..Options::default()
        })
        .await;
        let sub_id = app.subscribed("user-1", "pro", "month").await;
        let token = app.user_token("user-1");
        // Declined cards do not matter: a downgrade is not paid first.
        app.stripe.decline_cards(true);
        let res = app
            .post_json(
                "/v1/subscription/change",
                Some(&token),
                &json!({"plan": "maker", "interval": "month"}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let status: Value = res.json().await.unwrap();
        assert_eq!(status["plan"], "maker", "{status}");
        let update = &app
            .stripe
            .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))[0];
        assert_eq!(update.form["proration_behavior"], sent);
        assert!(!update.form.contains_key("payment_behavior"), "{update:?}");
    }
}

async fn change_to(app: &TestApp, token: &str, plan: &str) -> (u16, Value) {
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(token),
            &json!({"plan": plan, "interval": "month"}),
        )
        .await;
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn a_downgrade_keeps_the_paid_plan_until_the_period_ends() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    let period_end = app.status(&token).await["current_period_end"].clone();
    assert!(period_end.is_string());

    let (code, status) = change_to(&app, &token, "maker").await;
    assert_eq!(code, 200, "{status}");
    // Paid for: Pro stays until the period ends, and the answer says what comes then.
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("pro"), Some(true)),
        "{status}"
    );
    assert_eq!(
        status["scheduled_change"],
        json!({"plan": "maker", "interval": "month", "quantity": 1, "at": period_end})
    );
    // The subscription itself is not touched: a schedule made from it holds Pro until the
    // period's end, then Maker, prorating nothing, and lets the subscription go on after.
    assert!(app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
        .is_empty());
    let made = app.stripe.received_on("POST", "/v1/subscription_schedules");
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].form["from_subscription"], sub_id);
    let schedule = app.stripe.subscription(&sub_id)["schedule"]
        .as_str()
        .unwrap()
        .to_owned();
    let phases = &app
        .stripe
        .received_on("POST", &format!("/v1/subscription_schedules/{schedule}"))[0];
    assert_eq!(
        phases.form["phases[0][items][0][price]"],
        "price_pro_monthly"
    );
    assert_eq!(
        phases.form["phases[1][items][0][price]"],
        "price_maker_monthly"
    );
    assert_eq!(phases.form["phases[1][items][0][quantity]"], "1");
    assert_eq!(phases.form["phases[1][proration_behavior]"], "none");
    assert_eq!(phases.form["end_behavior"], "release");
    let ends = chrono::DateTime::parse_from_rfc3339(period_end.as_str().unwrap()).unwrap();
    assert_eq!(
        phases.form["phases[0][end_date]"],
        ends.timestamp().to_string()
    );
    // The product is told what comes, and when.
    let mut told = None;
    for _ in 0..100 {
        told = app.events_of("user:user-1", 1).await.into_iter().find(|e| {
            e["type"] == "subscription.updated" && !e["data"]["scheduled_change"].is_null()
        });
        if told.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let told = told.expect("a subscription.updated event with the scheduled change");
    assert_eq!(
        (&told["data"]["plan"], &told["data"]["scheduled_change"]),
        (
            &json!("pro"),
            &json!({"plan": "maker", "interval": "month", "quantity": 1, "at": period_end})
        )
    );

    // The period ends: Stripe moves the subscription to Maker.
    let renewal = app.stripe.renew(&sub_id);
    app.webhook_ok(&event("evt_renewed", "invoice.paid", renewal))
        .await;
    let status = app.status(&token).await;
    assert_eq!(
        (status["plan"].as_str(), status["access"].as_bool()),
        (Some("maker"), Some(true)),
        "{status}"
    );
    assert_eq!(status["scheduled_change"], Value::Null);
}

#[tokio::test]
async fn a_scheduled_downgrade_gives_way_to_what_the_subscriber_asks_next() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "maker", "month").await;
    let token = app.user_token("user-1");
    let schedule_of = || {
        app.stripe.subscription(&sub_id)["schedule"]
            .as_str()
            .map(str::to_owned)
    };
    let released = |schedule: &str| {
        app.stripe
            .received_on(
                "POST",
                &format!("/v1/subscription_schedules/{schedule}/release"),
            )
            .len()
    };

    // Asking for the plan held withdraws the scheduled downgrade.
    let (code, status) = change_to(&app, &token, "starter").await;
    assert_eq!(
        (code, status["scheduled_change"]["plan"].as_str()),
        (200, Some("starter"))
    );
    let first = schedule_of().unwrap();
    // Maker starts with a trial: the schedule keeps it (an update that left it out would
    // end it, and charge, at once).
    let trial_end = app.stripe.subscription(&sub_id)["trial_end"]
        .as_i64()
        .unwrap();
    let phases = app
        .stripe
        .received_on("POST", &format!("/v1/subscription_schedules/{first}"));
    assert_eq!(
        phases[0].form["phases[0][trial_end]"],
        trial_end.to_string()
    );
    let (code, status) = change_to(&app, &token, "maker").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(
        (status["plan"].as_str(), &status["scheduled_change"]),
        (Some("maker"), &Value::Null)
    );
    assert_eq!((released(&first), schedule_of()), (1, None));

    // Scheduled again, then canceled: Stripe refuses to cancel a subscription a schedule
    // manages, so the schedule is released first; access lasts to the period's end.
    let (code, _) = change_to(&app, &token, "starter").await;
    assert_eq!(code, 200);
    let second = schedule_of().unwrap();
    assert_ne!(first, second);
    let res = app
        .post_json("/v1/subscription/cancel", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (
            status["plan"].as_str(),
            status["cancel_at_period_end"].as_bool(),
            &status["scheduled_change"]
        ),
        (Some("maker"), Some(true), &Value::Null),
        "{status}"
    );
    assert_eq!(released(&second), 1);

    // A subscription that ends has no next period to downgrade.
    let (code, problem) = change_to(&app, &token, "starter").await;
    assert_eq!(
        (code, problem["code"].as_str()),
        (409, Some("cancellation_scheduled")),
        "{problem}"
    );
    assert_eq!(schedule_of(), None);

    // Resumed and scheduled again, an upgrade made now replaces the downgrade.
    let res = app
        .post_json("/v1/subscription/resume", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let (code, _) = change_to(&app, &token, "starter").await;
    assert_eq!(code, 200);
    let third = schedule_of().unwrap();
    let (code, status) = change_to(&app, &token, "pro").await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(
        (status["plan"].as_str(), &status["scheduled_change"]),
        (Some("pro"), &Value::Null),
        "{status}"
    );
    assert_eq!((released(&third), schedule_of()), (1, None));
    let update = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(
        update.last().unwrap().form["items[0][price]"],
        "price_pro_monthly"
    );
}

#[tokio::test]
async fn change_moves_to_the_new_price_with_proration() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "maker", "month").await;
    let token = app.user_token("user-1");
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "year"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["plan"].as_str(), status["interval"].as_str()),
        (Some("pro"), Some("year"))
    );
    let update = &app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))[0];
    assert_eq!(update.form["items[0][price]"], "price_pro_yearly");
    assert_eq!(update.form["items[0][id]"], format!("si_{sub_id}"));
    // Maker to Pro is an upgrade: invoiced now, applied once paid.
    assert_eq!(update.form["proration_behavior"], "always_invoice");
    assert_eq!(update.form["payment_behavior"], "pending_if_incomplete");

    // Changing to the plan already held is a no-op.
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "year"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.stripe
            .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_changes_are_refused_before_stripe() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    for (body, http, code) in [
        (
            json!({"plan": "platinum", "interval": "month"}),
            422,
            "unknown_plan",
        ),
        (
            json!({"plan": "maker", "interval": "year"}),
            422,
            "unknown_interval",
        ),
        (
            json!({"plan": "lifetime", "interval": "once"}),
            422,
            "not_a_subscription_plan",
        ),
        (
            json!({"plan": "legacy", "interval": "month"}),
            403,
            "price_not_allowed",
        ),
    ] {
        let res = app
            .post_json("/v1/subscription/change", Some(&token), &body)
            .await;
        assert_eq!(res.status(), http, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["code"], code, "{body}");
    }
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro"}),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert!(app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
        .is_empty());
}

#[tokio::test]
async fn without_a_subscription_there_is_nothing_to_manage() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for path in ["/v1/subscription/cancel", "/v1/subscription/resume"] {
        let res = app.post_json(path, Some(&token), &json!({})).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "no_subscription"
        );
    }
    let res = app
        .post_json(
            "/v1/subscription/change",
            Some(&token),
            &json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.post_json("/v1/subscription/cancel", None, &json!({}))
            .await
            .status(),
        401
    );
}

#[tokio::test]
async fn decisions_rest_on_stripes_state_not_a_stale_copy() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    // Canceled in the portal; the webhook has not arrived.
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    let token = app.user_token("user-1");
    let res = app
        .post_json("/v1/subscription/cancel", Some(&token), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["reason"], "canceling");
    assert!(app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"))
        .is_empty());
}

#[tokio::test]
async fn a_trial_without_a_card_pauses_at_its_end_and_resumes_when_a_card_is_added() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "starter", "month").await;
    let form = &app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["subscription_data[trial_period_days]"], "7");
    assert_eq!(form["payment_method_collection"], "if_required");
    assert_eq!(
        form["subscription_data[trial_settings][end_behavior][missing_payment_method]"],
        "pause"
    );
    assert_eq!(status["reason"], "trialing");
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();

    // The trial ends with no card on file: Stripe pauses the subscription.
    let paused = app
        .stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("paused"));
    app.webhook_ok(&event(
        "evt_trial_paused",
        "customer.subscription.paused",
        paused,
    ))
    .await;
    let token = app.user_token("user-1");
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("paused"))
    );

    // The customer adds a card in the portal; Stripe resumes it.
    let resumed = app
        .stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("active"));
    app.webhook_ok(&event(
        "evt_trial_resumed",
        "customer.subscription.resumed",
        resumed,
    ))
    .await;
    assert_eq!(app.status(&token).await["reason"], "active");
}

#[tokio::test]
async fn a_trial_with_a_card_becomes_active_when_it_converts() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "maker", "month").await;
    assert!(!app.stripe.received_on("POST", "/v1/checkout/sessions")[0]
        .form
        .contains_key("payment_method_collection"));
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
    let converted = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("active");
        s["trial_end"] = json!(crate::helpers::fake_stripe::now() - 60);
    });
    app.webhook_ok(&event(
        "evt_converted",
        "customer.subscription.updated",
        converted,
    ))
    .await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["plan"].as_str()
        ),
        (Some(true), Some("active"), Some("maker"))
    );
}

#[tokio::test]
async fn a_plan_change_made_in_the_portal_arrives_by_webhook() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let downgraded = app.stripe.update_subscription(&sub_id, |s| {
        s["items"]["data"][0]["price"]["id"] = json!("price_maker_monthly");
        s["items"]["data"][0]["plan"]["id"] = json!("price_maker_monthly");
    });
    app.webhook_ok(&event(
        "evt_portal_change",
        "customer.subscription.updated",
        downgraded,
    ))
    .await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (status["plan"].as_str(), status["features"].clone()),
        (Some("maker"), json!(["basic"]))
    );
}

#[tokio::test]
async fn a_past_due_user_whose_grace_ended_can_still_open_the_portal_to_pay() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("past_due");
        s["items"]["data"][0]["current_period_start"] =
            json!(crate::helpers::fake_stripe::now() - 3 * 86_400);
    });
    app.webhook_ok(&event("evt_overdue", "customer.subscription.updated", sub))
        .await;
    let token = app.user_token("user-1");
    assert_eq!(app.status(&token).await["reason"], "grace_expired");
    let res = app.post_json("/v1/portal", Some(&token), &json!({})).await;
    assert_eq!(res.status(), 200);
    // And a new checkout is refused: the way out is paying the open invoice.
    let res = app
        .checkout(&token, json!({"plan": "pro", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 409);
}
