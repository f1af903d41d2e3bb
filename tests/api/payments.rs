use std::collections::HashSet;

use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, TestApp};

async fn payments(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app.get(&format!("/v1/payments{query}"), Some(token)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn audit(app: &TestApp, entity_id: &str) -> Vec<tollgate::db::audit::AuditRow> {
    let id = entity_id.to_owned();
    app.db(move |conn| tollgate::db::audit::for_entity(conn, &id))
        .await
}

#[tokio::test]
async fn payments_are_listed_newest_first_page_by_page_and_only_to_their_owner() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "month").await;
    app.subscribe("user-1", "lifetime", "once").await;
    let token = app.user_token("user-1");

    let all = payments(&app, &token, "").await;
    let data = all["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(all["next_cursor"], Value::Null);
    let amounts: HashSet<i64> = data.iter().map(|p| p["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, HashSet::from([900, 19900]));
    assert!(data
        .iter()
        .all(|p| p["status"] == "paid" && p["currency"] == "usd" && p["amount_refunded"] == 0));

    let first = payments(&app, &token, "?limit=1").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page follows")
        .to_owned();
    let second = payments(&app, &token, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_eq!(second["next_cursor"], Value::Null);
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    assert_eq!(
        vec![first["data"][0].clone(), second["data"][0].clone()],
        *data
    );

    let other = payments(&app, &app.user_token("user-2"), "").await;
    assert_eq!(other["data"], json!([]));
}

#[tokio::test]
async fn bad_paging_parameters_are_refused() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for (query, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?cursor=nonsense", "invalid_cursor"),
        ("?limit=x", "invalid_query"),
    ] {
        let res = app.get(&format!("/v1/payments{query}"), Some(&token)).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(res.json::<Value>().await.unwrap()["code"], code, "{query}");
    }
}

#[tokio::test]
async fn a_refund_revokes_the_lifetime_purchase_it_refunds() {
    let app = spawn_app().await;
    let (session_id, status) = app.subscribe("user-1", "lifetime", "once").await;
    assert_eq!(status["reason"], "lifetime");
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    let res = app
        .webhook(&event("evt_refund", "charge.refunded", charge))
        .await;
    assert_eq!(res.status(), 200);

    let token = app.user_token("user-1");
    let status = app.status(&token).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["lifetime"].as_bool()
        ),
        (Some(false), Some("refunded"), Some(false))
    );
    let history = payments(&app, &token, "").await;
    assert_eq!(history["data"][0]["status"], "refunded");
    assert_eq!(history["data"][0]["amount_refunded"], 19900);

    let trail = audit(&app, &session_id).await;
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(
        (trail[0].action.as_str(), trail[0].source.as_str()),
        ("created", "api:checkout.verify")
    );
    assert_eq!(
        (trail[1].action.as_str(), trail[1].source.as_str()),
        ("updated", "event:evt_refund charge.refunded")
    );
    let changes: Value = serde_json::from_str(&trail[1].changes).unwrap();
    assert_eq!(changes["status"], json!(["paid", "refunded"]));
}

#[tokio::test]
async fn a_partial_refund_revokes_only_above_the_configured_share() {
    // (configured, refunded of 19,900, access after)
    for (over, refunded, access) in [
        (None, 19_000, true),
        (Some(50), 9_950, true),
        (Some(50), 9_951, false),
    ] {
        let extra_toml = over
            .map(|p| format!("[billing]\npartial_refund_revokes_over_percent = {p}\n"))
            .unwrap_or_default();
        let app = crate::helpers::spawn_app_with(crate::helpers::Options {
            extra_toml,
            ..crate::helpers::Options::default()
        })
        .await;
        let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
        let payment_intent = app.stripe.payment_intent_of(&session_id);
        let charge = app.stripe.update_charge(&payment_intent, |c| {
            c["amount_refunded"] = json!(refunded);
            c["refunded"] = json!(false);
        });
        app.webhook_ok(&event("evt_partial", "charge.refunded", charge))
            .await;
        let token = app.user_token("user-1");
        let status = app.status(&token).await;
        let case = format!("over {over:?}, refunded {refunded}: {status}");
        assert_eq!(status["access"].as_bool(), Some(access), "{case}");
        assert_eq!(
            status["reason"],
            if access { "lifetime" } else { "refunded" },
            "{case}"
        );
        // The history says what Stripe says.
        let history = payments(&app, &token, "").await;
        assert_eq!(history["data"][0]["status"], "partially_refunded", "{case}");
    }
}

#[tokio::test]
async fn a_dispute_revokes_the_purchase_even_though_it_names_no_customer() {
    let app = spawn_app().await;
    let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let dispute = app.stripe.dispute(&payment_intent, "needs_response");
    app.webhook_ok(&event("evt_dispute", "charge.dispute.created", dispute))
        .await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("refunded"))
    );
    assert_eq!(
        payments(&app, &app.user_token("user-1"), "").await["data"][0]["status"],
        "disputed"
    );
}

