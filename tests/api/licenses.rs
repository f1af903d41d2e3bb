//! Licenses (docs/LICENSES.md): a lifetime purchase whose plan provisions GitHub gives its buyer
//! a license; the buyer names a GitHub account, which is invited to the organization with the
//! team, tracked to acceptance, and removed after a refund or a lost dispute. GitHub is a fake
//! at the network boundary whose received requests are asserted.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::fake_github::{FakeGithub, ORG, TEAM, TEAM_ID, TOKEN};
use crate::helpers::{event, spawn_app_with, Options, TestApp};

async fn app_with_github() -> (TestApp, FakeGithub) {
    let github = FakeGithub::start().await;
    let app = spawn_app_with(Options {
        github: Some(github.base_url()),
        ..Options::default()
    })
    .await;
    (app, github)
}

async fn licenses(app: &TestApp, user: &str) -> Vec<Value> {
    let res = app.get("/v1/licenses", Some(&app.user_token(user))).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["data"].as_array().unwrap().clone()
}

/// The buyer's one license, once `done` holds for it (the worker runs in the background).
async fn license_when(app: &TestApp, user: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let all = licenses(app, user).await;
        assert_eq!(all.len(), 1, "{all:?}");
        last = all[0].clone();
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the license never reached the expected state: {last}");
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |l: &Value| l["status"] == status && l["pending_step"] != "invite"
}

async fn submit(app: &TestApp, user: &str, license_id: &str, username: &str) -> reqwest::Response {
    app.post_json(
        &format!("/v1/licenses/{license_id}/github"),
        Some(&app.user_token(user)),
        &json!({ "username": username }),
    )
    .await
}

/// `user` submits `login` for the license, and it is invited.
async fn invite(app: &TestApp, user: &str, license_id: &str, login: &str) -> Value {
    assert_eq!(submit(app, user, license_id, login).await.status(), 202);
    license_when(app, user, status_is("invited")).await
}

/// Buys the lifetime license as `user` and answers its id.
async fn bought(app: &TestApp, user: &str) -> (String, String) {
    let (session_id, status) = app.subscribe(user, "lifetime", "once").await;
    assert_eq!(status["reason"], "lifetime");
    let all = licenses(app, user).await;
    assert_eq!(all.len(), 1, "one license per purchase: {all:?}");
    (all[0]["id"].as_str().unwrap().to_owned(), session_id)
}

