//! Outbound events (docs/EVENTS.md): appended with the change, signed as Standard Webhooks,
//! delivered at least once in revision order per subject, retried with growing waits, and
//! listed by `GET /v1/events` for receivers that were down.
//!
//! Every delivery is checked against the Standard Webhooks specification by [`verify`], written
//! here from the specification (HMAC-SHA256 over `id.timestamp.body` with the base64-decoded
//! `whsec_` secret, `v1,<base64>` among space-separated signatures), independently of the crate
//! Tollgate signs with.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::fake_stripe::invoice;
use crate::helpers::{event, spawn_app_with, subject_query, Options, TestApp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    at: Instant,
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a delivery is JSON")
    }
}

/// A receiver that answers `failures` deliveries with 500, then 200, recording every one.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    failures: Arc<Mutex<usize>>,
}

impl Respond for Receiver {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let delivery = Delivery {
            at: Instant::now(),
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: String::from_utf8(request.body.clone()).expect("UTF-8"),
        };
        log_for_independent_check(&delivery);
        self.got.lock().unwrap().push(delivery);
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            ResponseTemplate::new(500)
        } else {
            ResponseTemplate::new(204)
        }
    }
}

impl Receiver {
    async fn start(failures: usize) -> (MockServer, Receiver) {
        let server = MockServer::start().await;
        let receiver = Receiver {
            got: Arc::default(),
            failures: Arc::new(Mutex::new(failures)),
        };
        Mock::given(wiremock::matchers::method("POST"))
            .and(wiremock::matchers::path("/hooks"))
            .respond_with(receiver.clone())
            .mount(&server)
            .await;
        (server, receiver)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a delivery satisfies `wanted`.
    async fn until(&self, what: &str, wanted: impl Fn(&[Delivery]) -> bool) -> Vec<Delivery> {
        for _ in 0..200 {
            let got = self.deliveries();
            if wanted(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: not delivered; got {:#?}", self.deliveries());
    }
}

/// With `TOLLGATE_TEST_DELIVERY_LOG` set, every delivery is appended to that file (one JSON
/// object a line: secret, headers, body) for CI's second, independent check with the Standard
/// Webhooks project's own Python library (scripts/verify-deliveries.sh).
fn log_for_independent_check(d: &Delivery) {
    use std::io::Write;
    let Ok(path) = std::env::var("TOLLGATE_TEST_DELIVERY_LOG") else {
        return;
    };
    let line = json!({
        "secret": SECRET,
        "headers": {
            "webhook-id": d.id,
            "webhook-timestamp": d.timestamp,
            "webhook-signature": d.signature,
        },
        "body": d.body,
    });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the delivery log opens");
    // One write of the whole line: tests running at once append to the same file, and a
    // formatted write would reach it in pieces that interleave with theirs.
    let line = format!("{line}\n");
    file.write_all(line.as_bytes())
        .expect("the delivery log is written");
}

/// Standard Webhooks verification, from the specification (not Tollgate's signer).
fn verify(secret: &str, d: &Delivery) -> Result<(), String> {
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").ok_or("no whsec_ prefix")?)
        .map_err(|e| e.to_string())?;
    let timestamp: i64 = d
        .timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is no integer")?;
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return Err("webhook-timestamp is more than 5 minutes away".into());
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", d.id, d.timestamp, d.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let found = d
        .signature
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .any(|(version, sig)| version == "v1" && sig == expected);
    if found {
        Ok(())
    } else {
        Err(format!("no v1 signature matches among `{}`", d.signature))
    }
}

fn events_config(receiver: &MockServer, extra: &str) -> String {
    format!(
        r#"
[events]
retry_first_ms = 150
poll_interval_ms = 50

[[events.endpoints]]
name = "product"
url = "{}/hooks"
secret = "{SECRET}"
description = "the product's receiver"
{extra}
"#,
        receiver.uri()
    )
}

/// An app without endpoints (events are only listed), placing them quickly.
async fn listing_app() -> TestApp {
    spawn_app_with(Options {
        extra_toml: "[events]\npoll_interval_ms = 50\n".into(),
        ..Options::default()
    })
    .await
}

async fn app_with_receiver(failures: usize) -> (TestApp, MockServer, Receiver) {
    let (server, receiver) = Receiver::start(failures).await;
    let app = spawn_app_with(Options {
        extra_toml: events_config(&server, ""),
        ..Options::default()
    })
    .await;
    (app, server, receiver)
}

fn types(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.json()["type"].as_str().unwrap().to_owned())
        .collect()
}

fn has_type(deliveries: &[Delivery], t: &str) -> bool {
    types(deliveries).iter().any(|x| x == t)
}

/// `GET /v1/events` with a service token, as JSON.
async fn listed(app: &TestApp, query: &str) -> Value {
    let token = app.idp.service_token("billing:read");
    let res = app.get(&format!("/v1/events{query}"), Some(&token)).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Every listed event of `subject`, paging with `limit`, after the sequencer placed `n`.
async fn all_listed(app: &TestApp, subject: &str, n: usize, limit: usize) -> Vec<Value> {
    for _ in 0..200 {
        let mut out = Vec::new();
        let mut after = String::from("0");
        loop {
            let page = listed(
                app,
                &format!("?{}&limit={limit}&after={after}", subject_query(subject)),
            )
            .await;
            let data = page["data"].as_array().unwrap().clone();
            assert!(data.len() <= limit);
            out.extend(data);
            after = page["next_cursor"].as_str().unwrap().to_owned();
            if !page["has_more"].as_bool().unwrap() {
                break;
            }
        }
        if out.len() >= n {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} events of {subject} were listed");
}

#[tokio::test]
async fn a_subscription_is_told_signed_in_revision_order_and_listed_alike() {
    let (app, _server, receiver) = app_with_receiver(0).await;
    let (session_id, _) = app.subscribe("alice", "pro", "month").await;

    let got = receiver
        .until("entitlements.changed", |d| {
            has_type(d, "entitlements.changed")
        })
        .await;
    for d in &got {
        verify(SECRET, d).unwrap_or_else(|e| panic!("delivery {} does not verify: {e}", d.id));
        let body = d.json();
        assert_eq!(body["id"], d.id, "webhook-id is the event's id");
        assert_eq!(body["subject"]["key"], "user:alice");
        assert_eq!(body["subject"]["user_id"], "alice");
    }
    let kinds = types(&got);
    assert!(
        kinds.contains(&"subscription.created".to_owned()),
        "{kinds:?}"
    );
    assert!(kinds.contains(&"payment.succeeded".to_owned()), "{kinds:?}");
    // The subject's revisions arrive one after the other, from 1, without a gap.
    let revisions: Vec<i64> = got
        .iter()
        .map(|d| d.json()["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(revisions, (1..=revisions.len() as i64).collect::<Vec<_>>());

    let changed = got
        .iter()
        .map(Delivery::json)
        .find(|b| b["type"] == "entitlements.changed")
        .unwrap();
    assert_eq!(changed["data"]["access"], true);
    assert_eq!(changed["data"]["reason"], "active");
    assert_eq!(changed["data"]["plan"], "pro");
    assert!(changed["data"]["features"]
        .as_array()
        .unwrap()
        .contains(&json!("export")));
    assert_eq!(changed["data"]["previous"]["access"], false);
    let created = got
        .iter()
        .map(Delivery::json)
        .find(|b| b["type"] == "subscription.created")
        .unwrap();
    assert_eq!(created["data"]["plan"], "pro");
    assert_eq!(created["data"]["status"], "active");
    assert!(created["data"]["subscription_id"]
        .as_str()
        .unwrap()
        .starts_with("sub_"));

    // The listing holds the same events, with the same bodies, in the same order.
    let listing = all_listed(&app, "user:alice", got.len(), 100).await;
    let listed_ids: Vec<&str> = listing.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let delivered_ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed_ids, delivered_ids);
    assert_eq!(listing[0], got[0].json());

    // A second verify re-reads the customer and finds nothing changed: nothing more is told.
    let before = listing.len();
    let token = app.user_token("alice");
    assert_eq!(app.verify(&token, &session_id).await.status(), 200);
    let again = listed(&app, "?user_id=alice&limit=100").await;
    assert_eq!(again["data"].as_array().unwrap().len(), before);
}

#[tokio::test]
async fn a_lifetime_purchase_is_completed_and_its_refund_told() {
    let (app, _server, receiver) = app_with_receiver(0).await;
    let (_, session_id, _) = app.paid_checkout("bob", "lifetime", "once").await;
    let token = app.user_token("bob");
    assert_eq!(app.verify(&token, &session_id).await.status(), 200);
    let got = receiver
        .until("purchase.completed", |d| {
            has_type(d, "purchase.completed") && has_type(d, "entitlements.changed")
        })
        .await;
    let completed = got
        .iter()
        .map(Delivery::json)
        .find(|b| b["type"] == "purchase.completed")
        .unwrap();
    assert_eq!(completed["data"]["plan"], "lifetime");
    assert_eq!(completed["data"]["checkout_session_id"], session_id);
    assert_eq!(completed["data"]["status"], "paid");

    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund_bob", "charge.refunded", charge))
        .await;
    let got = receiver
        .until("purchase.refunded and the loss of access", |d| {
            has_type(d, "purchase.refunded")
                && types(d)
                    .iter()
                    .filter(|t| *t == "entitlements.changed")
                    .count()
                    == 2
        })
        .await;
    let last_change = got
        .iter()
        .rev()
        .map(Delivery::json)
        .find(|b| b["type"] == "entitlements.changed")
        .unwrap();
    assert_eq!(last_change["data"]["access"], false);
    assert_eq!(last_change["data"]["reason"], "refunded");
    assert_eq!(last_change["data"]["previous"]["reason"], "lifetime");
    for d in &got {
        verify(SECRET, d).unwrap();
    }
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_same_event_after_growing_waits() {
    let (app, _server, receiver) = app_with_receiver(3).await;
    app.subscribe("carol", "pro", "month").await;
    let got = receiver
        .until("four attempts of the first event", |d| {
            d.iter().filter(|x| x.json()["revision"] == 1).count() >= 4
        })
        .await;
    let first: Vec<&Delivery> = got.iter().filter(|d| d.json()["revision"] == 1).collect();
    assert!(
        first.iter().all(|d| d.id == first[0].id),
        "one webhook-id on every retry"
    );
    for d in &first {
        verify(SECRET, d).unwrap();
    }
    // Nothing of the subject overtakes its first event while that one is retried.
    let before_success: Vec<&Delivery> = got
        .iter()
        .take_while(|d| !std::ptr::eq(*d, first[3]))
        .collect();
    assert!(before_success.iter().all(|d| d.json()["revision"] == 1));
    // 150 ms, 300 ms, 600 ms (less up to a fifth of jitter): each wait longer than the last.
    let waits: Vec<Duration> = first.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        waits[1] > waits[0] && waits[2] > waits[1],
        "waits {waits:?}"
    );
    assert!(waits[0] >= Duration::from_millis(110), "waits {waits:?}");

    // The delivery is stored as delivered after four attempts (the dispatcher records the
    // answer just after the receiver gave it).
    let event_id = first[0].id.clone();
    let mut stored = None;
    for _ in 0..100 {
        let rows = app
            .db(|conn| tollgate::db::outbox::deliveries(conn, tollgate::db::outbox::DELIVERED, 100))
            .await;
        stored = rows.into_iter().find(|r| r.event_id == event_id);
        if stored.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = stored.expect("stored as delivered");
    assert_eq!(row.attempts, 4);
    assert_eq!(row.endpoint, "product");
    // The rest of the subject's events follow, in order.
    let all = receiver
        .until("the rest", |d| has_type(d, "entitlements.changed"))
        .await;
    let delivered_revisions: Vec<i64> = all
        .iter()
        .map(|d| d.json()["revision"].as_i64().unwrap())
        .collect();
    let mut unique = delivered_revisions.clone();
    unique.dedup();
    assert_eq!(unique, (1..=unique.len() as i64).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_receiver_that_was_down_catches_up_through_the_listing() {
    // No endpoint at all: the events are only listed.
    let app = listing_app().await;
    let sub_id = app.subscribed("dave", "pro", "month").await;
    // 50 changes: cancel at period end, and back, 25 times.
    for i in 0..50 {
        let sub = app.stripe.update_subscription(&sub_id, |s| {
            s["cancel_at_period_end"] = json!(i % 2 == 0);
        });
        app.webhook_ok(&event(
            &format!("evt_flip_{i}"),
            "customer.subscription.updated",
            sub,
        ))
        .await;
    }
    // Subscribing tells subscription.created, payment.succeeded and entitlements.changed; each
    // flip subscription.updated and entitlements.changed.
    let listing = all_listed(&app, "user:dave", 103, 7).await;
    assert_eq!(listing.len(), 103);
    let revisions: Vec<i64> = listing
        .iter()
        .map(|e| e["revision"].as_i64().unwrap())
        .collect();
    assert_eq!(
        revisions,
        (1..=revisions.len() as i64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let updates = listing
        .iter()
        .filter(|e| e["type"] == "subscription.updated")
        .count();
    assert_eq!(updates, 50);
    let changes = listing
        .iter()
        .filter(|e| e["type"] == "entitlements.changed")
        .count();
    assert_eq!(
        changes, 51,
        "subscribing, then each flip between active and canceling"
    );
    let last = listing.last().unwrap();
    assert_eq!(last["type"], "entitlements.changed");
    assert_eq!(last["data"]["reason"], "active");

    // Types filter, and a cursor past the end answers nothing new.
    let only = listed(
        &app,
        "?user_id=dave&types=subscription.created,subscription.updated&limit=100",
    )
    .await;
    assert_eq!(only["data"].as_array().unwrap().len(), 51);
    let end = listed(&app, "?limit=100&after=999999").await;
    assert_eq!(end["data"], json!([]));
    assert_eq!(end["next_cursor"], "999999");
    assert_eq!(end["has_more"], false);
    assert_eq!(
        app.count("event_deliveries").await,
        0,
        "no endpoint, no deliveries"
    );
}

#[tokio::test]
async fn the_listing_refuses_bad_queries_and_callers() {
    let app = spawn_app_with(Options::default()).await;
    let token = app.idp.service_token("billing:read");
    for (query, code) in [
        ("?after=abc", "invalid_cursor"),
        ("?after=-1", "invalid_cursor"),
        ("?limit=0", "invalid_limit"),
        ("?limit=101", "invalid_limit"),
        ("?user_id=%20", "invalid_user_id"),
        ("?tenant_id=%00", "invalid_tenant_id"),
        ("?types=entitlements.changed,nope", "invalid_types"),
    ] {
        let res = app.get(&format!("/v1/events{query}"), Some(&token)).await;
        assert_eq!(res.status(), 400, "{query}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], code, "{query}");
    }
    let user = app.user_token("alice");
    assert_eq!(app.get("/v1/events", Some(&user)).await.status(), 403);
    assert_eq!(app.get("/v1/events", None).await.status(), 401);
}

#[tokio::test]
async fn a_grant_given_and_revoked_tells_each_change_of_entitlements() {
    let app = listing_app().await;
    let admin = app.idp.service_token("billing:admin");
    let (status, grant) = app
        .send_to(
            &app.address,
            reqwest::Method::POST,
            "/v1/grants",
            &admin,
            Some(json!({"user_id": "erin", "plan": "pro", "note": "partner deal"})),
        )
        .await;
    assert_eq!(status, 201, "{grant}");
    let events = app.events_of("user:erin", 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "entitlements.changed");
    assert_eq!(events[0]["data"]["reason"], "granted");
    assert_eq!(events[0]["data"]["grant_id"], grant["id"]);
    assert_eq!(events[0]["revision"], 1);

    let path = format!("/v1/grants/{}", grant["id"].as_str().unwrap());
    let (status, _) = app
        .send_to(&app.address, reqwest::Method::DELETE, &path, &admin, None)
        .await;
    assert_eq!(status, 200);
    // Revoking again changes nothing and tells nothing.
    let (status, _) = app
        .send_to(&app.address, reqwest::Method::DELETE, &path, &admin, None)
        .await;
    assert_eq!(status, 200);
    let events = app.events_of("user:erin", 2).await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["data"]["access"], false);
    assert_eq!(events[1]["data"]["previous"]["reason"], "granted");
    assert_eq!(events[1]["revision"], 2);
}

#[tokio::test]
async fn a_failed_payment_is_told_and_so_is_the_end_of_its_grace_period_by_time_alone() {
    let (app, _server, receiver) = app_with_receiver(0).await;
    let sub_id = app.subscribed("frank", "pro", "month").await;
    let customer = app.stripe.subscription(&sub_id)["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    app.stripe
        .update_subscription(&sub_id, |s| s["status"] = json!("past_due"));
    app.stripe.add_failed_charge(&customer, 900);
    app.webhook_ok(&event(
        "evt_failed_frank",
        "invoice.payment_failed",
        invoice("in_frank", &customer, "open"),
    ))
    .await;
    let reason_is = |d: &Delivery, reason: &str| {
        let body = d.json();
        body["type"] == "entitlements.changed" && body["data"]["reason"] == reason
    };
    let got = receiver
        .until("payment.failed and the grace period", |d| {
            has_type(d, "payment.failed") && d.iter().any(|x| reason_is(x, "grace"))
        })
        .await;
    let failed = got
        .iter()
        .map(Delivery::json)
        .find(|b| b["type"] == "payment.failed")
        .unwrap();
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["amount"], 900);
    let grace = got.iter().find(|d| reason_is(d, "grace")).unwrap().json();
    assert_eq!(grace["data"]["access"], true);
    let grace_until: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(grace["data"]["grace_until"].clone()).unwrap();

    // Nothing is asked or sent; only time passes beyond the grace period.
    let webhooks_before = app.count("stripe_events").await;
    app.set_now(grace_until + chrono::Duration::seconds(1));
    let got = receiver
        .until("the end of the grace period", |d| {
            d.iter().any(|x| reason_is(x, "grace_expired"))
        })
        .await;
    let expired = got.iter().find(|d| reason_is(d, "grace_expired")).unwrap();
    verify(SECRET, expired).unwrap();
    let expired = expired.json();
    assert_eq!(expired["data"]["access"], false);
    assert_eq!(expired["data"]["previous"]["reason"], "grace");
    assert_eq!(expired["data"]["previous"]["access"], true);
    assert_eq!(
        expired["revision"].as_i64(),
        grace["revision"].as_i64().map(|r| r + 1)
    );
    assert_eq!(app.count("stripe_events").await, webhooks_before);
    // Told once: later passes find the document unchanged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let told = receiver
        .deliveries()
        .iter()
        .filter(|d| reason_is(d, "grace_expired"))
        .count();
    assert_eq!(told, 1);
}

#[tokio::test]
async fn two_replicas_deliver_each_event_once_and_each_subject_in_order() {
    let (app, _server, receiver) = app_with_receiver(0).await;
    // A second replica on the same database, with the same endpoint: both dispatch.
    let _second = app.another_instance().await;
    let users = ["gus", "hal", "ivy", "jon", "kim"];
    let subscribes = users.iter().map(|u| app.subscribe(u, "pro", "month"));
    futures::future::join_all(subscribes).await;
    receiver
        .until("every subject's entitlements.changed", |d| {
            d.iter()
                .filter(|x| x.json()["type"] == "entitlements.changed")
                .count()
                >= users.len()
        })
        .await;
    // Let any stray second delivery arrive before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.deliveries();
    let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "each event delivered once per endpoint");
    for user in users {
        let key = format!("user:{user}");
        let revisions: Vec<i64> = got
            .iter()
            .map(Delivery::json)
            .filter(|b| b["subject"]["key"] == key.as_str())
            .map(|b| b["revision"].as_i64().unwrap())
            .collect();
        assert_eq!(
            revisions,
            (1..=revisions.len() as i64).collect::<Vec<_>>(),
            "{user}"
        );
        assert!(revisions.len() >= 3, "{user}: {revisions:?}");
    }
    for d in &got {
        verify(SECRET, d).unwrap();
    }
}

#[tokio::test]
async fn deliveries_that_fail_for_the_whole_window_are_listed_and_delivered_again_on_demand() {
    let (app, _server, receiver) = app_with_receiver(usize::MAX).await;
    app.subscribe("lea", "pro", "month").await;
    receiver
        .until("a first failed attempt", |d| !d.is_empty())
        .await;
    // Three days and more pass while the receiver keeps failing: every delivery gives up.
    app.set_now(chrono::Utc::now() + chrono::Duration::hours(73));
    let admin = app.idp.service_token("billing:admin");
    let mut failed = Value::Null;
    for _ in 0..200 {
        let res = app
            .get("/v1/admin/events/failed?endpoint=product", Some(&admin))
            .await;
        assert_eq!(res.status(), 200);
        failed = res.json().await.unwrap();
        if failed["data"].as_array().unwrap().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = failed["data"].as_array().unwrap().clone();
    assert!(rows.len() >= 3, "{failed:#}");
    let kinds: Vec<&str> = rows.iter().map(|r| r["type"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"subscription.created"), "{kinds:?}");
    assert!(kinds.contains(&"entitlements.changed"), "{kinds:?}");
    for row in &rows {
        assert_eq!(row["endpoint"], "product");
        assert_eq!(row["subject"], "user:lea");
        assert_eq!(row["last_status"], 500);
        assert!(row["attempts"].as_i64().unwrap() >= 1);
        assert!(row["failed_at"].is_string());
    }
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let failed_counted = metrics.lines().any(|l| {
        l.starts_with(
            "tollgate_event_deliveries_total{endpoint=\"product\",type=\"subscription.created\"",
        ) && l.contains("outcome=\"failed\"")
    });
    assert!(failed_counted, "{metrics}");
    // Paging: one at a time, newest first, the cursor continuing where the page ended.
    let page = listed_failed(&app, &admin, "?limit=1").await;
    assert_eq!(page["data"][0]["delivery_id"], rows[0]["delivery_id"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = listed_failed(&app, &admin, &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(next["data"][0]["delivery_id"], rows[1]["delivery_id"]);

    // The receiver is back. One delivery again, by its id:
    *receiver.failures.lock().unwrap() = 0;
    let seen_before = receiver.deliveries().len();
    let one = rows.last().unwrap();
    let (status, out) = app
        .send_to(
            &app.address,
            reqwest::Method::POST,
            "/v1/admin/events/redeliver",
            &admin,
            Some(json!({"delivery_id": one["delivery_id"]})),
        )
        .await;
    assert_eq!((status, &out["queued"]), (202, &json!(1)), "{out}");
    let got = receiver
        .until("the one delivered again", |d| {
            d[seen_before..]
                .iter()
                .any(|x| x.id == one["event_id"].as_str().unwrap())
        })
        .await;
    verify(SECRET, got.last().unwrap()).unwrap();
    // Then everything since the subscription, again (the receiver dedupes by webhook-id).
    let (status, out) = app
        .send_to(
            &app.address,
            reqwest::Method::POST,
            "/v1/admin/events/redeliver",
            &admin,
            Some(json!({"endpoint": "product", "since": "2026-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, 202, "{out}");
    assert!(
        out["queued"].as_u64().unwrap() as usize >= rows.len(),
        "{out}"
    );
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    receiver
        .until("every failed event delivered", |d| {
            ids.iter().all(|id| {
                d.iter()
                    .any(|x| &x.id == id && x.json()["revision"].is_i64())
            })
        })
        .await;
    let after = listed_failed(&app, &admin, "").await;
    assert_eq!(after["data"], json!([]), "nothing failed any more");

    // Refusals.
    for (body, status, code) in [
        (json!({}), 400, "invalid_body"),
        (
            json!({"delivery_id": 1, "endpoint": "product", "since": "2026-01-01T00:00:00Z"}),
            400,
            "invalid_body",
        ),
        (json!({"delivery_id": 0}), 400, "invalid_delivery_id"),
        (
            json!({"endpoint": "no such", "since": "2026-01-01T00:00:00Z"}),
            400,
            "invalid_endpoint",
        ),
        (
            json!({"endpoint": "crm", "since": "2026-01-01T00:00:00Z"}),
            404,
            "endpoint_not_found",
        ),
        (json!({"delivery_id": 999999}), 404, "delivery_not_found"),
    ] {
        let (got_status, out) = app
            .send_to(
                &app.address,
                reqwest::Method::POST,
                "/v1/admin/events/redeliver",
                &admin,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (got_status, out["code"].as_str()),
            (status, Some(code)),
            "{body}: {out}"
        );
    }
    let reader = app.idp.service_token("billing:read");
    assert_eq!(
        app.get("/v1/admin/events/failed", Some(&reader))
            .await
            .status(),
        403
    );
}

async fn listed_failed(app: &TestApp, token: &str, query: &str) -> Value {
    let res = app
        .get(&format!("/v1/admin/events/failed{query}"), Some(token))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn crossing_a_quota_threshold_is_told_once_per_window() {
    let app = spawn_app_with(Options {
        extra_toml: "[events]\npoll_interval_ms = 50\nquota_thresholds = { credits = [50, 100] }\n"
            .into(),
        ..Options::default()
    })
    .await;
    let token = app.idp.service_token("billing:write");
    let consume = |key: &'static str| {
        let app = &app;
        let token = token.clone();
        async move {
            let res = app
                .http
                .post(app.url("/v1/usage"))
                .bearer_auth(token)
                .json(&json!({"user_id": "mia", "quota": "credits", "amount": 1, "idempotency_key": key}))
                .send()
                .await
                .unwrap();
            res.status().as_u16()
        }
    };
    // The free plan allows 3 credits a day: the 2nd takes the use to 66% (past 50%), the 3rd
    // to 100%; a retry of the 2nd and a refused 4th tell nothing.
    assert_eq!(consume("k1").await, 200);
    assert_eq!(consume("k2").await, 200);
    assert_eq!(consume("k2").await, 200);
    assert_eq!(consume("k3").await, 200);
    assert_eq!(consume("k4").await, 402);
    let events = app.events_of("user:mia", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = app.events_of("user:mia", events.len()).await;
    let told: Vec<(i64, i64)> = events
        .iter()
        .filter(|e| e["type"] == "quota.threshold_reached")
        .map(|e| {
            (
                e["data"]["threshold"].as_i64().unwrap(),
                e["data"]["used"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(told, [(50, 2), (100, 3)], "{events:#?}");
    let first = &events[0]["data"];
    assert_eq!(first["quota"], "credits");
    assert_eq!(first["limit"], 3);
    assert_eq!(first["period"], "day");
    assert!(first["resets_at"].is_string());
    assert_eq!(app.count("quota_crossings").await, 2);
}

#[tokio::test]
async fn stripe_saying_a_trial_ends_soon_is_told_as_trial_will_end_once() {
    let (app, _server, receiver) = app_with_receiver(0).await;
    let sub_id = app.subscribed("nia", "pro", "month").await;
    let trial_end = chrono::Utc::now().timestamp() + 3 * 86_400;
    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("trialing");
        s["trial_end"] = json!(trial_end);
    });
    let will_end = event("evt_trial_nia", "customer.subscription.trial_will_end", sub);
    app.webhook_ok(&will_end).await;
    // Stripe delivers it again: told once.
    app.webhook_ok(&will_end).await;
    let got = receiver
        .until("trial.will_end", |d| has_type(d, "trial.will_end"))
        .await;
    let told: Vec<Value> = got
        .iter()
        .map(Delivery::json)
        .filter(|b| b["type"] == "trial.will_end")
        .collect();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["data"]["subscription_id"], sub_id);
    assert_eq!(told[0]["data"]["plan"], "pro");
    let told_end: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(told[0]["data"]["trial_end"].clone()).unwrap();
    assert_eq!(told_end.timestamp(), trial_end);
    assert_eq!(told[0]["subject"]["user_id"], "nia");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver
            .deliveries()
            .iter()
            .filter(|d| d.json()["type"] == "trial.will_end")
            .count(),
        1
    );
}

#[tokio::test]
async fn concurrent_changes_of_one_subject_tell_documents_that_follow_each_other() {
    let app = listing_app().await;
    let admin = app.idp.service_token("billing:admin");
    let plans = ["starter", "maker", "pro", "lifetime"];
    let grants = plans.iter().map(|plan| {
        app.send_to(
            &app.address,
            reqwest::Method::POST,
            "/v1/grants",
            &admin,
            Some(json!({"user_id": "oli", "plan": plan, "note": "concurrency"})),
        )
    });
    for (status, out) in futures::future::join_all(grants).await {
        assert_eq!(status, 201, "{out}");
    }
    // However the four commits were ordered, the last document told is the strongest grant.
    let mut told: Vec<Value> = Vec::new();
    for _ in 0..200 {
        told = app
            .events_of("user:oli", 1)
            .await
            .into_iter()
            .filter(|e| e["type"] == "entitlements.changed")
            .collect();
        if told.last().is_some_and(|e| e["data"]["plan"] == "lifetime") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each document told starts from the one told before it ...
    for pair in told.windows(2) {
        for field in ["access", "reason", "plan"] {
            assert_eq!(
                pair[1]["data"]["previous"][field], pair[0]["data"][field],
                "{told:#?}"
            );
        }
    }
    // ... and the last one is what the subject holds now: the strongest grant.
    let last = &told.last().unwrap()["data"];
    let reader = app.idp.service_token("billing:read");
    let (status, now) = app
        .send_to(
            &app.address,
            reqwest::Method::GET,
            "/v1/entitlements?user_id=oli",
            &reader,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(last["plan"], now["plan"], "{told:#?}");
    assert_eq!(last["grant_id"], now["grant_id"]);
    assert_eq!(last["plan"], "lifetime");
}
