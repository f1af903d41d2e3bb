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

/// Leases up to `limit` due pending events not leased by a live worker, oldest due first,
/// until `lease_until` ([`super::lease_due`]: across replicas, each event to one worker).
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<PendingEvent>> {
    const QUEUE: (&str, &str, &str, &str) = (
        "stripe_events",
        "event_id",
        "processed_at IS NULL",
        "due_at",
    );
    super::write_transaction(conn, |conn| {
        let ids = super::lease_due(conn, QUEUE, now, lease_until, limit)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
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
