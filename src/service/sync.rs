//! The one way state enters Tollgate: re-read the customer from Stripe and upsert it under the
//! per-customer lock. Webhooks, verify and `tollgate sync` all end here, so out-of-order,
//! duplicated and missed events converge to Stripe's state.

use anyhow::Context;
use chrono::{DateTime, Utc};

use std::collections::HashMap;

use super::events::Emitter;
use super::licenses;
use crate::billing::events::{Event, SubscriptionDuplicateData};
use crate::billing::facts::PurchaseStatus;
use crate::billing::mirror::{self, StripeCharge, StripeCheckout, StripeHolds, StripeSubscription};
use crate::billing::payment::RefundPolicy;
use crate::billing::subject::Subject;
use crate::db::audit::Origin;
use crate::db::remedies::{self, Remedy};
use crate::db::{self, customers, events};
use crate::state::AppState;
use crate::stripe::{ChargeId, CustomerId, CustomerLookup, StripeGateway, SubscriptionId};

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
pub struct SyncCause {
    /// The events (`event:evt_... type`) or call (`verify`, `api:subscription.cancel`) behind it.
    pub source: String,
    /// The events being applied (all pending events of the customer a worker took); marked
    /// processed in the same transaction.
    pub event_ids: Vec<String>,
    /// When a payment failure was reported (the grace period starts no later than this).
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// Completed Checkout Sessions to record as purchases, if they are some.
    pub checkouts: Vec<StripeCheckout>,
    /// Stripe said the customer was deleted (checked again before acting on it).
    pub customer_deleted: bool,
    /// Reconciliation: read every charge page and every completed Checkout Session too.
    pub full: bool,
    /// Charges the events concern: read even when they are not among the newest charges.
    pub charge_ids: Vec<ChargeId>,
    /// Stripe said a trial ends in three days: tell `trial.will_end`.
    pub trial_will_end: bool,
    /// Read the customer's charges (payments, refunds, disputes, purchases). Only events that
    /// concern subscriptions alone skip them: a burst of those costs one Stripe read.
    pub read_charges: bool,
}

impl SyncCause {
    /// Takes in what `other` asks of the same customer's sync: its events, its sessions and
    /// charges (each once), the earliest payment failure, a deletion, a trial ending, the
    /// charges to read.
    pub fn absorb(&mut self, other: SyncCause) {
        self.event_ids.extend(other.event_ids);
        for session in other.checkouts {
            if !self.checkouts.iter().any(|c| c.id == session.id) {
                self.checkouts.push(session);
            }
        }
        for charge in other.charge_ids {
            if !self.charge_ids.contains(&charge) {
                self.charge_ids.push(charge);
            }
        }
        self.payment_failed_at = match (self.payment_failed_at, other.payment_failed_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.customer_deleted |= other.customer_deleted;
        self.trial_will_end |= other.trial_will_end;
        self.read_charges |= other.read_charges;
        self.full |= other.full;
    }

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
            event_ids: Vec::new(),
            payment_failed_at: None,
            checkouts: Vec::new(),
            customer_deleted: false,
            full: false,
            charge_ids: Vec::new(),
            trial_will_end: false,
            read_charges: true,
        }
    }
}

