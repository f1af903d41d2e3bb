use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, without_source, APP_ORIGIN};

#[tokio::test]
async fn monthly_checkout_sends_stripe_the_price_customer_and_metadata() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let res = app
        .checkout(&token, json!({"plan": "pro", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let session_id = body["session_id"].as_str().unwrap();
    assert_eq!(
        body["url"],
        format!("https://checkout.stripe.com/c/pay/{session_id}")
    );

    let customers = app.stripe.received_on("POST", "/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(
        customers[0].form["metadata[tollgate_subject]"],
        "user:user-1"
    );
    assert_eq!(customers[0].form["email"], "user-1@example.com");
    assert!(customers[0]
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with("tollgate-customer-user:user-1-")));

    let sessions = app.stripe.received_on("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let form = &sessions[0].form;
    assert_eq!(form["mode"], "subscription");
    assert_eq!(form["line_items[0][price]"], "price_pro_monthly");
    assert_eq!(form["line_items[0][quantity]"], "1");
    assert_eq!(form["customer"], "cus_test_1");
    assert_eq!(form["client_reference_id"], "user:user-1");
    for (key, value) in [
        ("tollgate_subject", "user:user-1"),
        ("tollgate_plan", "pro"),
        ("tollgate_kind", "subscription"),
        ("tollgate_interval", "month"),
    ] {
        assert_eq!(form[&format!("metadata[{key}]")], value);
        assert_eq!(form[&format!("subscription_data[metadata][{key}]")], value);
    }
    assert!(!form.contains_key("subscription_data[trial_period_days]"));
    assert_eq!(form["allow_promotion_codes"], "true");
    assert_eq!(
        form["success_url"],
        format!("{APP_ORIGIN}/billing/success?session_id={{CHECKOUT_SESSION_ID}}")
    );
    assert_eq!(form["cancel_url"], format!("{APP_ORIGIN}/pricing"));
    assert!(sessions[0]
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with("tollgate-checkout-")));
}

#[tokio::test]
async fn yearly_checkout_uses_the_yearly_price_and_accepts_an_alias() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let res = app
        .checkout(&token, json!({"plan": "professional", "interval": "year"}))
        .await;
    assert_eq!(res.status(), 201);
    let form = &app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["line_items[0][price]"], "price_pro_yearly");
    assert_eq!(form["metadata[tollgate_plan]"], "pro");
    assert_eq!(form["metadata[tollgate_interval]"], "year");
}

#[tokio::test]
async fn trial_days_come_from_the_plan_and_verify_shows_trialing() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "maker", "month").await;
    let form = &app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["subscription_data[trial_period_days]"], "3");
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["plan"].as_str()
        ),
        (Some(true), Some("trialing"), Some("maker"))
    );
    assert!(status["trial_end"].is_string());
}

#[tokio::test]
async fn lifetime_checkout_is_a_one_time_payment_that_grants_access_for_ever() {
    let app = spawn_app().await;
    let (session_id, status) = app.subscribe("user-1", "lifetime", "once").await;
    let form = &app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["mode"], "payment");
    assert_eq!(form["line_items[0][price]"], "price_lifetime");
    assert_eq!(form["metadata[tollgate_kind]"], "lifetime");
    assert!(!form.keys().any(|k| k.starts_with("subscription_data")));
    assert_eq!(status["access"], true);
    assert_eq!(status["reason"], "lifetime");
    assert_eq!(status["plan"], "lifetime");
    assert_eq!(status["lifetime"], true);
    assert_eq!(status["current_period_end"], Value::Null);
    assert_eq!(app.count("purchases").await, 1);
    assert_eq!(app.count("payments").await, 1);

    // Verifying again (idempotent) records nothing twice.
    let token = app.user_token("user-1");
    assert_eq!(app.verify(&token, &session_id).await.status(), 200);
    assert_eq!(app.count("purchases").await, 1);
    assert_eq!(app.count("payments").await, 1);

    let res = app
        .checkout(&token, json!({"plan": "lifetime", "interval": "once"}))
        .await;
    assert_eq!(res.status(), 409);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "already_purchased"
    );
}