/// The subject's events once its `license.*` types are `expected` (events are listed once the
/// sequencer placed them, shortly after their commit).
async fn told(app: &TestApp, subject: &str, expected: &[&str]) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..100 {
        events = app.events_of(subject, 1).await;
        if types(&events) == expected {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(types(&events), expected);
    events
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .filter(|t| t.starts_with("license."))
        .collect()
}

#[tokio::test]
async fn a_lifetime_purchase_becomes_access_to_the_github_team() {
    let (app, github) = app_with_github().await;
    github.add_user("OctoCat", 583231);
    let (license_id, session_id) = bought(&app, "alice").await;

    let license = &licenses(&app, "alice").await[0];
    assert_eq!(license["status"], "pending");
    assert_eq!(license["plan"], "lifetime");
    assert_eq!(license["checkout_session_id"], session_id.as_str());
    assert_eq!(license["user_id"], "alice");
    assert!(license["github_username"].is_null());
    // Nothing reaches GitHub before the buyer names an account.
    assert!(github.received().is_empty());
    let created = told(&app, "user:alice", &["license.created"]).await;
    let said: Vec<&Value> = created
        .iter()
        .filter(|e| e["type"] == "license.created")
        .collect();
    assert_eq!(said.len(), 1, "{created:?}");
    assert_eq!(said[0]["data"]["id"], license_id.as_str());
    assert_eq!(said[0]["data"]["status"], "pending");

    // A second purchase verification (the same session) creates no second license.
    let res = app.verify(&app.user_token("alice"), &session_id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(licenses(&app, "alice").await.len(), 1);

    let res = submit(&app, "alice", &license_id, "octocat").await;
    assert_eq!(res.status(), 202);
    let submitted: Value = res.json().await.unwrap();
    assert_eq!(submitted["status"], "username_submitted");
    // GitHub's spelling of the login is kept.
    assert_eq!(submitted["github_username"], "OctoCat");

    let invited = license_when(&app, "alice", status_is("invited")).await;
    assert_eq!(invited["pending_step"], "check");
    assert!(invited["invited_at"].is_string());

    let user = github.received_on("GET", "/users/octocat");
    assert_eq!(user.len(), 1);
    for r in github.received() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.api_version.as_deref(), Some("2022-11-28"));
    }
    assert_eq!(
        github
            .received_on("GET", &format!("/orgs/{ORG}/teams/{TEAM}"))
            .len(),
        1
    );
    let invitations = github.received_on("POST", &format!("/orgs/{ORG}/invitations"));
    assert_eq!(invitations.len(), 1);
    assert_eq!(
        invitations[0].body,
        json!({"invitee_id": 583231, "role": "direct_member", "team_ids": [TEAM_ID]})
    );
    assert_eq!(github.membership("octocat"), Some("pending"));

    // The same username again changes nothing.
    let res = submit(&app, "alice", &license_id, "OCTOCAT").await;
    assert_eq!(res.status(), 200);
    assert_eq!(github.invitations_sent(), vec!["octocat".to_owned()]);

    // The buyer accepts; the next check sees it.
    github.accept("octocat");
    let active = license_when(&app, "alice", status_is("active")).await;
    assert!(active["accepted_at"].is_string());
    assert!(active["pending_step"].is_null());
    assert!(github.in_team("octocat"));

    let all = told(
        &app,
        "user:alice",
        &["license.created", "license.invited", "license.active"],
    )
    .await;
    let active_event = all.iter().find(|e| e["type"] == "license.active").unwrap();
    assert_eq!(active_event["data"]["github_username"], "OctoCat");

    // After acceptance the account is fixed.
    let res = submit(&app, "alice", &license_id, "hubot").await;
    assert_eq!(res.status(), 409);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "license_active");

    // Metrics: licenses by state, acceptance time, GitHub calls.
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("tollgate_license_acceptance_seconds_count"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"tollgate_github_calls_total{operation="create_invitation",outcome="ok"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn usernames_are_checked_by_rule_then_with_github_and_only_the_buyer_submits() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, _) = bought(&app, "alice").await;

    for bad in [
        "-octo",
        "octo--cat",
        "octo_cat",
        "../admin",
        "",
        &"x".repeat(40),
    ] {
        let res = submit(&app, "alice", &license_id, bad).await;
        assert_eq!(res.status(), 400, "{bad:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_github_username", "{bad:?}");
    }
    assert!(
        github.received().is_empty(),
        "rules are checked before GitHub"
    );

    let res = submit(&app, "alice", &license_id, "nobody-here").await;
    assert_eq!(res.status(), 422);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "github_user_not_found");
    assert_eq!(github.received_on("GET", "/users/nobody-here").len(), 1);
    assert_eq!(licenses(&app, "alice").await[0]["status"], "pending");

    let res = submit(&app, "mallory", &license_id, "octocat").await;
    assert_eq!(res.status(), 403);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "not_license_holder");
    assert!(licenses(&app, "mallory").await.is_empty());

    let res = submit(
        &app,
        "alice",
        "lic_00000000000000000000000000000000",
        "octocat",
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = submit(&app, "alice", "lic_nope", "octocat").await;
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_license_id");

    // GitHub down: 503, nothing stored.
    github.fail_next("/users/", 1);
    let res = submit(&app, "alice", &license_id, "octocat").await;
    assert_eq!(res.status(), 503);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "github_unavailable");
    assert_eq!(licenses(&app, "alice").await[0]["status"], "pending");

    // Rate-limited per buyer (10 an hour, the failures above included).
    let mut limited = None;
    for i in 0..12 {
        let res = submit(&app, "alice", &license_id, &format!("ghost{i}")).await;
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 422);
    }
    let res = limited.expect("the eleventh submission within the hour is refused");
    assert!(res.headers().get("retry-after").is_some());
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert!(github.invitations_sent().is_empty());
}