pub async fn sync_customer(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &CustomerId,
    mut cause: SyncCause,
) -> anyhow::Result<SyncOutcome> {
    let lock_key = format!("customer:{stripe_customer_id}");
    state
        .db
        .with_customer_lock(&lock_key, |lease| async move {
            // Under the lock, a delivery of the same event to another replica has either
            // finished (then this one is a duplicate) or not started.
            if !cause.event_ids.is_empty() {
                let ids = cause.event_ids.clone();
                let pending = state
                    .db
                    .run(move |conn| {
                        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                        events::unprocessed(conn, &ids)
                    })
                    .await?;
                if pending.is_empty() {
                    return Ok(SyncOutcome::AlreadyProcessed);
                }
                cause.event_ids = pending;
            }
            if cause.customer_deleted && stripe.customer(stripe_customer_id).await? == CustomerLookup::Gone {
                return forget_customer(state, stripe_customer_id.as_str(), &cause, &lease).await;
            }
            let named = cause.checkouts.iter().find(|c| c.subject.is_some()).or(cause.checkouts.first());
            let subject = subject_of(state, stripe, stripe_customer_id, named).await?;
            let Some((subject, linked)) = subject else {
                let (event_ids, now) = (cause.event_ids.clone(), state.now());
                state.db.run(move |conn| mark_all_processed(conn, &event_ids, now)).await?;
                return Ok(SyncOutcome::UnknownCustomer);
            };
            let charges_read = cause.read_charges || cause.full;
            let (subscriptions, mut charges, sessions) = tokio::try_join!(
                stripe.customer_subscriptions(stripe_customer_id),
                async {
                    if charges_read {
                        stripe.customer_charges(stripe_customer_id, cause.full).await
                    } else {
                        Ok(Vec::new())
                    }
                },
                async {
                    if cause.full {
                        stripe.customer_completed_sessions(stripe_customer_id).await
                    } else {
                        Ok(Vec::new())
                    }
                },
            )?;
            for id in cause.charge_ids.iter().filter(|_| charges_read) {
                if charges.iter().any(|c| id.as_str() == c.id) {
                    continue;
                }
                let older = stripe.charge(id).await?;
                charges.extend(older.filter(|c| c.customer_id.as_deref() == Some(stripe_customer_id.as_str())));
            }
            let (revoked_periods, reverts) = taken_back(stripe, &subscriptions, &charges, state.refunds).await?;
            let count = subscriptions.len();
            let holds = StripeHolds {
                subscriptions,
                charges,
                revoked_periods,
                reverts,
                charges_read,
                sessions: cause.checkouts.iter().cloned().chain(sessions).collect(),
                failure_reported_at: cause.payment_failed_at,
            };
            let changes = write(state, &subject, linked, stripe_customer_id.as_str(), holds, &cause, &lease).await?;
            tracing::info!(customer = %stripe_customer_id, %subject, subscriptions = count, source = %cause.source, "synced from Stripe");
            Ok(SyncOutcome::Synced { subject, subscriptions: count, changes })
        })
        .await
}

/// What refunds and disputes of the subscriptions' payments take back: the subscriptions whose
/// current period was paid by a charge since refunded or disputed, and the upgrades whose
/// invoice was refunded (to take back on Stripe). Only asked of Stripe for the subscriptions
/// such a charge may have paid (see [`mirror::periods_to_check`]): the link from a charge to
/// what it paid for is the subscription's invoices.
async fn taken_back(
    stripe: &StripeGateway,
    subscriptions: &[StripeSubscription],
    charges: &[StripeCharge],
    refunds: RefundPolicy,
) -> anyhow::Result<(HashMap<String, PurchaseStatus>, Vec<mirror::UpgradeRevert>)> {
    let mut revoked = HashMap::new();
    let mut reverts = Vec::new();
    for sub in mirror::periods_to_check(subscriptions, charges, refunds) {
        let invoices = stripe
            .subscription_invoices(&SubscriptionId::parse(&sub.id)?)
            .await?;
        if let Some(standing) = mirror::revoked_by(charges, &invoices.period, refunds) {
            revoked.insert(sub.id.clone(), standing);
        }
        reverts.extend(mirror::upgrade_to_revert(sub, &invoices, charges, refunds));
    }
    Ok((revoked, reverts))
}

/// Marks the events processed (in the transaction that applied them).
fn mark_all_processed(
    conn: &mut db::DbConnection,
    event_ids: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for id in event_ids {
        events::mark_processed(conn, id, now)?;
    }
    Ok(())
}

