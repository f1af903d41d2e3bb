use serde_json::{json, Value};

use crate::helpers::{spawn_app, without_source};

#[tokio::test]
async fn a_service_with_the_read_scope_sees_what_the_user_sees() {
    let app = spawn_app().await;
    let (_, user_status) = app.subscribe("user-1", "pro", "year").await;
    let service = app.idp.service_token("openid billing:read");
    let res = app
        .get("/v1/entitlements?user_id=user-1", Some(&service))
        .await;
    assert_eq!(res.status(), 200);
    let entitlements: Value = res.json().await.unwrap();
    assert_eq!(
        without_source(entitlements.clone()),
        without_source(user_status)
    );
    assert_eq!(entitlements["plan"], "pro");
    assert_eq!(entitlements["interval"], "year");

    let res = app
        .get("/v1/entitlements?user_id=nobody", Some(&service))
        .await;
    let nobody: Value = res.json().await.unwrap();
    assert_eq!(
        (nobody["access"].as_bool(), nobody["reason"].as_str()),
        (Some(false), Some("free"))
    );
}

#[tokio::test]
async fn one_feature_answers_allowed_and_reason() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "month").await;
    let service = app.idp.service_token("billing:read");
    let ask =
        |user: &str, feature: &str| format!("/v1/entitlements?user_id={user}&feature={feature}");
    let cases = [
        (
            "user-1",
            "export",
            json!({"feature": "export", "allowed": true, "reason": "active", "plan": "pro", "granted_by": "user"}),
        ),
        (
            "user-1",
            "lifetime",
            json!({"feature": "lifetime", "allowed": false, "reason": "not_in_plan", "plan": "pro", "granted_by": "user"}),
        ),
        (
            "user-2",
            "export",
            json!({"feature": "export", "allowed": false, "reason": "free", "plan": "free", "granted_by": "user"}),
        ),
        (
            "user-2",
            "basic",
            json!({"feature": "basic", "allowed": true, "reason": "free", "plan": "free", "granted_by": "user"}),
        ),
    ];
    for (user, feature, expected) in cases {
        let mut body: Value = app
            .get(&ask(user, feature), Some(&service))
            .await
            .json()
            .await
            .unwrap();
        // Freshness: user-1 was synced by the verify; user-2 never was.
        let as_of = body.as_object_mut().unwrap().remove("as_of").unwrap();
        assert_eq!(as_of.is_string(), user == "user-1", "{user}: {as_of}");
        let served = body.as_object_mut().unwrap().remove("served_from").unwrap();
        assert!(served == "cache" || served == "database", "{served}");
        assert_eq!(body, expected, "{user} {feature}");
    }
}

#[tokio::test]
async fn a_feature_no_plan_declares_answers_unknown_feature_instead_of_a_quiet_no() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "month").await;
    let service = app.idp.service_token("billing:read");
    for user in ["user-1", "user-2"] {
        let body: Value = app
            .get(
                &format!("/v1/entitlements?user_id={user}&feature=exprot"),
                Some(&service),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (&body["feature"], &body["allowed"], &body["reason"]),
            (&json!("exprot"), &json!(false), &json!("unknown_feature")),
            "{user}: {body}"
        );
    }
    // The correctly spelt feature is still judged on what the user holds.
    let body: Value = app
        .get(
            "/v1/entitlements?user_id=user-1&feature=export",
            Some(&service),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["reason"], "active");
}

#[tokio::test]
async fn scopes_may_come_as_a_list_claim() {
    let app = spawn_app().await;
    let mut claims = app.idp.claims("svc");
    claims["scope"] = json!(["billing:read"]);
    let res = app
        .get(
            "/v1/entitlements?user_id=user-1",
            Some(&app.idp.token(&claims)),
        )
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn without_the_scope_it_is_403_and_without_a_token_401() {
    let app = spawn_app().await;
    let user = app.user_token("user-1");
    let res = app
        .get("/v1/entitlements?user_id=user-1", Some(&user))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "missing_scope");
    let write_only = app.idp.service_token("billing:write");
    assert_eq!(
        app.get("/v1/entitlements?user_id=user-1", Some(&write_only))
            .await
            .status(),
        403
    );
    assert_eq!(
        app.get("/v1/entitlements?user_id=user-1", None)
            .await
            .status(),
        401
    );
    let service = app.idp.service_token("billing:read");
    let res = app.get("/v1/entitlements", Some(&service)).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "invalid_query");
}

