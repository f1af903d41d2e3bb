//! Second subscriptions to cancel and refund (`billing.second_subscription =
//! "cancel_and_refund"`): a durable queue, one row per subscription, leased to one worker at a
//! time.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::subscription_undos;
use super::{on_backend, to_db_time, write_transaction, DbConnection};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscription_undos)]
pub struct UndoRow {
    pub stripe_subscription_id: String,
    pub subject: String,
    pub stripe_customer_id: String,
    pub beside: String,
    pub status: String,
    pub attempts: i32,
    pub due_at: NaiveDateTime,
    pub leased_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub done_at: Option<NaiveDateTime>,
}

/// Queues the subscription (in the transaction of the sync that found it); a subscription
/// queued before is not queued again.
pub fn queue(
    conn: &mut DbConnection,
    subscription_id: &str,
    subject: &str,
    customer_id: &str,
    beside: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let insert = diesel::insert_into(subscription_undos::table).values((
        subscription_undos::stripe_subscription_id.eq(subscription_id),
        subscription_undos::subject.eq(subject),
        subscription_undos::stripe_customer_id.eq(customer_id),
        subscription_undos::beside.eq(beside),
        subscription_undos::status.eq("pending"),
        subscription_undos::attempts.eq(0),
        subscription_undos::due_at.eq(to_db_time(now)),
        subscription_undos::created_at.eq(to_db_time(now)),
    ));
    let n = on_backend!(conn, |c| insert
        .on_conflict(subscription_undos::stripe_subscription_id)
        .do_nothing()
        .execute(c))?;
    Ok(n > 0)
}

/// Claims up to `limit` due undos not claimed by a live worker, until `lease_until`
/// ([`super::lease_due`]: one worker per subscription, across replicas).
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<UndoRow>> {
    const QUEUE: (&str, &str, &str, &str) = (
        "subscription_undos",
        "stripe_subscription_id",
        "status = 'pending'",
        "due_at",
    );
    write_transaction(conn, |conn| {
        let ids = super::lease_due(conn, QUEUE, now, lease_until, limit)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(subscription_undos::table
            .filter(super::any_of(
                subscription_undos::stripe_subscription_id,
                &ids,
            ))
            .select(UndoRow::as_select())
            .load(conn)?)
    })
}

pub fn done(
    conn: &mut DbConnection,
    subscription_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::update(subscription_undos::table.find(subscription_id))
        .set((
            subscription_undos::status.eq("done"),
            subscription_undos::done_at.eq(Some(to_db_time(now))),
            subscription_undos::leased_until.eq(None::<NaiveDateTime>),
            subscription_undos::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn retry_at(
    conn: &mut DbConnection,
    subscription_id: &str,
    attempts: i32,
    due: DateTime<Utc>,
    error: &str,
) -> anyhow::Result<()> {
    diesel::update(subscription_undos::table.find(subscription_id))
        .set((
            subscription_undos::attempts.eq(attempts),
            subscription_undos::due_at.eq(to_db_time(due)),
            subscription_undos::leased_until.eq(None::<NaiveDateTime>),
            subscription_undos::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut DbConnection, subscription_id: &str) -> anyhow::Result<Option<UndoRow>> {
    Ok(subscription_undos::table
        .find(subscription_id)
        .select(UndoRow::as_select())
        .first(conn)
        .optional()?)
}