/// A customer deleted on Stripe: its subscriptions end and the subject is unlinked from it,
/// so that a later checkout creates a new customer.
async fn forget_customer(
    state: &AppState,
    stripe_customer_id: &str,
    cause: &SyncCause,
    lease: &db::Lease,
) -> anyhow::Result<SyncOutcome> {
    let now = state.now();
    let lease = lease.clone();
    let (customer_id, source, event_ids) = (
        stripe_customer_id.to_owned(),
        cause.source.clone(),
        cause.event_ids.clone(),
    );
    let id = customer_id.clone();
    let linked = state
        .db
        .run(move |conn| customers::find_by_stripe_id(conn, &id))
        .await?
        .and_then(|row| Subject::parse_key(&row.subject));
    let emitter = linked.as_ref().map(|subject| Emitter::of(state, subject));
    let (forgotten, appended) = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                lease.confirm(conn)?;
                let origin = Origin {
                    source: &source,
                    now,
                };
                let before = match (&emitter, &linked) {
                    (Some(emitter), Some(subject)) => {
                        Some(emitter.stored(conn, &subject.key(), now)?)
                    }
                    _ => None,
                };
                let stored = db::state::subscriptions_of_customer(conn, &customer_id)?;
                let mut changes = mirror::Changes::default();
                for before in stored {
                    if let Some(after) = mirror::ended_by_deletion(&before, now) {
                        let change = mirror::Change {
                            before: Some(before),
                            after,
                        };
                        db::state::write_subscription(conn, &change, origin)?;
                        changes.subscriptions.push(change);
                    }
                }
                let ended = changes.subscriptions.len();
                let subject = customers::unlink(conn, &customer_id, now)?;
                let mut appended = None;
                if let Some(subject) = &subject {
                    let facts = db::snapshots::refresh(conn, subject, now)?;
                    if let Some(emitter) = &emitter {
                        appended = Some(emitter.after_sync(
                            conn,
                            subject,
                            &changes,
                            before,
                            Some(&facts),
                            now,
                        )?);
                    }
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
                mark_all_processed(conn, &event_ids, now)?;
                Ok((subject.map(|s| (s, ended)), appended))
            })
        })
        .await?;
    if let Some(appended) = appended {
        appended.committed(state);
    }
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

/// Stores what changed of what Stripe holds, in one transaction that also marks the event
/// processed. Records whose facts did not change are not written, and the snapshot is rewritten
/// only when a subscription or purchase changed; its `synced_at` (the `as_of` of answers) is set
/// on every sync.
async fn write(
    state: &AppState,
    subject: &Subject,
    linked: bool,
    stripe_customer_id: &str,
    holds: StripeHolds,
    cause: &SyncCause,
    lease: &db::Lease,
) -> anyhow::Result<usize> {
    let now = state.now();
    let lease = lease.clone();
    let subject_key = subject.key();
    let catalog = state.catalog.clone();
    let refunds = state.refunds;
    let event_ids = cause.event_ids.clone();
    let source = cause.source.clone();
    let trial_will_end = cause.trial_will_end;
    let emitter = Emitter::of(state, subject);
    let provisioning = state.licenses.plans.clone();
    let undo = state.second_subscription == mirror::SecondSubscription::CancelAndRefund;
    let (subject, customer_id) = (subject.clone(), stripe_customer_id.to_owned());
    let (changes, seconds, appended, provision, remedied) = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                lease.confirm(conn)?;
                let origin = Origin {
                    source: &source,
                    now,
                };
                let key = subject.key();
                if !linked {
                    customers::link(conn, &subject, &customer_id, now)?;
                }
                let subscription_ids: Vec<&str> =
                    holds.subscriptions.iter().map(|s| s.id.as_str()).collect();
                let payment_ids: Vec<&str> = holds.charges.iter().map(|c| c.id.as_str()).collect();
                let stored = db::state::stored(conn, &key, &subscription_ids, &payment_ids)?;
                let changes =
                    mirror::reconcile(&catalog, &key, &customer_id, &stored, &holds, refunds, now);
                // What the subject was entitled to before, for `entitlements.changed`.
                let before = if changes.touch_snapshot() {
                    Some(emitter.stored(conn, &key, now)?)
                } else {
                    None
                };
                for change in &changes.subscriptions {
                    db::state::write_subscription(conn, change, origin)?;
                }
                for change in &changes.purchases {
                    db::state::write_purchase(conn, change, origin)?;
                }
                for change in &changes.payments {
                    db::state::write_payment(conn, change, origin)?;
                }
                let touched = changes.touch_snapshot();
                let mut seconds = Vec::new();
                let mut after = None;
                if touched {
                    let facts = db::snapshots::refresh(conn, &key, now)?;
                    seconds =
                        flag_second_standing(conn, &key, &changes.subscriptions, &facts, origin)?;
                    after = Some(facts);
                }
                let mut appended =
                    emitter.after_sync(conn, &key, &changes, before, after.as_ref(), now)?;
                if trial_will_end {
                    emitter.trials_ending(conn, &key, now, &mut appended)?;
                }
                let target = |subscription_id| remedies::Target {
                    subscription_id,
                    subject: &key,
                    customer_id: &customer_id,
                };
                let mut remedied = false;
                for second in seconds.iter().filter(|_| undo) {
                    let remedy = Remedy::SecondSubscription {
                        beside: second.beside.clone(),
                    };
                    remedied |=
                        remedies::queue(conn, target(&second.subscription_id), &remedy, now)?;
                }
                for revert in &holds.reverts {
                    let remedy = Remedy::RevertUpgrade {
                        invoice_id: revert.invoice_id.clone(),
                        price_id: revert.price_id.clone(),
                        quantity: revert.quantity,
                    };
                    remedied |=
                        remedies::queue(conn, target(&revert.subscription_id), &remedy, now)?;
                }
                for second in &seconds {
                    let event = Event::subscription_duplicate(&SubscriptionDuplicateData {
                        subscription_id: second.subscription_id.clone(),
                        beside: second.beside.clone(),
                    });
                    emitter.append(conn, &key, &event, now, &mut appended)?;
                }
                let provision = licenses::follow_purchases(
                    conn,
                    &provisioning,
                    &changes.purchases,
                    &emitter,
                    origin,
                    &mut appended,
                )?;
                db::snapshots::mark_synced(conn, &key, now)?;
                mark_all_processed(conn, &event_ids, now)?;
                Ok((changes.len(), seconds, appended, provision, remedied))
            })
        })
        .await?;
    appended.committed(state);
    if provision {
        state.licenses.wake.notify_one();
    }
    if remedied {
        state.remedy_wake.notify_one();
    }
    // Also when nothing changed: the snapshot's `synced_at` moved.
    state.db.snapshot_written(&subject_key);
    for second in &seconds {
        metrics::counter!("tollgate_second_subscriptions_total").increment(1);
        tracing::warn!(
            subject = %subject_key,
            subscription = %second.subscription_id,
            beside = %second.beside,
            "a second subscription stands for one subject: it bills twice; cancel and refund \
             one (both count for access meanwhile; billing.second_subscription = \
             \"cancel_and_refund\" does it by itself)"
        );
    }
    Ok(changes)
}

