//! A subject's billing state: subscriptions mirrored from Stripe and one-time purchases.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::audit::{self, Origin};
use super::schema::{payments, purchases, subscriptions};
use super::{from_db_time, on_backend, to_db_time, DbConnection};
use crate::billing::access::{
    PurchaseFacts, PurchaseStatus, SubscriptionFacts, SubscriptionStatus,
};
use crate::billing::catalog::PlanKind;

/// A subscription as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionRow {
    pub stripe_subscription_id: String,
    pub subject: String,
    pub stripe_customer_id: String,
    pub status: String,
    pub plan_id: Option<String>,
    pub price_id: Option<String>,
    pub price_interval: Option<String>,
    pub quantity: i64,
    pub current_period_start: Option<NaiveDateTime>,
    pub current_period_end: Option<NaiveDateTime>,
    pub trial_start: Option<NaiveDateTime>,
    pub trial_end: Option<NaiveDateTime>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<NaiveDateTime>,
    pub canceled_at: Option<NaiveDateTime>,
    pub ended_at: Option<NaiveDateTime>,
    pub latest_invoice_id: Option<String>,
    pub payment_failed_at: Option<NaiveDateTime>,
    pub stripe_created_at: NaiveDateTime,
    pub synced_at: NaiveDateTime,
    /// `refunded` or `disputed` when the current period's payment was taken back.
    pub period_payment_revoked: Option<String>,
    /// For tenant subscriptions: the member who may manage it (Stripe metadata
    /// `tollgate_manager`).
    #[serde(default)]
    pub manager_user_id: Option<String>,
}

impl SubscriptionRow {
    /// The stored status, typed (see `SubscriptionStatus::stands` and its other questions).
    pub fn subscription_status(&self) -> SubscriptionStatus {
        SubscriptionStatus::parse(&self.status)
    }

    pub fn facts(&self) -> SubscriptionFacts {
        SubscriptionFacts {
            id: self.stripe_subscription_id.clone(),
            plan_id: self.plan_id.clone(),
            status: self.subscription_status(),
            current_period_start: self.current_period_start.map(from_db_time),
            current_period_end: self.current_period_end.map(from_db_time),
            trial_end: self.trial_end.map(from_db_time),
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at.map(from_db_time),
            payment_failed_at: self.payment_failed_at.map(from_db_time),
            period_payment_revoked: self
                .period_payment_revoked
                .as_deref()
                .and_then(PurchaseStatus::parse),
            created_at: from_db_time(self.stripe_created_at),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize)]
#[diesel(table_name = purchases)]
pub struct PurchaseRow {
    pub checkout_session_id: String,
    pub subject: String,
    pub stripe_customer_id: Option<String>,
    pub plan_id: String,
    pub kind: String,
    pub payment_intent_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub purchased_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl PurchaseRow {
    pub fn facts(&self) -> Option<PurchaseFacts> {
        Some(PurchaseFacts {
            plan_id: self.plan_id.clone(),
            kind: PlanKind::parse(&self.kind)?,
            status: PurchaseStatus::parse(&self.status)?,
            purchased_at: from_db_time(self.purchased_at),
        })
    }
}

/// Everything stored for one subject.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SubjectState {
    pub subscriptions: Vec<SubscriptionRow>,
    pub purchases: Vec<PurchaseRow>,
}

impl SubjectState {
    pub fn subscription_facts(&self) -> Vec<SubscriptionFacts> {
        self.subscriptions
            .iter()
            .map(SubscriptionRow::facts)
            .collect()
    }

