//! The one way state enters Tollgate: re-read the customer from Stripe and upsert it under the
//! per-customer lock. Webhooks, verify and `tollgate sync` all end here, so out-of-order,
//! duplicated and missed events converge to Stripe's state.

use anyhow::Context;
use chrono::{DateTime, Utc};

use std::collections::HashMap;

use crate::billing::access::{PurchaseStatus, SubscriptionStatus};
use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::subject::Subject;
use crate::db::audit::Origin;
use crate::db::state::{PaymentRow, PurchaseRow, SubscriptionRow};
use crate::db::{self, customers, events, to_db_time};
use crate::startup::AppState;
use crate::stripe::{
    metadata, ChargeId, ChargeSnapshot, CheckoutMode, CheckoutSessionSnapshot, CustomerId,
    CustomerLookup, StripeGateway, SubscriptionId, SubscriptionSnapshot,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Synced {
        subject: Subject,
        subscriptions: usize,
        /// How many stored records this sync changed: drift, when nothing else had told us.
        changes: usize,
    },
    /// The Stripe customer belongs to no subject Tollgate knows (created elsewhere).
    UnknownCustomer,
    /// The event was processed (by another replica) while this one waited for the lock.
    AlreadyProcessed,
}

/// What started the sync, for the grace period, the event log and the audit log.
#[derive(Debug, Clone)]
pub struct SyncCause<'a> {
    /// The event (`event:evt_... type`) or call (`verify`, `api:subscription.cancel`) behind it.
    pub source: String,
    /// The event being applied; marked processed in the same transaction.
    pub event_id: Option<&'a str>,
    /// When a payment failure was reported (the grace period starts no later than this).
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// A completed Checkout Session to record as a purchase, if it is one.
    pub checkout: Option<CheckoutSessionSnapshot>,
    /// Stripe said the customer was deleted (checked again before acting on it).
    pub customer_deleted: bool,
    /// Reconciliation: read every charge page and every completed Checkout Session too.
    pub full: bool,
    /// A charge the event concerns: read even when it is not among the newest charges.
    pub charge_id: Option<ChargeId>,
}

impl SyncCause<'_> {
    /// A full re-read by reconciliation.
    pub fn reconcile() -> Self {
        SyncCause {
            full: true,
            ..SyncCause::call("reconcile")
        }
    }

    pub fn call(source: &str) -> Self {
        SyncCause {
            source: source.to_owned(),
            event_id: None,
            payment_failed_at: None,
            checkout: None,
            customer_deleted: false,
            full: false,
            charge_id: None,
        }
    }
}

/// Everything Stripe holds for one customer that Tollgate mirrors.
struct StripeState {
    subscriptions: Vec<SubscriptionSnapshot>,
    charges: Vec<ChargeSnapshot>,
    /// Subscriptions whose current period's payment was refunded or is disputed.
    revoked_periods: HashMap<String, PurchaseStatus>,
    /// Completed Checkout Sessions (read by reconciliation only).
    sessions: Vec<CheckoutSessionSnapshot>,
}

pub async fn sync_customer(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &CustomerId,
    cause: SyncCause<'_>,
) -> anyhow::Result<SyncOutcome> {
    let lock_key = format!("customer:{stripe_customer_id}");
    state
        .db
        .with_customer_lock(&lock_key, || async {
            // Under the lock, a delivery of the same event to another replica has either
            // finished (then this one is a duplicate) or not started.
            if let Some(event_id) = cause.event_id {
                let id = event_id.to_owned();
                let done = state.db.run(move |conn| events::is_processed(conn, &id)).await?;
                if done {
                    return Ok(SyncOutcome::AlreadyProcessed);
                }
            }
            if cause.customer_deleted && stripe.customer(stripe_customer_id).await? == CustomerLookup::Gone {
                return forget_customer(state, stripe_customer_id.as_str(), &cause).await;
            }
            let subject = subject_of(state, stripe, stripe_customer_id, cause.checkout.as_ref()).await?;
            let Some(subject) = subject else {
                if let Some(event_id) = cause.event_id {
                    let (event_id, now) = (event_id.to_owned(), state.now());
                    state.db.run(move |conn| events::mark_processed(conn, &event_id, now)).await?;
                }
                return Ok(SyncOutcome::UnknownCustomer);
            };
            let (subscriptions, mut charges, sessions) = tokio::try_join!(
                stripe.customer_subscriptions(stripe_customer_id),
                stripe.customer_charges(stripe_customer_id, cause.full),
                async {
                    if cause.full {
                        stripe.customer_completed_sessions(stripe_customer_id).await
                    } else {
                        Ok(Vec::new())
                    }
                },
            )?;
            if let Some(id) = cause.charge_id.as_ref().filter(|id| !charges.iter().any(|c| id.as_str() == c.id)) {
                let older = stripe.charge(id).await?;
                charges.extend(older.filter(|c| c.customer_id.as_deref() == Some(stripe_customer_id.as_str())));
            }
            let revoked_periods = revoked_periods(stripe, &subscriptions, &charges).await?;
            let count = subscriptions.len();
            let stripe_state = StripeState { subscriptions, charges, revoked_periods, sessions };
            let changes = write(state, &subject, stripe_customer_id.as_str(), stripe_state, &cause).await?;
            tracing::info!(customer = %stripe_customer_id, %subject, subscriptions = count, source = %cause.source, "synced from Stripe");
            Ok(SyncOutcome::Synced { subject, subscriptions: count, changes })
        })
        .await
}

