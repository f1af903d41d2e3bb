//! Tenants: subscription scopes (user, tenant, membership), the tenant's billing manager,
//! tenant ids checked against the token, seats, shared quotas, and removing tenants and
//! members (cancelled on the fake Stripe, retried after a Stripe failure).

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, TestApp};

/// Workspaces start on Free with shared credits and seats; `pro` is bought for a tenant,
/// `maker` for one member in one tenant, `lifetime` by a user for every tenant.
pub(crate) const TENANT_PLANS: &str = r#"
[[plans]]
id = "free"
name = "Free"
scope = "tenant"
features = []
quotas = { credits = { limit = 3, period = "day" }, seats = { limit = 2, period = "none" } }

[[plans]]
id = "pro"
name = "Team Pro"
rank = 10
scope = "tenant"
features = ["basic", "export"]
quotas = { credits = { limit = 100, period = "day" } }
prices = [{ interval = "month", price_id = "price_pro_monthly", amount = 900, currency = "usd" }]

[[plans]]
id = "maker"
name = "Maker seat"
rank = 5
scope = "membership"
features = ["basic", "maker"]
prices = [{ interval = "month", price_id = "price_maker_monthly", amount = 1299, currency = "usd" }]

[[plans]]
id = "lifetime"
name = "Lifetime"
rank = 20
kind = "lifetime"
scope = "user"
features = ["basic", "export", "lifetime"]
prices = [{ interval = "once", price_id = "price_lifetime", amount = 19900, currency = "usd" }]
"#;

async fn app() -> TestApp {
    spawn_app_with(Options {
        extra_toml: TENANT_PLANS.into(),
        ..Options::default()
    })
    .await
}

/// A user token whose tenant claim is `tenants` (one id, or a list).
fn member(app: &TestApp, user: &str, tenants: Value) -> String {
    let mut claims = app.idp.claims(user);
    claims["tenant_id"] = tenants;
    app.idp.token(&claims)
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.send_to(&app.address, method, path, token, body).await
}

/// Checks out, pays on the fake Stripe and verifies: the status after verify and the session.
async fn buy(app: &TestApp, token: &str, body: Value) -> (Value, Value) {
    let res = app.checkout(token, body.clone()).await;
    assert_eq!(res.status(), 201, "{body}: {}", res.text().await.unwrap());
    let session: Value = res.json().await.unwrap();
    let session_id = session["session_id"].as_str().unwrap();
    app.stripe.complete_checkout(session_id);
    let res = app.verify(token, session_id).await;
    assert_eq!(res.status(), 200);
    (res.json().await.unwrap(), app.stripe.session(session_id))
}

/// [`buy`] a subscription plan; the new subscription's id (the status may show a stronger
/// grant).
async fn subscribe(app: &TestApp, token: &str, body: Value) -> String {
    let (_, session) = buy(app, token, body).await;
    session["subscription"]
        .as_str()
        .expect("a subscription")
        .to_owned()
}

async fn status_in(app: &TestApp, token: &str, tenant: Option<&str>) -> (u16, Value) {
    let path = match tenant {
        Some(t) => format!("/v1/status?tenant_id={t}"),
        None => "/v1/status".to_owned(),
    };
    send(app, Method::GET, &path, token, None).await
}