#[tokio::test]
async fn a_changed_username_cancels_the_pending_invitation_and_invites_the_new_one() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    github.add_user("hubot", 2);
    let (license_id, _) = bought(&app, "alice").await;

    invite(&app, "alice", &license_id, "octocat").await;
    assert_eq!(
        submit(&app, "alice", &license_id, "hubot").await.status(),
        202
    );
    let invited = license_when(&app, "alice", |l| {
        status_is("invited")(l) && l["github_username"] == "hubot"
    })
    .await;
    assert!(invited["invitation_expired_at"].is_null());

    assert_eq!(
        github.membership("octocat"),
        None,
        "the old invitation is canceled"
    );
    assert_eq!(github.membership("hubot"), Some("pending"));
    assert_eq!(
        github
            .received_on("DELETE", &format!("/orgs/{ORG}/memberships/octocat"))
            .len(),
        1
    );
    assert_eq!(github.invitations_sent(), ["octocat", "hubot"]);
}

#[tokio::test]
async fn an_expired_invitation_is_told_and_sent_again_on_request() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, _) = bought(&app, "alice").await;
    invite(&app, "alice", &license_id, "octocat").await;

    github.expire("octocat");
    let expired = license_when(&app, "alice", |l| l["invitation_expired_at"].is_string()).await;
    assert_eq!(expired["status"], "invited");
    assert!(
        expired["pending_step"].is_null(),
        "no more checks: {expired}"
    );

    assert_eq!(
        submit(&app, "alice", &license_id, "octocat").await.status(),
        202
    );
    let again = license_when(&app, "alice", |l| {
        status_is("invited")(l) && l["invitation_expired_at"].is_null()
    })
    .await;
    assert_eq!(again["pending_step"], "check");
    assert_eq!(github.invitations_sent(), ["octocat", "octocat"]);
    told(
        &app,
        "user:alice",
        &[
            "license.created",
            "license.invited",
            "license.invitation_expired",
            "license.invited",
        ],
    )
    .await;
}

#[tokio::test]
async fn github_failing_then_recovering_sends_one_invitation() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, _) = bought(&app, "alice").await;
    let admin = app.idp.service_token("billing:admin");

    // The check of the username passes; then the organization's API answers 502 twice and
    // 429 once.
    github.fail_next("/orgs/", 2);
    github.rate_limit_next("/orgs/", 1);
    assert_eq!(
        submit(&app, "alice", &license_id, "octocat").await.status(),
        202
    );
    // Meanwhile operators see the failure.
    let mut seen_error = None;
    for _ in 0..100 {
        let res = app.get("/v1/admin/licenses", Some(&admin)).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        let l = &body["data"][0];
        if l["attempts"].as_i64().unwrap_or(0) > 0 {
            seen_error = l["last_error"].as_str().map(str::to_owned);
            break;
        }
        if l["status"] == "invited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = seen_error.expect("a failed attempt is listed with its error");
    assert!(error.contains("502"), "{error}");

    let invited = license_when(&app, "alice", status_is("invited")).await;
    assert_eq!(invited["github_username"], "octocat");
    assert_eq!(github.invitations_sent(), ["octocat"]);
    let body: Value = app
        .get("/v1/admin/licenses", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"][0]["attempts"], 0);
    assert!(body["data"][0]["last_error"].is_null());
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"outcome="server_error""#), "{metrics}");
    assert!(metrics.contains(r#"outcome="rate_limited""#), "{metrics}");
}

#[tokio::test]
async fn an_invitation_sent_before_a_crash_is_recorded_without_a_second_one() {
    // The worker invited, then died before recording it: GitHub holds the invitation, the
    // license still waits to invite. The retry's invitation is refused as already there, and
    // GitHub's membership says it is pending.
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, _) = bought(&app, "alice").await;
    github.invite_directly("octocat");
    assert_eq!(
        submit(&app, "alice", &license_id, "octocat").await.status(),
        202
    );
    let invited = license_when(&app, "alice", status_is("invited")).await;
    assert_eq!(invited["github_username"], "octocat");
    assert_eq!(
        github.invitations_sent(),
        ["octocat"],
        "no second invitation"
    );
    let refused = github.received_on("POST", &format!("/orgs/{ORG}/invitations"));
    assert_eq!(
        refused.len(),
        1,
        "the retry's invitation, refused by GitHub"
    );
    assert!(
        !github
            .received_on("GET", &format!("/orgs/{ORG}/memberships/octocat"))
            .is_empty(),
        "then the membership tells it is pending"
    );
}

#[tokio::test]
async fn a_refund_removes_the_buyer_from_the_team_and_the_organization() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, session_id) = bought(&app, "alice").await;
    invite(&app, "alice", &license_id, "octocat").await;
    github.accept("octocat");
    license_when(&app, "alice", status_is("active")).await;

    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund", "charge.refunded", charge))
        .await;
    let revoked = license_when(&app, "alice", status_is("revoked")).await;
    assert!(revoked["revoked_at"].is_string());
    assert!(revoked["pending_step"].is_null());
    assert_eq!(github.membership("octocat"), None);
    assert!(!github.in_team("octocat"));
    assert_eq!(
        github
            .received_on(
                "DELETE",
                &format!("/orgs/{ORG}/teams/{TEAM}/memberships/octocat")
            )
            .len(),
        1
    );
    assert_eq!(
        github
            .received_on("DELETE", &format!("/orgs/{ORG}/memberships/octocat"))
            .len(),
        1
    );
    told(
        &app,
        "user:alice",
        &[
            "license.created",
            "license.invited",
            "license.active",
            "license.revoked",
        ],
    )
    .await;
    let res = submit(&app, "alice", &license_id, "hubot").await;
    assert_eq!(res.status(), 409);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "license_revoked");
}