/// Records, in the sync's transaction, an audit row (action `second_subscription`) for each
/// subscription this sync made stand beside an older standing one of the subject (see
/// [`mirror::second_standing`]), from `facts`, the subject's facts the sync just wrote.
fn flag_second_standing(
    conn: &mut db::DbConnection,
    subject_key: &str,
    changes: &[mirror::Change<mirror::SubscriptionRecord>],
    facts: &crate::billing::facts::SubjectFacts,
    origin: Origin<'_>,
) -> anyhow::Result<Vec<mirror::SecondStanding>> {
    if !changes.iter().any(mirror::Change::starts_standing) {
        return Ok(Vec::new());
    }
    let standing: Vec<(String, DateTime<Utc>)> = facts
        .subscriptions
        .iter()
        .filter(|s| s.status.stands())
        .map(|s| (s.id.clone(), s.created_at))
        .collect();
    let seconds = mirror::second_standing(changes, &standing);
    for second in &seconds {
        db::audit::record(
            conn,
            db::audit::Entry {
                subject: subject_key,
                entity: "subscription",
                entity_id: &second.subscription_id,
                action: "second_subscription",
                changes: serde_json::json!({ "beside": second.beside }),
                source: origin.source,
            },
            origin.now,
        )?;
    }
    Ok(seconds)
}

/// The subject a Stripe customer belongs to: ours if we linked it, else the one written in its
/// metadata (or the completed session's) when Tollgate created it.
async fn subject_of(
    state: &AppState,
    stripe: &StripeGateway,
    stripe_customer_id: &CustomerId,
    checkout: Option<&StripeCheckout>,
) -> anyhow::Result<Option<(Subject, bool)>> {
    let id = stripe_customer_id.as_str().to_owned();
    let stored = state
        .db
        .run(move |conn| customers::find_by_stripe_id(conn, &id))
        .await?;
    if let Some(row) = stored {
        return Subject::parse_key(&row.subject)
            .map(|s| Some((s, true)))
            .with_context(|| format!("stored subject `{}` is malformed", row.subject));
    }
    if let Some(subject) = checkout
        .and_then(|s| s.subject.as_deref())
        .and_then(Subject::parse_key)
    {
        return Ok(Some((subject, false)));
    }
    let from_stripe = match stripe.customer(stripe_customer_id).await? {
        CustomerLookup::Live { subject } => subject,
        CustomerLookup::Gone => None,
    };
    Ok(from_stripe
        .and_then(|k| Subject::parse_key(&k))
        .map(|s| (s, false)))
}