#[tokio::test]
async fn verify_activates_at_once_before_any_webhook() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let before = app.status(&token).await;
    assert_eq!(
        (
            before["access"].as_bool(),
            before["reason"].as_str(),
            before["plan"].as_str()
        ),
        (Some(false), Some("free"), Some("free"))
    );

    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    assert_eq!(status["access"], true);
    assert_eq!(status["reason"], "active");
    assert_eq!(status["plan"], "pro");
    assert_eq!(status["status"], "active");
    assert_eq!(status["interval"], "month");
    assert_eq!(status["cancel_at_period_end"], false);
    assert_eq!(status["features"], json!(["basic", "export"]));
    let sub_id = status["subscription_id"].as_str().unwrap();
    let period_end = app.stripe.subscription(sub_id)["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    let shown =
        chrono::DateTime::parse_from_rfc3339(status["current_period_end"].as_str().unwrap())
            .unwrap();
    assert_eq!(shown.timestamp(), period_end);
    assert_eq!(
        without_source(app.status(&token).await),
        without_source(status)
    );
    assert_eq!(app.count("stripe_events").await, 0);
}

#[tokio::test]
async fn verify_of_an_unfinished_session_changes_nothing() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let res = app
        .checkout(&token, json!({"plan": "pro", "interval": "month"}))
        .await;
    let session_id = res.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app.verify(&token, &session_id).await;
    assert_eq!(res.status(), 200);
    let status: Value = res.json().await.unwrap();
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("free"))
    );
    assert_eq!(app.count("subscriptions").await, 0);
}

#[tokio::test]
async fn verify_of_another_users_session_is_forbidden() {
    let app = spawn_app().await;
    let (session_id, _) = app.subscribe("user-1", "pro", "month").await;
    let intruder = app.user_token("user-2");
    let res = app.verify(&intruder, &session_id).await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "not_your_session"
    );
    let status = app.status(&intruder).await;
    assert_eq!(status["access"], false);

    let res = app.verify(&intruder, "cs_test_missing").await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "checkout_session_not_found"
    );
    let res = app.verify(&intruder, "not-a-session").await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_customer_is_created_once_and_reused() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for _ in 0..2 {
        assert_eq!(
            app.checkout(&token, json!({"plan": "pro", "interval": "month"}))
                .await
                .status(),
            201
        );
    }
    assert_eq!(app.stripe.received_on("POST", "/v1/customers").len(), 1);
    let sessions = app.stripe.received_on("POST", "/v1/checkout/sessions");
    assert_eq!(sessions[0].form["customer"], sessions[1].form["customer"]);
}

#[tokio::test]
async fn concurrent_first_checkouts_create_one_stripe_customer() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let attempts =
        (0..4).map(|_| app.checkout(&token, json!({"plan": "pro", "interval": "month"})));
    let results: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(results.iter().all(|s| *s == 201), "{results:?}");
    assert_eq!(app.stripe.customer_count(), 1);
    assert_eq!(app.count("customers").await, 1);
    let customers: std::collections::HashSet<_> = app
        .stripe
        .received_on("POST", "/v1/checkout/sessions")
        .into_iter()
        .map(|r| r.form["customer"].clone())
        .collect();
    assert_eq!(customers.len(), 1);
}

#[tokio::test]
async fn a_new_checkout_expires_the_subjects_older_open_one_across_replicas() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let body = json!({"plan": "pro", "interval": "month"});
    let res = app.checkout(&token, body.clone()).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    let first_id = first["session_id"].as_str().unwrap().to_owned();

    // A second tab, served by another replica when PostgreSQL runs two.
    let other = if app.uses_postgres() {
        app.another_instance().await
    } else {
        app.address.clone()
    };
    let (status, second) = app
        .send_to(
            &other,
            reqwest::Method::POST,
            "/v1/checkout",
            &token,
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    let second_id = second["session_id"].as_str().unwrap().to_owned();
    assert_ne!(first_id, second_id);
    // The older one was expired on Stripe before the new one was made: it cannot be paid.
    assert_eq!(app.stripe.session(&first_id)["status"], "expired");
    assert_eq!(app.stripe.session(&second_id)["status"], "open");
    let order: Vec<String> = app
        .stripe
        .received()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1/checkout/sessions"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        order,
        [
            "/v1/checkout/sessions".to_owned(),
            format!("/v1/checkout/sessions/{first_id}/expire"),
            "/v1/checkout/sessions".to_owned(),
        ]
    );

    // Two at once, one on each replica: one open session is left.
    let (a, b) = tokio::join!(
        app.send_to(
            &app.address,
            reqwest::Method::POST,
            "/v1/checkout",
            &token,
            Some(body.clone())
        ),
        app.send_to(
            &other,
            reqwest::Method::POST,
            "/v1/checkout",
            &token,
            Some(body.clone())
        ),
    );
    assert_eq!((a.0, b.0), (201, 201), "{a:?} {b:?}");
    let customer = app.stripe.session(&second_id)["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let open: Vec<String> = [&first_id, &second_id]
        .into_iter()
        .cloned()
        .chain([&a.1, &b.1].map(|s| s["session_id"].as_str().unwrap().to_owned()))
        .filter(|id| app.stripe.session(id)["status"] == "open")
        .collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(app.stripe.session(&open[0])["customer"], customer.as_str());
}

