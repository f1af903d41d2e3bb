//! The replica's snapshot cache (src/db/snapshot_cache.rs): answers come from it, and writes by
//! this replica, by another replica or by anything else on the database reach it. PostgreSQL
//! only; SQLite has no cache.

use std::time::Duration;

use diesel::{Connection, PgConnection, RunQueryDsl};
use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, TestApp};

const SUBJECT: &str = "user:user-1";
/// How long a replica may take to see another's write in these tests: the listener wakes as
/// the notification arrives, this only keeps a broken build from hanging.
const DEADLINE: Duration = Duration::from_secs(10);

/// Whether `user_id` may use `export`, asked of the replica at `base` by a service.
async fn export_allowed(app: &TestApp, base: &str, user_id: &str) -> bool {
    let token = app.idp.service_token("billing:read");
    let res = app
        .http
        .get(format!(
            "{base}/v1/entitlements?user_id={user_id}&feature=export"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["allowed"].as_bool().unwrap()
}

/// Asks until the answer is `expected`; fails after `DEADLINE`.
async fn until_export_is(app: &TestApp, base: &str, expected: bool) {
    let start = std::time::Instant::now();
    while export_allowed(app, base, "user-1").await != expected {
        assert!(
            start.elapsed() < DEADLINE,
            "{base} still answers allowed = {}",
            !expected
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn until_live(app: &TestApp, live: bool) {
    let cache = app.app.db.snapshot_cache().expect("PostgreSQL has a cache");
    let start = std::time::Instant::now();
    while cache.is_live() != live {
        assert!(
            start.elapsed() < DEADLINE,
            "the cache never became live = {live}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscribes user-1 and caches the answer to a check: lets the listener take the notifications
/// of the set-up's own writes first (which would otherwise drop what the check caches). Returns
/// an outsider's connection and the subscribed snapshot as stored.
async fn cached_subscriber(app: &TestApp) -> (PgConnection, String) {
    until_live(app, true).await;
    app.subscribe("user-1", "pro", "month").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(export_allowed(app, &app.address, "user-1").await);
    let mut conn = outsider(app);
    let subscribed = stored_state(&mut conn);
    (conn, subscribed)
}

/// A connection of its own, as another program would have: its writes are nobody's in Tollgate.
fn outsider(app: &TestApp) -> PgConnection {
    PgConnection::establish(&app.database_url()).unwrap()
}

/// Rewrites the snapshot with the notify trigger off: no replica can learn of it, so only a
/// replica that reads the database sees it.
fn silent_write(conn: &mut PgConnection, state: &str) {
    conn.transaction(|c| {
        diesel::sql_query("ALTER TABLE subject_snapshots DISABLE TRIGGER subject_snapshots_notify")
            .execute(c)?;
        diesel::sql_query("UPDATE subject_snapshots SET state = $1 WHERE subject = $2")
            .bind::<diesel::sql_types::Text, _>(state)
            .bind::<diesel::sql_types::Text, _>(SUBJECT)
            .execute(c)?;
        diesel::sql_query("ALTER TABLE subject_snapshots ENABLE TRIGGER subject_snapshots_notify")
            .execute(c)
    })
    .unwrap();
}

fn stored_state(conn: &mut PgConnection) -> String {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        state: String,
    }
    let rows: Vec<Row> =
        diesel::sql_query("SELECT state FROM subject_snapshots WHERE subject = $1")
            .bind::<diesel::sql_types::Text, _>(SUBJECT)
            .load(conn)
            .unwrap();
    rows.into_iter().next().expect("a snapshot").state
}

const NOTHING: &str = r#"{"subscriptions":[],"purchases":[]}"#;

#[tokio::test]
async fn checks_are_answered_from_the_cache_until_the_database_notifies_a_change() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        assert!(app.app.db.snapshot_cache().is_none(), "SQLite has no cache");
        return;
    }
    let (mut conn, subscribed) = cached_subscriber(&app).await;

    // Unannounced, the change is not seen: the answer came from the cache.
    silent_write(&mut conn, NOTHING);
    for _ in 0..3 {
        assert!(export_allowed(&app, &app.address, "user-1").await);
    }
    // Named in a notification, it is.
    diesel::sql_query(format!("NOTIFY tollgate_snapshots, '{SUBJECT}'"))
        .execute(&mut conn)
        .unwrap();
    until_export_is(&app, &app.address, false).await;

    // An ordinary write by another program notifies by itself (the trigger).
    diesel::sql_query("UPDATE subject_snapshots SET state = $1 WHERE subject = $2")
        .bind::<diesel::sql_types::Text, _>(&subscribed)
        .bind::<diesel::sql_types::Text, _>(SUBJECT)
        .execute(&mut conn)
        .unwrap();
    until_export_is(&app, &app.address, true).await;

    // `*` drops everything (for bulk repairs).
    silent_write(&mut conn, NOTHING);
    assert!(export_allowed(&app, &app.address, "user-1").await);
    diesel::sql_query("NOTIFY tollgate_snapshots, '*'")
        .execute(&mut conn)
        .unwrap();
    until_export_is(&app, &app.address, false).await;
}

#[tokio::test]
async fn a_change_written_by_one_replica_reaches_the_others_cache() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return;
    }
    let other = app.another_instance().await;
    until_live(&app, true).await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    // Both replicas have the subscriber cached.
    assert!(export_allowed(&app, &other, "user-1").await);
    assert!(export_allowed(&app, &app.address, "user-1").await);

    let sub = app.stripe.update_subscription(&sub_id, |s| {
        s["status"] = json!("canceled");
        s["ended_at"] = json!(chrono::Utc::now().timestamp());
    });
    app.webhook_ok(&event("evt_gone", "customer.subscription.deleted", sub))
        .await;
    // The replica that wrote sees its write at once; the other when its listener is notified.
    assert!(!export_allowed(&app, &app.address, "user-1").await);
    until_export_is(&app, &other, false).await;
}

#[tokio::test]
async fn without_its_listener_a_replica_reads_the_database_until_it_listens_again() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return;
    }
    let (mut conn, subscribed) = cached_subscriber(&app).await;

    // The listener's connection dies (a failover, a restarted pooler). Nothing is notified: only
    // a replica that stopped trusting its cache sees the write.
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'tollgate_snapshot_listener' AND datname = current_database()",
    )
    .execute(&mut conn)
    .unwrap();
    silent_write(&mut conn, NOTHING);
    until_export_is(&app, &app.address, false).await;

    // It reconnects and caches again.
    until_live(&app, true).await;
    silent_write(&mut conn, &subscribed);
    until_export_is(&app, &app.address, true).await;
    silent_write(&mut conn, NOTHING);
    assert!(
        export_allowed(&app, &app.address, "user-1").await,
        "answered from the cache again"
    );
}

