//! The one way state enters Tollgate: re-read the customer from Stripe and upsert it under the
//! per-customer lock. Webhooks, verify and `tollgate sync` all end here, so out-of-order,
//! duplicated and missed events converge to Stripe's state.

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::subject::Subject;
use crate::db::state::{PurchaseRow, SubscriptionRow};
use crate::db::{self, customers, events, to_db_time};
use crate::startup::AppState;
use crate::stripe::{metadata, CheckoutMode, CheckoutSessionSnapshot, StripeGateway};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Synced {
        subject: Subject,
        subscriptions: usize,
    },
    /// The Stripe customer belongs to no subject Tollgate knows (created elsewhere).
    UnknownCustomer,
}

/// What started the sync, for the grace period and the event log.
#[derive(Debug, Clone, Default)]
pub struct SyncCause<'a> {
    /// The event being applied; marked processed in the same transaction.
    pub event_id: Option<&'a str>,
    /// When a payment failure was reported (the grace period starts no later than this).
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// A completed Checkout Session to record as a purchase, if it is one.
    pub checkout: Option<CheckoutSessionSnapshot>,
}

pub async fn sync_customer(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &str,
    cause: SyncCause<'_>,
) -> anyhow::Result<SyncOutcome> {
    let lock_key = format!("customer:{stripe_customer_id}");
    state
        .db
        .with_customer_lock(&lock_key, || async {
            let Some(subject) = subject_of(state, stripe, stripe_customer_id, cause.checkout.as_ref()).await? else {
                if let Some(event_id) = cause.event_id {
                    let event_id = event_id.to_owned();
                    let now = state.now();
                    state.db.run(move |conn| events::mark_processed(conn, &event_id, now)).await?;
                }
                return Ok(SyncOutcome::UnknownCustomer);
            };
            let snapshots = stripe.customer_subscriptions(stripe_customer_id).await?;
            let now = state.now();
            let rows: Vec<SubscriptionRow> = snapshots
                .into_iter()
                .map(|s| {
                    let (plan_id, interval) = match s.price_id.as_deref().and_then(|p| state.catalog.by_price_id(p)) {
                        Some((plan, price)) => (Some(plan.id.clone()), Some(price.interval.as_str().to_owned())),
                        None => (None, None),
                    };
                    SubscriptionRow {
                        stripe_subscription_id: s.id,
                        subject: subject.key(),
                        stripe_customer_id: s.customer_id,
                        status: s.status,
                        plan_id,
                        price_id: s.price_id,
                        price_interval: interval,
                        quantity: i64::try_from(s.quantity).unwrap_or(i64::MAX),
                        current_period_start: s.current_period_start.map(to_db_time),
                        current_period_end: s.current_period_end.map(to_db_time),
                        trial_start: s.trial_start.map(to_db_time),
                        trial_end: s.trial_end.map(to_db_time),
                        cancel_at_period_end: s.cancel_at_period_end,
                        cancel_at: s.cancel_at.map(to_db_time),
                        canceled_at: s.canceled_at.map(to_db_time),
                        ended_at: s.ended_at.map(to_db_time),
                        latest_invoice_id: s.latest_invoice_id,
                        payment_failed_at: None,
                        stripe_created_at: to_db_time(s.created),
                        synced_at: to_db_time(now),
                    }
                })
                .collect();
            let purchase = cause.checkout.as_ref().and_then(|session| purchase_row(state, &subject, session, now));
            let count = rows.len();
            let failure_seen_at = cause.payment_failed_at.map_or(now, |t| t.min(now));
            let event_id = cause.event_id.map(str::to_owned);
            let customer_id = stripe_customer_id.to_owned();
            let link_subject = subject.clone();
            state
                .db
                .run(move |conn| {
                    db::write_transaction(conn, |conn| {
                        customers::link(conn, &link_subject, &customer_id, now)?;
                        for row in rows {
                            db::state::upsert_subscription(conn, row, failure_seen_at)?;
                        }
                        if let Some((row, payment_id)) = purchase {
                            db::state::upsert_purchase(conn, row.clone())?;
                            if let Some(payment_id) = payment_id {
                                db::state::record_payment(conn, &payment_id, &row, &format!("{} purchase", row.plan_id), now)?;
                            }
                        }
                        if let Some(event_id) = &event_id {
                            events::mark_processed(conn, event_id, now)?;
                        }
                        Ok(())
                    })
                })
                .await?;
            tracing::info!(customer = %stripe_customer_id, %subject, subscriptions = count, "synced from Stripe");
            Ok(SyncOutcome::Synced { subject, subscriptions: count })
        })
        .await
}

/// The subject a Stripe customer belongs to: ours if we linked it, else the one written in its
/// metadata (or the completed session's) when Tollgate created it.
async fn subject_of(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &str,
    checkout: Option<&CheckoutSessionSnapshot>,
) -> anyhow::Result<Option<Subject>> {
    let id = stripe_customer_id.to_owned();
    let stored = state
        .db
        .run(move |conn| customers::find_by_stripe_id(conn, &id))
        .await?;
    if let Some(row) = stored {
        return Subject::parse_key(&row.subject)
            .map(Some)
            .with_context(|| format!("stored subject `{}` is malformed", row.subject));
    }
    if let Some(subject) = checkout
        .and_then(|s| s.metadata.get(metadata::SUBJECT))
        .and_then(|k| Subject::parse_key(k))
    {
        return Ok(Some(subject));
    }
    let from_stripe = stripe.customer_subject(stripe_customer_id).await?;
    Ok(from_stripe.and_then(|k| Subject::parse_key(&k)))
}

/// The purchase a paid one-time Checkout Session stands for, with its payment id.
fn purchase_row(
    state: &AppState,
    subject: &Subject,
    session: &CheckoutSessionSnapshot,
    now: DateTime<Utc>,
) -> Option<(PurchaseRow, Option<String>)> {
    if session.mode != CheckoutMode::Payment || !session.paid {
        return None;
    }
    let plan = session
        .metadata
        .get(metadata::PLAN)
        .and_then(|p| state.catalog.plan(p))?;
    if plan.kind == PlanKind::Subscription {
        return None;
    }
    let price = plan.price(Interval::Once);
    let row = PurchaseRow {
        checkout_session_id: session.id.clone(),
        subject: subject.key(),
        stripe_customer_id: session.customer_id.clone(),
        plan_id: plan.id.clone(),
        kind: plan.kind.as_str().to_owned(),
        payment_intent_id: session.payment_intent_id.clone(),
        amount: session
            .amount_total
            .or(price.map(|p| p.amount))
            .unwrap_or(0),
        currency: session
            .currency
            .clone()
            .or(price.map(|p| p.currency.clone()))
            .unwrap_or_else(|| "usd".into()),
        status: "paid".into(),
        purchased_at: to_db_time(session.created.min(now)),
        updated_at: to_db_time(now),
    };
    let payment_id = session
        .payment_intent_id
        .clone()
        .or_else(|| Some(session.id.clone()));
    Some((row, payment_id))
}
