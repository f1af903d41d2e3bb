//! A subject's billing state: subscriptions mirrored from Stripe and one-time purchases.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::audit::{self, Origin};
use super::grants::GrantRow;
use super::schema::{payments, purchases, subscriptions};
use super::{from_db_time, on_backend, to_db_time, DbConnection};
use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::facts::{
    CollectionPause, PurchaseStatus, ScheduledChange, SubjectFacts, SubscriptionStatus,
};
use crate::billing::mirror::{
    Change, PaymentRecord, PaymentStatus, PurchaseRecord, Stored, SubscriptionRecord,
};

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
    /// Stripe's `pause_collection.behavior` while payment collection is paused.
    #[serde(default)]
    pub pause_collection_behavior: Option<String>,
    /// When Stripe resumes collecting (`pause_collection.resumes_at`).
    #[serde(default)]
    pub pause_collection_resumes_at: Option<NaiveDateTime>,
    /// The subscription schedule that manages it on Stripe.
    #[serde(default)]
    pub schedule_id: Option<String>,
    /// The change that schedule makes at the period end, as JSON ([`ScheduledChange`]).
    #[serde(default)]
    pub scheduled_change: Option<String>,
}

impl SubscriptionRow {
    /// The stored status, typed (see `SubscriptionStatus::stands` and its other questions).
    pub fn subscription_status(&self) -> SubscriptionStatus {
        SubscriptionStatus::parse(&self.status)
    }

    /// The stored record, as the billing rules compare it with what Stripe holds.
    pub fn record(&self) -> SubscriptionRecord {
        SubscriptionRecord {
            stripe_subscription_id: self.stripe_subscription_id.clone(),
            subject: self.subject.clone(),
            stripe_customer_id: self.stripe_customer_id.clone(),
            status: self.subscription_status(),
            plan_id: self.plan_id.clone(),
            price_id: self.price_id.clone(),
            price_interval: self.price_interval.as_deref().and_then(Interval::parse),
            quantity: self.quantity,
            current_period_start: self.current_period_start.map(from_db_time),
            current_period_end: self.current_period_end.map(from_db_time),
            trial_start: self.trial_start.map(from_db_time),
            trial_end: self.trial_end.map(from_db_time),
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at.map(from_db_time),
            canceled_at: self.canceled_at.map(from_db_time),
            ended_at: self.ended_at.map(from_db_time),
            latest_invoice_id: self.latest_invoice_id.clone(),
            payment_failed_at: self.payment_failed_at.map(from_db_time),
            stripe_created_at: from_db_time(self.stripe_created_at),
            period_payment_revoked: self
                .period_payment_revoked
                .as_deref()
                .and_then(PurchaseStatus::parse),
            manager_user_id: self.manager_user_id.clone(),
            pause_collection: self.pause_collection_behavior.as_ref().map(|behavior| {
                CollectionPause {
                    behavior: behavior.clone(),
                    resumes_at: self.pause_collection_resumes_at.map(from_db_time),
                }
            }),
            schedule_id: self.schedule_id.clone(),
            // Written by this module from a `ScheduledChange`; a value it cannot read (a
            // hand edit) reads as no change rather than failing the subject's reads.
            scheduled_change: self
                .scheduled_change
                .as_deref()
                .and_then(|json| serde_json::from_str::<ScheduledChange>(json).ok()),
        }
    }

