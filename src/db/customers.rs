//! Customers: one row per subject, holding its one Stripe customer id.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::customers;
use super::{on_backend, to_db_time, DbConnection};
use crate::billing::subject::Subject;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = customers)]
pub struct CustomerRow {
    pub subject: String,
    pub stripe_customer_id: Option<String>,
    pub email: Option<String>,
    pub updated_at: chrono::NaiveDateTime,
    /// When the tenant or membership was removed (`DELETE /v1/tenants/...`).
    pub removed_at: Option<chrono::NaiveDateTime>,
}

/// Makes sure the subject has a row (no Stripe customer yet); concurrent calls are harmless.
pub fn ensure(
    conn: &mut DbConnection,
    subject: &Subject,
    email: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<CustomerRow> {
    let now = to_db_time(now);
    let insert = diesel::insert_into(customers::table).values((
        customers::subject.eq(subject.key()),
        customers::subject_kind.eq(subject.kind()),
        customers::user_id.eq(subject.user_id()),
        customers::tenant_id.eq(subject.tenant_id()),
        customers::email.eq(email),
        customers::created_at.eq(now),
        customers::updated_at.eq(now),
    ));
    on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    let row = customers::table
        .find(subject.key())
        .select(CustomerRow::as_select())
        .first(conn)?;
    Ok(row)
}

pub fn find(conn: &mut DbConnection, subject: &Subject) -> anyhow::Result<Option<CustomerRow>> {
    Ok(customers::table
        .find(subject.key())
        .select(CustomerRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_by_stripe_id(
    conn: &mut DbConnection,
    stripe_customer_id: &str,
) -> anyhow::Result<Option<CustomerRow>> {
    Ok(customers::table
        .filter(customers::stripe_customer_id.eq(stripe_customer_id))
        .select(CustomerRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records the Stripe customer unless one is already recorded; returns the one that stands.
pub fn attach_stripe_customer(
    conn: &mut DbConnection,
    subject: &Subject,
    stripe_customer_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    diesel::update(
        customers::table
            .find(subject.key())
            .filter(customers::stripe_customer_id.is_null()),
    )
    .set((
        customers::stripe_customer_id.eq(stripe_customer_id),
        customers::updated_at.eq(to_db_time(now)),
    ))
    .execute(conn)?;
    let stored: Option<String> = customers::table
        .find(subject.key())
        .select(customers::stripe_customer_id)
        .first(conn)?;
    stored.ok_or_else(|| anyhow::anyhow!("customer row for {subject} vanished"))
}

/// Links a Stripe customer found on Stripe (e.g. first seen in a webhook) to its subject.
pub fn link(
    conn: &mut DbConnection,
    subject: &Subject,
    stripe_customer_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    ensure(conn, subject, None, now)?;
    attach_stripe_customer(conn, subject, stripe_customer_id, now)?;
    Ok(())
}

/// How many subjects have a Stripe customer.
pub fn count_linked(conn: &mut DbConnection) -> anyhow::Result<i64> {
    Ok(customers::table
        .filter(customers::stripe_customer_id.is_not_null())
        .count()
        .get_result(conn)?)
}

/// A page of `(subject, stripe_customer_id)` after `after` (by subject), for reconciliation.
pub fn linked_page(
    conn: &mut DbConnection,
    after: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut query = customers::table
        .filter(customers::stripe_customer_id.is_not_null())
        .order(customers::subject.asc())
        .limit(limit)
        .select((
            customers::subject,
            customers::stripe_customer_id.assume_not_null(),
        ))
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(customers::subject.gt(after.to_owned()));
    }
    Ok(query.load(conn)?)
}

/// Forgets a Stripe customer that was deleted on Stripe: the subject's next checkout creates a
/// new one. Returns the subject it belonged to.
pub fn unlink(
    conn: &mut DbConnection,
    stripe_customer_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let Some(row) = find_by_stripe_id(conn, stripe_customer_id)? else {
        return Ok(None);
    };
    diesel::update(customers::table.find(&row.subject))
        .set((
            customers::stripe_customer_id.eq(None::<String>),
            customers::updated_at.eq(to_db_time(now)),
        ))
        .execute(conn)?;
    Ok(Some(row.subject))
}

/// The tenant's own subject and every membership in it that Tollgate has a row for.
pub fn of_tenant(conn: &mut DbConnection, tenant_id: &str) -> anyhow::Result<Vec<CustomerRow>> {
    Ok(customers::table
        .filter(customers::tenant_id.eq(tenant_id))
        .order(customers::subject.asc())
        .select(CustomerRow::as_select())
        .load(conn)?)
}

/// Records that the subject was removed (once: a retry keeps the first time). Tells whether
/// this call recorded it.
pub fn mark_removed(
    conn: &mut DbConnection,
    subject: &Subject,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    ensure(conn, subject, None, now)?;
    let marked = diesel::update(
        customers::table
            .find(subject.key())
            .filter(customers::removed_at.is_null()),
    )
    .set((
        customers::removed_at.eq(to_db_time(now)),
        customers::updated_at.eq(to_db_time(now)),
    ))
    .execute(conn)?;
    Ok(marked > 0)
}

/// A member who was removed and came back: their membership may be billed again.
pub fn clear_removed(
    conn: &mut DbConnection,
    subject: &Subject,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    diesel::update(
        customers::table
            .find(subject.key())
            .filter(customers::removed_at.is_not_null()),
    )
    .set((
        customers::removed_at.eq(None::<chrono::NaiveDateTime>),
        customers::updated_at.eq(to_db_time(now)),
    ))
    .execute(conn)?;
    Ok(())
}
