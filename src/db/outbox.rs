//! The transactional outbox of outbound events (docs/EVENTS.md): events appended in the
//! transaction of the change that causes them, each with its subject's next revision and one
//! delivery per endpoint that wants its type; the claim of due deliveries by the dispatcher of
//! any replica; the sequencer that gives committed events their place in `GET /v1/events`.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text, Timestamp};

use super::schema::{event_deliveries, event_heads, outbox_events};
use super::{from_db_time, on_backend, to_db_time, write_transaction, DbConnection};
use crate::billing::events::{envelope, Event, Route};

/// Delivery statuses.
pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// An event as appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub event_id: String,
    pub revision: i64,
    /// How many deliveries were queued with it.
    pub deliveries: usize,
}

/// Appends `event` to the stream of `subject` (a subject key): takes the subject's next
/// revision, stores the envelope every delivery sends, and queues a delivery for each route that
/// wants the type. Call inside the transaction of the change it tells.
pub fn append(
    conn: &mut DbConnection,
    routes: &[Route],
    subject: &str,
    event: &Event,
    now: DateTime<Utc>,
) -> anyhow::Result<Appended> {
    let insert = diesel::insert_into(event_heads::table).values((
        event_heads::subject.eq(subject),
        event_heads::revision.eq(1_i64),
    ));
    // The upsert locks the subject's head row until the commit: the subject's writers take
    // their revisions one after the other.
    let revision: i64 = on_backend!(conn, |c| insert
        .on_conflict(event_heads::subject)
        .do_update()
        .set(event_heads::revision.eq(event_heads::revision + 1))
        .returning(event_heads::revision)
        .get_result(c))?;
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let payload = serde_json::to_string(&envelope(&event_id, subject, revision, event, now))?;
    diesel::insert_into(outbox_events::table)
        .values((
            outbox_events::event_id.eq(&event_id),
            outbox_events::subject.eq(subject),
            outbox_events::revision.eq(revision),
            outbox_events::event_type.eq(event.kind.as_str()),
            outbox_events::payload.eq(&payload),
            outbox_events::created_at.eq(to_db_time(now)),
        ))
        .execute(conn)?;
    let wanted: Vec<&Route> = routes.iter().filter(|r| r.wants(event.kind)).collect();
    for route in &wanted {
        queue(conn, (&event_id, subject, revision), &route.endpoint, now)?;
    }
    Ok(Appended {
        event_id,
        revision,
        deliveries: wanted.len(),
    })
}

/// Queues the delivery of an event (`(id, subject, revision)`) to `endpoint`, due now.
fn queue(
    conn: &mut DbConnection,
    (event_id, subject, revision): (&str, &str, i64),
    endpoint: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::insert_into(event_deliveries::table)
        .values((
            event_deliveries::event_id.eq(event_id),
            event_deliveries::endpoint.eq(endpoint),
            event_deliveries::subject.eq(subject),
            event_deliveries::revision.eq(revision),
            event_deliveries::status.eq(PENDING),
            event_deliveries::attempts.eq(0),
            event_deliveries::next_attempt_at.eq(to_db_time(now)),
            event_deliveries::queued_at.eq(to_db_time(now)),
        ))
        .execute(conn)?;
    Ok(())
}

/// A claimed delivery: this dispatcher's until its lease ends.
#[derive(Debug, Clone)]
pub struct Due {
    pub delivery_id: i64,
    pub event_id: String,
    pub endpoint: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
    pub payload: String,
    pub event_type: String,
    /// When it was queued (or queued again): its retry window starts here.
    pub queued_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = BigInt)]
    delivery_id: i64,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    endpoint: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Timestamp)]
    queued_at: NaiveDateTime,
}