#[tokio::test]
async fn every_subscription_change_leaves_an_audit_row_naming_its_source() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let sub = app
        .stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    app.webhook_ok(&event(
        "evt_cancel",
        "customer.subscription.updated",
        sub.clone(),
    ))
    .await;
    // A redelivery under another event id finds nothing to change: no new row.
    app.webhook_ok(&event(
        "evt_cancel_again",
        "customer.subscription.updated",
        sub,
    ))
    .await;

    let trail = audit(&app, &sub_id).await;
    assert_eq!(trail.len(), 2, "{trail:?}");
    assert_eq!(
        (
            trail[0].action.as_str(),
            trail[0].source.as_str(),
            trail[0].subject.as_str()
        ),
        ("created", "api:checkout.verify", "user:user-1")
    );
    assert_eq!(
        (trail[1].action.as_str(), trail[1].source.as_str()),
        ("updated", "event:evt_cancel customer.subscription.updated")
    );
    let changes: Value = serde_json::from_str(&trail[1].changes).unwrap();
    assert_eq!(
        changes.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cancel_at_period_end"]
    );
    assert_eq!(changes["cancel_at_period_end"], json!([false, true]));
}

#[tokio::test]
async fn a_dispute_of_a_charge_tollgate_never_recorded_is_routed_through_stripe() {
    let app = spawn_app().await;
    let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
    app.db(|conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query("DELETE FROM payments").execute(conn)?;
        Ok(())
    })
    .await;
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let mut dispute = app.stripe.dispute(&payment_intent, "needs_response");
    dispute["payment_intent"] = json!("pi_unknown");
    app.webhook_ok(&event(
        "evt_dispute_unrecorded",
        "charge.dispute.created",
        dispute,
    ))
    .await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("refunded"))
    );
}

fn access(status: &Value) -> (Option<bool>, Option<&str>) {
    (status["access"].as_bool(), status["reason"].as_str())
}

#[tokio::test]
async fn a_won_dispute_restores_the_purchase_a_lost_one_keeps_it_revoked() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
    let payment_intent = app.stripe.payment_intent_of(&session_id);

    let opened = app.stripe.dispute(&payment_intent, "needs_response");
    app.webhook_ok(&event("evt_opened", "charge.dispute.created", opened))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(false), Some("refunded"))
    );

    // Stripe keeps `charge.disputed = true` after a win: the dispute's status decides.
    let won = app.stripe.dispute(&payment_intent, "won");
    app.webhook_ok(&event("evt_won", "charge.dispute.closed", won))
        .await;
    let status = app.status(&token).await;
    assert_eq!(access(&status), (Some(true), Some("lifetime")));
    assert_eq!(
        payments(&app, &token, "").await["data"][0]["status"],
        "paid"
    );
    let trail = audit(&app, &session_id).await;
    let last: Value = serde_json::from_str(&trail.last().unwrap().changes).unwrap();
    assert_eq!(last["status"], json!(["disputed", "paid"]));
    assert_eq!(
        trail.last().unwrap().source,
        "event:evt_won charge.dispute.closed"
    );

    // A second purchase whose dispute is lost stays revoked; the first still grants.
    let (second, _) = app.subscribe("user-2", "lifetime", "once").await;
    let second_intent = app.stripe.payment_intent_of(&second);
    app.stripe.dispute(&second_intent, "needs_response");
    let lost = app.stripe.dispute(&second_intent, "lost");
    app.webhook_ok(&event("evt_lost", "charge.dispute.closed", lost))
        .await;
    assert_eq!(
        access(&app.status(&app.user_token("user-2")).await),
        (Some(false), Some("refunded"))
    );
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("lifetime"))
    );
}

#[tokio::test]
async fn a_refunded_renewal_ends_the_period_it_paid_for_until_the_next_one_is_paid() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let first_payment = app.stripe.latest_payment_intent(&sub_id);
    let renewal = app.stripe.renew(&sub_id);
    app.webhook_ok(&event("evt_renewed", "invoice.paid", renewal))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("active"))
    );

    // Refunding the previous period's payment takes back nothing still granted.
    let old = app.stripe.refund(&first_payment);
    app.webhook_ok(&event("evt_old_refund", "charge.refunded", old))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("active"))
    );

    // Refunding the payment for the current period ends that period's access, although the
    // subscription stays active on Stripe.
    let current = app
        .stripe
        .refund(&app.stripe.latest_payment_intent(&sub_id));
    app.webhook_ok(&event("evt_refund", "charge.refunded", current))
        .await;
    let status = app.status(&token).await;
    assert_eq!(access(&status), (Some(false), Some("refunded")));
    assert_eq!(status["subscription_id"], sub_id.as_str());
    assert_eq!(app.stripe.subscription(&sub_id)["status"], "active");
    let trail = audit(&app, &sub_id).await;
    let last: Value = serde_json::from_str(&trail.last().unwrap().changes).unwrap();
    assert_eq!(last["period_payment_revoked"], json!([null, "refunded"]));

    // The next paid period grants again.
    let next = app.stripe.renew(&sub_id);
    app.webhook_ok(&event("evt_next", "invoice.paid", next))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("active"))
    );
}

