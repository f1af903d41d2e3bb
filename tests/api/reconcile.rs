//! Reconciliation repairs drift that no webhook reported: on request, on schedule, by CLI.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, Options, TestApp, WEBHOOK_SECRET};

/// Subscribes user-1, then changes Stripe's truth behind Tollgate's back (no webhook).
async fn drifted(app: &TestApp) -> String {
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    app.stripe
        .update_subscription(&sub_id, |s| s["cancel_at_period_end"] = json!(true));
    assert_eq!(
        app.status(&app.user_token("user-1")).await["reason"],
        "active"
    );
    sub_id
}

async fn wait_for_reason(app: &TestApp, reason: &str) {
    let token = app.user_token("user-1");
    for _ in 0..100 {
        if app.status(&token).await["reason"] == reason {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("status never became {reason}");
}

#[tokio::test]
async fn admin_sync_of_one_user_repairs_and_reports_the_drift() {
    let app = spawn_app().await;
    drifted(&app).await;
    let admin = app.idp.service_token("billing:admin");
    let res = app
        .post_json(
            "/v1/admin/sync",
            Some(&admin),
            &json!({"user_id": "user-1"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    assert_eq!(
        (
            report["customers"].as_u64(),
            report["drifted"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    assert!(report["changes"].as_u64().unwrap() >= 1);
    assert_eq!(
        app.status(&app.user_token("user-1")).await["reason"],
        "canceling"
    );

    let again: Value = app
        .post_json(
            "/v1/admin/sync",
            Some(&admin),
            &json!({"user_id": "user-1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (again["drifted"].as_u64(), again["changes"].as_u64()),
        (Some(0), Some(0))
    );

    let res = app
        .post_json(
            "/v1/admin/sync",
            Some(&admin),
            &json!({"user_id": "nobody"}),
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .post_json(
            "/v1/admin/sync",
            Some(&admin),
            &json!({"user_id": "user-1", "all": true}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let reader = app.idp.service_token("billing:read");
    assert_eq!(
        app.post_json("/v1/admin/sync", Some(&reader), &json!({"all": true}))
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn admin_sync_of_everyone_runs_in_the_background() {
    let app = spawn_app().await;
    drifted(&app).await;
    let admin = app.idp.service_token("billing:admin");
    let res = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await;
    assert_eq!(res.status(), 202);
    wait_for_reason(&app, "canceling").await;
}

#[tokio::test]
async fn the_schedule_repairs_drift_and_metrics_show_it() {
    let app = spawn_app_with(Options {
        extra_toml: "[reconcile]\ninterval_seconds = 1\n".into(),
        ..Default::default()
    })
    .await;
    drifted(&app).await;
    wait_for_reason(&app, "canceling").await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("tollgate_reconcile_runs_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tollgate_reconcile_drifted_customers"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_count_webhook_events_by_outcome() {
    let app = spawn_app().await;
    let e = crate::helpers::event(
        "evt_metrics",
        "product.created",
        json!({"id": "prod_1", "object": "product"}),
    );
    app.send_webhook(&e, WEBHOOK_SECRET, None).await;
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("tollgate_webhook_events_total")
                && l.contains("type=\"product.created\"")
                && l.contains("outcome=\"processed\"")),
        "{text}"
    );
}

#[tokio::test]
async fn the_sync_command_repairs_drift_from_the_command_line() {
    let app = spawn_app().await;
    drifted(&app).await;
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env(
                "TOLLGATE_CONFIG",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml"),
            )
            .env("DATABASE_URL", app.database_url())
            .env("STRIPE_SECRET_KEY", "sk_test_tollgate")
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STRIPE_API_BASE", app.stripe.base_url())
            .env("STRIPE_MONTHLY_PRICE_ID", "price_pro_monthly")
            .env("STRIPE_YEARLY_PRICE_ID", "price_pro_yearly")
            .env("STRIPE_LIFETIME_PRICE_ID", "price_lifetime")
            .env("RUST_LOG", "warn")
            .output()
            .expect("the tollgate binary runs")
    };
    let out = run(&["sync", "--user", "user-1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("re-read 1 customer(s): 1 had drifted"),
        "{stdout}"
    );
    assert_eq!(
        app.status(&app.user_token("user-1")).await["reason"],
        "canceling"
    );

    let out = run(&["sync", "--all"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-read 1 customer(s): 0 had drifted"));

    let out = run(&["sync"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--all, --user ID or --subject KEY"));
}

#[tokio::test]
async fn reconciliation_records_a_purchase_whose_webhook_was_lost() {
    let app = spawn_app().await;
    // Paid on Stripe; the webhook never came and the buyer never returned to verify.
    let (token, _, _) = app.paid_checkout("user-1", "lifetime", "once").await;
    assert_eq!(app.status(&token).await["reason"], "free");
    let admin = app.idp.service_token("billing:admin");
    let report: Value = app
        .post_json(
            "/v1/admin/sync",
            Some(&admin),
            &json!({"user_id": "user-1"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["drifted"], 1);
    let status = app.status(&token).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(true), Some("lifetime"))
    );
    let sessions = app.stripe.received_on("GET", "/v1/checkout/sessions");
    assert_eq!(sessions[0].form["status"], "complete");
}
