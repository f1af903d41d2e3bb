use serde_json::{json, Value};

use crate::helpers::spawn_app;

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
    assert_eq!(entitlements, user_status);
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
        let body: Value = app
            .get(&ask(user, feature), Some(&service))
            .await
            .json()
            .await
            .unwrap();
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
    assert_eq!(app.status(&token).await, current, "read as before");

    let replica = app.another_instance().await;
    assert_eq!(versions().await, [tollgate::db::snapshots::FACTS_VERSION]);
    assert_eq!(app.status(&token).await, current);
    let res = reqwest::Client::new()
        .get(format!("{replica}/v1/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), current);
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