#[tokio::test]
async fn a_checkout_paid_while_a_newer_one_is_made_refuses_the_newer() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let body = json!({"plan": "pro", "interval": "month"});
    let res = app.checkout(&token, body.clone()).await;
    assert_eq!(res.status(), 201);
    let first: Value = res.json().await.unwrap();
    let first_id = first["session_id"].as_str().unwrap().to_owned();
    // The buyer pays the first in another tab in the instant Tollgate tries to expire it.
    app.stripe.pay_sessions_before_expiry(true);
    let res = app.checkout(&token, body).await;
    assert_eq!(res.status(), 409);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "checkout_just_completed", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains(&first_id),
        "{problem}"
    );
    // No second session was made: only the first, paid, is there to verify.
    assert_eq!(
        app.stripe
            .received_on("POST", "/v1/checkout/sessions")
            .len(),
        1
    );
    assert_eq!(app.stripe.session(&first_id)["status"], "complete");
}

#[tokio::test]
async fn a_second_subscription_paid_for_one_subject_is_flagged_once() {
    let app = spawn_app().await;
    let first = app.subscribed("user-1", "pro", "month").await;
    let customer = app.stripe.subscription(&first)["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    // A session paid in the instant before it was expired: Stripe holds a second subscription.
    let second = app
        .stripe
        .add_subscription(&customer, "price_maker_monthly", "month");
    let created = app.stripe.subscription(&second);
    app.webhook_ok(&event(
        "evt_second",
        "customer.subscription.created",
        created.clone(),
    ))
    .await;
    // Both are mirrored as Stripe holds them; the stronger plan counts.
    let token = app.user_token("user-1");
    assert_eq!(app.status(&token).await["plan"], "pro");
    assert_eq!(app.count("subscriptions").await, 2);
    let flagged = |id: String| {
        app.db(move |conn| {
            Ok(tollgate::db::audit::for_entity(conn, &id)?
                .into_iter()
                .filter(|row| row.action == "second_subscription")
                .collect::<Vec<_>>())
        })
    };
    let rows = flagged(second.clone()).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let said: Value = serde_json::from_str(&rows[0].changes).unwrap();
    assert_eq!(said["beside"], first.as_str());
    assert_eq!(
        rows[0].source,
        "event:evt_second customer.subscription.created"
    );
    assert!(
        flagged(first.clone()).await.is_empty(),
        "the older one is not"
    );
    // A redelivery, or a change of the flagged one, flags nothing more.
    app.webhook_ok(&event(
        "evt_second_again",
        "customer.subscription.updated",
        created,
    ))
    .await;
    app.stripe
        .update_subscription(&second, |s| s["cancel_at_period_end"] = json!(true));
    let changed = app.stripe.subscription(&second);
    app.webhook_ok(&event(
        "evt_second_canceling",
        "customer.subscription.updated",
        changed,
    ))
    .await;
    assert_eq!(flagged(second.clone()).await.len(), 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("tollgate_second_subscriptions_total"),
        "{metrics}"
    );
    // And told once, as subscription.duplicate, to the product.
    let events = app.events_of("user:user-1", 1).await;
    let told: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "subscription.duplicate")
        .collect();
    assert_eq!(told.len(), 1, "{events:#?}");
    assert_eq!(told[0]["data"]["subscription_id"], second.as_str());
    assert_eq!(told[0]["data"]["beside"], first.as_str());
}

