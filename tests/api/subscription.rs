use serde_json::{json, Value};

use crate::helpers::{event, spawn_app};

#[tokio::test]
async fn cancel_then_resume_round_trips_through_stripe() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
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
async fn a_paused_subscription_is_resumed() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
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
async fn change_moves_to_the_new_price_with_proration() {
    let app = spawn_app().await;
    let (_, status) = app.subscribe("user-1", "maker", "month").await;
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
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
    assert_eq!(update.form["proration_behavior"], "create_prorations");

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
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
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
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    let sub_id = status["subscription_id"].as_str().unwrap().to_owned();
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
