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

/// Stores the event if it is new; tells whether it was already processed.
pub fn record(
    conn: &mut DbConnection,
    event: NewEvent<'_>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let insert = diesel::insert_into(stripe_events::table).values((
        stripe_events::event_id.eq(event.id),
        stripe_events::event_type.eq(event.event_type),
        stripe_events::stripe_customer_id.eq(event.customer_id),
        stripe_events::livemode.eq(event.livemode),
        stripe_events::payload.eq(event.payload),
        stripe_events::stripe_created_at.eq(to_db_time(event.created)),
        stripe_events::received_at.eq(to_db_time(now)),
        stripe_events::attempts.eq(0),
    ));
    on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    let processed: Option<chrono::NaiveDateTime> = stripe_events::table
        .find(event.id)
        .select(stripe_events::processed_at)
        .first(conn)?;
    Ok(processed.is_some())
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

pub fn mark_failed(conn: &mut DbConnection, event_id: &str, error: &str) -> anyhow::Result<()> {
    diesel::update(stripe_events::table.find(event_id))
        .set((
            stripe_events::attempts.eq(stripe_events::attempts + 1),
            stripe_events::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
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

pub fn is_processed(conn: &mut DbConnection, event_id: &str) -> anyhow::Result<bool> {
    Ok(status(conn, event_id)?.is_some_and(|s| s.processed_at.is_some()))
}