#[tokio::test]
async fn a_disputed_subscription_payment_suspends_access_until_the_dispute_is_won() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let payment_intent = app.stripe.latest_payment_intent(&sub_id);

    let opened = app.stripe.dispute(&payment_intent, "needs_response");
    app.webhook_ok(&event("evt_opened", "charge.dispute.created", opened))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(false), Some("refunded"))
    );

    let won = app.stripe.dispute(&payment_intent, "won");
    app.webhook_ok(&event("evt_won", "charge.dispute.closed", won))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("active"))
    );
}

#[tokio::test]
async fn an_inquiry_withdraws_no_funds_and_revokes_nothing() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let inquiry = app
        .stripe
        .dispute(&payment_intent, "warning_needs_response");
    app.webhook_ok(&event("evt_inquiry", "charge.dispute.created", inquiry))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(true), Some("lifetime"))
    );
}

#[tokio::test]
async fn a_refund_of_a_charge_older_than_the_newest_hundred_is_still_applied() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    let (session_id, _) = app.subscribe("user-1", "lifetime", "once").await;
    let session = app.stripe.session(&session_id);
    let payment_intent = session["payment_intent"].as_str().unwrap().to_owned();
    // 120 newer charges push the purchase's charge off the first page of the charge list.
    app.stripe
        .add_charges(session["customer"].as_str().unwrap(), 120, 500);

    let refunded = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_old_refund", "charge.refunded", refunded))
        .await;
    assert_eq!(
        access(&app.status(&token).await),
        (Some(false), Some("refunded"))
    );
    let retrieved = app
        .stripe
        .received()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/charges/"))
        .count();
    assert_eq!(retrieved, 1, "the event's charge is read by id");
}

#[tokio::test]
async fn a_tenants_payments_are_listed_for_its_billing_manager_and_services_only() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra_toml: crate::tenants::TENANT_PLANS.into(),
        ..crate::helpers::Options::default()
    })
    .await;
    let member = |user: &str, tenant: &str| {
        let mut claims = app.idp.claims(user);
        claims["tenant_id"] = serde_json::json!(tenant);
        app.idp.token(&claims)
    };
    let (alice, bob, carol) = (
        member("alice", "t1"),
        member("bob", "t1"),
        member("carol", "t2"),
    );
    // Alice buys the team plan: the tenant pays, and she manages its billing.
    let res = app
        .checkout(
            &alice,
            serde_json::json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let session: serde_json::Value = res.json().await.unwrap();
    let session_id = session["session_id"].as_str().unwrap();
    app.stripe.complete_checkout(session_id);
    assert_eq!(app.verify(&alice, session_id).await.status(), 200);

    let payments = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let res = app.get(&format!("/v1/payments{query}"), Some(&token)).await;
            let status = res.status().as_u16();
            (status, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, page) = payments(alice.clone(), "?tenant_id=t1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["amount"], 900);
    assert_eq!(page["data"][0]["status"], "paid");
    // Her own history holds nothing: the tenant paid.
    let (_, own) = payments(alice.clone(), "").await;
    assert_eq!(own["data"], serde_json::json!([]));
    // Another member reads the tenant's status, not its payments; a non-member nothing.
    let (status, refused) = payments(bob, "?tenant_id=t1").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("not_billing_manager"))
    );
    let (status, refused) = payments(carol, "?tenant_id=t1").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("tenant_not_allowed"))
    );
    let (status, refused) = payments(alice.clone(), "?user_id=bob").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("missing_scope"))
    );
    // A service with the read scope lists anyone's.
    let service = app.idp.service_token("billing:read");
    let (status, page) = payments(service.clone(), "?tenant_id=t1").await;
    assert_eq!(
        (status, page["data"].as_array().unwrap().len()),
        (200, 1),
        "{page}"
    );
    let (status, page) = payments(service.clone(), "?user_id=alice").await;
    assert_eq!(
        (status, page["data"].as_array().unwrap().len()),
        (200, 0),
        "{page}"
    );
    let (status, refused) = payments(service, "?user_id=%20").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_user_id"))
    );
}
