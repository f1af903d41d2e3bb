//! Grants (`POST/GET/DELETE /v1/grants`): a plan given without Stripe takes part in access
//! (reason `granted`), ends on time also while cached, is revoked on every replica, is audited,
//! and bad requests change nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

fn admin(app: &TestApp) -> String {
    app.idp.service_token("billing:admin")
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

async fn grant(app: &TestApp, body: Value) -> Value {
    let (status, out) = send(app, Method::POST, "/v1/grants", &admin(app), Some(body)).await;
    assert_eq!(status, 201, "{out}");
    out
}

/// `GET /v1/entitlements?feature=export` for `user` at the replica `base`.
async fn export(app: &TestApp, base: &str, user: &str) -> Value {
    let token = app.idp.service_token("billing:read");
    let (status, out) = app
        .send_to(
            base,
            Method::GET,
            &format!("/v1/entitlements?user_id={user}&feature=export"),
            &token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{out}");
    out
}

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[tokio::test]
async fn a_granted_plan_gives_access_shows_in_status_and_is_audited() {
    let app = spawn_app().await;
    assert_eq!(export(&app, &app.address, "tester").await["allowed"], false);

    let until = (Utc::now() + chrono::Duration::days(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let made = grant(
        &app,
        json!({"user_id": "tester", "plan": "pro", "until": until, "note": "  QA account  "}),
    )
    .await;
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("grant_") && id.len() == 38, "{id}");
    assert_eq!(made["user_id"], "tester");
    assert_eq!(made["tenant_id"], Value::Null);
    assert_eq!(made["plan"], "pro");
    assert_eq!(made["status"], "active");
    assert_eq!(made["note"], "QA account");
    assert_eq!(time(made["until"].as_str().unwrap()), time(&until));
    assert_eq!(made["revoked_at"], Value::Null);
    assert!(!made["created_by"].as_str().unwrap().is_empty());

    // The service's view and the user's own.
    let feature = export(&app, &app.address, "tester").await;
    assert_eq!(
        (&feature["allowed"], &feature["reason"], &feature["plan"]),
        (&json!(true), &json!("granted"), &json!("pro"))
    );
    let status = app.status(&app.user_token("tester")).await;
    assert_eq!(
        (&status["access"], &status["reason"]),
        (&json!(true), &json!("granted"))
    );
    assert_eq!(status["grant_id"], id.as_str());
    assert_eq!(time(status["grant_until"].as_str().unwrap()), time(&until));
    assert_eq!(status["subscription_id"], Value::Null);
    // The plan's quotas come with it.
    let credits = status["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == "credits")
        .unwrap();
    assert_eq!(credits["limit"], 100);
    // Another user has nothing.
    assert_eq!(
        export(&app, &app.address, "someone-else").await["allowed"],
        false
    );

    let id2 = id.clone();
    let audit: Vec<(String, String, String, String)> = app
        .db(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::audit_log::dsl::*;
            Ok(audit_log
                .filter(entity_id.eq(&id2))
                .select((subject, entity, action, source))
                .load(conn)?)
        })
        .await;
    assert_eq!(
        audit,
        vec![(
            "user:tester".into(),
            "grant".into(),
            "created".into(),
            "api:grants.create".into()
        )]
    );
}

#[tokio::test]
async fn a_grant_ends_on_time_even_while_its_snapshot_is_cached() {
    let app = spawn_app().await;
    let start = Utc::now();
    app.set_now(start);
    let until = start + chrono::Duration::hours(2);
    grant(
        &app,
        json!({"user_id": "trial-user", "plan": "pro", "until": until.to_rfc3339(), "note": "two hours"}),
    )
    .await;
    // Read twice: the second answer comes from the replica's cache on PostgreSQL.
    for _ in 0..2 {
        assert_eq!(
            export(&app, &app.address, "trial-user").await["reason"],
            "granted"
        );
    }
    app.set_now(until - chrono::Duration::seconds(1));
    assert_eq!(
        export(&app, &app.address, "trial-user").await["allowed"],
        true
    );
    app.set_now(until);
    let after = export(&app, &app.address, "trial-user").await;
    assert_eq!(
        (&after["allowed"], &after["reason"]),
        (&json!(false), &json!("free"))
    );
    let (status, listed) = send(
        &app,
        Method::GET,
        "/v1/grants?user_id=trial-user",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"][0]["status"], "ended");
}

#[tokio::test]
async fn revoking_a_grant_ends_access_on_every_replica_and_repeats_safely() {
    let app = spawn_app().await;
    let other = app.another_instance().await;
    let made = grant(
        &app,
        json!({"user_id": "comp-user", "plan": "lifetime", "note": "conference giveaway"}),
    )
    .await;
    let id = made["id"].as_str().unwrap();
    assert_eq!(made["until"], Value::Null);
    for base in [app.address.as_str(), other.as_str()] {
        assert_eq!(export(&app, base, "comp-user").await["reason"], "granted");
    }

    let path = format!("/v1/grants/{id}");
    let (status, revoked) = send(&app, Method::DELETE, &path, &admin(&app), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        export(&app, &app.address, "comp-user").await["allowed"],
        false
    );
    // The other replica learns of it from the database (PostgreSQL's notification drops its
    // cached snapshot; SQLite has no cache).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while export(&app, &other, "comp-user").await["allowed"] != false {
        assert!(
            std::time::Instant::now() < deadline,
            "the other replica still grants"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Again: the same answer, the first revocation stands, one audit row for it.
    let (status, again) = send(&app, Method::DELETE, &path, &admin(&app), None).await;
    assert_eq!(status, 200);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);
    let id2 = id.to_owned();
    let actions: Vec<String> = app
        .db(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::audit_log::dsl::*;
            Ok(audit_log
                .filter(entity_id.eq(&id2))
                .select(action)
                .order(recorded_at.asc())
                .load(conn)?)
        })
        .await;
    assert_eq!(actions, ["created", "updated"]);

    let (status, problem) = send(
        &app,
        Method::DELETE,
        "/v1/grants/grant_00000000000000000000000000000000",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("grant_not_found"))
    );
    let (status, problem) = send(
        &app,
        Method::DELETE,
        "/v1/grants/not-a-grant",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_grant_id"))
    );
}

#[tokio::test]
async fn bad_grants_are_refused_with_their_code_and_store_nothing() {
    let app = spawn_app().await;
    let past = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let cases = [
        (
            json!({"user_id": "u", "plan": "platinum", "note": "x"}),
            422,
            "unknown_plan",
        ),
        (
            json!({"user_id": "u", "plan": "free", "note": "x"}),
            422,
            "plan_not_grantable",
        ),
        (
            json!({"user_id": "u", "plan": "credits-10", "note": "x"}),
            422,
            "plan_not_grantable",
        ),
        (
            json!({"user_id": "u", "plan": "pro", "until": past, "note": "x"}),
            422,
            "until_not_in_future",
        ),
        (
            json!({"user_id": "u", "plan": "pro", "until": "next week", "note": "x"}),
            400,
            "invalid_body",
        ),
        (
            json!({"user_id": "u", "plan": "pro", "note": "   "}),
            400,
            "invalid_note",
        ),
        (
            json!({"user_id": "u", "plan": "pro", "note": "n".repeat(501)}),
            400,
            "invalid_note",
        ),
        (json!({"user_id": "u", "plan": "pro"}), 400, "invalid_body"),
        (json!({"plan": "pro", "note": "x"}), 422, "holder_mismatch"),
        (
            json!({"user_id": "u", "tenant_id": "t", "plan": "pro", "note": "x"}),
            422,
            "holder_mismatch",
        ),
        (
            json!({"user_id": "u\u{0}", "plan": "pro", "note": "x"}),
            400,
            "invalid_user_id",
        ),
        (
            json!({"user_id": "u", "plan": "pro", "note": "x", "extra": 1}),
            400,
            "invalid_body",
        ),
        (json!(["u", "pro"]), 400, "invalid_body"),
    ];
    for (body, expected, code) in cases {
        let (status, problem) = send(
            &app,
            Method::POST,
            "/v1/grants",
            &admin(&app),
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (expected, Some(code)),
            "{body}: {problem}"
        );
    }
    // Only the admin scope may give, list or revoke.
    let reader = app.idp.service_token("billing:read billing:write");
    let ok = json!({"user_id": "u", "plan": "pro", "note": "x"});
    let (status, _) = send(&app, Method::POST, "/v1/grants", &reader, Some(ok.clone())).await;
    assert_eq!(status, 403);
    let (status, _) = send(&app, Method::GET, "/v1/grants", &reader, None).await;
    assert_eq!(status, 403);
    let (status, _) = send(
        &app,
        Method::POST,
        "/v1/grants",
        &app.user_token("u"),
        Some(ok),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(app.count("grants").await, 0);
    assert_eq!(app.count("audit_log").await, 0);
    assert_eq!(export(&app, &app.address, "u").await["allowed"], false);
}

#[tokio::test]
async fn grants_list_newest_first_with_filters_and_a_cursor_that_survives_inserts() {
    let app = spawn_app().await;
    let t0 = Utc::now();
    let mut made = Vec::new();
    for i in 0..5 {
        // Distinct creation times, a second apart.
        app.set_now(t0 + chrono::Duration::seconds(i));
        let (user, plan) = if i % 2 == 0 {
            ("alice", "pro")
        } else {
            ("bob", "lifetime")
        };
        let g = grant(
            &app,
            json!({"user_id": user, "plan": plan, "note": format!("grant {i}")}),
        )
        .await;
        made.push(g["id"].as_str().unwrap().to_owned());
    }
    let token = admin(&app);
    let ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, first) = send(&app, Method::GET, "/v1/grants?limit=2", &token, None).await;
    assert_eq!(ids(&first), [made[4].clone(), made[3].clone()]);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // A grant made meanwhile neither shifts nor repeats the next page.
    app.set_now(t0 + chrono::Duration::seconds(10));
    grant(
        &app,
        json!({"user_id": "carol", "plan": "pro", "note": "late"}),
    )
    .await;
    let (_, second) = send(
        &app,
        Method::GET,
        &format!("/v1/grants?limit=2&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    assert_eq!(ids(&second), [made[2].clone(), made[1].clone()]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let (_, last) = send(
        &app,
        Method::GET,
        &format!("/v1/grants?limit=2&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    assert_eq!(ids(&last), [made[0].clone()]);
    assert_eq!(last["next_cursor"], Value::Null);

    // Filters combine.
    let (_, alice) = send(
        &app,
        Method::GET,
        "/v1/grants?user_id=alice&plan=pro",
        &token,
        None,
    )
    .await;
    assert_eq!(
        ids(&alice),
        [made[4].clone(), made[2].clone(), made[0].clone()]
    );
    let (_, bob_pro) = send(
        &app,
        Method::GET,
        "/v1/grants?user_id=bob&plan=pro",
        &token,
        None,
    )
    .await;
    assert_eq!(ids(&bob_pro), Vec::<String>::new());
    send(
        &app,
        Method::DELETE,
        &format!("/v1/grants/{}", made[1]),
        &token,
        None,
    )
    .await;
    let (_, revoked) = send(&app, Method::GET, "/v1/grants?status=revoked", &token, None).await;
    assert_eq!(ids(&revoked), [made[1].clone()]);
    let (_, active_bob) = send(
        &app,
        Method::GET,
        "/v1/grants?user_id=bob&status=active",
        &token,
        None,
    )
    .await;
    assert_eq!(ids(&active_bob), [made[3].clone()]);

    for (query, code) in [
        ("status=expired", "invalid_status"),
        ("plan=%20", "invalid_plan"),
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("cursor=abc", "invalid_cursor"),
        ("cursor=1:grant_xyz", "invalid_cursor"),
        ("user_id=%00", "invalid_user_id"),
        ("limit=two", "invalid_query"),
    ] {
        let (status, problem) = send(
            &app,
            Method::GET,
            &format!("/v1/grants?{query}"),
            &token,
            None,
        )
        .await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some(code)),
            "{query}: {problem}"
        );
    }
}

const TENANT_PLANS: &str = r#"
[[plans]]
id = "free"
name = "Free"
scope = "tenant"
features = []

[[plans]]
id = "team"
name = "Team"
rank = 10
scope = "tenant"
features = ["basic", "export"]
prices = [{ interval = "month", price_id = "price_team_monthly", amount = 900, currency = "usd" }]

[[plans]]
id = "seat"
name = "Seat"
rank = 5
scope = "membership"
features = ["basic"]
prices = [{ interval = "month", price_id = "price_seat_monthly", amount = 500, currency = "usd" }]
"#;

#[tokio::test]
async fn a_tenants_grant_is_shared_by_its_members_and_the_plans_scope_decides_the_holder() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra_toml: TENANT_PLANS.into(),
        ..Default::default()
    })
    .await;
    let (status, problem) = send(
        &app,
        Method::POST,
        "/v1/grants",
        &admin(&app),
        Some(json!({"user_id": "ann", "plan": "team", "note": "pilot"})),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("holder_mismatch"))
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("tenant_id"),
        "{problem}"
    );

    let made = grant(
        &app,
        json!({"tenant_id": "acme", "plan": "team", "note": "pilot"}),
    )
    .await;
    assert_eq!(
        (&made["tenant_id"], &made["user_id"]),
        (&json!("acme"), &Value::Null)
    );
    let token = app.idp.service_token("billing:read");
    for member in ["ann", "ben"] {
        let (status, out) = send(
            &app,
            Method::GET,
            &format!("/v1/entitlements?user_id={member}&tenant_id=acme&feature=export"),
            &token,
            None,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (&out["allowed"], &out["reason"], &out["granted_by"]),
            (&json!(true), &json!("granted"), &json!("tenant"))
        );
    }
    // Outside the tenant, nothing.
    let (_, out) = send(
        &app,
        Method::GET,
        "/v1/entitlements?user_id=ann&tenant_id=other&feature=export",
        &token,
        None,
    )
    .await;
    assert_eq!(out["allowed"], false);

    let seat = grant(
        &app,
        json!({"user_id": "ann", "tenant_id": "acme", "plan": "seat", "note": "seat"}),
    )
    .await;
    assert_eq!(
        (&seat["tenant_id"], &seat["user_id"]),
        (&json!("acme"), &json!("ann"))
    );
    let (_, listed) = send(
        &app,
        Method::GET,
        "/v1/grants?user_id=ann&tenant_id=acme",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["plan"], "seat");
}
