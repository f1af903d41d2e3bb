//! Quotas and `POST /v1/usage`: atomic, idempotent, never over the allowance, reset per
//! period, credit packs spent after the allowance.

use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;
use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, spawn_app_with, Options, TestApp};

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

async fn usage_at(
    app: &TestApp,
    base: &str,
    token: &str,
    user: &str,
    quota: &str,
    amount: u64,
    key: &str,
) -> (u16, Value, bool) {
    let res = app
        .http
        .post(format!("{base}/v1/usage"))
        .bearer_auth(token)
        .json(&json!({"user_id": user, "quota": quota, "amount": amount, "idempotency_key": key}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let replayed = res.headers().get("Idempotent-Replayed").is_some();
    (status, res.json().await.unwrap(), replayed)
}

async fn usage(app: &TestApp, user: &str, quota: &str, amount: u64, key: &str) -> (u16, Value) {
    let token = app.idp.service_token("billing:write");
    let (status, body, _) = usage_at(app, &app.address, &token, user, quota, amount, key).await;
    (status, body)
}

/// The user's quota `key` as `GET /v1/entitlements` shows it.
async fn quota(app: &TestApp, user: &str, key: &str) -> Value {
    let service = app.idp.service_token("billing:read");
    let res = app
        .get(&format!("/v1/entitlements?user_id={user}"), Some(&service))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == key)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn ledger(app: &TestApp, user: &str) -> Vec<tollgate::db::quotas::LedgerRow> {
    let subject = format!("user:{user}");
    app.db(move |conn| tollgate::db::quotas::ledger(conn, &subject))
        .await
}

/// Sends `n` consumptions for user-1's `credits` at once, alternating between two replicas on
/// one PostgreSQL (SQLite serves one instance, so all go to it); `key(i)` names each one.
async fn concurrently(
    app: &TestApp,
    n: usize,
    amount: u64,
    key: impl Fn(usize) -> String,
) -> Vec<(u16, Value, bool)> {
    let other = if app.uses_postgres() {
        app.another_instance().await
    } else {
        app.address.clone()
    };
    let token = app.idp.service_token("billing:write");
    let requests = (0..n).map(|i| {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            other.clone()
        };
        let (token, key) = (token.clone(), key(i));
        async move { usage_at(app, &base, &token, "user-1", "credits", amount, &key).await }
    });
    join_all(requests).await
}

#[tokio::test]
async fn concurrent_consumers_on_two_instances_never_exceed_the_allowance() {
    let app = spawn_app().await;
    app.subscribed("user-1", "pro", "month").await;
    let answers = concurrently(&app, 200, 1, |i| format!("k-{i}")).await;
    let granted = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let refused = answers
        .iter()
        .filter(|(s, b, _)| *s == 402 && b["code"] == "quota_exhausted")
        .count();
    assert_eq!((granted, refused), (100, 100), "{answers:?}");

    let credits = quota(&app, "user-1", "credits").await;
    assert_eq!(
        (credits["used"].as_u64(), credits["remaining"].as_u64()),
        (Some(100), Some(0))
    );
    let rows = ledger(&app, "user-1").await;
    assert_eq!(rows.len(), 200);
    assert_eq!(rows.iter().filter(|r| r.granted).count(), 100);
}

#[tokio::test]
async fn the_same_idempotency_key_gets_the_first_answer_and_consumes_once() {
    let app = spawn_app().await;
    let token = app.idp.service_token("billing:write");
    let (status, first, replayed) =
        usage_at(&app, &app.address, &token, "user-1", "credits", 2, "job-1").await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(
        (
            first["granted"].as_bool(),
            first["used"].as_u64(),
            first["remaining"].as_u64()
        ),
        (Some(true), Some(2), Some(1))
    );
    let (status, again, replayed) =
        usage_at(&app, &app.address, &token, "user-1", "credits", 2, "job-1").await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    assert_eq!(quota(&app, "user-1", "credits").await["used"], 2);

    // A refusal is replayed too, even after the allowance comes back.
    let (status, refused) = usage(&app, "user-1", "credits", 5, "job-2").await;
    assert_eq!(status, 402);
    app.set_now(Utc::now() + chrono::Duration::days(1));
    let (status, replay, replayed) =
        usage_at(&app, &app.address, &token, "user-1", "credits", 5, "job-2").await;
    assert_eq!((status, replayed), (402, true));
    assert_eq!(replay, refused);

    // The same key for another amount or quota is a conflict, not a replay.
    for (quota_key, amount) in [("credits", 1), ("exports", 2)] {
        let (status, body) = usage(&app, "user-1", quota_key, amount, "job-1").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("idempotency_key_reused"))
        );
    }
    assert_eq!(ledger(&app, "user-1").await.len(), 2);
}

