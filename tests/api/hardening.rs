//! What an attacker or a careless integrator sends: tokens that leave out `aud` or `iss`, ids
//! that try to steer Tollgate's own requests to Stripe, bytes the database cannot store, an
//! identity provider that fails or hangs, concurrent copies of one event, removals of tenants
//! never seen, wrong methods and oversized bodies. Each answer is a 4xx problem with a stable
//! code (never a 500), and nothing is stored or sent to Stripe.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, spawn_app_with, Options, TestApp};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app.http.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

/// What the database holds that a refused request could have written.
async fn stored(app: &TestApp) -> [i64; 4] {
    [
        app.count("stripe_events").await,
        app.count("customers").await,
        app.count("usage_ledger").await,
        app.count("audit_log").await,
    ]
}

#[tokio::test]
async fn tokens_without_aud_or_iss_are_refused() {
    let app = spawn_app().await;
    for (claim, expected) in [
        ("aud", "token_wrong_audience"),
        ("iss", "token_wrong_issuer"),
    ] {
        let mut claims = app.idp.claims("user-1");
        claims.as_object_mut().unwrap().remove(claim);
        let token = app.idp.token(&claims);
        let (status, body) = send(&app, Method::GET, "/v1/status", Some(&token), None).await;
        assert_eq!(
            (status, code(&body)),
            (401, expected),
            "without {claim}: {body}"
        );
    }
    // The same token with both is accepted.
    let token = app.user_token("user-1");
    assert_eq!(
        send(&app, Method::GET, "/v1/status", Some(&token), None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn ids_that_would_steer_requests_to_stripe_are_refused_before_anything_is_sent() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    for session in [
        "cs_x%3Fexpand%5B%5D%3Dcustomer",
        "cs_x%2F..%2F..%2Fcustomers",
        "cs_x%23fragment",
        "cs_x%00",
        "..%2Fcustomers",
        "cs_",
    ] {
        let path = format!("/v1/checkout/verify?session_id={session}");
        let (status, body) = send(&app, Method::GET, &path, Some(&token), None).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_session_id"),
            "{session}: {body}"
        );
    }
    // Signed webhooks naming a path instead of an id.
    let injections = [
        event(
            "evt_inject_1",
            "invoice.paid",
            json!({"id": "in_1", "object": "invoice", "customer": "../../v1/charges"}),
        ),
        event(
            "evt_inject_2",
            "customer.subscription.updated",
            json!({"id": "sub_1", "object": "subscription", "customer": "cus_1?expand[]=x"}),
        ),
        event(
            "evt_inject_3",
            "charge.dispute.created",
            json!({"id": "du_1", "object": "dispute", "charge": "ch_1/../../customers", "payment_intent": "pi_1"}),
        ),
        event(
            "evt_inject_4",
            "checkout.session.completed",
            json!({"id": "cs_1/../../../v1/customers", "object": "checkout.session", "customer": "cus_1"}),
        ),
        event(
            "evt_inject_5",
            "charge.refunded",
            json!({"id": "ch_1%2F..", "object": "charge", "customer": "cus_1"}),
        ),
    ];
    for e in &injections {
        let res = app.webhook(e).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_payload"),
            "{}: {body}",
            e["id"]
        );
    }
    let received = app.stripe.server.received_requests().await.unwrap();
    assert!(
        received.is_empty(),
        "nothing may reach Stripe: {:?}",
        received
            .iter()
            .map(|r| r.url.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
}

#[tokio::test]
async fn ids_the_database_cannot_store_are_400_with_their_own_code_and_change_nothing() {
    let app = spawn_app().await;
    let user = app.user_token("user-1");
    let read = app.idp.service_token("billing:read");
    let write = app.idp.service_token("billing:write");
    let admin = app.idp.service_token("billing:admin");
    let long = "x".repeat(256);
    let cases: Vec<(Method, String, &str, Option<Value>, &str)> = vec![
        (
            Method::GET,
            "/v1/entitlements?user_id=a%00b".into(),
            &read,
            None,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/entitlements?user_id=%0A".into(),
            &read,
            None,
            "invalid_user_id",
        ),
        (
            Method::GET,
            format!("/v1/entitlements?user_id={long}"),
            &read,
            None,
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/entitlements?user_id=u1&tenant_id=t%00".into(),
            &read,
            None,
            "invalid_tenant_id",
        ),
        (
            Method::GET,
            "/v1/entitlements?user_id=u1&tenant_id=t%1B%5B31m".into(),
            &read,
            None,
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/v1/usage".into(),
            &write,
            Some(
                json!({"user_id": "u\u{0}1", "quota": "credits", "amount": 1, "idempotency_key": "k1"}),
            ),
            "invalid_user_id",
        ),
        (
            Method::POST,
            "/v1/usage".into(),
            &write,
            Some(
                json!({"user_id": "u1", "tenant_id": "t\u{0}", "quota": "credits", "amount": 1, "idempotency_key": "k2"}),
            ),
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/v1/usage".into(),
            &write,
            Some(
                json!({"user_id": "u1", "quota": "credits", "amount": 1, "idempotency_key": "k\u{0}"}),
            ),
            "invalid_idempotency_key",
        ),
        (
            Method::DELETE,
            "/v1/tenants/t%00".into(),
            &admin,
            None,
            "invalid_tenant_id",
        ),
        (
            Method::DELETE,
            "/v1/tenants/t1/members/u%00".into(),
            &admin,
            None,
            "invalid_user_id",
        ),
        (
            Method::PUT,
            "/v1/tenants/t%0D/manager".into(),
            &admin,
            Some(json!({"user_id": "u1"})),
            "invalid_tenant_id",
        ),
        (
            Method::PUT,
            "/v1/tenants/t1/manager".into(),
            &admin,
            Some(json!({"user_id": "u\u{0}"})),
            "invalid_user_id",
        ),
        (
            Method::POST,
            "/v1/admin/sync".into(),
            &admin,
            Some(json!({"user_id": "u\u{0}"})),
            "invalid_user_id",
        ),
        (
            Method::POST,
            "/v1/admin/sync".into(),
            &admin,
            Some(json!({"user_id": " "})),
            "invalid_user_id",
        ),
        (
            Method::GET,
            "/v1/status?tenant_id=%00".into(),
            &user,
            None,
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/v1/checkout".into(),
            &user,
            Some(json!({"plan": "pro", "interval": "month", "tenant_id": "t\u{0}"})),
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/v1/portal".into(),
            &user,
            Some(json!({"tenant_id": "t\u{7f}"})),
            "invalid_tenant_id",
        ),
        (
            Method::POST,
            "/v1/subscription/cancel?tenant_id=%00".into(),
            &user,
            None,
            "invalid_tenant_id",
        ),
        (
            Method::GET,
            "/v1/payments?cursor=1700000000:ch_1%00".into(),
            &user,
            None,
            "invalid_cursor",
        ),
        (
            Method::GET,
            "/v1/payments?cursor=-99999999999999:ch_1".into(),
            &user,
            None,
            "invalid_cursor",
        ),
        (
            Method::GET,
            "/v1/payments?cursor=9999999999999:ch_1".into(),
            &user,
            None,
            "invalid_cursor",
        ),
        (
            Method::GET,
            "/v1/payments?cursor=1700000000:..%2F..".into(),
            &user,
            None,
            "invalid_cursor",
        ),
    ];
    for (method, path, token, body, expected) in cases {
        let (status, answer) = send(&app, method.clone(), &path, Some(token), body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, expected),
            "{method} {path} {body:?}: {answer}"
        );
    }
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn token_claims_the_database_cannot_store_are_401() {
    let app = spawn_app().await;
    let mut cases = Vec::new();
    for sub in ["user\u{0}1", "\n", &"x".repeat(256)] {
        let mut claims = app.idp.claims("user-1");
        claims["sub"] = json!(sub);
        cases.push(claims);
    }
    for tenant in [json!("t\u{0}"), json!(["t1", "t\u{1}"])] {
        let mut claims = app.idp.claims("user-1");
        claims["tenant_id"] = tenant;
        cases.push(claims);
    }
    let mut claims = app.idp.claims("user-1");
    claims["email"] = json!("a\u{0}@example.com");
    cases.push(claims);
    for claims in cases {
        let token = app.idp.token(&claims);
        let (status, body) = send(&app, Method::GET, "/v1/status", Some(&token), None).await;
        assert_eq!(
            (status, code(&body)),
            (401, "invalid_token"),
            "{claims}: {body}"
        );
        let (status, _) = send(
            &app,
            Method::POST,
            "/v1/checkout",
            Some(&token),
            Some(json!({"plan": "pro", "interval": "month"})),
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn signed_webhooks_whose_fields_cannot_be_stored_are_400_and_not_retried() {
    let app = spawn_app().await;
    let object = json!({"id": "in_1", "object": "invoice", "customer": "cus_1"});
    let mut cases = vec![
        event("evt_ok\u{0}", "invoice.created", object.clone()),
        event("evt_ok", "invoice.created\u{0}", object.clone()),
        event(
            &format!("evt_{}", "a".repeat(300)),
            "invoice.created",
            object.clone(),
        ),
        event(
            "evt_ok",
            "invoice.created",
            json!({"id": "in_1", "object": "invoice", "customer": "cus_\u{0}"}),
        ),
    ];
    for created in [
        json!(-62_135_596_800_i64),
        json!(253_402_300_800_i64),
        json!(i64::MAX),
        json!("yesterday"),
    ] {
        let mut e = event("evt_time", "invoice.created", object.clone());
        e["created"] = created;
        cases.push(e);
    }
    for e in &cases {
        let res = app.webhook(e).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_payload"),
            "{e}: {body}"
        );
    }
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_webhook_rejections_total{code=\"invalid_payload\"}")),
        "rejections are counted"
    );
    // A well-formed event still goes through.
    let ok = app
        .webhook_ok(&event("evt_fine", "invoice.created", object))
        .await;
    assert_eq!(ok["duplicate"], false);
}

#[tokio::test]
async fn concurrent_copies_of_a_record_only_event_are_processed_once() {
    let app = spawn_app().await;
    let second = app.another_instance().await;
    // A type of its own, so that this test alone moves its metric.
    let copy = event(
        "evt_race_1",
        "test.hardening_record_only",
        json!({"id": "obj_1", "object": "thing"}),
    );
    let sends = (0..12).map(|i| {
        let (app, copy) = (&app, &copy);
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            second.clone()
        };
        async move { app.webhook_to(&base, copy).await }
    });
    let answers = futures::future::join_all(sends).await;
    let mut first = 0;
    for res in answers {
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        if body["duplicate"] == false {
            first += 1;
        }
    }
    assert_eq!(first, 1, "exactly one copy is the first processing");
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let processed = metrics
        .lines()
        .find(|l| l.contains("test.hardening_record_only") && l.contains("outcome=\"processed\""))
        .expect("the event is counted");
    assert!(processed.ends_with(" 1"), "{processed}");
}

#[tokio::test]
async fn removing_a_tenant_never_seen_is_404_and_records_nothing() {
    let app = spawn_app_with(Options {
        extra_toml: "[billing]\nscope = \"tenant\"\n".into(),
        ..Options::default()
    })
    .await;
    let admin = app.idp.service_token("billing:admin");
    let (status, body) = send(
        &app,
        Method::DELETE,
        "/v1/tenants/never-seen",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (404, "tenant_not_found"), "{body}");
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
    // The tenant can still buy: nothing was recorded against it.
    let mut claims = app.idp.claims("alice");
    claims["tenant_id"] = json!("never-seen");
    let alice = app.idp.token(&claims);
    let res = app
        .checkout(&alice, json!({"plan": "pro", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow_and_unknown_paths_404() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::POST, "/v1/status", "GET"),
        (Method::DELETE, "/v1/checkout", "POST"),
        (Method::GET, "/v1/usage", "POST"),
        (Method::POST, "/v1/tenants/t1", "DELETE"),
        (Method::GET, "/v1/tenants/t1/manager", "PUT"),
        (Method::PUT, "/healthz", "GET"),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        let body: Value = res.json().await.unwrap();
        assert_eq!(code(&body), "method_not_allowed");
    }
    let (status, body) = send(&app, Method::POST, "/v1/nothing/here", None, None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
}

#[tokio::test]
async fn oversized_bodies_are_413_on_every_endpoint_that_takes_one() {
    let app = spawn_app().await;
    let user = app.user_token("user-1");
    let write = app.idp.service_token("billing:write");
    let admin = app.idp.service_token("billing:admin");
    let big = "x".repeat(300 * 1024);
    for (path, token) in [
        ("/v1/subscription/cancel", &user),
        ("/v1/subscription/resume", &user),
        ("/v1/subscription/change", &user),
        ("/v1/portal", &user),
        ("/v1/checkout", &user),
        ("/v1/usage", &write),
        ("/v1/admin/sync", &admin),
    ] {
        let res = app
            .http
            .post(app.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 413, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(code(&body), "body_too_large", "{path}");
    }
    assert!(app.stripe.received().is_empty());
}

#[tokio::test]
async fn usage_amounts_out_of_range_are_invalid_amount() {
    let app = spawn_app().await;
    let write = app.idp.service_token("billing:write");
    for (i, amount) in [
        json!(-1),
        json!(0),
        json!(1.5),
        json!(1e20),
        json!(18_446_744_073_709_551_615_u64),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"user_id": "u1", "quota": "credits", "amount": amount, "idempotency_key": format!("k{i}")});
        let (status, answer) =
            send(&app, Method::POST, "/v1/usage", Some(&write), Some(body)).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_amount"),
            "{amount}: {answer}"
        );
    }
    assert_eq!(stored(&app).await, [0, 0, 0, 0]);
}

/// Requests the fake identity provider has received (discovery and key set alike).
async fn idp_fetches(app: &TestApp) -> usize {
    app.idp.server.received_requests().await.unwrap().len()
}

/// The fetches, once at least one has arrived (a background refresh is sent after the request
/// that started it has been answered).
async fn idp_fetches_after_one(app: &TestApp) -> usize {
    for _ in 0..100 {
        let n = idp_fetches(app).await;
        if n > 0 {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    0
}

/// The provider's answer from now on: every request fails, or hangs for a minute.
async fn idp_breaks(app: &TestApp, hang: bool) {
    use wiremock::{matchers::any, Mock, ResponseTemplate};
    app.idp.server.reset().await;
    let answer = if hang {
        ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(60))
    } else {
        ResponseTemplate::new(503)
    };
    Mock::given(any())
        .respond_with(answer)
        .mount(&app.idp.server)
        .await;
}

#[tokio::test]
async fn an_identity_provider_outage_neither_stops_known_keys_nor_piles_up_fetches() {
    const REFETCH: u64 = 3;
    let app = spawn_app_with(Options {
        oidc_discovery: true,
        extra_toml: format!(
            "[auth]\njwks_cache_seconds = 0\njwks_refetch_min_seconds = {REFETCH}\n"
        ),
        ..Options::default()
    })
    .await;
    let status = |sub: String| {
        let app = &app;
        async move {
            let token = app.user_token(&sub);
            // Shorter than one fetch may take: a request that waited on one would fail here.
            app.http
                .get(app.url("/v1/status"))
                .bearer_auth(token)
                .timeout(std::time::Duration::from_secs(4))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    assert_eq!(app.app.settings.auth.jwks_refetch_min_seconds, REFETCH);
    assert_eq!(status("u-0".into()).await, 200);

    // The provider fails; the cached keys are stale (cache 0 s) and a refresh is due.
    idp_breaks(&app, false).await;
    tokio::time::sleep(std::time::Duration::from_millis(REFETCH * 1000 + 100)).await;
    let answers = futures::future::join_all((1..=100).map(|i| status(format!("u-{i}")))).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let fetches = idp_fetches_after_one(&app).await;
    assert!(
        (1..=2).contains(&fetches),
        "100 requests with a stale cache made {fetches} fetches (one refresh, in the background): {:?}",
        app.idp.server.received_requests().await.unwrap().iter().map(|r| r.url.path().to_owned()).collect::<Vec<_>>()
    );

    // The provider hangs: requests with known keys do not wait for it, and only one fetch is
    // in flight however many requests arrive.
    idp_breaks(&app, true).await;
    tokio::time::sleep(std::time::Duration::from_millis(REFETCH * 1000 + 100)).await;
    let answers = futures::future::join_all((101..=108).map(|i| status(format!("u-{i}")))).await;
    assert_eq!(answers, vec![200; 8]);
    // Tokens signed by a key the provider never published: no fetch beyond the one in flight.
    let rogue = crate::helpers::idp::SigningKey::generate("rogue");
    let unknown = futures::future::join_all((0..8).map(|i| {
        let token = rogue.sign(&app.idp.claims(&format!("r-{i}")));
        let app = &app;
        async move { send(app, Method::GET, "/v1/status", Some(&token), None).await }
    }))
    .await;
    for (status, body) in unknown {
        assert_eq!((status, code(&body)), (401, "token_unknown_key"), "{body}");
    }
    let fetches = idp_fetches_after_one(&app).await;
    assert_eq!(fetches, 1, "fetches while the provider hangs");
}

#[tokio::test]
async fn bodies_the_published_schema_allows_are_accepted_and_those_it_forbids_refused() {
    let app = spawn_app().await;
    let user = app.user_token("user-1");
    let admin = app.idp.service_token("billing:admin");
    let write = app.idp.service_token("billing:write");
    // `null` is an allowed portal body (no customer yet: 404, not 400).
    let res = app
        .http
        .post(app.url("/v1/portal"))
        .bearer_auth(&user)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // JSON Schema's integers include `2.0`.
    let res = app
        .checkout(
            &user,
            json!({"plan": "pro", "interval": "month", "quantity": 2.0}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let (status, body) = send(
        &app,
        Method::POST,
        "/v1/usage",
        Some(&write),
        Some(json!({"user_id": "u1", "quota": "credits", "amount": 1.0, "idempotency_key": "float-1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Admin sync is one of two shapes, nothing else.
    for body in [
        json!({}),
        json!({"all": false}),
        json!({"user_id": "u1", "all": false}),
        json!({"user_id": "u1", "all": true}),
    ] {
        let (status, answer) = send(
            &app,
            Method::POST,
            "/v1/admin/sync",
            Some(&admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!((status, code(&answer)), (400, "invalid_body"), "{body}");
    }
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_invalid_body_and_change_nothing() {
    let app = spawn_app().await;
    let user = app.user_token("user-1");
    let write = app.idp.service_token("billing:write");
    let admin = app.idp.service_token("billing:admin");
    let before = stored(&app).await;
    // serde would read a struct from an array of its fields' values.
    let shapes = [
        json!([null, null]),
        json!(["pro", "month"]),
        json!(["u1", "credits", 1, "key-1"]),
        json!("pro"),
        json!(7),
        json!(true),
    ];
    for (path, token) in [
        ("/v1/checkout", &user),
        ("/v1/portal", &user),
        ("/v1/subscription/change", &user),
        ("/v1/usage", &write),
        ("/v1/admin/sync", &admin),
        ("/v1/tenants/t1/manager", &admin),
    ] {
        for body in &shapes {
            let method = if path.ends_with("/manager") {
                Method::PUT
            } else {
                Method::POST
            };
            let (status, answer) = send(&app, method, path, Some(token), Some(body.clone())).await;
            assert_eq!(
                (status, code(&answer)),
                (400, "invalid_body"),
                "{path} {body}: {answer}"
            );
        }
    }
    assert_eq!(stored(&app).await, before);
    assert!(app.stripe.received().is_empty());
}
