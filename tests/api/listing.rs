//! `GET /v1/subscriptions`: every stored subscription and one-time purchase, for services and
//! support, with filters and a cursor that survives inserts.

use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, Options, TestApp};

async fn list(app: &TestApp, query: &str) -> (u16, Value) {
    let token = app.idp.service_token("billing:read");
    let res = app
        .get(&format!("/v1/subscriptions{query}"), Some(&token))
        .await;
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    let (status, page) = list(app, query).await;
    assert_eq!(status, 200, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn subscriptions_and_purchases_are_listed_newest_first_with_filters_and_a_stable_cursor() {
    let app = spawn_app().await;
    let alice = app.subscribed("alice", "pro", "month").await;
    let (_, bob_session, _) = app.paid_checkout("bob", "lifetime", "once").await;
    assert_eq!(
        app.verify(&app.user_token("bob"), &bob_session)
            .await
            .status(),
        200
    );
    let carol = app.subscribed("carol", "maker", "month").await;

    let (status, page) = list(&app, "").await;
    assert_eq!(status, 200, "{page}");
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{page:#}");
    assert_eq!(page["next_cursor"], Value::Null);
    for row in rows {
        assert_eq!(row["provider"], "stripe");
        assert!(row["synced_at"].is_string());
        assert!(row["stripe_customer_id"]
            .as_str()
            .unwrap()
            .starts_with("cus_"));
    }
    let by_id = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap().clone();
    let a = by_id(&alice);
    assert_eq!(
        (
            &a["kind"],
            &a["plan"],
            &a["status"],
            &a["interval"],
            &a["quantity"]
        ),
        (
            &"subscription".into(),
            &"pro".into(),
            &"active".into(),
            &"month".into(),
            &1.into()
        )
    );
    assert_eq!(a["stripe_subscription_id"], alice.as_str());
    assert_eq!(a["subject"]["user_id"], "alice");
    assert!(a["current_period_end"].is_string());
    assert_eq!(a["cancel_at_period_end"], false);
    let b = by_id(&bob_session);
    assert_eq!(
        (&b["kind"], &b["plan"], &b["status"], &b["interval"]),
        (
            &"purchase".into(),
            &"lifetime".into(),
            &"paid".into(),
            &"once".into()
        )
    );
    assert_eq!(b["stripe_checkout_session_id"], bob_session.as_str());
    assert!(b["stripe_payment_intent_id"]
        .as_str()
        .unwrap()
        .starts_with("pi_"));
    assert_eq!(b["amount"], 19900);
    // Newest first: created times never increase down the page.
    let created: Vec<&str> = rows
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(created, sorted);

    // Filters, alone and combined.
    assert_eq!(ids(&app, "?status=paid").await, vec![bob_session.clone()]);
    assert_eq!(ids(&app, "?plan=maker").await, vec![carol.clone()]);
    assert_eq!(ids(&app, "?user_id=alice").await, vec![alice.clone()]);
    assert_eq!(
        ids(&app, "?user_id=alice&status=canceled").await,
        Vec::<String>::new()
    );
    // Maker starts with a trial: carol's is `trialing`.
    assert_eq!(by_id(&carol)["status"], "trialing");
    assert_eq!(ids(&app, "?status=active").await, vec![alice.clone()]);
    assert_eq!(ids(&app, "?status=trialing").await, vec![carol.clone()]);

    // One at a time: every record once, in the full listing's order, even when a record is
    // added between pages.
    let all: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let (_, first) = list(&app, "?limit=1").await;
    let mut paged = vec![first["data"][0]["id"].as_str().unwrap().to_owned()];
    let mut cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let dave = app.subscribed("dave", "pro", "year").await;
    loop {
        let (status, page) = list(&app, &format!("?limit=1&cursor={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    // The records that were there are each listed once, in order; the new one is either
    // ahead of the cursor (not on these pages) or, created in the same second with a smaller
    // id, behind it (once).
    assert!(
        paged.iter().filter(|id| **id == dave).count() <= 1,
        "{paged:?}"
    );
    paged.retain(|id| *id != dave);
    assert_eq!(paged, all, "the pages continue where they stood");
    let fresh = ids(&app, "").await;
    assert_eq!(fresh.len(), 4);
    assert!(
        fresh.contains(&dave),
        "a fresh listing holds the new record"
    );
}

#[tokio::test]
async fn a_tenant_and_its_members_are_listed_by_tenant_and_a_user_by_their_memberships() {
    let app = spawn_app_with(Options {
        extra_toml: crate::tenants::TENANT_PLANS.into(),
        ..Options::default()
    })
    .await;
    let in_acme = |user: &str| {
        let mut claims = app.idp.claims(user);
        claims["tenant_id"] = serde_json::json!("acme");
        app.idp.token(&claims)
    };
    let checkout = |token: String, plan: &'static str, interval: &'static str| {
        let app = &app;
        async move {
            let res = app
                .checkout(
                    &token,
                    serde_json::json!({"plan": plan, "interval": interval}),
                )
                .await;
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            let session: Value = res.json().await.unwrap();
            let session_id = session["session_id"].as_str().unwrap().to_owned();
            let subscription = app.stripe.complete_checkout(&session_id);
            assert_eq!(app.verify(&token, &session_id).await.status(), 200);
            subscription.unwrap_or(session_id)
        }
    };
    // The tenant's plan (bought by alice), erin's seat in it, erin's own lifetime purchase.
    let team = checkout(in_acme("alice"), "pro", "month").await;
    let seat = checkout(in_acme("erin"), "maker", "month").await;
    let lifetime = checkout(app.user_token("erin"), "lifetime", "once").await;

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(ids(&app, "?user_id=erin").await),
        sorted(vec![seat.clone(), lifetime.clone()]),
        "her own and her membership's"
    );
    assert_eq!(
        sorted(ids(&app, "?tenant_id=acme").await),
        sorted(vec![team.clone(), seat.clone()]),
        "the tenant's and its members'"
    );
    assert_eq!(
        ids(&app, "?tenant_id=acme&user_id=erin").await,
        vec![seat.clone()]
    );
    assert_eq!(
        ids(&app, "?user_id=alice").await,
        Vec::<String>::new(),
        "alice manages, the tenant holds"
    );
    assert_eq!(ids(&app, "?tenant_id=globex").await, Vec::<String>::new());
    let (_, page) = list(&app, "?tenant_id=acme&user_id=erin").await;
    assert_eq!(page["data"][0]["subject"]["kind"], "membership");
    assert_eq!(page["data"][0]["subject"]["tenant_id"], "acme");
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_field_named() {
    let app = spawn_app().await;
    for (query, code) in [
        ("?status=bogus", "invalid_status"),
        ("?plan=%20", "invalid_plan"),
        ("?user_id=%20", "invalid_user_id"),
        ("?tenant_id=%00", "invalid_tenant_id"),
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?cursor=abc", "invalid_cursor"),
        ("?cursor=123:ch_1", "invalid_cursor"),
    ] {
        let (status, body) = list(&app, query).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let user = app.user_token("alice");
    assert_eq!(
        app.get("/v1/subscriptions", Some(&user)).await.status(),
        403
    );
    assert_eq!(app.get("/v1/subscriptions", None).await.status(), 401);
}

#[tokio::test]
async fn the_audit_trail_tells_support_what_changed_when_and_why() {
    let app = spawn_app().await;
    let sub = app.subscribed("fay", "pro", "month").await;
    app.stripe.update_subscription(&sub, |s| {
        s["cancel_at_period_end"] = serde_json::json!(true)
    });
    let updated = app.stripe.subscription(&sub);
    app.webhook_ok(&crate::helpers::event(
        "evt_fay_cancel",
        "customer.subscription.updated",
        updated,
    ))
    .await;
    app.subscribed("gil", "pro", "month").await;

    let admin = app.idp.service_token("billing:admin");
    let trail = |query: String| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let res = app.get(&format!("/v1/audit{query}"), Some(&admin)).await;
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (status, page) = trail("?user_id=fay".into()).await;
    assert_eq!(status, 200, "{page}");
    let rows = page["data"].as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["subject"]["user_id"] == "fay"),
        "{page:#}"
    );
    // Newest first: the cancellation, from the webhook, with what it changed.
    let canceling = rows
        .iter()
        .find(|r| r["entity_id"] == sub.as_str() && r["action"] == "updated")
        .expect("the update is in the trail");
    assert_eq!(canceling["entity"], "subscription");
    assert_eq!(
        canceling["changes"]["cancel_at_period_end"],
        serde_json::json!([false, true])
    );
    assert_eq!(
        canceling["source"],
        "event:evt_fay_cancel customer.subscription.updated"
    );
    let created = rows
        .iter()
        .find(|r| r["entity_id"] == sub.as_str() && r["action"] == "created")
        .expect("the creation is in the trail");
    assert!(created["recorded_at"].as_str() <= canceling["recorded_at"].as_str());
    let position = |r: &Value| rows.iter().position(|x| x == r).unwrap();
    assert!(position(canceling) < position(created), "newest first");

    // Paging through everyone's trail one row at a time lists each row once.
    let (_, everything) = trail("?limit=100".into()).await;
    let all: Vec<String> = everything["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(all.len() > rows.len(), "gil's rows too");
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let (status, page) = trail(query.clone()).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => query = format!("?limit=1&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, all);

    for (query, code) in [
        ("?user_id=%20", "invalid_user_id"),
        ("?limit=0", "invalid_limit"),
        ("?cursor=1:nope", "invalid_cursor"),
    ] {
        let (status, body) = trail(query.into()).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let reader = app.idp.service_token("billing:read");
    assert_eq!(app.get("/v1/audit", Some(&reader)).await.status(), 403);
}
