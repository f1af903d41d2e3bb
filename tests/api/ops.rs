use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with, Options};

#[tokio::test]
async fn health_readiness_config_and_docs_answer() {
    let app = spawn_app().await;
    for path in [
        "/healthz",
        "/readyz",
        "/v1/config",
        "/openapi.json",
        "/docs/",
    ] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        let id = res
            .headers()
            .get("x-request-id")
            .expect("every response names its request id");
        assert_eq!(id.to_str().unwrap().len(), 36, "{path}: a UUID");
    }
}

#[tokio::test]
async fn config_shows_plans_and_publishable_key_but_no_secret() {
    let app = spawn_app().await;
    let res = app.get("/v1/config", None).await;
    assert_eq!(res.headers()["cache-control"], "public, max-age=300");
    let body = res.text().await.unwrap();
    assert!(!body.contains("sk_test"), "secret key leaked: {body}");
    assert!(!body.contains("whsec_"), "webhook secret leaked: {body}");
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["publishable_key"], "pk_test_tollgate");
    assert_eq!(config["saas"], true);
    assert_eq!(config["free_plan"], "free");
    let ids: Vec<&str> = config["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "free",
            "pro",
            "maker",
            "starter",
            "lifetime",
            "credits-10",
            "legacy"
        ]
    );
    let pro = &config["plans"][1];
    assert_eq!(
        pro["prices"][0],
        serde_json::json!({"interval": "month", "price_id": "price_pro_monthly", "amount": 900, "currency": "usd"})
    );
    assert_eq!(config["plans"][2]["trial_days"], 3);
    assert_eq!(config["plans"][4]["kind"], "lifetime");
    assert_eq!(config["plans"][5]["kind"], "credit_pack");
    assert_eq!(
        pro["quotas"]["generations"],
        serde_json::json!({"limit": 5, "period": "billing_period"})
    );
}

#[tokio::test]
async fn without_stripe_keys_a_plan_the_catalog_lacks_is_still_the_callers_422() {
    let app = spawn_app_with(Options {
        stripe_configured: false,
        ..Default::default()
    })
    .await;
    let token = app.user_token("u1");
    for (path, body, code) in [
        (
            "/v1/checkout",
            serde_json::json!({"plan": "platinum", "interval": "month"}),
            "unknown_plan",
        ),
        (
            "/v1/checkout",
            serde_json::json!({"plan": "lifetime", "interval": "month"}),
            "unknown_interval",
        ),
        (
            "/v1/subscription/change",
            serde_json::json!({"plan": "platinum", "interval": "month"}),
            "unknown_plan",
        ),
    ] {
        let res = app.post_json(path, Some(&token), &body).await;
        assert_eq!(res.status(), 422, "{path} {body}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            code,
            "{path} {body}"
        );
    }
    // A plan the catalog has still needs Stripe.
    let res = app
        .checkout(
            &token,
            serde_json::json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "stripe_not_configured"
    );
}

#[tokio::test]
async fn without_stripe_keys_stripe_endpoints_answer_503_and_the_rest_works() {
    let app = spawn_app_with(Options {
        stripe_configured: false,
        ..Default::default()
    })
    .await;
    let token = app.user_token("u1");
    let res = app
        .checkout(
            &token,
            serde_json::json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "stripe_not_configured");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("STRIPE_SECRET_KEY"));

    for res in [
        app.post_json("/v1/portal", Some(&token), &serde_json::json!({}))
            .await,
        app.verify(&token, "cs_test_1").await,
        app.webhook(&crate::helpers::event(
            "evt_1",
            "invoice.paid",
            serde_json::json!({"id": "in_1", "customer": "cus_1"}),
        ))
        .await,
    ] {
        assert_eq!(res.status(), 503);
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "stripe_not_configured"
        );
    }
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(false), Some("free"))
    );
    let config: Value = app.get("/v1/config", None).await.json().await.unwrap();
    assert_eq!(config["stripe_configured"], false);
}

