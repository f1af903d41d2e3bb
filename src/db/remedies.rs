//! Work Tollgate does on Stripe to a subscription once a sync decided it: a durable queue, one
//! row per remedy (its id says what and of which subscription or invoice, so a remedy is
//! queued once however often syncs find it), leased to one worker at a time across replicas.
//!
//! - `second_subscription`: cancel and refund a second subscription of one subject
//!   (`billing.second_subscription = "cancel_and_refund"`);
//! - `revert_upgrade`: move a subscription back to the price and seats it had before an
//!   upgrade whose invoice was refunded.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::subscription_remedies;
use super::{on_backend, to_db_time, write_transaction, DbConnection};

/// What to do to the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Refund every payment it took and cancel it at once; `beside` (the older standing
    /// subscription of the subject) is kept.
    SecondSubscription { beside: String },
    /// The upgrade billed by `invoice_id` was refunded: back to `price_id` and `quantity`.
    RevertUpgrade {
        invoice_id: String,
        price_id: String,
        quantity: u64,
    },
}

impl Remedy {
    /// `second_subscription` or `revert_upgrade`: the row's `kind`, and the metric's label.
    pub fn kind(&self) -> &'static str {
        match self {
            Remedy::SecondSubscription { .. } => "second_subscription",
            Remedy::RevertUpgrade { .. } => "revert_upgrade",
        }
    }

    /// The row's id: one remedy per subscription (a second subscription) or per invoice (a
    /// refunded upgrade).
    fn id(&self, subscription_id: &str) -> String {
        match self {
            Remedy::SecondSubscription { .. } => format!("{}:{subscription_id}", self.kind()),
            Remedy::RevertUpgrade { invoice_id, .. } => format!("{}:{invoice_id}", self.kind()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = subscription_remedies)]
pub struct RemedyRow {
    pub id: String,
    pub kind: String,
    pub stripe_subscription_id: String,
    pub subject: String,
    pub stripe_customer_id: String,
    pub beside: Option<String>,
    pub invoice_id: Option<String>,
    pub price_id: Option<String>,
    pub quantity: Option<i64>,
    pub status: String,
    pub attempts: i32,
    pub due_at: NaiveDateTime,
    pub leased_until: Option<NaiveDateTime>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub done_at: Option<NaiveDateTime>,
}

impl RemedyRow {
    /// The remedy the row holds (`None`: a kind or shape this version does not know).
    pub fn remedy(&self) -> Option<Remedy> {
        match self.kind.as_str() {
            "second_subscription" => Some(Remedy::SecondSubscription {
                beside: self.beside.clone()?,
            }),
            "revert_upgrade" => Some(Remedy::RevertUpgrade {
                invoice_id: self.invoice_id.clone()?,
                price_id: self.price_id.clone()?,
                quantity: u64::try_from(self.quantity?).ok()?,
            }),
            _ => None,
        }
    }
}

/// The subscription a remedy is for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub subscription_id: &'a str,
    pub subject: &'a str,
    pub customer_id: &'a str,
}

/// Queues the remedy (in the transaction of the sync that decided it); one queued before is
/// not queued again. Answers whether it was new.
pub fn queue(
    conn: &mut DbConnection,
    target: Target<'_>,
    remedy: &Remedy,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let (beside, invoice_id, price_id, quantity) = match remedy {
        Remedy::SecondSubscription { beside } => (Some(beside.as_str()), None, None, None),
        Remedy::RevertUpgrade {
            invoice_id,
            price_id,
            quantity,
        } => (
            None,
            Some(invoice_id.as_str()),
            Some(price_id.as_str()),
            Some(i64::try_from(*quantity)?),
        ),
    };
    let insert = diesel::insert_into(subscription_remedies::table).values((
        subscription_remedies::id.eq(remedy.id(target.subscription_id)),
        subscription_remedies::kind.eq(remedy.kind()),
        subscription_remedies::stripe_subscription_id.eq(target.subscription_id),
        subscription_remedies::subject.eq(target.subject),
        subscription_remedies::stripe_customer_id.eq(target.customer_id),
        subscription_remedies::beside.eq(beside),
        subscription_remedies::invoice_id.eq(invoice_id),
        subscription_remedies::price_id.eq(price_id),
        subscription_remedies::quantity.eq(quantity),
        subscription_remedies::status.eq("pending"),
        subscription_remedies::attempts.eq(0),
        subscription_remedies::due_at.eq(to_db_time(now)),
        subscription_remedies::created_at.eq(to_db_time(now)),
    ));
    let n = on_backend!(conn, |c| insert
        .on_conflict(subscription_remedies::id)
        .do_nothing()
        .execute(c))?;
    Ok(n > 0)
}

/// Claims up to `limit` due remedies not claimed by a live worker, until `lease_until`
/// ([`super::lease_due`]: one worker per remedy, across replicas).
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<RemedyRow>> {
    const QUEUE: (&str, &str, &str, &str) = (
        "subscription_remedies",
        "id",
        "status = 'pending'",
        "due_at",
    );
    write_transaction(conn, |conn| {
        let ids = super::lease_due(conn, QUEUE, now, lease_until, limit)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(subscription_remedies::table
            .filter(super::any_of(subscription_remedies::id, &ids))
            .select(RemedyRow::as_select())
            .load(conn)?)
    })
}

pub fn done(conn: &mut DbConnection, id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    diesel::update(subscription_remedies::table.find(id))
        .set((
            subscription_remedies::status.eq("done"),
            subscription_remedies::done_at.eq(Some(to_db_time(now))),
            subscription_remedies::leased_until.eq(None::<NaiveDateTime>),
            subscription_remedies::last_error.eq(None::<String>),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn retry_at(
    conn: &mut DbConnection,
    id: &str,
    attempts: i32,
    due: DateTime<Utc>,
    error: &str,
) -> anyhow::Result<()> {
    diesel::update(subscription_remedies::table.find(id))
        .set((
            subscription_remedies::attempts.eq(attempts),
            subscription_remedies::due_at.eq(to_db_time(due)),
            subscription_remedies::leased_until.eq(None::<NaiveDateTime>),
            subscription_remedies::last_error.eq(Some(error)),
        ))
        .execute(conn)?;
    Ok(())
}