#[tokio::test]
async fn a_second_subscription_is_canceled_and_refunded_when_configured() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra_toml: "[billing]\nsecond_subscription = \"cancel_and_refund\"\n".into(),
        ..Default::default()
    })
    .await;
    let first = app.subscribed("user-1", "pro", "month").await;
    let first_intent = app.stripe.latest_payment_intent(&first);
    let customer = app.stripe.subscription(&first)["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    // Paid in the instant before its session was expired; and Stripe fails the first
    // cancellation (the worker tries again).
    let (second, intent) =
        app.stripe
            .add_paid_subscription(&customer, "price_maker_monthly", "month", 1299);
    app.stripe.fail_cancellations(1);
    app.webhook_ok(&event(
        "evt_second",
        "customer.subscription.created",
        app.stripe.subscription(&second),
    ))
    .await;
    for _ in 0..300 {
        if app.stripe.subscription(&second)["status"] == "canceled"
            && app.count("subscription_remedies").await == 1
            && app
                .db(|conn| {
                    use diesel::prelude::*;
                    use tollgate::db::schema::subscription_remedies::dsl::*;
                    Ok(subscription_remedies.select(status).first::<String>(conn)?)
                })
                .await
                == "done"
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.stripe.subscription(&second)["status"], "canceled");
    assert_eq!(app.stripe.charge_of(&intent)["refunded"], true);
    // The older one is kept, unrefunded; access is unchanged.
    assert_eq!(app.stripe.subscription(&first)["status"], "active");
    assert_eq!(app.stripe.charge_of(&first_intent)["refunded"], false);
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (&status["plan"], &status["access"]),
        (&json!("pro"), &json!(true))
    );
    // Refunded once: the retry after the failed cancellation asked again with the same
    // idempotency key, as duplicates.
    let refunds = app.stripe.received_on("POST", "/v1/refunds");
    assert!(!refunds.is_empty());
    for r in &refunds {
        assert_eq!(r.form["payment_intent"], intent);
        assert_eq!(r.form["reason"], "duplicate");
        assert_eq!(
            r.idempotency_key.as_deref(),
            Some(format!("tollgate-undo-{intent}").as_str())
        );
    }
    let cancels = app
        .stripe
        .received_on("DELETE", &format!("/v1/subscriptions/{second}"));
    assert_eq!(cancels.len(), 2, "failed once, then canceled");
    // Audited with what was refunded; the mirror holds it canceled.
    let undone = {
        let id = second.clone();
        app.db(move |conn| {
            Ok(tollgate::db::audit::for_entity(conn, &id)?
                .into_iter()
                .filter(|row| row.action == "second_subscription_undone")
                .collect::<Vec<_>>())
        })
        .await
    };
    assert_eq!(undone.len(), 1, "{undone:?}");
    let said: Value = serde_json::from_str(&undone[0].changes).unwrap();
    assert_eq!(said["beside"], first.as_str());
    assert_eq!(said["refunded_payment_intents"], json!([intent]));
    // Told as the mirror saw it (listed once the sequencer placed it).
    let mut events = Vec::new();
    for _ in 0..100 {
        events = app.events_of("user:user-1", 1).await;
        if events.iter().any(|e| {
            e["type"] == "subscription.canceled" && e["data"]["subscription_id"] == second.as_str()
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        events.iter().any(|e| e["type"] == "subscription.canceled"
            && e["data"]["subscription_id"] == second.as_str()),
        "{events:#?}"
    );
    // A later delivery about it queues nothing more.
    app.webhook_ok(&event(
        "evt_second_again",
        "customer.subscription.deleted",
        app.stripe.subscription(&second),
    ))
    .await;
    assert_eq!(app.count("subscription_remedies").await, 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"tollgate_subscription_remedies_total{remedy="second_subscription",outcome="done"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn prices_outside_the_allowlist_are_refused_before_stripe() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let res = app
        .checkout(&token, json!({"plan": "legacy", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "price_not_allowed"
    );
    assert!(app.stripe.received().is_empty());
    assert_eq!(app.count("customers").await, 0);
}

#[tokio::test]
async fn unknown_plans_and_intervals_are_refused() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for (body, code) in [
        (
            json!({"plan": "platinum", "interval": "month"}),
            "unknown_plan",
        ),
        (
            json!({"plan": "maker", "interval": "year"}),
            "unknown_interval",
        ),
        (
            json!({"plan": "lifetime", "interval": "month"}),
            "unknown_interval",
        ),
        (
            json!({"plan": "pro", "interval": "month", "quantity": 0}),
            "invalid_quantity",
        ),
    ] {
        let res = app.checkout(&token, body.clone()).await;
        assert_eq!(res.status(), 422, "{body}");
        assert_eq!(res.json::<Value>().await.unwrap()["code"], code, "{body}");
    }
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn redirects_must_stay_on_allowed_origins() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for field in ["success_url", "cancel_url"] {
        for url in [
            "https://evil.example.net/steal",
            "https://app.example.com.evil.net/",
            "javascript:alert(1)",
        ] {
            let res = app
                .checkout(
                    &token,
                    json!({"plan": "pro", "interval": "month", field: url}),
                )
                .await;
            assert_eq!(res.status(), 422, "{field}={url}");
            assert_eq!(
                res.json::<Value>().await.unwrap()["code"],
                "redirect_not_allowed"
            );
        }
    }
    assert!(app.stripe.received().is_empty());
    let custom = format!("{APP_ORIGIN}/welcome?session_id={{CHECKOUT_SESSION_ID}}");
    let res = app
        .checkout(
            &token,
            json!({"plan": "pro", "interval": "month", "success_url": custom}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(
        app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form["success_url"],
        custom
    );
}

#[tokio::test]
async fn a_second_subscription_while_one_stands_is_a_conflict() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    let res = app
        .checkout(&token, json!({"plan": "maker", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 409);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "subscription_exists");
    assert!(problem["detail"].as_str().unwrap().contains("/v1/portal"));
}

#[tokio::test]
async fn promotion_codes_are_applied_or_refused() {
    let app = spawn_app().await;
    app.stripe.add_promotion_code("EARLYCODE", "promo_early");
    let token = app.user_token("user-1");
    let res = app
        .checkout(
            &token,
            json!({"plan": "pro", "interval": "month", "promo_code": "EARLYCODE"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let form = &app.stripe.received_on("POST", "/v1/checkout/sessions")[0].form;
    assert_eq!(form["discounts[0][promotion_code]"], "promo_early");
    assert!(!form.contains_key("allow_promotion_codes"));

    let res = app
        .checkout(
            &token,
            json!({"plan": "pro", "interval": "month", "promo_code": "NOPE"}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "unknown_promotion_code"
    );
}

#[tokio::test]
async fn checkout_creation_is_rate_limited_per_user() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for _ in 0..5 {
        assert_eq!(
            app.checkout(&token, json!({"plan": "pro", "interval": "month"}))
                .await
                .status(),
            201
        );
    }
    let res = app
        .checkout(&token, json!({"plan": "pro", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 429);
    // Five a minute: one frees every 12 seconds.
    assert_eq!(res.headers()["retry-after"], "12");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "rate_limited");
    let other = app.user_token("user-2");
    assert_eq!(
        app.checkout(&other, json!({"plan": "pro", "interval": "month"}))
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn portal_opens_for_a_customer_and_checks_the_return_url() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let res = app.post_json("/v1/portal", Some(&token), &json!({})).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "no_billing_account"
    );

    app.subscribe("user-1", "pro", "month").await;
    let res = app.post_json("/v1/portal", Some(&token), &json!({})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["url"]
        .as_str()
        .unwrap()
        .starts_with("https://billing.stripe.com/p/session/"));
    let portal = app
        .stripe
        .received_on("POST", "/v1/billing_portal/sessions");
    assert_eq!(portal[0].form["customer"], "cus_test_1");
    assert_eq!(
        portal[0].form["return_url"],
        format!("{APP_ORIGIN}/account")
    );

    // No body at all is fine too.
    let res = app
        .http
        .post(app.url("/v1/portal"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let res = app
        .post_json(
            "/v1/portal",
            Some(&token),
            &json!({"return_url": "https://evil.example.net/"}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "redirect_not_allowed"
    );
}