#[tokio::test]
async fn unknown_paths_and_bad_bodies_are_problem_documents() {
    let app = spawn_app().await;
    let res = app.get("/v1/nope", None).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "not_found");

    let token = app.user_token("u1");
    let res = app
        .http
        .post(app.url("/v1/checkout"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "invalid_body");

    let res = app
        .checkout(&token, serde_json::json!({"plan": 7, "interval": "month"}))
        .await;
    assert_eq!(res.status(), 400);
    let res = app
        .checkout(
            &token,
            serde_json::json!({"plan": "pro", "interval": "weekly"}),
        )
        .await;
    assert_eq!(res.status(), 400);

    let huge = serde_json::json!({"plan": "x".repeat(300_000), "interval": "month"});
    let res = app.checkout(&token, huge).await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "body_too_large");

    let res = app.get("/v1/checkout/verify", Some(&token)).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "invalid_query");
    assert_eq!(
        app.stripe.received().len(),
        0,
        "bad input must not reach Stripe"
    );
}

#[tokio::test]
async fn served_openapi_document_equals_the_committed_one() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(path).expect("openapi/openapi.json is committed"),
    )
    .expect("openapi/openapi.json is JSON");
    assert!(
        served == committed,
        "openapi/openapi.json is out of date: regenerate it with `cargo run -- openapi > openapi/openapi.json`"
    );
    for path in [
        "/v1/config",
        "/v1/checkout",
        "/v1/checkout/verify",
        "/v1/portal",
        "/v1/status",
        "/v1/entitlements",
        "/v1/webhooks/stripe",
        "/v1/subscription/cancel",
        "/v1/subscription/resume",
        "/v1/subscription/change",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            served["paths"].get(path).is_some(),
            "{path} is not documented"
        );
    }
}

#[tokio::test]
async fn every_response_is_described_and_every_problem_names_its_codes() {
    let app = spawn_app().await;
    let served: Value = app.get("/openapi.json", None).await.json().await.unwrap();
    let mut problems = 0;
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    !description.is_empty(),
                    "{method} {path} {status} has no description"
                );
                if response["content"]
                    .get("application/problem+json")
                    .is_some()
                {
                    problems += 1;
                    // A code is written as `snake_case` in the description.
                    let names_a_code = description.split('`').skip(1).step_by(2).any(|code| {
                        !code.is_empty()
                            && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    });
                    assert!(
                        names_a_code,
                        "{method} {path} {status}: the description names no `code`: {description}"
                    );
                }
            }
        }
    }
    assert!(
        problems > 50,
        "only {problems} problem responses documented"
    );
}

#[tokio::test]
async fn with_saas_off_nothing_asks_stripe() {
    let app = spawn_app_with(Options {
        saas: false,
        ..Default::default()
    })
    .await;
    let token = app.user_token("u1");
    let res = app
        .checkout(
            &token,
            serde_json::json!({"plan": "pro", "interval": "month"}),
        )
        .await;
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "billing_disabled"
    );
    let res = app
        .post_json("/v1/portal", Some(&token), &serde_json::json!({}))
        .await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "billing_disabled"
    );
    // Webhooks are still checked, stored and acknowledged, so Stripe keeps the endpoint.
    let e = crate::helpers::event(
        "evt_off",
        "invoice.paid",
        serde_json::json!({"id": "in_1", "object": "invoice", "customer": "cus_1"}),
    );
    let res = app.webhook(&e).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["duplicate"], false);
    assert_eq!(
        app.webhook(&e).await.json::<Value>().await.unwrap()["duplicate"],
        true
    );
    assert_eq!(
        app.send_webhook(&e, "whsec_forged", None).await.status(),
        400
    );
    assert_eq!(app.count("stripe_events").await, 1);
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn an_oversized_webhook_body_is_a_problem_document() {
    let app = spawn_app().await;
    let res = app
        .http
        .post(app.url("/v1/webhooks/stripe"))
        .header("Stripe-Signature", "t=1,v1=00")
        .body(vec![b' '; 300_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "body_too_large");
    let res = app
        .http
        .delete(app.url("/v1/checkout"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}