#[tokio::test]
async fn a_subject_with_nothing_on_record_is_remembered_until_a_write_names_it() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return;
    }
    let (mut conn, subscribed) = cached_subscriber(&app).await;
    // user-2 was never billed: no row; the answer is remembered.
    assert!(!export_allowed(&app, &app.address, "user-2").await);
    let (_, absent) = app.app.db.snapshot_cache().unwrap().len();
    assert!(absent >= 1, "user-2 is remembered as having nothing");

    // A row appears unannounced: still the remembered answer (no database read).
    conn.transaction(|c| {
        diesel::sql_query("ALTER TABLE subject_snapshots DISABLE TRIGGER subject_snapshots_notify")
            .execute(c)?;
        diesel::sql_query(
            "INSERT INTO subject_snapshots (subject, state, role_exempt, updated_at, facts_version) \
             SELECT 'user:user-2', $1, false, updated_at, facts_version FROM subject_snapshots WHERE subject = $2",
        )
        .bind::<diesel::sql_types::Text, _>(&subscribed)
        .bind::<diesel::sql_types::Text, _>(SUBJECT)
        .execute(c)?;
        diesel::sql_query("ALTER TABLE subject_snapshots ENABLE TRIGGER subject_snapshots_notify")
            .execute(c)
    })
    .unwrap();
    for _ in 0..3 {
        assert!(!export_allowed(&app, &app.address, "user-2").await);
    }
    // Named in a notification, the row is read.
    diesel::sql_query("NOTIFY tollgate_snapshots, 'user:user-2'")
        .execute(&mut conn)
        .unwrap();
    let start = std::time::Instant::now();
    while !export_allowed(&app, &app.address, "user-2").await {
        assert!(start.elapsed() < DEADLINE, "user-2's row was never read");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_listener_stays_connected_through_a_burst_of_checks() {
    let app = spawn_app().await;
    if !app.uses_postgres() {
        return;
    }
    until_live(&app, true).await;
    app.subscribe("user-1", "pro", "month").await;
    let cache = app.app.db.snapshot_cache().unwrap().clone();
    let token = app.idp.service_token("billing:read");
    // Checks for many subjects, some of them misses, from several clients for a while: the
    // listener must not lose its connection meanwhile (the cache would go dark and empty).
    let stop = std::time::Instant::now() + Duration::from_secs(12);
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (http, base, token) = (app.http.clone(), app.address.clone(), token.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while std::time::Instant::now() < stop {
                    i += 1;
                    let res = http
                        .get(format!(
                            "{base}/v1/entitlements?user_id=user-{}&feature=export",
                            (c * 1000 + i) % 500
                        ))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();
    while std::time::Instant::now() < stop {
        assert!(
            cache.is_live(),
            "the listener lost its connection under load"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in clients {
        client.await.unwrap();
    }
    assert!(cache.is_live());
    // And it still hears of changes.
    let mut conn = outsider(&app);
    silent_write(&mut conn, NOTHING);
    diesel::sql_query(format!("NOTIFY tollgate_snapshots, '{SUBJECT}'"))
        .execute(&mut conn)
        .unwrap();
    until_export_is(&app, &app.address, false).await;
}