async fn entitlements(app: &TestApp, query: &str) -> Value {
    let token = app.idp.service_token("billing:read");
    let (status, body) = send(
        app,
        Method::GET,
        &format!("/v1/entitlements?{query}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

async fn usage(app: &TestApp, body: Value) -> (u16, Value) {
    let token = app.idp.service_token("billing:write");
    send(app, Method::POST, "/v1/usage", &token, Some(body)).await
}

fn admin(app: &TestApp) -> String {
    app.idp.service_token("billing:admin")
}

fn subscription_status(app: &TestApp, id: &str) -> String {
    app.stripe.subscription(id)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_tenant_subscription_is_shared_by_every_member_and_only_in_that_tenant() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let bob = member(&app, "bob", json!("t1"));
    let carol = member(&app, "carol", json!("t2"));

    // Every workspace starts on Free.
    let (_, before) = status_in(&app, &bob, None).await;
    assert_eq!(before["plan"], "free");
    assert_eq!(before["access"], false);
    assert_eq!(before["tenant_id"], "t1");

    // Alice's token names one tenant: the checkout is for it.
    let (after, session) = buy(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    assert_eq!(session["metadata"]["tollgate_subject"], "tenant:t1");
    assert_eq!(session["metadata"]["tollgate_manager"], "alice");
    assert_eq!(after["access"], true);
    assert_eq!(after["plan"], "pro");
    assert_eq!(after["granted_by"], "tenant");
    assert_eq!(after["manager_user_id"], "alice");

    let (_, shared) = status_in(&app, &bob, Some("t1")).await;
    assert_eq!(shared["access"], true, "{shared}");
    assert_eq!(shared["plan"], "pro");
    assert_eq!(shared["granted_by"], "tenant");
    assert_eq!(shared["tenant_id"], "t1");
    assert_eq!(shared["manager_user_id"], "alice");
    let (_, elsewhere) = status_in(&app, &carol, None).await;
    assert_eq!(elsewhere["access"], false);
    assert_eq!(elsewhere["plan"], "free");

    // Services need not know the scope: the tenant decides.
    let in_tenant = entitlements(&app, "user_id=bob&tenant_id=t1").await;
    assert_eq!(in_tenant["access"], true);
    assert_eq!(in_tenant["granted_by"], "tenant");
    let alone = entitlements(&app, "user_id=bob").await;
    assert_eq!(alone["access"], false);
    assert_eq!(alone["granted_by"], "user");
    let feature = entitlements(&app, "user_id=bob&tenant_id=t1&feature=export").await;
    assert_eq!(feature["allowed"], true);
    assert_eq!(feature["granted_by"], "tenant");
    let other = entitlements(&app, "user_id=carol&tenant_id=t2&feature=export").await;
    assert_eq!(other["allowed"], false);
}

#[tokio::test]
async fn foreign_tenant_ids_are_refused_and_tenant_plans_need_a_tenant() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let roaming = member(&app, "dave", json!(["t1", "t2"]));
    let no_tenant = app.user_token("erin");

    for (token, path) in [
        (&alice, "/v1/status?tenant_id=t2"),
        (&no_tenant, "/v1/status?tenant_id=t1"),
    ] {
        let (status, problem) = send(&app, Method::GET, path, token, None).await;
        assert_eq!(status, 403, "{path}");
        assert_eq!(problem["code"], "tenant_not_allowed");
    }
    let refusals = [
        (
            &alice,
            "/v1/checkout",
            json!({"plan": "pro", "interval": "month", "tenant_id": "t2"}),
            403,
            "tenant_not_allowed",
        ),
        (
            &alice,
            "/v1/portal",
            json!({"tenant_id": "t9"}),
            403,
            "tenant_not_allowed",
        ),
        (
            &alice,
            "/v1/subscription/change",
            json!({"plan": "pro", "interval": "month", "tenant_id": "t2"}),
            403,
            "tenant_not_allowed",
        ),
        (
            &no_tenant,
            "/v1/checkout",
            json!({"plan": "pro", "interval": "month"}),
            400,
            "tenant_required",
        ),
        // Several tenants in the token and none named: which one is not guessed.
        (
            &roaming,
            "/v1/checkout",
            json!({"plan": "maker", "interval": "month"}),
            400,
            "tenant_required",
        ),
        (
            &alice,
            "/v1/checkout",
            json!({"plan": "pro", "interval": "month", "tenant_id": " "}),
            400,
            "invalid_tenant_id",
        ),
    ];
    for (token, path, body, status, code) in refusals {
        let (got, problem) = send(&app, Method::POST, path, token, Some(body.clone())).await;
        assert_eq!(got, status, "{path} {body}: {problem}");
        assert_eq!(problem["code"], code, "{path} {body}");
    }
    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/subscription/cancel?tenant_id=t2",
        &alice,
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("tenant_not_allowed"))
    );
    assert_eq!(
        app.stripe.customer_count(),
        0,
        "no refusal created a customer"
    );
    assert_eq!(app.count("customers").await, 0);
}

#[tokio::test]
async fn membership_plans_hold_for_one_user_in_one_tenant_and_the_strongest_grant_wins() {
    let app = app().await;
    let dave = member(&app, "dave", json!(["t1", "t2"]));
    let erin = member(&app, "erin", json!("t1"));
    let alice = member(&app, "alice", json!("t1"));

    let (after, session) = buy(
        &app,
        &dave,
        json!({"plan": "maker", "interval": "month", "tenant_id": "t1"}),
    )
    .await;
    assert_eq!(
        session["metadata"]["tollgate_subject"],
        "membership:t1:dave"
    );
    assert_eq!(after["granted_by"], "membership");
    assert_eq!(after["plan"], "maker");
    let (_, in_t2) = status_in(&app, &dave, Some("t2")).await;
    assert_eq!(
        (in_t2["access"].clone(), in_t2["plan"].clone()),
        (json!(false), json!("free"))
    );
    let (_, alone) = status_in(&app, &dave, None).await;
    assert_eq!(alone["access"], false, "a membership is not the user's own");
    let (_, colleague) = status_in(&app, &erin, None).await;
    assert_eq!(colleague["access"], false, "a membership is one member's");

    // The tenant's higher-ranked plan outranks the membership.
    buy(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let (_, both) = status_in(&app, &dave, Some("t1")).await;
    assert_eq!(
        (both["plan"].clone(), both["granted_by"].clone()),
        (json!("pro"), json!("tenant"))
    );

    // A user-scoped lifetime plan holds in every tenant and outranks both.
    let (lifetime, _) = buy(&app, &dave, json!({"plan": "lifetime", "interval": "once"})).await;
    assert_eq!(lifetime["granted_by"], "user");
    for tenant in ["t1", "t2"] {
        let (_, s) = status_in(&app, &dave, Some(tenant)).await;
        assert_eq!(
            (s["plan"].clone(), s["granted_by"].clone()),
            (json!("lifetime"), json!("user")),
            "{tenant}"
        );
        let e = entitlements(
            &app,
            &format!("user_id=dave&tenant_id={tenant}&feature=lifetime"),
        )
        .await;
        assert_eq!(e["allowed"], true);
        assert_eq!(e["granted_by"], "user");
    }
}

#[tokio::test]
async fn only_the_billing_manager_manages_a_tenant_subscription_until_it_is_handed_over() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let bob = member(&app, "bob", json!("t1"));
    let (after, _) = buy(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let sub_id = after["subscription_id"].as_str().unwrap().to_owned();

    let member_attempts = [
        (
            "/v1/checkout",
            Some(json!({"plan": "pro", "interval": "month"})),
        ),
        ("/v1/portal", None),
        ("/v1/subscription/cancel", None),
        ("/v1/subscription/resume", None),
        (
            "/v1/subscription/change",
            Some(json!({"plan": "pro", "interval": "month", "quantity": 3})),
        ),
    ];
    for (path, body) in &member_attempts {
        let (status, problem) = send(&app, Method::POST, path, &bob, body.clone()).await;
        assert_eq!(status, 403, "{path}: {problem}");
        assert_eq!(problem["code"], "not_billing_manager", "{path}");
    }
    assert!(!app.stripe.subscription(&sub_id)["cancel_at_period_end"]
        .as_bool()
        .unwrap());
    assert!(app
        .stripe
        .received_on("POST", "/v1/billing_portal/sessions")
        .is_empty());
    // The manager is told a subscription stands; the portal opens for them.
    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/checkout",
        &alice,
        Some(json!({"plan": "pro", "interval": "month"})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("subscription_exists"))
    );
    let (status, _) = send(&app, Method::POST, "/v1/portal", &alice, None).await;
    assert_eq!(status, 200);

    // A service hands the subscription over to Bob.
    let path = "/v1/tenants/t1/manager";
    let read = app.idp.service_token("billing:read");
    let (status, _) = send(
        &app,
        Method::PUT,
        path,
        &read,
        Some(json!({"user_id": "bob"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, out) = send(
        &app,
        Method::PUT,
        path,
        &admin(&app),
        Some(json!({"user_id": "bob"})),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["manager_user_id"], "bob");
    assert_eq!(out["subscription_id"], sub_id.as_str());
    assert_eq!(
        app.stripe.subscription(&sub_id)["metadata"]["tollgate_manager"],
        "bob",
        "recorded on Stripe"
    );
    let audit = app
        .db({
            let id = sub_id.clone();
            move |c| tollgate::db::audit::for_entity(c, &id)
        })
        .await;
    assert!(
        audit
            .iter()
            .any(|a| a.source == "api:tenants.manager" && a.changes.contains("bob")),
        "the hand-over is audited: {audit:?}"
    );

    let (status, problem) = send(&app, Method::POST, "/v1/subscription/cancel", &alice, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("not_billing_manager"))
    );
    let (status, canceled) = send(&app, Method::POST, "/v1/subscription/cancel", &bob, None).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["reason"], "canceling");
    assert_eq!(canceled["access"], true, "paid until the period ends");
    let (_, seen_by_alice) = status_in(&app, &alice, None).await;
    assert_eq!(seen_by_alice["cancel_at_period_end"], true);

    let (status, problem) = send(
        &app,
        Method::PUT,
        "/v1/tenants/t9/manager",
        &admin(&app),
        Some(json!({"user_id": "bob"})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("no_subscription"))
    );
}

#[tokio::test]
async fn seats_are_bought_changed_and_reported() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let (after, _) = buy(
        &app,
        &alice,
        json!({"plan": "pro", "interval": "month", "quantity": 5}),
    )
    .await;
    let sub_id = after["subscription_id"].as_str().unwrap().to_owned();
    assert_eq!(after["quantity"], 5);

    let e = entitlements(&app, "user_id=bob&tenant_id=t1&members=3").await;
    assert_eq!(e["seats"], json!({"allowed": 5, "used": 3, "available": 2}));
    let unknown = entitlements(&app, "user_id=bob&tenant_id=t1").await;
    assert_eq!(
        unknown["seats"],
        json!({"allowed": 5, "used": null, "available": null})
    );

    let (status, changed) = send(
        &app,
        Method::POST,
        "/v1/subscription/change",
        &alice,
        Some(json!({"plan": "pro", "interval": "month", "quantity": 8})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["quantity"], 8);
    let update = app
        .stripe
        .received_on("POST", &format!("/v1/subscriptions/{sub_id}"));
    assert_eq!(
        update
            .last()
            .unwrap()
            .form
            .get("items[0][quantity]")
            .map(String::as_str),
        Some("8")
    );
    let e = entitlements(&app, "user_id=bob&tenant_id=t1&members=9").await;
    assert_eq!(e["seats"], json!({"allowed": 8, "used": 9, "available": 0}));

    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/subscription/change",
        &alice,
        Some(json!({"plan": "pro", "interval": "month", "quantity": 0})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("invalid_quantity"))
    );
}

#[tokio::test]
async fn members_spend_their_workspaces_shared_quotas() {
    let app = app().await;
    let spend = |user: &str, tenant: &str, quota: &str, amount: u64, key: &str| json!({"user_id": user, "tenant_id": tenant, "quota": quota, "amount": amount, "idempotency_key": key});
    // A free workspace's 3 credits a day are shared by its members.
    let (status, first) = usage(&app, spend("bob", "t1", "credits", 2, "k1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["remaining"], 1);
    let (status, refused) = usage(&app, spend("alice", "t1", "credits", 2, "k2")).await;
    assert_eq!(status, 402, "{refused}");
    assert_eq!(refused["remaining"], 1);
    let (status, other) = usage(&app, spend("carol", "t2", "credits", 3, "k3")).await;
    assert_eq!(status, 200, "another workspace has its own: {other}");
    let mut ledger: Vec<String> = app
        .db(|c| {
            use diesel::prelude::*;
            use tollgate::db::schema::usage_ledger::dsl::*;
            Ok(usage_ledger.select(subject).load(c)?)
        })
        .await;
    ledger.sort();
    assert_eq!(ledger, ["tenant:t1", "tenant:t1", "tenant:t2"]);

    // Seats counted by a `seats` quota: spent as members join.
    let e = entitlements(&app, "user_id=bob&tenant_id=t1").await;
    assert_eq!(e["seats"], json!({"allowed": 2, "used": 0, "available": 2}));
    let (status, _) = usage(&app, spend("bob", "t1", "seats", 1, "join-bob")).await;
    assert_eq!(status, 200);
    let e = entitlements(&app, "user_id=alice&tenant_id=t1").await;
    assert_eq!(e["seats"], json!({"allowed": 2, "used": 1, "available": 1}));

    // A paid workspace: the plan's larger allowance, still shared.
    let alice = member(&app, "alice", json!("t1"));
    buy(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let (status, paid) = usage(&app, spend("bob", "t1", "credits", 60, "k4")).await;
    assert_eq!(status, 200, "{paid}");
    let (status, over) = usage(&app, spend("alice", "t1", "credits", 50, "k5")).await;
    assert_eq!(status, 402, "{over}");
    // The day's window counts what the workspace spent on Free this morning too.
    assert_eq!(over["remaining"], 100 - 2 - 60);
}

#[tokio::test]
async fn a_retry_answers_the_first_decision_even_after_another_subject_started_to_pay() {
    let app = app().await;
    let spend = |user: &str, amount: u64, key: &str| json!({"user_id": user, "tenant_id": "t1", "quota": "credits", "amount": amount, "idempotency_key": key});
    // The workspace's free credits pay for bob's job.
    let (status, first) = usage(&app, spend("bob", 2, "job-7")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["remaining"], 1);

    // Bob buys a personal lifetime plan: his own subject now stands for him, and it has no
    // credits quota, so the same job asked anew would be refused.
    let bob = member(&app, "bob", json!("t1"));
    buy(&app, &bob, json!({"plan": "lifetime", "interval": "once"})).await;
    let (status, fresh) = usage(&app, spend("bob", 2, "job-8")).await;
    assert_eq!(
        (status, fresh["code"].as_str()),
        (403, Some("quota_not_in_plan"))
    );

    // The retry of the first job answers its first decision, and takes nothing more.
    let (status, retry) = usage(&app, spend("bob", 2, "job-7")).await;
    assert_eq!((status, &retry), (200, &first));
    let e = entitlements(&app, "user_id=alice&tenant_id=t1").await;
    let credits = e["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == "credits")
        .cloned();
    assert_eq!(credits.map(|c| c["used"].clone()), Some(json!(2)), "{e}");

    // A key belongs to who asked: another member, or another service, may use it too.
    let (status, alice) = usage(&app, spend("alice", 1, "job-7")).await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(alice["remaining"], 0);
    let mut claims = app.idp.claims("another-service");
    claims["scope"] = json!("billing:write");
    let other_service = app.idp.token(&claims);
    let (status, other) = send(
        &app,
        Method::POST,
        "/v1/usage",
        &other_service,
        Some(spend("alice", 1, "job-7")),
    )
    .await;
    assert_eq!(
        (status, other["code"].as_str()),
        (402, Some("quota_exhausted")),
        "decided anew, not replayed: {other}"
    );
    let ledger: Vec<(String, String)> = app
        .db(|c| {
            use diesel::prelude::*;
            use tollgate::db::schema::usage_ledger::dsl::*;
            Ok(usage_ledger
                .filter(idempotency_key.eq("job-7"))
                .select((subject, requester))
                .order(created_at)
                .load(c)?)
        })
        .await;
    assert_eq!(ledger.len(), 3, "{ledger:?}");
    assert!(ledger.iter().all(|(s, _)| s == "tenant:t1"), "{ledger:?}");
}

#[tokio::test]
async fn removing_a_tenant_cancels_its_subscriptions_once_and_a_retry_finishes_after_a_stripe_failure(
) {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let dave = member(&app, "dave", json!("t1"));
    let bob = member(&app, "bob", json!("t1"));
    let team_sub = subscribe(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let seat_sub = subscribe(&app, &dave, json!({"plan": "maker", "interval": "month"})).await;

    let (status, _) = send(
        &app,
        Method::DELETE,
        "/v1/tenants/t1",
        &app.idp.service_token("billing:write"),
        None,
    )
    .await;
    assert_eq!(status, 403, "billing:admin only");

    // Stripe fails on the first cancellation: the removal is recorded, nothing is canceled.
    app.stripe.fail_cancellations(1);
    let (status, problem) = send(&app, Method::DELETE, "/v1/tenants/t1", &admin(&app), None).await;
    assert_eq!(status, 502, "{problem}");
    assert_eq!(subscription_status(&app, &team_sub), "active");
    assert_eq!(subscription_status(&app, &seat_sub), "active");
    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/checkout",
        &bob,
        Some(json!({"plan": "pro", "interval": "month"})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("tenant_removed"))
    );

    // The retry finishes.
    let (status, removed) = send(&app, Method::DELETE, "/v1/tenants/t1", &admin(&app), None).await;
    assert_eq!(status, 200, "{removed}");
    let mut canceled: Vec<String> =
        serde_json::from_value(removed["canceled_subscriptions"].clone()).unwrap();
    canceled.sort();
    let mut expected = vec![team_sub.clone(), seat_sub.clone()];
    expected.sort();
    assert_eq!(canceled, expected);
    assert_eq!(subscription_status(&app, &team_sub), "canceled");
    assert_eq!(subscription_status(&app, &seat_sub), "canceled");
    let (_, after) = status_in(&app, &bob, None).await;
    assert_eq!(after["access"], false);
    let (_, seat_after) = status_in(&app, &dave, None).await;
    assert_eq!(seat_after["access"], false);

    // The removal was told once (by the first call, which recorded it), to the tenant and to
    // each member; the cancellations took the tenant's plan away.
    // Created, paid, entitled, removed; then canceled (and entitled again) by the retry.
    let tenant_events = app.events_of("tenant:t1", 5).await;
    let types_of = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let told = types_of(&tenant_events);
    assert_eq!(
        told.iter().filter(|t| *t == "tenant.removed").count(),
        1,
        "{told:?}"
    );
    assert!(
        told.contains(&"subscription.canceled".to_owned()),
        "{told:?}"
    );
    let told_removed = tenant_events
        .iter()
        .find(|e| e["type"] == "tenant.removed")
        .unwrap();
    assert_eq!(told_removed["data"]["tenant_id"], "t1");
    assert_eq!(told_removed["data"]["user_id"], Value::Null);
    let lost = tenant_events
        .iter()
        .rev()
        .find(|e| e["type"] == "entitlements.changed")
        .unwrap();
    assert_eq!(lost["data"]["access"], false);
    let member_events = app.events_of("membership:t1:dave", 1).await;
    let member_removed = member_events
        .iter()
        .find(|e| e["type"] == "tenant.removed")
        .unwrap();
    assert_eq!(member_removed["data"]["user_id"], "dave");

    // Again: nothing left to cancel, the first removal time stands, Stripe is not asked twice.
    let (status, again) = send(&app, Method::DELETE, "/v1/tenants/t1", &admin(&app), None).await;
    assert_eq!(status, 200);
    assert_eq!(again["canceled_subscriptions"], json!([]));
    assert_eq!(again["removed_at"], removed["removed_at"]);
    let cancels = |id: &str| {
        app.stripe
            .received_on("DELETE", &format!("/v1/subscriptions/{id}"))
            .len()
    };
    assert_eq!(
        cancels(&team_sub) + cancels(&seat_sub),
        3,
        "one failed, two succeeded"
    );
    let audit = app
        .db(|c| tollgate::db::audit::for_entity(c, "tenant:t1"))
        .await;
    let removals: Vec<_> = audit.iter().filter(|a| a.action == "removed").collect();
    assert_eq!(removals.len(), 1, "{audit:?}");
    assert_eq!(removals[0].source, "api:tenants.delete");

    // A tenant Tollgate holds nothing for is not recorded as removed (it could never buy).
    let (status, empty) = send(
        &app,
        Method::DELETE,
        "/v1/tenants/t-empty",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(
        (status, empty["code"].as_str()),
        (404, Some("tenant_not_found"))
    );
}

#[tokio::test]
async fn removing_a_member_cancels_their_membership_and_the_tenant_subscription_they_manage() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let dave = member(&app, "dave", json!("t1"));
    let team_sub = subscribe(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let seat_sub = subscribe(&app, &dave, json!({"plan": "maker", "interval": "month"})).await;
    let remove = |user: &'static str| {
        let app = &app;
        async move {
            let (status, body) = send(
                app,
                Method::DELETE,
                &format!("/v1/tenants/t1/members/{user}"),
                &admin(app),
                None,
            )
            .await;
            assert_eq!(status, 200, "{user}: {body}");
            body
        }
    };

    let bob = remove("bob").await;
    assert_eq!(bob["canceled_subscriptions"], json!([]));
    assert_eq!(bob["user_id"], "bob");
    assert_eq!(subscription_status(&app, &team_sub), "active");

    let dave_removed = remove("dave").await;
    assert_eq!(dave_removed["canceled_subscriptions"], json!([seat_sub]));
    assert_eq!(subscription_status(&app, &seat_sub), "canceled");
    assert_eq!(
        subscription_status(&app, &team_sub),
        "active",
        "dave does not manage it"
    );

    // The manager leaves: no one else may manage the tenant's subscription, so it ends.
    let alice_removed = remove("alice").await;
    assert_eq!(alice_removed["canceled_subscriptions"], json!([team_sub]));
    assert_eq!(subscription_status(&app, &team_sub), "canceled");
    let comment = &app
        .stripe
        .received_on("DELETE", &format!("/v1/subscriptions/{team_sub}"))[0];
    assert!(comment.form.contains_key("cancellation_details[comment]"));
    assert_eq!(remove("alice").await["canceled_subscriptions"], json!([]));

    // A removed member who comes back may buy a seat again.
    let res = app
        .checkout(&dave, json!({"plan": "maker", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn the_seed_003_workspace_set_up_works_as_configured() {
    // The example as shipped, with price ids where it reads them from the environment.
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/examples/003_multi_tenant.toml"
    ))
    .unwrap()
    .replace(
        "price_id_env = \"STRIPE_PRICE_BASIC\"",
        "price_id = \"price_basic_monthly\"",
    )
    .replace(
        "price_id_env = \"STRIPE_PRICE_ENTERPRISE\"",
        "price_id = \"price_enterprise_monthly\"",
    );
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("003.toml");
    std::fs::write(&file, example).unwrap();
    let app = spawn_app_with(Options {
        config_file: Some(file),
        ..Options::default()
    })
    .await;
    let owner = member(&app, "owner", json!("ws1"));
    let colleague = member(&app, "colleague", json!("ws1"));

    let (_, fresh) = status_in(&app, &colleague, None).await;
    assert_eq!(
        (fresh["plan"].clone(), fresh["access"].clone()),
        (json!("free"), json!(false))
    );

    let (basic, _) = buy(&app, &owner, json!({"plan": "basic", "interval": "month"})).await;
    assert_eq!(basic["plan"], "basic");
    let (_, shared) = status_in(&app, &colleague, None).await;
    assert_eq!(
        (shared["plan"].clone(), shared["granted_by"].clone()),
        (json!("basic"), json!("tenant"))
    );
    let e = entitlements(&app, "user_id=colleague&tenant_id=ws1&feature=basic").await;
    assert_eq!(e["allowed"], true);

    // Only the subscriber upgrades; cancelling keeps access to the period's end.
    let upgrade = json!({"plan": "enterprise", "interval": "month"});
    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/subscription/change",
        &colleague,
        Some(upgrade.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("not_billing_manager"))
    );
    let (status, upgraded) = send(
        &app,
        Method::POST,
        "/v1/subscription/change",
        &owner,
        Some(upgrade),
    )
    .await;
    assert_eq!(
        (status, upgraded["plan"].clone()),
        (200, json!("enterprise"))
    );
    let (status, canceling) =
        send(&app, Method::POST, "/v1/subscription/cancel", &owner, None).await;
    assert_eq!(
        (status, canceling["reason"].clone()),
        (200, json!("canceling"))
    );
    let (_, still) = status_in(&app, &colleague, None).await;
    assert_eq!(still["access"], true);

    // The workspace is deleted: the subscription ends on Stripe now.
    let (status, removed) = send(&app, Method::DELETE, "/v1/tenants/ws1", &admin(&app), None).await;
    assert_eq!(status, 200);
    let sub = basic["subscription_id"].as_str().unwrap();
    assert_eq!(removed["canceled_subscriptions"], json!([sub]));
    assert_eq!(subscription_status(&app, sub), "canceled");
    let (_, gone) = status_in(&app, &colleague, None).await;
    assert_eq!(gone["access"], false);
}

#[tokio::test]
async fn a_member_manages_their_own_membership_beside_a_tenant_subscription_they_do_not_manage() {
    let app = app().await;
    let alice = member(&app, "alice", json!("t1"));
    let bob = member(&app, "bob", json!("t1"));
    let team_sub = subscribe(&app, &alice, json!({"plan": "pro", "interval": "month"})).await;
    let seat_sub = subscribe(&app, &bob, json!({"plan": "maker", "interval": "month"})).await;

    let (status, after) = send(&app, Method::POST, "/v1/subscription/cancel", &bob, None).await;
    assert_eq!(status, 200, "{after}");
    assert!(app.stripe.subscription(&seat_sub)["cancel_at_period_end"]
        .as_bool()
        .unwrap());
    assert!(!app.stripe.subscription(&team_sub)["cancel_at_period_end"]
        .as_bool()
        .unwrap());
    // The answer is still the strongest grant: the tenant's plan.
    assert_eq!(after["granted_by"], "tenant");
}