/// Claims up to `limit` due deliveries to `endpoints` until `lease_until`: pending, due, not
/// claimed by a live dispatcher, and the first pending one of their endpoint and subject (so
/// each subject's events reach an endpoint in revision order). On PostgreSQL the candidates
/// are locked with `SKIP LOCKED`: dispatchers of several replicas claim different deliveries.
pub fn claim(
    conn: &mut DbConnection,
    endpoints: &[String],
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<Due>> {
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    let pg = matches!(conn, DbConnection::Pg(_));
    let placeholder = |i: usize| if pg { format!("${i}") } else { "?".to_owned() };
    let names: Vec<String> = (0..endpoints.len()).map(|i| placeholder(i + 4)).collect();
    let sql = format!(
        "UPDATE event_deliveries SET leased_until = {lease}, attempts = attempts + 1 \
         WHERE delivery_id IN ( \
           SELECT d.delivery_id FROM event_deliveries d \
           WHERE d.status = 'pending' AND d.next_attempt_at <= {now} \
             AND (d.leased_until IS NULL OR d.leased_until <= {now2}) \
             AND d.endpoint IN ({names}) \
             AND NOT EXISTS (SELECT 1 FROM event_deliveries e \
               WHERE e.endpoint = d.endpoint AND e.subject = d.subject \
                 AND e.status = 'pending' AND e.revision < d.revision) \
           ORDER BY d.next_attempt_at, d.delivery_id LIMIT {limit}{lock}) \
         RETURNING delivery_id, event_id, endpoint, attempts, queued_at",
        lease = placeholder(1),
        now = placeholder(2),
        now2 = placeholder(3),
        names = names.join(", "),
        limit = limit.max(1),
        lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" },
    );
    let claimed: Vec<Claimed> = write_transaction(conn, |conn| {
        Ok(on_backend!(conn, |c| {
            let mut query = diesel::sql_query(sql.as_str())
                .into_boxed()
                .bind::<Timestamp, _>(to_db_time(lease_until))
                .bind::<Timestamp, _>(to_db_time(now))
                .bind::<Timestamp, _>(to_db_time(now));
            for name in endpoints {
                query = query.bind::<Text, _>(name.clone());
            }
            query.load::<Claimed>(c)
        })?)
    })?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = claimed.iter().map(|c| c.event_id.as_str()).collect();
    let events: Vec<(String, String, String)> = outbox_events::table
        .filter(super::any_of(outbox_events::event_id, &ids))
        .select((
            outbox_events::event_id,
            outbox_events::payload,
            outbox_events::event_type,
        ))
        .load(conn)?;
    let mut due: Vec<Due> = claimed
        .into_iter()
        .filter_map(|c| {
            let (_, payload, event_type) = events.iter().find(|(id, _, _)| *id == c.event_id)?;
            Some(Due {
                delivery_id: c.delivery_id,
                event_id: c.event_id,
                endpoint: c.endpoint,
                attempts: u32::try_from(c.attempts).unwrap_or(0),
                payload: payload.clone(),
                event_type: event_type.clone(),
                queued_at: from_db_time(c.queued_at),
            })
        })
        .collect();
    due.sort_by_key(|d| d.delivery_id);
    Ok(due)
}

/// The endpoint answered 2xx.
pub fn delivered(
    conn: &mut DbConnection,
    delivery_id: i64,
    status: u16,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::update(event_deliveries::table.find(delivery_id))
        .set((
            event_deliveries::status.eq(DELIVERED),
            event_deliveries::finished_at.eq(Some(to_db_time(now))),
            event_deliveries::leased_until.eq(None::<NaiveDateTime>),
            event_deliveries::last_status.eq(Some(i32::from(status))),
            event_deliveries::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

/// The attempt failed; the next one is due at `next_at`.
pub fn retry_at(
    conn: &mut DbConnection,
    delivery_id: i64,
    next_at: DateTime<Utc>,
    status: Option<u16>,
    error: &str,
) -> anyhow::Result<()> {
    diesel::update(event_deliveries::table.find(delivery_id))
        .set((
            event_deliveries::next_attempt_at.eq(to_db_time(next_at)),
            event_deliveries::leased_until.eq(None::<NaiveDateTime>),
            event_deliveries::last_status.eq(status.map(i32::from)),
            event_deliveries::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}

/// The retry window ended without a success: the delivery has failed (and the next event of
/// its subject may go).
pub fn failed(
    conn: &mut DbConnection,
    delivery_id: i64,
    status: Option<u16>,
    error: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::update(event_deliveries::table.find(delivery_id))
        .set((
            event_deliveries::status.eq(FAILED),
            event_deliveries::finished_at.eq(Some(to_db_time(now))),
            event_deliveries::leased_until.eq(None::<NaiveDateTime>),
            event_deliveries::last_status.eq(status.map(i32::from)),
            event_deliveries::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}

/// How many events the sequencer places in one go.
const PLACE_BATCH: i64 = 1000;

/// Gives committed events without a place the next places, in the order they were inserted;
/// answers how many. One sequencer at a time (PostgreSQL: a transaction lock; SQLite: its
/// write lock), so places only grow and a listing `after` a place never misses an event that
/// commits later.
pub fn place(conn: &mut DbConnection) -> anyhow::Result<usize> {
    let sql = format!(
        "UPDATE outbox_events SET position = placed.p FROM ( \
           SELECT seq, (SELECT COALESCE(MAX(position), 0) FROM outbox_events) \
                       + ROW_NUMBER() OVER (ORDER BY seq) AS p \
           FROM outbox_events WHERE position IS NULL ORDER BY seq LIMIT {PLACE_BATCH}) AS placed \
         WHERE outbox_events.seq = placed.seq"
    );
    write_transaction(conn, |conn| {
        if let DbConnection::Pg(c) = conn {
            diesel::sql_query("SELECT pg_advisory_xact_lock(7406921474)").execute(c)?;
        }
        Ok(diesel::sql_query(sql.as_str()).execute(conn)?)
    })
}

/// One event of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub position: i64,
    /// The envelope, as delivered.
    pub payload: String,
}

/// Placed events after `after`, in order, optionally of one subject and of some types.
pub fn list(
    conn: &mut DbConnection,
    after: i64,
    subject: Option<&str>,
    types: &[&str],
    limit: i64,
) -> anyhow::Result<Vec<Listed>> {
    let mut query = outbox_events::table
        .filter(outbox_events::position.gt(after))
        .order(outbox_events::position.asc())
        .limit(limit)
        .select((outbox_events::position, outbox_events::payload))
        .into_boxed();
    if let Some(subject) = subject {
        query = query.filter(outbox_events::subject.eq(subject.to_owned()));
    }
    if !types.is_empty() {
        query = query.filter(super::any_of(outbox_events::event_type, types));
    }
    let rows: Vec<(Option<i64>, String)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(position, payload)| {
            Some(Listed {
                position: position?,
                payload,
            })
        })
        .collect())
}

/// Deliveries waiting (pending) and the creation time of the oldest one's event.
pub fn backlog(conn: &mut DbConnection) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
    let (count, oldest): (i64, Option<NaiveDateTime>) = event_deliveries::table
        .filter(event_deliveries::status.eq(PENDING))
        .select((
            diesel::dsl::count_star(),
            diesel::dsl::min(event_deliveries::queued_at),
        ))
        .first(conn)?;
    Ok((count, oldest.map(from_db_time)))
}

/// A stored delivery, for the admin listing and the tests.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = event_deliveries)]
pub struct DeliveryRow {
    pub delivery_id: i64,
    pub event_id: String,
    pub endpoint: String,
    pub subject: String,
    pub revision: i64,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub queued_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

/// Deliveries of one status, newest first.
pub fn deliveries(
    conn: &mut DbConnection,
    status: &str,
    limit: i64,
) -> anyhow::Result<Vec<DeliveryRow>> {
    Ok(event_deliveries::table
        .filter(event_deliveries::status.eq(status.to_owned()))
        .order(event_deliveries::delivery_id.desc())
        .limit(limit)
        .select(DeliveryRow::as_select())
        .load(conn)?)
}

/// Locks the subject's stream until the end of the transaction (creating its head row) and
/// answers the entitlement document last told (its JSON), if any. A transaction that tells the
/// subject's document takes this first: concurrent writers of one subject then tell their
/// documents one after the other, each against the one told before it, and none tells a
/// document computed without the other's change.
pub fn lock_head(conn: &mut DbConnection, subject: &str) -> anyhow::Result<Option<String>> {
    let insert = diesel::insert_into(event_heads::table).values((
        event_heads::subject.eq(subject),
        event_heads::revision.eq(0_i64),
    ));
    // The no-op update takes the row lock (PostgreSQL; SQLite's write lock is the transaction's).
    let told: Option<String> = on_backend!(conn, |c| insert
        .on_conflict(event_heads::subject)
        .do_update()
        .set(event_heads::revision.eq(event_heads::revision))
        .returning(event_heads::document)
        .get_result(c))?;
    Ok(told)
}

/// Remembers the subject's document as told and when it next changes by time alone (`None`:
/// never), for the scheduler. Call in the transaction that told it (or found it unchanged).
pub fn remember(
    conn: &mut DbConnection,
    subject: &str,
    document: &str,
    next_change_at: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let next = next_change_at.map(to_db_time);
    let insert = diesel::insert_into(event_heads::table).values((
        event_heads::subject.eq(subject),
        event_heads::revision.eq(0_i64),
        event_heads::document.eq(Some(document)),
        event_heads::next_change_at.eq(next),
    ));
    on_backend!(conn, |c| insert
        .on_conflict(event_heads::subject)
        .do_update()
        .set((
            event_heads::document.eq(Some(document)),
            event_heads::next_change_at.eq(next),
        ))
        .execute(c))?;
    Ok(())
}

/// Subjects whose document may have changed by time (`next_change_at` passed), locked until
/// the end of the transaction this must run in (PostgreSQL: `SKIP LOCKED`, so one replica
/// handles each); with the document last told.
pub fn due_changes(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let query = event_heads::table
        .filter(event_heads::next_change_at.le(to_db_time(now)))
        .order(event_heads::next_change_at.asc())
        .limit(limit)
        .select((event_heads::subject, event_heads::document));
    Ok(match conn {
        DbConnection::Pg(c) => query.for_update().skip_locked().load(c)?,
        DbConnection::Sqlite(c) => query.load(c)?,
    })
}

/// A failed delivery with its event's type, for `GET /v1/admin/events/failed`.
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    pub row: DeliveryRow,
    pub event_type: String,
}

/// Failed deliveries, newest first: to `endpoint` if given, before the delivery `before`.
pub fn failed_deliveries(
    conn: &mut DbConnection,
    endpoint: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> anyhow::Result<Vec<FailedDelivery>> {
    let mut query = event_deliveries::table
        .inner_join(outbox_events::table.on(outbox_events::event_id.eq(event_deliveries::event_id)))
        .filter(event_deliveries::status.eq(FAILED))
        .order(event_deliveries::delivery_id.desc())
        .limit(limit)
        .select((DeliveryRow::as_select(), outbox_events::event_type))
        .into_boxed();
    if let Some(endpoint) = endpoint {
        query = query.filter(event_deliveries::endpoint.eq(endpoint.to_owned()));
    }
    if let Some(before) = before {
        query = query.filter(event_deliveries::delivery_id.lt(before));
    }
    let rows: Vec<(DeliveryRow, String)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(row, event_type)| FailedDelivery { row, event_type })
        .collect())
}

/// Queues a delivery again, whatever became of it: due now, its attempts and retry window
/// starting afresh. `false` when there is no such delivery.
pub fn requeue(
    conn: &mut DbConnection,
    delivery_id: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let n = diesel::update(event_deliveries::table.find(delivery_id))
        .set(requeued(now))
        .execute(conn)?;
    Ok(n == 1)
}

#[allow(clippy::type_complexity)]
fn requeued(
    now: DateTime<Utc>,
) -> (
    diesel::dsl::Eq<event_deliveries::status, &'static str>,
    diesel::dsl::Eq<event_deliveries::attempts, i32>,
    diesel::dsl::Eq<event_deliveries::next_attempt_at, NaiveDateTime>,
    diesel::dsl::Eq<event_deliveries::queued_at, NaiveDateTime>,
    diesel::dsl::Eq<event_deliveries::leased_until, Option<NaiveDateTime>>,
    diesel::dsl::Eq<event_deliveries::finished_at, Option<NaiveDateTime>>,
) {
    (
        event_deliveries::status.eq(PENDING),
        event_deliveries::attempts.eq(0),
        event_deliveries::next_attempt_at.eq(to_db_time(now)),
        event_deliveries::queued_at.eq(to_db_time(now)),
        event_deliveries::leased_until.eq(None),
        event_deliveries::finished_at.eq(None),
    )
}

/// Queues again every event created at or after `since` for `route`'s endpoint: its
/// deliveries that ended (delivered or failed) are due again, and an event of a type the
/// endpoint wants that it never had a delivery of (the endpoint was added later) gets one.
/// Answers how many deliveries are now queued by this. Each subject's still go in revision
/// order.
pub fn requeue_since(
    conn: &mut DbConnection,
    route: &Route,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    write_transaction(conn, |conn| {
        let events: Vec<String> = outbox_events::table
            .filter(outbox_events::created_at.ge(to_db_time(since)))
            .select(outbox_events::event_id)
            .load(conn)?;
        let mut queued = 0;
        for chunk in events.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            queued += diesel::update(
                event_deliveries::table
                    .filter(event_deliveries::endpoint.eq(&route.endpoint))
                    .filter(event_deliveries::status.ne(PENDING))
                    .filter(super::any_of(event_deliveries::event_id, &ids)),
            )
            .set(requeued(now))
            .execute(conn)?;
        }
        let missing: Vec<(String, String, i64, String)> = outbox_events::table
            .filter(outbox_events::created_at.ge(to_db_time(since)))
            .filter(diesel::dsl::not(diesel::dsl::exists(
                event_deliveries::table
                    .filter(event_deliveries::event_id.eq(outbox_events::event_id))
                    .filter(event_deliveries::endpoint.eq(&route.endpoint)),
            )))
            .order(outbox_events::seq.asc())
            .select((
                outbox_events::event_id,
                outbox_events::subject,
                outbox_events::revision,
                outbox_events::event_type,
            ))
            .load(conn)?;
        for (event_id, subject, revision, event_type) in missing {
            let wanted = crate::billing::events::EventType::parse(&event_type)
                .is_some_and(|kind| route.wants(kind));
            if !wanted {
                continue;
            }
            queue(conn, (&event_id, &subject, revision), &route.endpoint, now)?;
            queued += 1;
        }
        Ok(queued)
    })
}

/// A quota threshold crossed by a consumption, not yet told.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = super::schema::quota_crossings)]
pub struct CrossingRow {
    pub crossing_id: i64,
    pub subject: String,
    pub quota: String,
    pub threshold: i32,
    pub used: i64,
    pub quota_limit: i64,
    pub period: Option<String>,
    pub resets_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

/// Crossings not yet told, oldest first, locked to the end of the transaction this must run
/// in (PostgreSQL: `SKIP LOCKED`, one replica tells each).
pub fn untold_crossings(conn: &mut DbConnection, limit: i64) -> anyhow::Result<Vec<CrossingRow>> {
    use super::schema::quota_crossings;
    let query = || {
        quota_crossings::table
            .filter(quota_crossings::told_at.is_null())
            .order(quota_crossings::crossing_id.asc())
            .limit(limit)
    };
    Ok(match conn {
        DbConnection::Pg(c) => query()
            .for_update()
            .skip_locked()
            .select(CrossingRow::as_select())
            .load(c)?,
        DbConnection::Sqlite(c) => query().select(CrossingRow::as_select()).load(c)?,
    })
}

pub fn crossing_told(
    conn: &mut DbConnection,
    crossing_id: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    use super::schema::quota_crossings;
    diesel::update(quota_crossings::table.find(crossing_id))
        .set(quota_crossings::told_at.eq(Some(to_db_time(now))))
        .execute(conn)?;
    Ok(())
}

/// What the dispatcher finds to do, in one statement (each replica asks every poll).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingWork {
    /// Committed events wait for their place in `GET /v1/events`.
    pub unplaced: bool,
    /// A subject's document is due to be evaluated again (a change by time).
    pub due_changes: bool,
    /// A quota crossing waits to be told.
    pub untold_crossings: bool,
}

pub fn pending_work(conn: &mut DbConnection, now: DateTime<Utc>) -> anyhow::Result<PendingWork> {
    use super::schema::quota_crossings;
    use diesel::dsl::exists;
    let (unplaced, due_changes, untold_crossings) = diesel::select((
        exists(outbox_events::table.filter(outbox_events::position.is_null())),
        exists(event_heads::table.filter(event_heads::next_change_at.le(to_db_time(now)))),
        exists(quota_crossings::table.filter(quota_crossings::told_at.is_null())),
    ))
    .get_result(conn)?;
    Ok(PendingWork {
        unplaced,
        due_changes,
        untold_crossings,
    })
}