    fn of(r: &SubscriptionRecord, synced_at: NaiveDateTime) -> SubscriptionRow {
        SubscriptionRow {
            stripe_subscription_id: r.stripe_subscription_id.clone(),
            subject: r.subject.clone(),
            stripe_customer_id: r.stripe_customer_id.clone(),
            status: r.status.as_str().to_owned(),
            plan_id: r.plan_id.clone(),
            price_id: r.price_id.clone(),
            price_interval: r.price_interval.map(|i| i.as_str().to_owned()),
            quantity: r.quantity,
            current_period_start: r.current_period_start.map(to_db_time),
            current_period_end: r.current_period_end.map(to_db_time),
            trial_start: r.trial_start.map(to_db_time),
            trial_end: r.trial_end.map(to_db_time),
            cancel_at_period_end: r.cancel_at_period_end,
            cancel_at: r.cancel_at.map(to_db_time),
            canceled_at: r.canceled_at.map(to_db_time),
            ended_at: r.ended_at.map(to_db_time),
            latest_invoice_id: r.latest_invoice_id.clone(),
            payment_failed_at: r.payment_failed_at.map(to_db_time),
            stripe_created_at: to_db_time(r.stripe_created_at),
            synced_at,
            period_payment_revoked: r.period_payment_revoked.map(|p| p.as_str().to_owned()),
            manager_user_id: r.manager_user_id.clone(),
            pause_collection_behavior: r.pause_collection.as_ref().map(|p| p.behavior.clone()),
            pause_collection_resumes_at: r
                .pause_collection
                .as_ref()
                .and_then(|p| p.resumes_at.map(to_db_time)),
            schedule_id: r.schedule_id.clone(),
            scheduled_change: r
                .scheduled_change
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("a scheduled change serializes")),
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
    /// The stored record; `None` for a kind or status this version does not know.
    pub fn record(&self) -> Option<PurchaseRecord> {
        Some(PurchaseRecord {
            checkout_session_id: self.checkout_session_id.clone(),
            subject: self.subject.clone(),
            stripe_customer_id: self.stripe_customer_id.clone(),
            plan_id: self.plan_id.clone(),
            kind: PlanKind::parse(&self.kind)?,
            payment_intent_id: self.payment_intent_id.clone(),
            amount: self.amount,
            currency: self.currency.clone(),
            status: PurchaseStatus::parse(&self.status)?,
            purchased_at: from_db_time(self.purchased_at),
        })
    }

    fn of(r: &PurchaseRecord, updated_at: NaiveDateTime) -> PurchaseRow {
        PurchaseRow {
            checkout_session_id: r.checkout_session_id.clone(),
            subject: r.subject.clone(),
            stripe_customer_id: r.stripe_customer_id.clone(),
            plan_id: r.plan_id.clone(),
            kind: r.kind.as_str().to_owned(),
            payment_intent_id: r.payment_intent_id.clone(),
            amount: r.amount,
            currency: r.currency.clone(),
            status: r.status.as_str().to_owned(),
            purchased_at: to_db_time(r.purchased_at),
            updated_at,
        }
    }
}

/// Everything stored for one subject.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SubjectState {
    pub subscriptions: Vec<SubscriptionRow>,
    pub purchases: Vec<PurchaseRow>,
    /// Not revoked (absent from version-0 snapshots, which predate grants).
    #[serde(default)]
    pub grants: Vec<GrantRow>,
}

impl SubjectState {
    /// The facts access evaluates (rows of a kind or status this version does not know are
    /// left out).
    pub fn facts(&self) -> SubjectFacts {
        SubjectFacts {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|s| s.record().facts())
                .collect(),
            purchases: self
                .purchases
                .iter()
                .filter_map(|p| Some(p.record()?.facts()))
                .collect(),
            grants: self.grants.iter().map(GrantRow::facts).collect(),
        }
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
    let grants = super::grants::standing(conn, subject_key)?;
    Ok(SubjectState {
        subscriptions,
        purchases,
        grants,
    })
}

/// What is stored of the records a Stripe read of the subject's customer could change: the
/// subscriptions with `subscription_ids`, the subject's purchases and the payments with
/// `payment_ids`.
pub fn stored(
    conn: &mut DbConnection,
    subject_key: &str,
    subscription_ids: &[&str],
    payment_ids: &[&str],
) -> anyhow::Result<Stored> {
    let subscriptions: Vec<SubscriptionRow> = if subscription_ids.is_empty() {
        Vec::new()
    } else {
        subscriptions::table
            .filter(subscriptions::stripe_subscription_id.eq_any(subscription_ids))
            .select(SubscriptionRow::as_select())
            .load(conn)?
    };
    let purchases: Vec<PurchaseRow> = purchases::table
        .filter(purchases::subject.eq(subject_key))
        .select(PurchaseRow::as_select())
        .load(conn)?;
    let payments: Vec<PaymentRow> = if payment_ids.is_empty() {
        Vec::new()
    } else {
        payments::table
            .filter(payments::payment_id.eq_any(payment_ids))
            .select(PaymentRow::as_select())
            .load(conn)?
    };
    Ok(Stored {
        subscriptions: subscriptions.iter().map(SubscriptionRow::record).collect(),
        purchases: purchases.iter().filter_map(PurchaseRow::record).collect(),
        payments: payments.iter().filter_map(PaymentRow::record).collect(),
    })
}

/// The stored subscriptions of a Stripe customer.
pub fn subscriptions_of_customer(
    conn: &mut DbConnection,
    stripe_customer_id: &str,
) -> anyhow::Result<Vec<SubscriptionRecord>> {
    let rows: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::stripe_customer_id.eq(stripe_customer_id))
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    Ok(rows.iter().map(SubscriptionRow::record).collect())
}