#[tokio::test]
async fn a_buyer_already_in_the_organization_joins_the_team_and_loses_only_the_team() {
    let (app, github) = app_with_github().await;
    github.add_user("staffer", 7);
    github.add_member("staffer");
    let (license_id, session_id) = bought(&app, "alice").await;
    assert_eq!(
        submit(&app, "alice", &license_id, "staffer").await.status(),
        202
    );
    license_when(&app, "alice", status_is("active")).await;
    assert!(github.in_team("staffer"));
    assert!(github.invitations_sent().is_empty());
    let joined = github.received_on(
        "PUT",
        &format!("/orgs/{ORG}/teams/{TEAM}/memberships/staffer"),
    );
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].body, json!({"role": "member"}));

    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund", "charge.refunded", charge))
        .await;
    license_when(&app, "alice", status_is("revoked")).await;
    assert!(!github.in_team("staffer"));
    assert_eq!(
        github.membership("staffer"),
        Some("active"),
        "their own membership of the organization stays"
    );
}

#[tokio::test]
async fn a_replaced_username_that_accepted_meanwhile_loses_the_team() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    github.add_user("hubot", 2);
    let (license_id, _) = bought(&app, "alice").await;
    invite(&app, "alice", &license_id, "octocat").await;
    // Accepted on GitHub, and replaced before Tollgate's next check saw it (GitHub does not
    // answer about octocat until the new username is in).
    let octocat = format!("/orgs/{ORG}/memberships/octocat");
    github.fail_next(&octocat, 1_000);
    github.accept("octocat");
    assert_eq!(
        submit(&app, "alice", &license_id, "hubot").await.status(),
        202
    );
    github.fail_next(&octocat, 0);
    license_when(&app, "alice", |l| {
        status_is("invited")(l) && l["github_username"] == "hubot"
    })
    .await;
    assert!(!github.in_team("octocat"));
    assert_eq!(github.membership("hubot"), Some("pending"));
}

