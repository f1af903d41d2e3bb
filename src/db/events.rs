//! Stripe webhook events, stored by id before they are processed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::stripe_events;
use super::{on_backend, to_db_time, DbConnection};

/// A received event as it is stored: its ids were parsed at the edge (`stripe::webhook`).
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub customer_id: Option<&'a str>,
    pub livemode: bool,
    pub created: DateTime<Utc>,
    /// The body exactly as Stripe signed it.
    pub payload: &'a str,
}

/// Stores the event if it is new (its id is unique): pending, due now, when it asks for work;
/// processed at once when it does not (`needs_work` false: a type Tollgate only records).
/// Answers `false` when it was stored before (a redelivery, or a copy another replica took).
pub fn record(
    conn: &mut DbConnection,
    event: NewEvent<'_>,
    needs_work: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let now_db = to_db_time(now);
    let insert = diesel::insert_into(stripe_events::table).values((
        stripe_events::event_id.eq(event.id),
        stripe_events::event_type.eq(event.event_type),
        stripe_events::stripe_customer_id.eq(event.customer_id),
        stripe_events::livemode.eq(event.livemode),
        stripe_events::payload.eq(event.payload),
        stripe_events::stripe_created_at.eq(to_db_time(event.created)),
        stripe_events::received_at.eq(now_db),
        stripe_events::attempts.eq(0),
        stripe_events::due_at.eq((needs_work).then_some(now_db)),
        stripe_events::processed_at.eq((!needs_work).then_some(now_db)),
    ));
    let inserted = on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(inserted == 1)
}

/// A pending event, as a worker takes it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stripe_events)]
pub struct PendingEvent {
    pub event_id: String,
    pub event_type: String,
    pub stripe_customer_id: Option<String>,
    pub payload: String,
    pub received_at: chrono::NaiveDateTime,
    pub attempts: i32,
}

