//! A subject's billing state: subscriptions mirrored from Stripe and one-time purchases.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::schema::{payments, purchases, subscriptions};
use super::{from_db_time, on_backend, to_db_time, DbConnection};
use crate::billing::access::{
    PurchaseFacts, PurchaseStatus, SubscriptionFacts, SubscriptionStatus,
};
use crate::billing::catalog::PlanKind;

/// A subscription as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
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
}

impl SubscriptionRow {
    pub fn facts(&self) -> SubscriptionFacts {
        SubscriptionFacts {
            id: self.stripe_subscription_id.clone(),
            plan_id: self.plan_id.clone(),
            status: SubscriptionStatus::parse(&self.status),
            current_period_start: self.current_period_start.map(from_db_time),
            current_period_end: self.current_period_end.map(from_db_time),
            trial_end: self.trial_end.map(from_db_time),
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at.map(from_db_time),
            payment_failed_at: self.payment_failed_at.map(from_db_time),
            created_at: from_db_time(self.stripe_created_at),
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
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
#[derive(Debug, Clone, Default)]
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

/// Upserts Stripe's current view of a subscription. `payment_failed_at` (the start of the grace
/// period) is kept from the stored row while the subscription stays delinquent in the same
/// period, so that re-syncing never extends a grace period.
pub fn upsert_subscription(
    conn: &mut DbConnection,
    mut row: SubscriptionRow,
    failure_seen_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let delinquent = matches!(row.status.as_str(), "past_due" | "unpaid");
    row.payment_failed_at = if delinquent {
        let stored: Option<Option<NaiveDateTime>> = subscriptions::table
            .find(&row.stripe_subscription_id)
            .select(subscriptions::payment_failed_at)
            .first(conn)
            .optional()?;
        let same_period =
            |t: &NaiveDateTime| row.current_period_start.is_none_or(|start| *t >= start);
        match stored.flatten().filter(same_period) {
            Some(t) => Some(t),
            None => Some(to_db_time(failure_seen_at)),
        }
    } else {
        None
    };
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
        ))
        .execute(c))?;
    Ok(())
}

/// Records a one-time purchase; a stored refund or dispute is never overwritten by `paid`.
pub fn upsert_purchase(conn: &mut DbConnection, row: PurchaseRow) -> anyhow::Result<()> {
    let insert = diesel::insert_into(purchases::table).values(&row);
    on_backend!(conn, |c| insert
        .on_conflict(purchases::checkout_session_id)
        .do_update()
        .set((
            purchases::stripe_customer_id.eq(excluded(purchases::stripe_customer_id)),
            purchases::payment_intent_id.eq(excluded(purchases::payment_intent_id)),
            purchases::amount.eq(excluded(purchases::amount)),
            purchases::currency.eq(excluded(purchases::currency)),
            purchases::updated_at.eq(excluded(purchases::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Records money received for a one-time purchase in the payments history (once).
pub fn record_payment(
    conn: &mut DbConnection,
    payment_id: &str,
    purchase: &PurchaseRow,
    description: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let insert = diesel::insert_into(payments::table).values((
        payments::payment_id.eq(payment_id),
        payments::subject.eq(&purchase.subject),
        payments::stripe_customer_id.eq(&purchase.stripe_customer_id),
        payments::kind.eq("one_time"),
        payments::amount.eq(purchase.amount),
        payments::currency.eq(&purchase.currency),
        payments::status.eq("paid"),
        payments::description.eq(description),
        payments::occurred_at.eq(purchase.purchased_at),
        payments::created_at.eq(to_db_time(now)),
    ));
    on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(())
}