#[tokio::test]
async fn a_renamed_account_is_found_by_its_id_and_removed_after_a_refund() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 583231);
    let (license_id, session_id) = bought(&app, "alice").await;
    invite(&app, "alice", &license_id, "octocat").await;
    github.accept("octocat");
    license_when(&app, "alice", status_is("active")).await;

    github.rename("octocat", "octo-renamed");
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund", "charge.refunded", charge))
        .await;
    let revoked = license_when(&app, "alice", status_is("revoked")).await;
    assert_eq!(revoked["github_username"], "octo-renamed");
    assert_eq!(github.membership("octo-renamed"), None);
    assert!(!github.in_team("octo-renamed"));
    assert_eq!(
        github
            .received_on("DELETE", &format!("/orgs/{ORG}/memberships/octo-renamed"))
            .len(),
        1
    );
    assert!(!github.received_on("GET", "/user/583231").is_empty());
}

#[tokio::test]
async fn a_refund_before_any_username_revokes_at_once() {
    let (app, github) = app_with_github().await;
    let (_, session_id) = bought(&app, "alice").await;
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let charge = app.stripe.refund(&payment_intent);
    app.webhook_ok(&event("evt_refund", "charge.refunded", charge))
        .await;
    let license = &licenses(&app, "alice").await[0];
    assert_eq!(license["status"], "revoked");
    assert!(github.received().is_empty());
}

#[tokio::test]
async fn a_dispute_revokes_and_a_won_dispute_invites_again() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (license_id, session_id) = bought(&app, "alice").await;
    invite(&app, "alice", &license_id, "octocat").await;

    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let opened = app.stripe.dispute(&payment_intent, "needs_response");
    app.webhook_ok(&event("evt_opened", "charge.dispute.created", opened))
        .await;
    license_when(&app, "alice", status_is("revoked")).await;
    assert_eq!(
        github.membership("octocat"),
        None,
        "the pending invitation is canceled"
    );

    let won = app.stripe.dispute(&payment_intent, "won");
    app.webhook_ok(&event("evt_won", "charge.dispute.closed", won))
        .await;
    let again = license_when(&app, "alice", status_is("invited")).await;
    assert!(again["revoked_at"].is_null());
    assert_eq!(github.membership("octocat"), Some("pending"));
    assert_eq!(github.invitations_sent(), ["octocat", "octocat"]);
    told(
        &app,
        "user:alice",
        &[
            "license.created",
            "license.invited",
            "license.revoked",
            "license.restored",
            "license.invited",
        ],
    )
    .await;
}

#[tokio::test]
async fn operators_list_stuck_licenses() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (waiting, _) = bought(&app, "alice").await;
    let (invited, _) = bought(&app, "bob").await;
    assert_eq!(submit(&app, "bob", &invited, "octocat").await.status(), 202);
    license_when(&app, "bob", status_is("invited")).await;
    let admin = app.idp.service_token("billing:admin");
    let list = |query: &'static str| {
        let (app, admin) = (&app, admin.clone());
        async move {
            let res = app
                .get(&format!("/v1/admin/licenses{query}"), Some(&admin))
                .await;
            assert_eq!(res.status(), 200, "{query}");
            let body: Value = res.json().await.unwrap();
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        l["id"].as_str().unwrap().to_owned(),
                        l["stuck"].as_bool().unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list("").await,
        [(invited.clone(), false), (waiting.clone(), false)]
    );
    assert!(list("?stuck=true").await.is_empty());
    assert_eq!(list("?status=pending").await, [(waiting.clone(), false)]);

    // A day later the license without a username is stuck; a week later the invitation too.
    let now = chrono::Utc::now();
    app.set_now(now + chrono::Duration::hours(25));
    assert_eq!(list("?stuck=true").await, [(waiting.clone(), true)]);
    app.set_now(now + chrono::Duration::days(8));
    // (The check would see the invitation gone by then; the fake still holds it.)
    assert_eq!(
        list("?stuck=true").await,
        [(invited.clone(), true), (waiting.clone(), true)]
    );
    assert_eq!(
        list("?stuck=true&status=invited").await,
        [(invited.clone(), true)]
    );
    assert_eq!(list("?limit=1").await.len(), 1);

    let res = app
        .get("/v1/admin/licenses?status=lost", Some(&admin))
        .await;
    assert_eq!(res.status(), 400);
    let res = app.get("/v1/admin/licenses?stuck=yes", Some(&admin)).await;
    assert_eq!(res.status(), 400);
    let reader = app.idp.service_token("billing:read");
    let res = app.get("/v1/admin/licenses", Some(&reader)).await;
    assert_eq!(res.status(), 403);

    // Pages follow one another.
    let res = app.get("/v1/admin/licenses?limit=1", Some(&admin)).await;
    let body: Value = res.json().await.unwrap();
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let res = app
        .get(
            &format!("/v1/admin/licenses?limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"][0]["id"], waiting.as_str());
    assert!(body["next_cursor"].is_null());
}