/// Writes a subscription the billing rules decided changed, with its audit row.
pub fn write_subscription(
    conn: &mut DbConnection,
    change: &Change<SubscriptionRecord>,
    origin: Origin<'_>,
) -> anyhow::Result<()> {
    let now = to_db_time(origin.now);
    let row = SubscriptionRow::of(&change.after, now);
    let before = change.before.as_ref().map(|b| SubscriptionRow::of(b, now));
    audit::record_change(
        conn,
        (&row.subject, "subscription", &row.stripe_subscription_id),
        before.as_ref(),
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
            subscriptions::pause_collection_behavior
                .eq(excluded(subscriptions::pause_collection_behavior)),
            subscriptions::pause_collection_resumes_at
                .eq(excluded(subscriptions::pause_collection_resumes_at)),
            subscriptions::schedule_id.eq(excluded(subscriptions::schedule_id)),
            subscriptions::scheduled_change.eq(excluded(subscriptions::scheduled_change)),
        ))
        .execute(c))?;
    Ok(())
}

/// Writes a purchase the billing rules decided is new or changed its standing, with its audit
/// row.
pub fn write_purchase(
    conn: &mut DbConnection,
    change: &Change<PurchaseRecord>,
    origin: Origin<'_>,
) -> anyhow::Result<()> {
    let now = to_db_time(origin.now);
    let row = PurchaseRow::of(&change.after, now);
    let before = change.before.as_ref().map(|b| PurchaseRow::of(b, now));
    audit::record_change(
        conn,
        (&row.subject, "purchase", &row.checkout_session_id),
        before.as_ref(),
        &row,
        origin,
    )?;
    if before.is_none() {
        let insert = diesel::insert_into(purchases::table).values(&row);
        on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    } else {
        diesel::update(purchases::table.find(&row.checkout_session_id))
            .set((
                purchases::status.eq(&row.status),
                purchases::updated_at.eq(row.updated_at),
            ))
            .execute(conn)?;
    }
    Ok(())
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

impl PaymentRow {
    /// The stored record; `None` for a status this version does not know.
    pub fn record(&self) -> Option<PaymentRecord> {
        Some(PaymentRecord {
            payment_id: self.payment_id.clone(),
            subject: self.subject.clone(),
            stripe_customer_id: self.stripe_customer_id.clone(),
            amount: self.amount,
            amount_refunded: self.amount_refunded,
            currency: self.currency.clone(),
            status: PaymentStatus::parse(&self.status)?,
            disputed: self.disputed,
            payment_intent_id: self.payment_intent_id.clone(),
            description: self.description.clone(),
            occurred_at: from_db_time(self.occurred_at),
        })
    }

    fn of(r: &PaymentRecord, created_at: NaiveDateTime) -> PaymentRow {
        PaymentRow {
            payment_id: r.payment_id.clone(),
            subject: r.subject.clone(),
            stripe_customer_id: r.stripe_customer_id.clone(),
            kind: "charge".to_owned(),
            amount: r.amount,
            amount_refunded: r.amount_refunded,
            currency: r.currency.clone(),
            status: r.status.as_str().to_owned(),
            disputed: r.disputed,
            payment_intent_id: r.payment_intent_id.clone(),
            description: r.description.clone(),
            occurred_at: to_db_time(r.occurred_at),
            created_at,
        }
    }
}

/// Writes a payment as Stripe now shows it (refunds and disputes update it), with its audit
/// row; a new one is first seen now.
pub fn write_payment(
    conn: &mut DbConnection,
    change: &Change<PaymentRecord>,
    origin: Origin<'_>,
) -> anyhow::Result<()> {
    let now = to_db_time(origin.now);
    let row = PaymentRow::of(&change.after, now);
    let before = change.before.as_ref().map(|b| PaymentRow::of(b, now));
    audit::record_change(
        conn,
        (&row.subject, "payment", &row.payment_id),
        before.as_ref(),
        &row,
        origin,
    )?;
    let insert = diesel::insert_into(payments::table).values(&row);
    on_backend!(conn, |c| insert
        .on_conflict(payments::payment_id)
        .do_update()
        .set((
            payments::subject.eq(excluded(payments::subject)),
            payments::stripe_customer_id.eq(excluded(payments::stripe_customer_id)),
            payments::amount.eq(excluded(payments::amount)),
            payments::amount_refunded.eq(excluded(payments::amount_refunded)),
            payments::status.eq(excluded(payments::status)),
            payments::disputed.eq(excluded(payments::disputed)),
            payments::description.eq(excluded(payments::description)),
        ))
        .execute(c))?;
    Ok(())
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