/// The subscriptions whose current period was paid by a charge since refunded or disputed.
/// Only asked of Stripe when one of the customer's charges is taken back: the link from a
/// charge to the period it paid for is the subscription's period invoice.
async fn revoked_periods(
    stripe: &StripeGateway,
    subscriptions: &[SubscriptionSnapshot],
    charges: &[ChargeSnapshot],
) -> anyhow::Result<HashMap<String, PurchaseStatus>> {
    let taken_back: Vec<(&ChargeSnapshot, PurchaseStatus)> = charges
        .iter()
        .map(|c| (c, c.standing()))
        .filter(|(_, standing)| *standing != PurchaseStatus::Paid)
        .collect();
    let mut revoked = HashMap::new();
    if taken_back.is_empty() {
        return Ok(revoked);
    }
    // A charge made well before a period started did not pay for it: an old refund costs no
    // Stripe call on every later sync. (A day of slack covers a payment confirmed just before
    // Stripe stamps the period.)
    let may_have_paid = |sub: &SubscriptionSnapshot, charge: &ChargeSnapshot| {
        sub.current_period_start
            .is_none_or(|start| charge.created >= start - chrono::Duration::days(1))
    };
    let paying = subscriptions.iter().filter(|s| {
        SubscriptionStatus::parse(&s.status).pays()
            && taken_back.iter().any(|(c, _)| may_have_paid(s, c))
    });
    for sub in paying {
        let paid_by = stripe
            .period_payments(&SubscriptionId::parse(&sub.id)?)
            .await?;
        let standing = taken_back
            .iter()
            .find(|(charge, _)| paid_by.iter().any(|id| charge.is_paid_by(id)))
            .map(|(_, standing)| *standing);
        if let Some(standing) = standing {
            revoked.insert(sub.id.clone(), standing);
        }
    }
    Ok(revoked)
}

/// A customer deleted on Stripe: its subscriptions end and the subject is unlinked from it,
/// so that a later checkout creates a new customer.
async fn forget_customer(
    state: &AppState,
    stripe_customer_id: &str,
    cause: &SyncCause<'_>,
) -> anyhow::Result<SyncOutcome> {
    let now = state.now();
    let (customer_id, source, event_id) = (
        stripe_customer_id.to_owned(),
        cause.source.clone(),
        cause.event_id.map(str::to_owned),
    );
    let forgotten = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let origin = Origin {
                    source: &source,
                    now,
                };
                let ended = db::state::end_subscriptions_of(conn, &customer_id, origin)?;
                let subject = customers::unlink(conn, &customer_id, now)?;
                if let Some(subject) = &subject {
                    db::snapshots::refresh(conn, subject, now)?;
                    let changes = serde_json::json!({"stripe_customer_id": [customer_id, null]});
                    let entry = db::audit::Entry {
                        subject,
                        entity: "customer",
                        entity_id: &customer_id,
                        action: "deleted",
                        changes,
                        source: &source,
                    };
                    db::audit::record(conn, entry, now)?;
                }
                if let Some(event_id) = &event_id {
                    events::mark_processed(conn, event_id, now)?;
                }
                Ok(subject.map(|s| (s, ended)))
            })
        })
        .await?;
    if let Some((key, _)) = &forgotten {
        state.db.snapshot_written(key);
    }
    Ok(
        match forgotten.and_then(|(key, ended)| Subject::parse_key(&key).map(|s| (s, ended))) {
            Some((subject, ended)) => {
                tracing::info!(customer = %stripe_customer_id, %subject, "customer deleted on Stripe: unlinked");
                SyncOutcome::Synced {
                    subject,
                    subscriptions: ended,
                    changes: ended + 1,
                }
            }
            None => SyncOutcome::UnknownCustomer,
        },
    )
}