#[tokio::test]
async fn two_replicas_work_each_license_once() {
    let (app, github) = app_with_github().await;
    let other = app.another_instance().await;
    let buyers: Vec<String> = (0..6).map(|i| format!("buyer{i}")).collect();
    let mut ids = Vec::new();
    for (i, buyer) in buyers.iter().enumerate() {
        github.add_user(&format!("gh-{buyer}"), 100 + i as i64);
        ids.push(bought(&app, buyer).await.0);
    }
    // Half submitted through each replica; both replicas' workers claim the steps.
    for (i, (buyer, id)) in buyers.iter().zip(&ids).enumerate() {
        let base = if i % 2 == 0 {
            app.address.clone()
        } else {
            other.clone()
        };
        let res = app
            .http
            .post(format!("{base}/v1/licenses/{id}/github"))
            .bearer_auth(app.user_token(buyer))
            .json(&json!({ "username": format!("gh-{buyer}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
    for buyer in &buyers {
        license_when(&app, buyer, status_is("invited")).await;
    }
    let mut sent = github.invitations_sent();
    sent.sort();
    let mut expected: Vec<String> = buyers.iter().map(|b| format!("gh-{b}")).collect();
    expected.sort();
    assert_eq!(sent, expected);
    assert_eq!(
        github
            .received_on("POST", &format!("/orgs/{ORG}/invitations"))
            .len(),
        buyers.len(),
        "each invitation asked for once: no license was worked by two replicas"
    );
    for buyer in &buyers {
        told(
            &app,
            &format!("user:{buyer}"),
            &["license.created", "license.invited"],
        )
        .await;
    }
}

#[tokio::test]
async fn a_license_counts_as_stuck_from_when_it_began_to_wait() {
    let (app, github) = app_with_github().await;
    github.add_user("octocat", 1);
    let (restored, session_id) = bought(&app, "alice").await;
    let (submitted, _) = bought(&app, "bob").await;
    let admin = app.idp.service_token("billing:admin");
    let t0 = chrono::Utc::now();
    // Two days later alice's purchase is disputed and won: restored, pending again.
    app.set_now(t0 + chrono::Duration::days(2));
    let payment_intent = app.stripe.payment_intent_of(&session_id);
    let opened = app.stripe.dispute(&payment_intent, "needs_response");
    app.webhook_ok(&event("evt_opened", "charge.dispute.created", opened))
        .await;
    let won = app.stripe.dispute(&payment_intent, "won");
    app.webhook_ok(&event("evt_won", "charge.dispute.closed", won))
        .await;
    assert_eq!(licenses(&app, "alice").await[0]["status"], "pending");
    // And bob submits a username GitHub keeps refusing to invite.
    github.fail_next("/orgs/", 10_000);
    assert_eq!(
        submit(&app, "bob", &submitted, "octocat").await.status(),
        202
    );

    app.set_now(t0 + chrono::Duration::days(2) + chrono::Duration::hours(1));
    assert!(
        stuck_ids(&app, &admin).await.is_empty(),
        "both began to wait just now"
    );
    app.set_now(t0 + chrono::Duration::days(3) + chrono::Duration::hours(1));
    let mut now_stuck = stuck_ids(&app, &admin).await;
    now_stuck.sort();
    let mut expected = vec![restored, submitted];
    expected.sort();
    assert_eq!(now_stuck, expected);
    github.fail_next("/orgs/", 0);
}

async fn stuck_ids(app: &TestApp, admin: &str) -> Vec<String> {
    let body: Value = app
        .get("/v1/admin/licenses?stuck=true", Some(admin))
        .await
        .json()
        .await
        .unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect()
}
