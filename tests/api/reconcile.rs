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
    // Written by another process: on PostgreSQL this replica's snapshot cache learns of it by
    // a notification, moments after the command's commit.
    wait_for_reason(&app, "canceling").await;

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
    // (The checkout listed the open sessions first; reconciliation lists the completed ones.)
    let sessions = app.stripe.received_on("GET", "/v1/checkout/sessions");
    assert_eq!(sessions.last().unwrap().form["status"], "complete");
}

/// `GET` of `path` at the instance `base` with `token`: status and body.
async fn get_at(app: &TestApp, base: &str, path: &str, token: &str) -> (u16, Value) {
    let res = app
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// Polls the job at `base` until it is no longer running.
async fn finished_job(app: &TestApp, base: &str, job_id: &str) -> Value {
    let admin = app.idp.service_token("billing:admin");
    for _ in 0..300 {
        let (status, job) = get_at(app, base, &format!("/v1/admin/sync/{job_id}"), &admin).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] != "running" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sync job {job_id} never finished");
}

#[tokio::test]
async fn a_full_sync_is_a_job_whose_progress_any_replica_answers() {
    let app = spawn_app().await;
    drifted(&app).await;
    app.subscribed("user-2", "pro", "month").await;
    app.subscribed("user-3", "pro", "year").await;
    let admin = app.idp.service_token("billing:admin");
    let res = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await;
    assert_eq!(res.status(), 202);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let started: Value = res.json().await.unwrap();
    let job_id = started["job_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/admin/sync/{job_id}"));
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["finished_at"], Value::Null);
    // Another replica reads the job from the database.
    let other = app.another_instance().await;
    let job = finished_job(&app, &other, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        (
            job["customers_total"].as_u64(),
            job["customers_done"].as_u64(),
            job["drifted"].as_u64(),
            job["failed"].as_u64(),
        ),
        (Some(3), Some(3), Some(1), Some(0)),
        "{job}"
    );
    assert!(job["changes"].as_u64().unwrap() >= 1, "{job}");
    assert!(job["finished_at"].is_string(), "{job}");
    assert_eq!(job["error"], Value::Null);
    assert_eq!(job["started_at"], started["started_at"]);
    assert_eq!(
        app.status(&app.user_token("user-1")).await["reason"],
        "canceling"
    );
    // The same on the replica that ran it.
    let (status, same) = get_at(&app, &app.address, &location, &admin).await;
    assert_eq!((status, &same["status"]), (200, &json!("succeeded")));
    // A new request starts a new job.
    let again: Value = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(again["job_id"], started["job_id"]);
    finished_job(&app, &app.address, again["job_id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_full_sync_that_could_not_read_a_customer_fails_and_says_so() {
    let app = spawn_app().await;
    app.subscribed("user-1", "pro", "month").await;
    // Every attempt (with the client's retries) to list the customer's subscriptions fails.
    app.stripe.fail_subscription_lists(10);
    let admin = app.idp.service_token("billing:admin");
    let started: Value = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await
        .json()
        .await
        .unwrap();
    let job = finished_job(&app, &app.address, started["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(
        (job["customers_done"].as_u64(), job["failed"].as_u64()),
        (Some(1), Some(1)),
        "{job}"
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("could not be re-read"),
        "{job}"
    );
}

#[tokio::test]
async fn while_a_full_sync_runs_another_request_answers_it_until_its_process_stops() {
    use tollgate::db::sync_jobs;

    let app = spawn_app().await;
    let admin = app.idp.service_token("billing:admin");
    // A job another replica is running (its progress is fresh).
    let running = "6f1c2b1e-8a4d-4c3b-9e2f-7a5d4c3b2a10";
    let now = chrono::Utc::now();
    app.db(move |conn| {
        sync_jobs::start(conn, running, now, now - chrono::Duration::minutes(1))?;
        let progress = sync_jobs::Progress {
            total: 10,
            done: 4,
            ..Default::default()
        };
        sync_jobs::heartbeat(conn, running, progress, now)
    })
    .await;
    let res = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await;
    assert_eq!(res.status(), 202);
    let answered: Value = res.json().await.unwrap();
    assert_eq!(answered["job_id"], running, "{answered}");
    assert_eq!(
        (
            answered["status"].as_str(),
            answered["customers_total"].as_u64(),
            answered["customers_done"].as_u64()
        ),
        (Some("running"), Some(10), Some(4)),
        "{answered}"
    );
    // That replica died: no progress for five minutes.
    app.db(move |conn| {
        let stopped = now - chrono::Duration::minutes(5);
        let progress = sync_jobs::Progress {
            total: 10,
            done: 4,
            ..Default::default()
        };
        sync_jobs::heartbeat(conn, running, progress, stopped)
    })
    .await;
    let (status, job) = get_at(
        &app,
        &app.address,
        &format!("/v1/admin/sync/{running}"),
        &admin,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(job["status"], "interrupted", "{job}");
    assert!(
        job["error"].as_str().unwrap().contains("no progress since"),
        "{job}"
    );
    assert_eq!(job["finished_at"], Value::Null);
    // A new request is no longer held up by it.
    let res = app
        .post_json("/v1/admin/sync", Some(&admin), &json!({"all": true}))
        .await;
    assert_eq!(res.status(), 202);
    let new: Value = res.json().await.unwrap();
    assert_ne!(new["job_id"], running);
    let new = finished_job(&app, &app.address, new["job_id"].as_str().unwrap()).await;
    assert_eq!(new["status"], "succeeded", "{new}");
    let (_, old) = get_at(
        &app,
        &app.address,
        &format!("/v1/admin/sync/{running}"),
        &admin,
    )
    .await;
    assert_eq!(old["status"], "interrupted", "{old}");
}

#[tokio::test]
async fn sync_jobs_are_read_by_admins_by_their_id() {
    let app = spawn_app().await;
    let admin = app.idp.service_token("billing:admin");
    let unknown = "/v1/admin/sync/0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3b";
    let res = app.get(unknown, Some(&admin)).await;
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "sync_job_not_found"
    );
    for malformed in [
        "not-a-job",
        "0b7e4f5c3d2a4e619a8b2f1c6d5e4a3b",
        "0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3",
        "%00",
    ] {
        let res = app
            .get(&format!("/v1/admin/sync/{malformed}"), Some(&admin))
            .await;
        assert_eq!(res.status(), 400, "{malformed}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "invalid_job_id",
            "{malformed}"
        );
    }
    // The admin scope, as for starting one.
    let reader = app.idp.service_token("billing:read billing:write");
    let res = app.get(unknown, Some(&reader)).await;
    assert_eq!(res.status(), 403);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "missing_scope");
    let user = app.user_token("user-1");
    assert_eq!(app.get(unknown, Some(&user)).await.status(), 403);
    assert_eq!(app.get(unknown, None).await.status(), 401);
}

#[tokio::test]
async fn replicas_asked_at_once_start_one_job() {
    let app = spawn_app().await;
    app.subscribed("user-1", "pro", "month").await;
    // The job takes a few seconds: the client retries two failed reads (1 s, then 2 s).
    app.stripe.fail_subscription_lists(2);
    let other = app.another_instance().await;
    let admin = app.idp.service_token("billing:admin");
    let start = |base: String| {
        let (http, admin) = (app.http.clone(), admin.clone());
        async move {
            let res = http
                .post(format!("{base}/v1/admin/sync"))
                .bearer_auth(admin)
                .json(&json!({"all": true}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
            res.json::<Value>().await.unwrap()["job_id"].clone()
        }
    };
    let answers = futures::future::join_all(
        [&app.address, &other, &app.address, &other].map(|base| start(base.clone())),
    )
    .await;
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(app.count("sync_jobs").await, 1);
    let job = finished_job(&app, &other, answers[0].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["failed"].as_u64()),
        (Some("succeeded"), Some(0)),
        "{job}"
    );
}

#[tokio::test]
async fn a_second_stripe_customer_of_a_subject_is_reconciled_and_reported_as_a_duplicate() {
    let app = spawn_app().await;
    app.subscribed("user-1", "maker", "month").await;
    // Stripe holds a second customer for the same subject, with a subscription no webhook
    // announced (a second checkout that made its own customer, or one made by hand).
    let (second, pro) =
        app.stripe
            .add_customer_with_subscription("user:user-1", "price_pro_monthly", "month");
    let token = app.user_token("user-1");
    assert_eq!(app.status(&token).await["plan"], "maker");

    // Reconciling the user finds it through Stripe's customer search.
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
            report["duplicates"].as_u64(),
            report["drifted"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(1), Some(0)),
        "{report}"
    );
    let searches = app.stripe.received_on("GET", "/v1/customers/search");
    assert_eq!(
        searches[0].form["query"],
        "metadata['tollgate_subject']:'user:user-1'"
    );
    let subscriptions_read = app.stripe.received_on("GET", "/v1/subscriptions");
    assert!(
        subscriptions_read
            .iter()
            .any(|r| r.form.get("customer") == Some(&second)),
        "the second customer was re-read"
    );
    // Its subscription is mirrored under the subject: the stronger plan stands.
    assert_eq!(app.status(&token).await["plan"], "pro");

    // A full run finds it too, by listing the account's customers, and repairs what changed.
    app.stripe
        .update_subscription(&pro, |s| s["status"] = json!("canceled"));
    let stripe = app.app.stripe.as_ref().unwrap();
    let report = tollgate::service::reconcile::reconcile_all(&app.app, stripe, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (
            report.customers,
            report.duplicates,
            report.drifted,
            report.failed
        ),
        (2, 1, 1, 0),
        "{report:?}"
    );
    assert!(report.changes >= 1, "{report:?}");
    assert_eq!(app.status(&token).await["plan"], "maker");
    // The gauge is exported (its value is the process's last run, which other tests share).
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("tollgate_reconcile_duplicate_customers "),
        "{metrics}"
    );
}