/// Stores what Stripe holds, in one transaction that also marks the event processed.
async fn write(
    state: &AppState,
    subject: &Subject,
    stripe_customer_id: &str,
    stripe_state: StripeState,
    cause: &SyncCause<'_>,
) -> anyhow::Result<usize> {
    let now = state.now();
    let subject_key = subject.key();
    let revoked_periods = stripe_state.revoked_periods;
    let subscriptions: Vec<SubscriptionRow> = stripe_state
        .subscriptions
        .into_iter()
        .map(|s| {
            let revoked = revoked_periods.get(&s.id).map(|r| r.as_str().to_owned());
            SubscriptionRow {
                period_payment_revoked: revoked,
                ..subscription_row(state, &subject_key, s, now)
            }
        })
        .collect();
    let payments: Vec<PaymentRow> = stripe_state
        .charges
        .iter()
        .map(|c| payment_row(&subject_key, stripe_customer_id, c, now))
        .collect();
    // Refunds and disputes revoke the one-time purchases their payment paid for; a won
    // dispute restores them.
    let standings: Vec<(String, PurchaseStatus)> = stripe_state
        .charges
        .iter()
        .filter(|c| c.disputed || c.standing() != PurchaseStatus::Paid)
        .filter_map(|c| Some((c.payment_intent_id.clone()?, c.standing())))
        .collect();
    let purchases: Vec<PurchaseRow> = cause
        .checkout
        .iter()
        .chain(stripe_state.sessions.iter())
        .filter_map(|session| purchase_row(state, subject, session, now))
        .collect();
    let failure_reported_at = cause.payment_failed_at.map(|t| t.min(now));
    let event_id = cause.event_id.map(str::to_owned);
    let source = cause.source.clone();
    let (subject, customer_id) = (subject.clone(), stripe_customer_id.to_owned());
    let changes = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let origin = Origin {
                    source: &source,
                    now,
                };
                customers::link(conn, &subject, &customer_id, now)?;
                let mut changes = 0;
                for row in subscriptions {
                    changes += usize::from(db::state::upsert_subscription(
                        conn,
                        row,
                        failure_reported_at,
                        origin,
                    )?);
                }
                for row in purchases {
                    changes += usize::from(db::state::upsert_purchase(conn, row, origin)?);
                }
                for row in payments {
                    changes += usize::from(db::state::upsert_payment(conn, row, origin)?);
                }
                for (payment_intent, standing) in &standings {
                    changes +=
                        db::state::set_purchase_standing(conn, payment_intent, *standing, origin)?;
                }
                db::snapshots::refresh(conn, &subject.key(), now)?;
                if let Some(event_id) = &event_id {
                    events::mark_processed(conn, event_id, now)?;
                }
                Ok(changes)
            })
        })
        .await?;
    state.db.snapshot_written(&subject_key);
    Ok(changes)
}

fn subscription_row(
    state: &AppState,
    subject_key: &str,
    s: SubscriptionSnapshot,
    now: DateTime<Utc>,
) -> SubscriptionRow {
    let (plan_id, interval) = match s
        .price_id
        .as_deref()
        .and_then(|p| state.catalog.by_price_id(p))
    {
        Some((plan, price)) => (
            Some(plan.id.clone()),
            Some(price.interval.as_str().to_owned()),
        ),
        None => (None, None),
    };
    SubscriptionRow {
        stripe_subscription_id: s.id,
        subject: subject_key.to_owned(),
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
        manager_user_id: s.metadata.get(metadata::MANAGER).cloned(),
        payment_failed_at: None,
        stripe_created_at: to_db_time(s.created),
        synced_at: to_db_time(now),
        period_payment_revoked: None,
    }
}

fn payment_row(
    subject_key: &str,
    stripe_customer_id: &str,
    c: &ChargeSnapshot,
    now: DateTime<Utc>,
) -> PaymentRow {
    let status = if c.standing() == PurchaseStatus::Disputed {
        "disputed"
    } else if c.refunded {
        "refunded"
    } else if c.amount_refunded > 0 {
        "partially_refunded"
    } else {
        match c.status.as_str() {
            "succeeded" => "paid",
            "pending" => "pending",
            _ => "failed",
        }
    };
    PaymentRow {
        payment_id: c.id.clone(),
        subject: subject_key.to_owned(),
        stripe_customer_id: Some(stripe_customer_id.to_owned()),
        kind: "charge".to_owned(),
        amount: c.amount,
        amount_refunded: c.amount_refunded,
        currency: c.currency.clone(),
        status: status.to_owned(),
        disputed: c.disputed,
        payment_intent_id: c.payment_intent_id.clone(),
        description: c.description.clone(),
        occurred_at: to_db_time(c.created),
        created_at: to_db_time(now),
    }
}

/// The subject a Stripe customer belongs to: ours if we linked it, else the one written in its
/// metadata (or the completed session's) when Tollgate created it.
async fn subject_of(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &CustomerId,
    checkout: Option<&CheckoutSessionSnapshot>,
) -> anyhow::Result<Option<Subject>> {
    let id = stripe_customer_id.as_str().to_owned();
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
    let from_stripe = match stripe.customer(stripe_customer_id).await? {
        CustomerLookup::Live { subject } => subject,
        CustomerLookup::Gone => None,
    };
    Ok(from_stripe.and_then(|k| Subject::parse_key(&k)))
}

/// The purchase a paid one-time Checkout Session stands for.
fn purchase_row(
    state: &AppState,
    subject: &Subject,
    session: &CheckoutSessionSnapshot,
    now: DateTime<Utc>,
) -> Option<PurchaseRow> {
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
    Some(PurchaseRow {
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
        status: PurchaseStatus::Paid.as_str().to_owned(),
        purchased_at: to_db_time(session.created.min(now)),
        updated_at: to_db_time(now),
    })
}