/// Leases, until `lease_until`, every due pending event of up to `groups` customers (an event
/// without a customer is a group of its own), the customers whose events are due longest
/// first, skipping customers with an event leased by a live worker (their sync is running:
/// what arrived meanwhile waits for the next claim after it, to be applied together). The
/// candidates are the `window` earliest due events. On PostgreSQL the rows are locked with
/// `SKIP LOCKED`, so workers of several replicas lease different events.
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    groups: i64,
    window: i64,
) -> anyhow::Result<Vec<PendingEvent>> {
    use diesel::sql_types::{Text, Timestamp};
    #[derive(diesel::QueryableByName)]
    struct Leased {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let pg = matches!(conn, DbConnection::Pg(_));
    let p = |i: usize| if pg { format!("${i}") } else { "?".to_owned() };
    let sql = format!(
        "UPDATE stripe_events SET leased_until = {p1} WHERE event_id IN ( \
           SELECT e.event_id FROM stripe_events e \
           WHERE e.processed_at IS NULL AND e.due_at <= {p2} \
             AND (e.leased_until IS NULL OR e.leased_until <= {p2b}) \
             AND COALESCE(e.stripe_customer_id, e.event_id) IN ( \
               SELECT k FROM ( \
                 SELECT COALESCE(c.stripe_customer_id, c.event_id) AS k, c.due_at AS due \
                 FROM stripe_events c \
                 WHERE c.processed_at IS NULL AND c.due_at <= {p3} \
                   AND (c.leased_until IS NULL OR c.leased_until <= {p3b}) \
                   AND NOT EXISTS ( \
                     SELECT 1 FROM stripe_events l \
                     WHERE l.stripe_customer_id = c.stripe_customer_id \
                       AND l.processed_at IS NULL AND l.leased_until > {p4}) \
                 ORDER BY c.due_at LIMIT {window}) candidates \
               GROUP BY k ORDER BY MIN(due) LIMIT {groups}){lock}) \
         RETURNING event_id AS id",
        p1 = p(1),
        p2 = p(2),
        p2b = p(3),
        p3 = p(4),
        p3b = p(5),
        p4 = p(6),
        window = window.max(1),
        groups = groups.max(1),
        lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" },
    );
    let (now, lease) = (to_db_time(now), to_db_time(lease_until));
    super::write_transaction(conn, |conn| {
        let leased: Vec<Leased> = on_backend!(conn, |c| {
            diesel::sql_query(sql.as_str())
                .bind::<Timestamp, _>(lease)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(now)
                .bind::<Timestamp, _>(now)
                .load::<Leased>(c)
        })?;
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = leased.iter().map(|l| l.id.as_str()).collect();
        Ok(stripe_events::table
            .filter(super::any_of(stripe_events::event_id, &ids))
            .select(PendingEvent::as_select())
            .order(stripe_events::received_at)
            .load(conn)?)
    })
}

/// Leases every pending event of `customer` not leased by a live worker, until `lease_until`,
/// for a sync a caller waits for (verify) that applies them too.
pub fn claim_customer(
    conn: &mut DbConnection,
    customer: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Vec<PendingEvent>> {
    let (now, lease) = (to_db_time(now), to_db_time(lease_until));
    super::write_transaction(conn, |conn| {
        diesel::update(
            stripe_events::table
                .filter(stripe_events::processed_at.is_null())
                .filter(stripe_events::stripe_customer_id.eq(customer))
                .filter(
                    stripe_events::leased_until
                        .is_null()
                        .or(stripe_events::leased_until.le(now)),
                ),
        )
        .set(stripe_events::leased_until.eq(Some(lease)))
        .execute(conn)?;
        Ok(stripe_events::table
            .filter(stripe_events::processed_at.is_null())
            .filter(stripe_events::stripe_customer_id.eq(customer))
            .filter(stripe_events::leased_until.eq(Some(lease)))
            .select(PendingEvent::as_select())
            .order(stripe_events::received_at)
            .load(conn)?)
    })
}

/// Gives leased events back to the workers at once.
pub fn release(conn: &mut DbConnection, event_ids: &[&str]) -> anyhow::Result<()> {
    diesel::update(stripe_events::table.filter(super::any_of(stripe_events::event_id, event_ids)))
        .set(stripe_events::leased_until.eq(None::<chrono::NaiveDateTime>))
        .execute(conn)?;
    Ok(())
}

/// Events a worker could not apply: retried at `due`, with the error kept for operators.
pub fn retry_at(
    conn: &mut DbConnection,
    event_ids: &[&str],
    due: DateTime<Utc>,
    error: &str,
) -> anyhow::Result<()> {
    diesel::update(
        stripe_events::table
            .filter(super::any_of(stripe_events::event_id, event_ids))
            .filter(stripe_events::processed_at.is_null()),
    )
    .set((
        stripe_events::attempts.eq(stripe_events::attempts + 1),
        stripe_events::last_error.eq(Some(error)),
        stripe_events::due_at.eq(Some(to_db_time(due))),
        stripe_events::leased_until.eq(None::<chrono::NaiveDateTime>),
    ))
    .execute(conn)?;
    Ok(())
}

/// The inbox as operators watch it: how many events are pending, and since when the oldest.
pub fn backlog(conn: &mut DbConnection) -> anyhow::Result<(i64, Option<chrono::NaiveDateTime>)> {
    use diesel::dsl::{count_star, min};
    Ok(stripe_events::table
        .filter(stripe_events::processed_at.is_null())
        .select((count_star(), min(stripe_events::received_at)))
        .first(conn)?)
}

/// A pending event that failed at least once, for `GET /v1/admin/webhooks/stuck`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stripe_events)]
pub struct StuckEvent {
    pub event_id: String,
    pub event_type: String,
    pub stripe_customer_id: Option<String>,
    pub received_at: chrono::NaiveDateTime,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub due_at: Option<chrono::NaiveDateTime>,
}

/// Pending events that failed at least once, oldest first.
pub fn stuck(conn: &mut DbConnection, limit: i64) -> anyhow::Result<Vec<StuckEvent>> {
    Ok(stripe_events::table
        .filter(stripe_events::processed_at.is_null())
        .filter(stripe_events::attempts.gt(0))
        .order((stripe_events::received_at, stripe_events::event_id))
        .limit(limit)
        .select(StuckEvent::as_select())
        .load(conn)?)
}

/// Marks the event processed; call inside the transaction that applied it. `false` when it
/// already was: the claim is atomic, so of concurrent copies of one event exactly one gets
/// `true` and is counted as processed.
pub fn mark_processed(
    conn: &mut DbConnection,
    event_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let claimed = diesel::update(
        stripe_events::table
            .find(event_id)
            .filter(stripe_events::processed_at.is_null()),
    )
    .set((
        stripe_events::processed_at.eq(Some(to_db_time(now))),
        stripe_events::attempts.eq(stripe_events::attempts + 1),
        stripe_events::last_error.eq(None::<String>),
    ))
    .execute(conn)?;
    Ok(claimed == 1)
}

#[derive(Debug, Queryable)]
pub struct EventStatus {
    pub processed_at: Option<chrono::NaiveDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub fn status(conn: &mut DbConnection, event_id: &str) -> anyhow::Result<Option<EventStatus>> {
    Ok(stripe_events::table
        .find(event_id)
        .select((
            stripe_events::processed_at,
            stripe_events::attempts,
            stripe_events::last_error,
        ))
        .first(conn)
        .optional()?)
}

/// Which of `event_ids` are not processed yet.
pub fn unprocessed(conn: &mut DbConnection, event_ids: &[&str]) -> anyhow::Result<Vec<String>> {
    Ok(stripe_events::table
        .filter(super::any_of(stripe_events::event_id, event_ids))
        .filter(stripe_events::processed_at.is_null())
        .select(stripe_events::event_id)
        .load(conn)?)
}
