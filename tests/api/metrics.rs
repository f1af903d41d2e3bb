//! `/metrics` after real requests: the HTTP histogram by route pattern, Stripe calls by
//! operation and outcome, webhook rejections, the build info and help text. The recorder is
//! the process's, shared by every test running beside these: counts are compared before and
//! after, and only ever expected to grow.

use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, TestApp};

async fn scrape(app: &TestApp) -> String {
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn assert_described(text: &str, name: &str, kind: &str) {
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 20),
        "{name} has no help text:\n{text}"
    );
    assert!(
        text.contains(&format!("# TYPE {name} {kind}\n")),
        "{name} is not a {kind}:\n{text}"
    );
}

#[tokio::test]
async fn http_requests_are_measured_by_route_pattern_method_and_status() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    // A path with an id, without a token (401), and a path no route has (404).
    let res = app
        .http
        .delete(app.url("/v1/tenants/t-metrics-raw-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(app.get("/v1/metrics-raw-path", None).await.status(), 404);
    // A known path with another method (405) keeps its route.
    let res = app.http.delete(app.url("/v1/status")).send().await.unwrap();
    assert_eq!(res.status(), 405);

    let text = scrape(&app).await;
    const HTTP: &str = "tollgate_http_request_duration_seconds";
    assert_described(&text, HTTP, "histogram");
    let tenant = [
        ("route", "/v1/tenants/{tenant_id}"),
        ("method", "DELETE"),
        ("status", "401"),
    ];
    assert!(
        sample(&text, &format!("{HTTP}_count"), &tenant) >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, &format!("{HTTP}_sum"), &tenant) > 0.0,
        "{text}"
    );
    // Buckets, cumulative up to +Inf.
    let mut le_inf = tenant.to_vec();
    le_inf.push(("le", "+Inf"));
    assert!(
        sample(&text, &format!("{HTTP}_bucket"), &le_inf) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("le=\"0.005\""),
        "the configured buckets: {text}"
    );
    for (route, method, status) in [
        ("/healthz", "GET", "200"),
        ("unmatched", "GET", "404"),
        ("/v1/status", "DELETE", "405"),
    ] {
        let labels = [("route", route), ("method", method), ("status", status)];
        assert!(
            sample(&text, &format!("{HTTP}_count"), &labels) >= 1.0,
            "{route} {method} {status}: {text}"
        );
    }
    assert!(
        !text.contains("t-metrics-raw-id"),
        "a raw path became a label"
    );
    assert!(
        !text.contains("metrics-raw-path"),
        "a raw path became a label"
    );

    assert_described(&text, "tollgate_build_info", "gauge");
    assert_eq!(
        sample(
            &text,
            "tollgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn stripe_calls_are_measured_by_operation_and_outcome() {
    let app = spawn_app().await;
    const STRIPE: &str = "tollgate_stripe_request_duration_seconds";
    let count = |text: &str, operation: &str, outcome: &str| {
        sample(
            text,
            &format!("{STRIPE}_count"),
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    let errors = |text: &str, operation: &str, outcome: &str| {
        sample(
            text,
            "tollgate_stripe_errors_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    let before = scrape(&app).await;
    let token = app.user_token("metrics-user");
    let res = app
        .checkout(&token, json!({"plan": "pro", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    let session_id = session["session_id"].as_str().unwrap().to_owned();

    let after = scrape(&app).await;
    assert_described(&after, STRIPE, "histogram");
    for operation in ["create_customer", "create_checkout_session"] {
        assert!(
            count(&after, operation, "ok") >= count(&before, operation, "ok") + 1.0,
            "{operation}: {after}"
        );
    }
    let mut inf = vec![("operation", "create_checkout_session"), ("outcome", "ok")];
    inf.push(("le", "+Inf"));
    assert!(sample(&after, &format!("{STRIPE}_bucket"), &inf) >= 1.0);

    // Stripe fails every subscription listing (retries included): the read failed.
    app.stripe.complete_checkout(&session_id);
    app.stripe.fail_subscription_lists(10);
    let res = app.verify(&token, &session_id).await;
    assert!(res.status().is_server_error(), "{}", res.status());
    app.stripe.fail_subscription_lists(0);
    let failed = scrape(&app).await;
    assert_described(&failed, "tollgate_stripe_errors_total", "counter");
    assert!(
        count(&failed, "customer_subscriptions", "failed")
            >= count(&before, "customer_subscriptions", "failed") + 1.0,
        "{failed}"
    );
    assert!(
        errors(&failed, "customer_subscriptions", "failed")
            >= errors(&before, "customer_subscriptions", "failed") + 1.0,
        "{failed}"
    );
}

#[tokio::test]
async fn a_bad_webhook_signature_is_counted_as_invalid_signature() {
    let app = spawn_app().await;
    const REJECTIONS: &str = "tollgate_webhook_rejections_total";
    let code = [("code", "invalid_signature")];
    let before = sample(&scrape(&app).await, REJECTIONS, &code);
    let e = event(
        "evt_metrics_forged",
        "invoice.paid",
        json!({"id": "in_1", "object": "invoice", "customer": "cus_1"}),
    );
    let res = app.send_webhook(&e, "whsec_forged", None).await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "invalid_signature"
    );
    let text = scrape(&app).await;
    assert_described(&text, REJECTIONS, "counter");
    assert!(sample(&text, REJECTIONS, &code) >= before + 1.0, "{text}");
    assert_eq!(app.count("stripe_events").await, 0, "nothing stored");
}