#[tokio::test]
async fn a_refusal_consumes_nothing_says_what_is_left_and_is_in_the_ledger() {
    let app = spawn_app().await;
    let now = at(2026, 11, 21, 15, 30);
    app.set_now(now);
    assert_eq!(usage(&app, "user-1", "credits", 2, "a").await.0, 200);
    let (status, refusal) = usage(&app, "user-1", "credits", 2, "b").await;
    assert_eq!(status, 402);
    assert_eq!(
        (
            refusal["code"].as_str(),
            refusal["granted"].as_bool(),
            refusal["remaining"].as_u64(),
            refusal["used"].as_u64(),
            refusal["resets_at"].as_str(),
            refusal["reason"].as_str(),
        ),
        (
            Some("quota_exhausted"),
            Some(false),
            Some(1),
            Some(2),
            Some("2026-11-22T00:00:00Z"),
            Some("free")
        )
    );
    let (status, last) = usage(&app, "user-1", "credits", 1, "c").await;
    assert_eq!((status, last["remaining"].as_u64()), (200, Some(0)));

    let rows = ledger(&app, "user-1").await;
    let mut outcomes: Vec<(String, bool, i64, i32)> = rows
        .iter()
        .map(|r| {
            (
                r.idempotency_key.clone(),
                r.granted,
                r.amount,
                r.status_code,
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("a".to_owned(), true, 2, 200),
            ("b".to_owned(), false, 2, 402),
            ("c".to_owned(), true, 1, 200)
        ]
    );
    assert!(
        rows.iter().all(|r| r.caller == "sibling-service"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn day_quotas_reset_at_midnight_utc_and_month_quotas_with_the_calendar_month() {
    let app = spawn_app().await;
    app.set_now(at(2026, 11, 30, 23, 59));
    assert_eq!(usage(&app, "user-1", "credits", 3, "d1").await.0, 200);
    assert_eq!(usage(&app, "user-1", "exports", 2, "m1").await.0, 200);
    assert_eq!(usage(&app, "user-1", "credits", 1, "d2").await.0, 402);
    let (status, refused) = usage(&app, "user-1", "exports", 1, "m2").await;
    assert_eq!(
        (status, refused["resets_at"].as_str()),
        (402, Some("2026-12-01T00:00:00Z"))
    );

    app.set_now(at(2026, 12, 1, 0, 0));
    let credits = quota(&app, "user-1", "credits").await;
    assert_eq!(
        (
            credits["used"].as_u64(),
            credits["remaining"].as_u64(),
            credits["resets_at"].as_str()
        ),
        (Some(0), Some(3), Some("2026-12-02T00:00:00Z"))
    );
    assert_eq!(usage(&app, "user-1", "credits", 3, "d3").await.0, 200);
    assert_eq!(usage(&app, "user-1", "exports", 2, "m3").await.0, 200);

    // Within the same month the exports stay spent although the day changed.
    app.set_now(at(2026, 12, 2, 9, 0));
    assert_eq!(usage(&app, "user-1", "exports", 1, "m4").await.0, 402);
    assert_eq!(usage(&app, "user-1", "credits", 1, "d4").await.0, 200);
}

#[tokio::test]
async fn billing_period_quotas_restart_on_a_paid_renewal_and_not_on_a_duplicate() {
    let app = spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    assert_eq!(usage(&app, "user-1", "generations", 5, "g1").await.0, 200);
    let (status, refused) = usage(&app, "user-1", "generations", 1, "g2").await;
    let period_end = app.stripe.subscription(&sub_id)["items"]["data"][0]["current_period_end"]
        .as_i64()
        .unwrap();
    assert_eq!(status, 402);
    assert_eq!(
        DateTime::parse_from_rfc3339(refused["resets_at"].as_str().unwrap())
            .unwrap()
            .timestamp(),
        period_end
    );

    // An `invoice.paid` for the period already paid (a redelivery under a new id) changes
    // nothing.
    let mut same =
        crate::helpers::fake_stripe::invoice(&format!("in_{sub_id}"), "cus_test_1", "paid");
    same["subscription"] = json!(sub_id);
    app.webhook_ok(&event("evt_paid_again", "invoice.paid", same))
        .await;
    assert_eq!(usage(&app, "user-1", "generations", 1, "g3").await.0, 402);

    // A paid renewal opens a new period: the count starts again.
    let renewal = app.stripe.renew(&sub_id);
    app.webhook_ok(&event("evt_renewed", "invoice.paid", renewal))
        .await;
    let generations = quota(&app, "user-1", "generations").await;
    assert_eq!(
        (
            generations["used"].as_u64(),
            generations["remaining"].as_u64()
        ),
        (Some(0), Some(5))
    );
    assert_eq!(usage(&app, "user-1", "generations", 5, "g4").await.0, 200);
}

#[tokio::test]
async fn credit_packs_add_a_balance_that_is_spent_after_the_allowance_and_never_resets() {
    let app = spawn_app().await;
    app.set_now(at(2026, 11, 21, 10, 0));
    let (session_id, status) = app.subscribe("user-1", "credits-10", "once").await;
    // A credit pack grants no plan: the free plan's allowance plus the balance.
    assert_eq!(status["plan"], "free");
    let credits = status["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["key"] == "credits")
        .unwrap()
        .clone();
    assert_eq!(
        (
            credits["limit"].as_u64(),
            credits["balance"].as_u64(),
            credits["remaining"].as_u64()
        ),
        (Some(3), Some(10), Some(13))
    );

    let (status, spent) = usage(&app, "user-1", "credits", 5, "c1").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            spent["from_allowance"].as_u64(),
            spent["from_balance"].as_u64(),
            spent["balance"].as_u64()
        ),
        (Some(3), Some(2), Some(8))
    );

    // The next day the allowance is back, the balance is what was left.
    app.set_now(at(2026, 11, 22, 10, 0));
    let credits = quota(&app, "user-1", "credits").await;
    assert_eq!(
        (
            credits["used"].as_u64(),
            credits["balance"].as_u64(),
            credits["remaining"].as_u64()
        ),
        (Some(0), Some(8), Some(11))
    );
    assert_eq!(usage(&app, "user-1", "credits", 12, "c2").await.0, 402);
    assert_eq!(usage(&app, "user-1", "credits", 11, "c3").await.0, 200);

    // A refunded pack takes its credits back.
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let refunded = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund", "charge.refunded", refunded))
        .await;
    let credits = quota(&app, "user-1", "credits").await;
    assert_eq!(
        (credits["balance"].as_u64(), credits["remaining"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn exempt_subjects_and_saas_off_are_unlimited_and_no_access_is_refused_with_403() {
    let app = spawn_app_with(Options {
        extra_toml: "[exemptions]\nsubjects = [\"vip\"]\n".into(),
        ..Options::default()
    })
    .await;
    for (i, quota_key) in ["credits", "generations", "exports"].iter().enumerate() {
        let (status, body) = usage(&app, "vip", quota_key, 1_000_000, &format!("v{i}")).await;
        assert_eq!(
            (status, body["remaining"].clone()),
            (200, Value::Null),
            "{quota_key}"
        );
        assert_eq!(body["limit"], "unlimited");
    }

    // `generations` is a pro quota: a user with no paid access has none of it.
    let (status, body) = usage(&app, "user-1", "generations", 1, "n1").await;
    assert_eq!(
        (status, body["code"].as_str(), body["reason"].as_str()),
        (403, Some("no_access"), Some("free"))
    );
    // A lifetime buyer has access, but no generations in the lifetime plan.
    app.subscribe("user-2", "lifetime", "once").await;
    let (status, body) = usage(&app, "user-2", "generations", 1, "n2").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("quota_not_in_plan"))
    );
    // The lifetime plan's credits are unlimited.
    assert_eq!(usage(&app, "user-2", "credits", 5_000, "n3").await.0, 200);

    let off = spawn_app_with(Options {
        saas: false,
        ..Options::default()
    })
    .await;
    let (status, body) = usage(&off, "anyone", "generations", 500, "s1").await;
    assert_eq!(
        (status, body["granted"].as_bool(), body["remaining"].clone()),
        (200, Some(true), Value::Null)
    );
}

#[tokio::test]
async fn bad_usage_requests_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let write = app.idp.service_token("billing:write");
    let read = app.idp.service_token("billing:read");
    let ok = json!({"user_id": "user-1", "quota": "credits", "amount": 1, "idempotency_key": "k"});
    let post = |token: Option<String>, body: Value| {
        let req = app.http.post(app.url("/v1/usage")).json(&body);
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        async move { req.send().await.unwrap() }
    };
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let cases = [
        (Some(read.clone()), ok.clone(), 403, "missing_scope"),
        (None, ok.clone(), 401, "missing_token"),
        (
            Some(app.user_token("user-1")),
            ok.clone(),
            403,
            "missing_scope",
        ),
        (
            Some(write.clone()),
            with("amount", json!(0)),
            400,
            "invalid_amount",
        ),
        (
            Some(write.clone()),
            with("amount", json!(-1)),
            400,
            "invalid_amount",
        ),
        (
            Some(write.clone()),
            with("amount", json!(1_000_000_001u64)),
            400,
            "invalid_amount",
        ),
        (
            Some(write.clone()),
            with("quota", json!("nope")),
            422,
            "unknown_quota",
        ),
        (
            Some(write.clone()),
            with("user_id", json!(" ")),
            400,
            "invalid_user_id",
        ),
        (
            Some(write.clone()),
            with("idempotency_key", json!("")),
            400,
            "invalid_idempotency_key",
        ),
        (
            Some(write.clone()),
            with("idempotency_key", json!("x".repeat(256))),
            400,
            "invalid_idempotency_key",
        ),
        (
            Some(write.clone()),
            with("tenant", json!("t1")),
            400,
            "invalid_body",
        ),
        (
            Some(write.clone()),
            json!({"user_id": "user-1", "quota": "credits"}),
            400,
            "invalid_body",
        ),
    ];
    for (token, body, status, code) in cases {
        let res = post(token, body.clone()).await;
        assert_eq!(res.status().as_u16(), status, "{body}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], code, "{body}");
    }
    assert_eq!(app.count("usage_ledger").await, 0);
    assert_eq!(app.count("quota_counters").await, 0);
}

#[tokio::test]
async fn status_shows_the_callers_own_quotas() {
    let app = spawn_app().await;
    app.set_now(at(2026, 11, 21, 10, 0));
    let (_, status) = app.subscribe("user-1", "pro", "month").await;
    let keys: Vec<&str> = status["quotas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["credits", "generations", "images"]);
    assert_eq!(usage(&app, "user-1", "credits", 40, "s1").await.0, 200);
    let mine = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        mine["quotas"][0],
        json!({
            "key": "credits", "limit": 100, "period": "day", "used": 40, "balance": 0,
            "remaining": 60, "resets_at": "2026-11-22T00:00:00Z"
        })
    );
    // Another user's usage is not the caller's.
    let theirs = app.status(&app.user_token("user-2")).await;
    assert_eq!(theirs["quotas"][0]["used"], 0);
}

#[tokio::test]
async fn a_grandfathered_role_seen_in_the_users_token_makes_service_calls_unlimited_until_it_is_gone(
) {
    let app = spawn_app().await;
    // Before Tollgate has seen the user's own token, a service cannot know the role.
    let (status, _) = usage(&app, "old-timer", "generations", 1, "before").await;
    assert_eq!(status, 403);

    let mut claims = app.idp.claims("old-timer");
    claims["roles"] = json!(["demo"]);
    assert_eq!(
        app.status(&app.idp.token(&claims)).await["reason"],
        "exempt"
    );
    let (status, body) = usage(&app, "old-timer", "generations", 10_000, "after").await;
    assert_eq!((status, body["limit"].as_str()), (200, Some("unlimited")));
    let service = app.idp.service_token("billing:read");
    let seen: Value = app
        .get("/v1/entitlements?user_id=old-timer", Some(&service))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["reason"], "exempt");

    // The role was removed: the next token without it ends the exemption for services too.
    assert_eq!(
        app.status(&app.user_token("old-timer")).await["reason"],
        "free"
    );
    let (status, _) = usage(&app, "old-timer", "generations", 1, "removed").await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_billing_month_quota_restarts_every_month_of_a_yearly_subscription() {
    let app = spawn_app().await;
    app.subscribed("user-1", "pro", "year").await;
    assert_eq!(usage(&app, "user-1", "images", 2, "i1").await.0, 200);
    let (status, refused) = usage(&app, "user-1", "images", 1, "i2").await;
    assert_eq!(status, 402);
    let resets_at = DateTime::parse_from_rfc3339(refused["resets_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    // About a month after the period start, well before the yearly period ends.
    let days = (resets_at - Utc::now()).num_days();
    assert!((26..=31).contains(&days), "{resets_at}");

    app.set_now(resets_at + chrono::Duration::seconds(1));
    assert_eq!(usage(&app, "user-1", "images", 2, "i3").await.0, 200);
    // The yearly period's other quotas are untouched: generations count for the whole year.
    assert_eq!(usage(&app, "user-1", "generations", 5, "g1").await.0, 200);
    app.set_now(resets_at + chrono::Duration::days(40));
    assert_eq!(usage(&app, "user-1", "generations", 1, "g2").await.0, 402);
    assert_eq!(usage(&app, "user-1", "images", 1, "i4").await.0, 200);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_consume_once_and_get_one_answer() {
    let app = spawn_app().await;
    app.subscribed("user-1", "pro", "month").await;
    let answers = concurrently(&app, 20, 3, |_| "same-job".to_owned()).await;
    assert!(
        answers.iter().all(|(status, _, _)| *status == 200),
        "{answers:?}"
    );
    assert!(
        answers.iter().all(|(_, body, _)| *body == answers[0].1),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(_, _, replayed)| !replayed).count(),
        1
    );
    assert_eq!(quota(&app, "user-1", "credits").await["used"], 3);
    assert_eq!(ledger(&app, "user-1").await.len(), 1);
}

/// PostgreSQL decides a consumption in SQL (`tollgate_consume`), SQLite in Rust: on either
/// backend every decision, and the counters and ledger row after it, are those of
/// `billing::quota::decide` for the same counters; a second call with the key changes nothing.
#[tokio::test]
async fn the_database_decides_every_consumption_as_the_billing_rule_does() {
    use tollgate::billing::access::Reason;
    use tollgate::billing::catalog::{QuotaLimit, QuotaPeriod};
    use tollgate::billing::quota::{decide, Decision};
    use tollgate::db::quotas::{consume, used, Consumed, Consumption};

    let app = spawn_app().await;
    let now = at(2026, 11, 21, 12, 0);
    let unlimited = tollgate::billing::catalog::Unlimited;
    let limits = [
        None,
        Some(QuotaLimit::Unlimited(unlimited)),
        Some(QuotaLimit::Limited(0)),
        Some(QuotaLimit::Limited(3)),
        Some(QuotaLimit::Limited(5)),
    ];
    let mut cases = Vec::new();
    for limit in limits {
        for amount in [1_u64, 2, 3, 5] {
            for used_before in [0_u64, 2, 3, 6] {
                for purchased in [0_u64, 2, 4] {
                    for spent in [0_u64, 1, 4] {
                        cases.push((limit, amount, used_before, purchased, spent));
                    }
                }
            }
        }
    }
    let checked = app
        .db(move |conn| {
            use diesel::prelude::*;
            use tollgate::db::schema::quota_counters;
            for (i, &(limit, amount, used_before, purchased, spent)) in cases.iter().enumerate() {
                let subject = format!("user:grid-{i}");
                let window = "month:2026-11";
                for (bucket, n) in [(window, used_before), ("balance", spent)] {
                    diesel::insert_into(quota_counters::table)
                        .values((
                            quota_counters::subject.eq(&subject),
                            quota_counters::quota.eq("credits"),
                            quota_counters::bucket.eq(bucket),
                            quota_counters::used.eq(n as i64),
                            quota_counters::updated_at.eq(now.naive_utc()),
                        ))
                        .execute(conn)?;
                }
                // One requester per case: each case's key "k" is its own.
                let c = Consumption {
                    subject: &subject,
                    requester: &subject,
                    quota: "credits",
                    amount,
                    idempotency_key: "k",
                    caller: "svc",
                    bucket: window,
                    limit,
                    period: Some(QuotaPeriod::Month),
                    resets_at: Some(at(2026, 12, 1, 0, 0)),
                    purchased,
                    reason: Reason::Active,
                    refusal: tollgate::billing::quota::QuotaRefusal::Exhausted,
                    now,
                    thresholds: &[50, 100],
                };
                let case = format!("case {i}: {limit:?} amount {amount} used {used_before} purchased {purchased} spent {spent}");
                let Consumed::Fresh(row) = consume(conn, &c)? else {
                    panic!("{case}: a new key was replayed");
                };
                let (granted, take, rest) =
                    match decide(amount, limit, used_before, purchased.saturating_sub(spent)) {
                        Decision::Granted {
                            from_allowance,
                            from_balance,
                        } => (true, from_allowance, from_balance),
                        Decision::Refused => (false, 0, 0),
                    };
                assert_eq!(row.granted, granted, "{case}");
                assert_eq!(row.from_allowance as u64, take, "{case}");
                assert_eq!(row.from_balance as u64, rest, "{case}");
                assert_eq!(row.used_after as u64, used_before + take, "{case}");
                let left = purchased.saturating_sub(spent).saturating_sub(rest);
                assert_eq!(row.balance_after as u64, left, "{case}");
                assert_eq!(row.status_code, if granted { 200 } else { 402 }, "{case}");
                assert_eq!(row.problem.is_some(), !granted, "{case}");
                assert_eq!(row.reason.as_deref(), Some("active"), "{case}");
                let wanted = vec![
                    ("credits".to_owned(), window.to_owned()),
                    ("credits".to_owned(), "balance".to_owned()),
                ];
                let counters = used(conn, &subject, &wanted)?;
                let expect = [(window, used_before + take), ("balance", spent + rest)];
                for (bucket, n) in expect {
                    assert_eq!(
                        counters[&("credits".to_owned(), bucket.to_owned())],
                        n,
                        "{case}: {bucket}"
                    );
                }
                // The same key again, even asking more: the first decision, nothing changes.
                let again = Consumption {
                    amount: amount + 1,
                    ..c.clone()
                };
                let Consumed::Replay(first) = consume(conn, &again)? else {
                    panic!("{case}: a used key was decided again");
                };
                assert_eq!(
                    (first.granted, first.amount, first.used_after),
                    (row.granted, row.amount, row.used_after),
                    "{case}"
                );
                assert_eq!(used(conn, &subject, &wanted)?, counters, "{case}");
                // The crossings recorded (once, the replay added none) are the pure rule's.
                use tollgate::db::schema::quota_crossings;
                let mut recorded: Vec<i32> = quota_crossings::table
                    .filter(quota_crossings::subject.eq(&subject))
                    .select(quota_crossings::threshold)
                    .load(conn)?;
                recorded.sort_unstable();
                let expected = match limit {
                    Some(QuotaLimit::Limited(n)) => {
                        tollgate::billing::quota::crossed(used_before, take, n, &[50, 100])
                    }
                    _ => Vec::new(),
                };
                assert_eq!(recorded, expected, "{case}: crossings");
            }
            Ok(cases.len())
        })
        .await;
    assert_eq!(checked, 5 * 4 * 4 * 3 * 3);
}