#[tokio::test]
async fn snapshots_in_the_older_format_are_read_and_rewritten_when_a_replica_starts() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "year").await;
    let token = app.user_token("user-1");
    let current = app.status(&token).await;
    // Version 0 held copies of the table rows, as written before the facts format.
    let versions = || {
        app.db(|conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::subject_snapshots::dsl::*;
            Ok(subject_snapshots.select(facts_version).load::<i32>(conn)?)
        })
    };
    app.db(|conn| {
        use diesel::prelude::*;
        use tollgate::db::schema::subject_snapshots::dsl::*;
        let rows = tollgate::db::state::load(conn, "user:user-1")?;
        diesel::update(subject_snapshots.find("user:user-1"))
            .set((state.eq(serde_json::to_string(&rows)?), facts_version.eq(0)))
            .execute(conn)?;
        Ok(())
    })
    .await;
    assert_eq!(versions().await, [0]);
    let current = without_source(current);
    assert_eq!(
        without_source(app.status(&token).await),
        current,
        "read as before"
    );

    let replica = app.another_instance().await;
    assert_eq!(versions().await, [tollgate::db::snapshots::FACTS_VERSION]);
    assert_eq!(without_source(app.status(&token).await), current);
    let res = reqwest::Client::new()
        .get(format!("{replica}/v1/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(without_source(res.json::<Value>().await.unwrap()), current);
}

#[tokio::test]
async fn subjects_without_a_snapshot_are_filled_in_from_their_tables_after_migrating() {
    let app = spawn_app().await;
    app.subscribe("user-1", "pro", "month").await;
    let token = app.user_token("user-1");
    // Billing state written before snapshots existed (or by another tool) has no snapshot row.
    app.db(|conn| {
        use diesel::RunQueryDsl;
        diesel::sql_query("DELETE FROM subject_snapshots").execute(conn)?;
        Ok(())
    })
    .await;
    assert_eq!(app.status(&token).await["reason"], "free");

    let filled = app
        .db(|conn| tollgate::db::snapshots::backfill(conn, chrono::Utc::now()))
        .await;
    assert_eq!(filled, 1);
    let status = app.status(&token).await;
    assert_eq!(
        (status["reason"].as_str(), status["plan"].as_str()),
        (Some("active"), Some("pro"))
    );
    assert_eq!(
        app.db(|conn| tollgate::db::snapshots::backfill(conn, chrono::Utc::now()))
            .await,
        0,
        "nothing left to fill"
    );
}

const SCOPED_PLANS: &str = r#"
[[plans]]
id = "free"
name = "Free"
scope = "tenant"
features = []

[[plans]]
id = "solo"
name = "Solo"
rank = 3
scope = "user"
features = ["basic"]
prices = [{ interval = "month", price_id = "price_solo_monthly", amount = 300, currency = "usd" }]

[[plans]]
id = "seat"
name = "Seat"
rank = 5
scope = "membership"
features = ["basic", "maker"]
prices = [{ interval = "month", price_id = "price_seat_monthly", amount = 500, currency = "usd" }]

[[plans]]
id = "team"
name = "Team"
rank = 10
scope = "tenant"
features = ["basic", "export"]
prices = [{ interval = "month", price_id = "price_team_monthly", amount = 900, currency = "usd" }]
"#;

async fn explain(app: &crate::helpers::TestApp, query: &str) -> Value {
    let token = app.idp.service_token("billing:read");
    let res = app
        .get(&format!("/v1/entitlements/explain?{query}"), Some(&token))
        .await;
    assert_eq!(res.status(), 200, "{query}");
    res.json().await.unwrap()
}

#[tokio::test]
async fn explain_shows_a_tenant_members_three_grants_the_one_that_stands_and_when_it_ends() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        extra_toml: SCOPED_PLANS.into(),
        ..Default::default()
    })
    .await;
    let admin = app.idp.service_token("billing:admin");
    let now = chrono::Utc::now();
    let days = |n: i64| (now + chrono::Duration::days(n)).to_rfc3339();
    let mut ids = Vec::new();
    for body in [
        json!({"user_id": "ann", "plan": "solo", "until": days(10), "note": "user"}),
        json!({"user_id": "ann", "tenant_id": "acme", "plan": "seat", "until": days(20), "note": "seat"}),
        json!({"tenant_id": "acme", "plan": "team", "until": days(5), "note": "team"}),
    ] {
        let res = app.post_json("/v1/grants", Some(&admin), &body).await;
        assert_eq!(res.status(), 201);
        let made: Value = res.json().await.unwrap();
        ids.push(made["id"].as_str().unwrap().to_owned());
    }

    let e = explain(&app, "user_id=ann&tenant_id=acme&feature=export").await;
    assert_eq!(e["saas"], true);
    let keys: Vec<&str> = e["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["user:ann", "membership:acme:ann", "tenant:acme"]);
    for (subject, (id, plan)) in e["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .zip(ids.iter().zip(["solo", "seat", "team"]))
    {
        let sources = subject["sources"].as_array().unwrap();
        assert_eq!(sources.len(), 1, "{subject}");
        assert_eq!(sources[0]["kind"], "grant");
        assert_eq!(sources[0]["id"], id.as_str());
        assert_eq!(sources[0]["plan"], plan);
        assert_eq!(sources[0]["grants_access"], true);
        assert_eq!(sources[0]["reason"], "granted");
        assert_eq!(subject["verdict"]["plan"], plan);
        assert_eq!(subject["decided_by"], id.as_str());
    }
    assert_eq!(
        e["subjects"][0]["exemption"],
        json!({"listed": false, "role": false})
    );
    assert!(e["subjects"][1]["exemption"].is_null());
    assert_eq!(e["standing"], "tenant:acme");
    assert!(
        e["why"].as_str().unwrap().contains("`team`"),
        "{}",
        e["why"]
    );
    assert_eq!(
        (
            &e["answer"]["plan"],
            &e["answer"]["granted_by"],
            &e["answer"]["allowed"],
            &e["answer"]["feature_reason"]
        ),
        (
            &json!("team"),
            &json!("tenant"),
            &json!(true),
            &json!("granted")
        )
    );
    // The tenant's grant ends first: then the seat stands, without export.
    let upcoming: Vec<(&str, &str)> = e["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["what"].as_str().unwrap(), u["of"].as_str().unwrap()))
        .collect();
    assert_eq!(
        upcoming,
        [
            ("grant_end", ids[2].as_str()),
            ("grant_end", ids[0].as_str()),
            ("grant_end", ids[1].as_str())
        ]
    );
    assert_eq!(e["next_change_at"], e["upcoming"][0]["at"]);

    app.set_now(now + chrono::Duration::days(6));
    let later = explain(&app, "user_id=ann&tenant_id=acme&feature=export").await;
    assert_eq!(later["standing"], "membership:acme:ann");
    assert_eq!(later["subjects"][2]["sources"][0]["status"], "ended");
    assert_eq!(
        (
            &later["answer"]["allowed"],
            &later["answer"]["feature_reason"]
        ),
        (&json!(false), &json!("not_in_plan"))
    );
    // What the feature check itself answers agrees.
    let token = app.idp.service_token("billing:read");
    let check: Value = app
        .get(
            "/v1/entitlements?user_id=ann&tenant_id=acme&feature=export",
            Some(&token),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&check["allowed"], &check["reason"], &check["granted_by"]),
        (&json!(false), &json!("not_in_plan"), &json!("membership"))
    );

    // Bad input is a 400; without the read scope, 403.
    let res = app
        .get("/v1/entitlements/explain?user_id=", Some(&token))
        .await;
    assert_eq!(res.status(), 400);
    let user = app.user_token("ann");
    let res = app
        .get("/v1/entitlements/explain?user_id=ann", Some(&user))
        .await;
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn explain_shows_subscriptions_and_purchases_with_their_own_verdicts() {
    let app = spawn_app().await;
    let (session_id, _) = app.subscribe("carol", "lifetime", "once").await;
    let e = explain(&app, "user_id=carol&feature=export").await;
    let sources = e["subjects"][0]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(
        (
            &sources[0]["kind"],
            &sources[0]["id"],
            &sources[0]["status"]
        ),
        (&json!("purchase"), &json!(session_id), &json!("paid"))
    );
    assert_eq!(e["subjects"][0]["decided_by"], session_id.as_str());
    assert_eq!(e["answer"]["reason"], "lifetime");
    assert!(
        e["next_change_at"].is_string(),
        "its daily credits reset: {e}"
    );
}

#[tokio::test]
async fn answers_say_as_of_when_their_facts_were_synced_and_where_they_were_read() {
    let app = spawn_app().await;
    let token = app.idp.service_token("billing:read");
    let nobody: Value = app
        .get("/v1/entitlements?user_id=dave", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert!(nobody["as_of"].is_null(), "never synced: {nobody}");

    let t0 = chrono::Utc::now();
    app.set_now(t0);
    let (_, status) = app.subscribe("dave", "pro", "month").await;
    let first = status["as_of"]
        .as_str()
        .expect("synced by the verify")
        .to_owned();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&first)
            .unwrap()
            .timestamp(),
        t0.timestamp()
    );

    // An hour later a webhook re-reads the customer: nothing changed, but the facts are
    // confirmed as of then.
    let later = t0 + chrono::Duration::hours(1);
    app.set_now(later);
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
    let sub = app.stripe.subscription(&sub_id);
    app.webhook_ok(&crate::helpers::event(
        "evt_again",
        "customer.subscription.updated",
        sub,
    ))
    .await;
    let status = app.status(&app.user_token("dave")).await;
    let second = status["as_of"].as_str().unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(second)
            .unwrap()
            .timestamp(),
        later.timestamp(),
        "as_of moved with the sync"
    );
    assert_eq!(status["served_from"], "database");

    // A feature check is served from the replica's cache once it holds the subject
    // (PostgreSQL, whose notifications keep the cache fresh); SQLite reads the database.
    let mut served = Vec::new();
    for _ in 0..50 {
        let check: Value = app
            .get("/v1/entitlements?user_id=dave&feature=pro", Some(&token))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(check["as_of"].as_str(), Some(second));
        served.push(check["served_from"].as_str().unwrap().to_owned());
        if !app.uses_postgres() || served.last().unwrap() == "cache" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let expected = if app.uses_postgres() {
        "cache"
    } else {
        "database"
    };
    assert_eq!(
        served.last().map(String::as_str),
        Some(expected),
        "{served:?}"
    );
}