    pub fn purchase_facts(&self) -> Vec<PurchaseFacts> {
        self.purchases
            .iter()
            .filter_map(PurchaseRow::facts)
            .collect()
    }
}

pub fn load(conn: &mut DbConnection, subject_key: &str) -> anyhow::Result<SubjectState> {
    let subscriptions = subscriptions::table
        .filter(subscriptions::subject.eq(subject_key))
        .order(subscriptions::stripe_created_at.desc())
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    let purchases = purchases::table
        .filter(purchases::subject.eq(subject_key))
        .order(purchases::purchased_at.desc())
        .select(PurchaseRow::as_select())
        .load(conn)?;
    Ok(SubjectState {
        subscriptions,
        purchases,
    })
}

/// Upserts Stripe's current view of a subscription; tells whether anything changed.
/// `payment_failed_at` (the start of the grace
/// period) is kept from the stored row while the subscription stays delinquent in the same
/// period, so that re-syncing never extends a grace period.
pub fn upsert_subscription(
    conn: &mut DbConnection,
    mut row: SubscriptionRow,
    failure_reported_at: Option<DateTime<Utc>>,
    origin: Origin<'_>,
) -> anyhow::Result<bool> {
    let stored: Option<SubscriptionRow> = subscriptions::table
        .find(&row.stripe_subscription_id)
        .select(SubscriptionRow::as_select())
        .first(conn)
        .optional()?;
    let delinquent = SubscriptionStatus::parse(&row.status).delinquent();
    row.payment_failed_at = if delinquent {
        let same_period =
            |t: &NaiveDateTime| row.current_period_start.is_none_or(|start| *t >= start);
        match stored
            .as_ref()
            .and_then(|s| s.payment_failed_at)
            .filter(same_period)
        {
            Some(t) => Some(t),
            // First seen delinquent: when a payment failure was reported, else when the
            // period's invoice was due (its start), so that a late discovery never grants a
            // fresh grace period.
            None => Some(
                failure_reported_at
                    .map(to_db_time)
                    .or(row.current_period_start)
                    .unwrap_or_else(|| to_db_time(origin.now)),
            ),
        }
    } else {
        None
    };
    let (subject, id) = (row.subject.clone(), row.stripe_subscription_id.clone());
    let changed = audit::record_change(
        conn,
        (&subject, "subscription", &id),
        stored.as_ref(),
        &row,
        origin,
    )?;
    let insert = diesel::insert_into(subscriptions::table).values(&row);
    on_backend!(conn, |c| insert
        .on_conflict(subscriptions::stripe_subscription_id)
        .do_update()
        .set((
            subscriptions::subject.eq(excluded(subscriptions::subject)),
            subscriptions::stripe_customer_id.eq(excluded(subscriptions::stripe_customer_id)),
            subscriptions::status.eq(excluded(subscriptions::status)),
            subscriptions::plan_id.eq(excluded(subscriptions::plan_id)),
            subscriptions::price_id.eq(excluded(subscriptions::price_id)),
            subscriptions::price_interval.eq(excluded(subscriptions::price_interval)),
            subscriptions::quantity.eq(excluded(subscriptions::quantity)),
            subscriptions::current_period_start.eq(excluded(subscriptions::current_period_start)),
            subscriptions::current_period_end.eq(excluded(subscriptions::current_period_end)),
            subscriptions::trial_start.eq(excluded(subscriptions::trial_start)),
            subscriptions::trial_end.eq(excluded(subscriptions::trial_end)),
            subscriptions::cancel_at_period_end.eq(excluded(subscriptions::cancel_at_period_end)),
            subscriptions::cancel_at.eq(excluded(subscriptions::cancel_at)),
            subscriptions::canceled_at.eq(excluded(subscriptions::canceled_at)),
            subscriptions::ended_at.eq(excluded(subscriptions::ended_at)),
            subscriptions::latest_invoice_id.eq(excluded(subscriptions::latest_invoice_id)),
            subscriptions::payment_failed_at.eq(excluded(subscriptions::payment_failed_at)),
            subscriptions::stripe_created_at.eq(excluded(subscriptions::stripe_created_at)),
            subscriptions::synced_at.eq(excluded(subscriptions::synced_at)),
            subscriptions::period_payment_revoked
                .eq(excluded(subscriptions::period_payment_revoked)),
            subscriptions::manager_user_id.eq(excluded(subscriptions::manager_user_id)),
        ))
        .execute(c))?;
    Ok(changed)
}

/// Records a one-time purchase; a stored refund or dispute is never overwritten by `paid`.
pub fn upsert_purchase(
    conn: &mut DbConnection,
    row: PurchaseRow,
    origin: Origin<'_>,
) -> anyhow::Result<bool> {
    let stored: Option<PurchaseRow> = purchases::table
        .find(&row.checkout_session_id)
        .select(PurchaseRow::as_select())
        .first(conn)
        .optional()?;
    if stored.is_some() {
        return Ok(false);
    }
    audit::record_change(
        conn,
        (&row.subject, "purchase", &row.checkout_session_id),
        None,
        &row,
        origin,
    )?;
    let insert = diesel::insert_into(purchases::table).values(&row);
    on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(true)
}

/// Brings the purchases a payment intent paid for to the payment's standing: a refund or a
/// dispute revokes them, a won dispute restores them; a refund is final. Tells how many changed.
pub fn set_purchase_standing(
    conn: &mut DbConnection,
    payment_intent_id: &str,
    standing: PurchaseStatus,
    origin: Origin<'_>,
) -> anyhow::Result<usize> {
    let stale: Vec<PurchaseRow> = purchases::table
        .filter(purchases::payment_intent_id.eq(payment_intent_id))
        .filter(purchases::status.ne(standing.as_str()))
        .filter(purchases::status.ne(PurchaseStatus::Refunded.as_str()))
        .select(PurchaseRow::as_select())
        .load(conn)?;
    let changed = stale.len();
    for before in stale {
        let mut after = before.clone();
        after.status = standing.as_str().to_owned();
        after.updated_at = to_db_time(origin.now);
        audit::record_change(
            conn,
            (&before.subject, "purchase", &before.checkout_session_id),
            Some(&before),
            &after,
            origin,
        )?;
        diesel::update(purchases::table.find(&before.checkout_session_id))
            .set((
                purchases::status.eq(&after.status),
                purchases::updated_at.eq(after.updated_at),
            ))
            .execute(conn)?;
    }
    Ok(changed)
}

/// One charge of the subject's, as the payments history shows it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, serde::Serialize)]
#[diesel(table_name = payments)]
pub struct PaymentRow {
    pub payment_id: String,
    pub subject: String,
    pub stripe_customer_id: Option<String>,
    pub kind: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `paid`, `pending`, `failed`, `refunded`, `partially_refunded` or `disputed`.
    pub status: String,
    pub disputed: bool,
    pub payment_intent_id: Option<String>,
    pub description: Option<String>,
    pub occurred_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// Upserts a payment as Stripe now shows it (refunds and disputes update it).
pub fn upsert_payment(
    conn: &mut DbConnection,
    row: PaymentRow,
    origin: Origin<'_>,
) -> anyhow::Result<bool> {
    let stored: Option<PaymentRow> = payments::table
        .find(&row.payment_id)
        .select(PaymentRow::as_select())
        .first(conn)
        .optional()?;
    let changed = audit::record_change(
        conn,
        (&row.subject, "payment", &row.payment_id),
        stored.as_ref(),
        &row,
        origin,
    )?;
    let insert = diesel::insert_into(payments::table).values(&row);
    on_backend!(conn, |c| insert
        .on_conflict(payments::payment_id)
        .do_update()
        .set((
            payments::amount.eq(excluded(payments::amount)),
            payments::amount_refunded.eq(excluded(payments::amount_refunded)),
            payments::status.eq(excluded(payments::status)),
            payments::disputed.eq(excluded(payments::disputed)),
            payments::description.eq(excluded(payments::description)),
        ))
        .execute(c))?;
    Ok(changed)
}

/// A page of the subject's payments, newest first, after `cursor` (the last page's last
/// `(occurred_at, payment_id)`).
pub fn list_payments(
    conn: &mut DbConnection,
    subject_key: &str,
    limit: i64,
    cursor: Option<(NaiveDateTime, String)>,
) -> anyhow::Result<Vec<PaymentRow>> {
    let mut query = payments::table
        .filter(payments::subject.eq(subject_key))
        .order((payments::occurred_at.desc(), payments::payment_id.desc()))
        .limit(limit)
        .select(PaymentRow::as_select())
        .into_boxed();
    if let Some((at, id)) = cursor {
        query = query.filter(
            payments::occurred_at.lt(at).or(payments::occurred_at
                .eq(at)
                .and(payments::payment_id.lt(id))),
        );
    }
    Ok(query.load(conn)?)
}

/// The Stripe customer behind a recorded charge or payment intent.
pub fn customer_of_payment(
    conn: &mut DbConnection,
    charge_id: Option<&str>,
    payment_intent_id: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let found: Option<Option<String>> = payments::table
        .filter(
            payments::payment_id
                .nullable()
                .eq(charge_id)
                .or(payments::payment_intent_id.eq(payment_intent_id)),
        )
        .select(payments::stripe_customer_id)
        .first(conn)
        .optional()?;
    Ok(found.flatten())
}

/// Marks every subscription of a deleted Stripe customer ended (Stripe cancels them when it
/// deletes the customer); tells how many changed.
pub fn end_subscriptions_of(
    conn: &mut DbConnection,
    stripe_customer_id: &str,
    origin: Origin<'_>,
) -> anyhow::Result<usize> {
    let standing: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::stripe_customer_id.eq(stripe_customer_id))
        .filter(subscriptions::status.ne("canceled"))
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    let now = to_db_time(origin.now);
    for before in &standing {
        let mut after = before.clone();
        after.status = "canceled".to_owned();
        after.ended_at = Some(before.ended_at.unwrap_or(now));
        after.canceled_at = Some(before.canceled_at.unwrap_or(now));
        audit::record_change(
            conn,
            (
                &before.subject,
                "subscription",
                &before.stripe_subscription_id,
            ),
            Some(before),
            &after,
            origin,
        )?;
        diesel::update(subscriptions::table.find(&before.stripe_subscription_id))
            .set((
                subscriptions::status.eq(&after.status),
                subscriptions::ended_at.eq(after.ended_at),
                subscriptions::canceled_at.eq(after.canceled_at),
                subscriptions::synced_at.eq(now),
            ))
            .execute(conn)?;
    }
    Ok(standing.len())
}
