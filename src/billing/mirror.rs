//! What a Stripe read changes: the pure rules that turn what Stripe holds for one customer into
//! the records Tollgate stores, given what it stored before.
//!
//! `service::sync` reads Stripe (through `stripe/`, which returns the `Stripe*` types below) and
//! the stored records (through `db/state`), asks [`reconcile`] what changed, and hands exactly
//! that to `db/state` to write. Nothing here reads a clock, a database or the network.
//!
//! The rules, each tested below:
//! - a subscription's plan and interval come from its price in the catalog (none: it grants
//!   nothing);
//! - the grace period starts at the first failure seen in the current period and never moves
//!   later on a re-sync ([`grace_start`]);
//! - a charge's payment status, and what it still pays for after refunds and disputes
//!   ([`PaymentStatus::of`], [`StripeCharge::standing`]);
//! - which Checkout Sessions are one-time purchases ([`purchase_of`]);
//! - which taken-back charges may have paid a subscription's current period
//!   ([`periods_to_check`], [`revoked_by`]);
//! - refunds and disputes revoke purchases, a won dispute restores them, a refund is final;
//! - a customer deleted on Stripe ends its subscriptions ([`ended_by_deletion`]).

use std::collections::HashMap;

use super::catalog::{Catalog, Interval, PlanKind};
use super::facts::{
    CollectionPause, PurchaseFacts, PurchaseStatus, ScheduledChange, SubscriptionFacts,
    SubscriptionStatus,
};
use super::payment::{self, RefundPolicy};
use chrono::{DateTime, Duration, Utc};

// --- What Stripe holds (as `stripe/` reads it) -------------------------------------------------

/// A Stripe subscription, as Tollgate reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeSubscription {
    pub id: String,
    pub customer_id: String,
    pub status: SubscriptionStatus,
    pub price_id: Option<String>,
    pub quantity: u64,
    /// From the subscription's items (API 2025+: periods live on items).
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub latest_invoice_id: Option<String>,
    pub created: DateTime<Utc>,
    /// The member who manages a tenant's subscription (metadata `tollgate_manager`).
    pub manager: Option<String>,
    /// Payment collection paused (`pause_collection`); the status stays as it was.
    pub pause_collection: Option<CollectionPause>,
    /// The subscription schedule that manages it, if any (Stripe then refuses direct changes
    /// of its cancellation: the schedule is released first).
    pub schedule_id: Option<String>,
    /// The schedule's next phase, when it changes the price or seats.
    pub next_phase: Option<StripePhase>,
}

/// A phase of a subscription schedule that has not begun: what the subscription becomes when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePhase {
    pub price_id: String,
    pub quantity: u64,
    pub starts_at: DateTime<Utc>,
}

/// What a subscription's recent invoices say of its payments (see
/// `StripeGateway::subscription_invoices`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionInvoices {
    /// The charges and payment intents that paid the invoice opening the current period.
    pub period: Vec<String>,
    /// Upgrades billed at once (`subscription_update` invoices), newest first.
    pub upgrades: Vec<UpgradeInvoice>,
}

/// An invoice that billed a plan change at once (a proration invoice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeInvoice {
    pub invoice_id: String,
    pub created: DateTime<Utc>,
    /// The charges and payment intents that paid it.
    pub paid_by: Vec<String>,
    /// The price and seats it moved the subscription from and to (`None`: its lines do not say).
    pub moved: Option<PriceMove>,
}

/// A change of a subscription's price and seats: `(price_id, quantity)` before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceMove {
    pub from: (String, u64),
    pub to: (String, u64),
}

/// An upgrade to take back: its invoice was refunded, so the subscription goes back to the
/// price and seats it had before (see [`upgrade_to_revert`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeRevert {
    pub subscription_id: String,
    pub invoice_id: String,
    pub price_id: String,
    pub quantity: u64,
}

/// A charge: one payment attempt, with what was refunded and whether it is disputed.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeCharge {
    pub id: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    pub refunded: bool,
    /// Stripe's flag; it stays `true` after a dispute is won, so see `dispute_status`.
    pub disputed: bool,
    /// The status of the charge's newest dispute (read only for disputed charges).
    pub dispute_status: Option<String>,
    pub customer_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub description: Option<String>,
    pub created: DateTime<Utc>,
}

impl StripeCharge {
    /// What the charge still pays for after refunds (as `refunds` counts them) and disputes.
    pub fn standing(&self, refunds: RefundPolicy) -> PurchaseStatus {
        let refunded = refunds.revokes(self.amount, self.amount_refunded, self.refunded);
        payment::standing(refunded, self.disputed, self.dispute_status.as_deref())
    }

    /// Whether `id` names this charge or its payment intent.
    pub fn is_paid_by(&self, id: &str) -> bool {
        self.id == id || self.payment_intent_id.as_deref() == Some(id)
    }

    /// Its standing, when it should be written onto the purchases its payment intent paid for:
    /// a refund or an open or lost dispute revokes them; a dispute that ended well restores
    /// them. A charge never disputed nor refunded says nothing new.
    fn purchase_standing(&self, refunds: RefundPolicy) -> Option<PurchaseStatus> {
        let standing = self.standing(refunds);
        (self.disputed || standing != PurchaseStatus::Paid).then_some(standing)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutMode {
    Subscription,
    Payment,
    Other,
}

/// A Checkout Session, as Tollgate reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeCheckout {
    pub id: String,
    pub url: Option<String>,
    pub customer_id: Option<String>,
    pub client_reference_id: Option<String>,
    /// The subject it bills (metadata `tollgate_subject`).
    pub subject: Option<String>,
    /// The plan it buys (metadata `tollgate_plan`).
    pub plan: Option<String>,
    /// The user who started it (metadata `tollgate_manager`).
    pub manager: Option<String>,
    pub mode: CheckoutMode,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    pub paid: bool,
    pub subscription_id: Option<String>,
    pub payment_intent_id: Option<String>,
    pub amount_total: Option<i64>,
    pub currency: Option<String>,
    pub created: DateTime<Utc>,
}

/// Everything one sync read of a customer from Stripe.
#[derive(Debug, Clone, Default)]
pub struct StripeHolds {
    pub subscriptions: Vec<StripeSubscription>,
    pub charges: Vec<StripeCharge>,
    /// Subscriptions whose current period's payment was refunded or is disputed (see
    /// [`periods_to_check`] and [`revoked_by`]).
    pub revoked_periods: HashMap<String, PurchaseStatus>,
    /// Upgrades whose invoice was refunded, to take back on Stripe (see [`upgrade_to_revert`]).
    pub reverts: Vec<UpgradeRevert>,
    /// Whether the customer's charges were read. A sync for subscription events alone skips
    /// them: payments and purchases are then left as stored, and a period's revocation is kept
    /// while its period lasts.
    pub charges_read: bool,
    /// Completed Checkout Sessions to record as purchases when they are some: the one an event
    /// or a verify names, and every one when reconciling.
    pub sessions: Vec<StripeCheckout>,
    /// When a payment failure was reported (the grace period starts no later than this).
    pub failure_reported_at: Option<DateTime<Utc>>,
}

// --- What Tollgate stores ----------------------------------------------------------------------

/// A subscription as Tollgate stores it (field names are the table's and the audit log's).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRecord {
    pub stripe_subscription_id: String,
    /// The subject's key (`user:...`, `tenant:...`, `member:...`).
    pub subject: String,
    pub stripe_customer_id: String,
    pub status: SubscriptionStatus,
    pub plan_id: Option<String>,
    pub price_id: Option<String>,
    pub price_interval: Option<Interval>,
    pub quantity: i64,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_start: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub latest_invoice_id: Option<String>,
    /// The start of the grace period (see [`grace_start`]).
    pub payment_failed_at: Option<DateTime<Utc>>,
    pub stripe_created_at: DateTime<Utc>,
    /// The current period's payment was refunded or is disputed.
    pub period_payment_revoked: Option<PurchaseStatus>,
    /// For tenant subscriptions: the member who may manage it.
    pub manager_user_id: Option<String>,
    /// Payment collection paused on Stripe.
    pub pause_collection: Option<CollectionPause>,
    /// The subscription schedule that manages it on Stripe, if any.
    pub schedule_id: Option<String>,
    /// The change that schedule makes when the period ends.
    pub scheduled_change: Option<ScheduledChange>,
}

impl SubscriptionRecord {
    /// What access, quotas and the API read of it.
    pub fn facts(&self) -> SubscriptionFacts {
        SubscriptionFacts {
            id: self.stripe_subscription_id.clone(),
            plan_id: self.plan_id.clone(),
            status: self.status.clone(),
            current_period_start: self.current_period_start,
            current_period_end: self.current_period_end,
            trial_end: self.trial_end,
            cancel_at_period_end: self.cancel_at_period_end,
            cancel_at: self.cancel_at,
            payment_failed_at: self.payment_failed_at,
            period_payment_revoked: self.period_payment_revoked,
            created_at: self.stripe_created_at,
            price_interval: self.price_interval,
            quantity: self.quantity,
            manager_user_id: self.manager_user_id.clone(),
            pause_collection: self.pause_collection.clone(),
            scheduled_change: self.scheduled_change.clone(),
        }
    }
}

/// A one-time purchase as Tollgate stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseRecord {
    pub checkout_session_id: String,
    pub subject: String,
    pub stripe_customer_id: Option<String>,
    pub plan_id: String,
    pub kind: PlanKind,
    pub payment_intent_id: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: PurchaseStatus,
    pub purchased_at: DateTime<Utc>,
}

impl PurchaseRecord {
    /// What access and quotas read of it.
    pub fn facts(&self) -> PurchaseFacts {
        PurchaseFacts {
            plan_id: self.plan_id.clone(),
            kind: self.kind,
            status: self.status,
            purchased_at: self.purchased_at,
        }
    }
}

/// How a charge shows in the payments history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Paid,
    Pending,
    Failed,
    Refunded,
    PartiallyRefunded,
    Disputed,
}

impl PaymentStatus {
    /// A contested charge shows `disputed` (even when also refunded); then refunds; then
    /// Stripe's own outcome.
    pub fn of(charge: &StripeCharge) -> PaymentStatus {
        if charge.standing(RefundPolicy::default()) == PurchaseStatus::Disputed {
            PaymentStatus::Disputed
        } else if charge.refunded {
            PaymentStatus::Refunded
        } else if charge.amount_refunded > 0 {
            PaymentStatus::PartiallyRefunded
        } else {
            match charge.status.as_str() {
                "succeeded" => PaymentStatus::Paid,
                "pending" => PaymentStatus::Pending,
                _ => PaymentStatus::Failed,
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Paid => "paid",
            PaymentStatus::Pending => "pending",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunded => "refunded",
            PaymentStatus::PartiallyRefunded => "partially_refunded",
            PaymentStatus::Disputed => "disputed",
        }
    }

    pub fn parse(s: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Paid,
            PaymentStatus::Pending,
            PaymentStatus::Failed,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
            PaymentStatus::Disputed,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// One charge in the payments history, as Tollgate stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub subject: String,
    pub stripe_customer_id: Option<String>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub disputed: bool,
    pub payment_intent_id: Option<String>,
    pub description: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// What Tollgate stored before the sync: the records the Stripe read could touch.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    /// The stored subscriptions with the ids Stripe returned.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// The subject's purchases, and any other paid by the charges' payment intents.
    pub purchases: Vec<PurchaseRecord>,
    /// The stored payments with the ids of the charges read.
    pub payments: Vec<PaymentRecord>,
}

/// A record to write: `before` is what is stored (`None`: it is new).
#[derive(Debug, Clone, PartialEq)]
pub struct Change<T> {
    pub before: Option<T>,
    pub after: T,
}

impl Change<SubscriptionRecord> {
    /// The subscription stands after the change and did not before (new, or back).
    pub fn starts_standing(&self) -> bool {
        self.after.status.stands() && self.before.as_ref().is_none_or(|b| !b.status.stands())
    }
}

/// What the sync changes: only records whose stored facts differ from Stripe's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Changes {
    pub subscriptions: Vec<Change<SubscriptionRecord>>,
    pub purchases: Vec<Change<PurchaseRecord>>,
    pub payments: Vec<Change<PaymentRecord>>,
}

impl Changes {
    pub fn len(&self) -> usize {
        self.subscriptions.len() + self.purchases.len() + self.payments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether anything the subject's snapshot holds changed (payments are history only).
    pub fn touch_snapshot(&self) -> bool {
        !self.subscriptions.is_empty() || !self.purchases.is_empty()
    }
}

// --- The rules ---------------------------------------------------------------------------------

/// When the grace period of a subscription in `status` starts, given the start stored for it.
///
/// - Not delinquent: none.
/// - Delinquent, with a start stored in the current period: that start (a re-sync never
///   extends a grace period).
/// - First seen delinquent in this period: when a failure was reported, else when the period's
///   invoice was due (its start), so that a late discovery never grants a fresh grace period;
///   with neither, `now`.
pub fn grace_start(
    status: &SubscriptionStatus,
    stored: Option<DateTime<Utc>>,
    period_start: Option<DateTime<Utc>>,
    failure_reported_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if !status.delinquent() {
        return None;
    }
    let same_period = |t: &DateTime<Utc>| period_start.is_none_or(|start| *t >= start);
    Some(match stored.filter(same_period) {
        Some(t) => t,
        None => failure_reported_at
            .map(|t| t.min(now))
            .or(period_start)
            .unwrap_or(now),
    })
}

/// The record of a subscription as Stripe shows it, keeping the stored grace start.
pub fn subscription_record(
    catalog: &Catalog,
    subject: &str,
    read: &StripeSubscription,
    stored: Option<&SubscriptionRecord>,
    revoked: Option<PurchaseStatus>,
    failure_reported_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> SubscriptionRecord {
    let (plan_id, interval) = match read
        .price_id
        .as_deref()
        .and_then(|p| catalog.by_price_id(p))
    {
        Some((plan, price)) => (Some(plan.id.clone()), Some(price.interval)),
        None => (None, None),
    };
    SubscriptionRecord {
        stripe_subscription_id: read.id.clone(),
        subject: subject.to_owned(),
        stripe_customer_id: read.customer_id.clone(),
        status: read.status.clone(),
        plan_id,
        price_id: read.price_id.clone(),
        price_interval: interval,
        quantity: i64::try_from(read.quantity).unwrap_or(i64::MAX),
        current_period_start: read.current_period_start,
        current_period_end: read.current_period_end,
        trial_start: read.trial_start,
        trial_end: read.trial_end,
        cancel_at_period_end: read.cancel_at_period_end,
        cancel_at: read.cancel_at,
        canceled_at: read.canceled_at,
        ended_at: read.ended_at,
        latest_invoice_id: read.latest_invoice_id.clone(),
        payment_failed_at: grace_start(
            &read.status,
            stored.and_then(|s| s.payment_failed_at),
            read.current_period_start,
            failure_reported_at,
            now,
        ),
        stripe_created_at: read.created,
        period_payment_revoked: revoked,
        manager_user_id: read.manager.clone(),
        pause_collection: read.pause_collection.clone(),
        schedule_id: read.schedule_id.clone(),
        scheduled_change: read
            .next_phase
            .as_ref()
            .map(|phase| scheduled_change(catalog, phase)),
    }
}

/// What a schedule's next phase changes, in the catalog's terms.
fn scheduled_change(catalog: &Catalog, phase: &StripePhase) -> ScheduledChange {
    let priced = catalog.by_price_id(&phase.price_id);
    ScheduledChange {
        price_id: phase.price_id.clone(),
        plan_id: priced.map(|(plan, _)| plan.id.clone()),
        price_interval: priced.map(|(_, price)| price.interval),
        quantity: i64::try_from(phase.quantity).unwrap_or(i64::MAX),
        at: phase.starts_at,
    }
}

/// The payments-history record of a charge.
pub fn payment_record(subject: &str, customer_id: &str, charge: &StripeCharge) -> PaymentRecord {
    PaymentRecord {
        payment_id: charge.id.clone(),
        subject: subject.to_owned(),
        stripe_customer_id: Some(customer_id.to_owned()),
        amount: charge.amount,
        amount_refunded: charge.amount_refunded,
        currency: charge.currency.clone(),
        status: PaymentStatus::of(charge),
        disputed: charge.disputed,
        payment_intent_id: charge.payment_intent_id.clone(),
        description: charge.description.clone(),
        occurred_at: charge.created,
    }
}

/// The purchase a Checkout Session stands for: a paid one-time session for a lifetime plan or a
/// credit pack of the catalog's (its price when Stripe does not say the amount). Subscription
/// sessions, unpaid ones and unknown plans are none.
pub fn purchase_of(
    catalog: &Catalog,
    subject: &str,
    session: &StripeCheckout,
    now: DateTime<Utc>,
) -> Option<PurchaseRecord> {
    if session.mode != CheckoutMode::Payment || !session.paid {
        return None;
    }
    let plan = catalog.plan(session.plan.as_deref()?)?;
    if plan.kind == PlanKind::Subscription {
        return None;
    }
    let price = plan.price(Interval::Once);
    Some(PurchaseRecord {
        checkout_session_id: session.id.clone(),
        subject: subject.to_owned(),
        stripe_customer_id: session.customer_id.clone(),
        plan_id: plan.id.clone(),
        kind: plan.kind,
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
        status: PurchaseStatus::Paid,
        purchased_at: session.created.min(now),
    })
}

/// The charges whose money was taken back (refunded, or contested), with their standing.
pub fn taken_back(
    charges: &[StripeCharge],
    refunds: RefundPolicy,
) -> Vec<(&StripeCharge, PurchaseStatus)> {
    charges
        .iter()
        .map(|c| (c, c.standing(refunds)))
        .filter(|(_, standing)| *standing != PurchaseStatus::Paid)
        .collect()
}

/// The subscriptions whose current period a taken-back charge may have paid for: those still
/// paying for a period that started no more than a day after the charge (a day of slack covers
/// a payment confirmed just before Stripe stamps the period). An old refund thus costs no
/// Stripe call on every later sync. Stripe is asked which payments paid each of these.
pub fn periods_to_check<'a>(
    subscriptions: &'a [StripeSubscription],
    charges: &[StripeCharge],
    refunds: RefundPolicy,
) -> Vec<&'a StripeSubscription> {
    let taken_back = taken_back(charges, refunds);
    if taken_back.is_empty() {
        return Vec::new();
    }
    let may_have_paid = |sub: &StripeSubscription, charge: &StripeCharge| {
        sub.current_period_start
            .is_none_or(|start| charge.created >= start - Duration::days(1))
    };
    subscriptions
        .iter()
        .filter(|s| s.status.pays() && taken_back.iter().any(|(c, _)| may_have_paid(s, c)))
        .collect()
}

/// Whether the period whose invoice was paid by `paid_by` (charge and payment-intent ids) was
/// taken back, and how.
pub fn revoked_by(
    charges: &[StripeCharge],
    paid_by: &[String],
    refunds: RefundPolicy,
) -> Option<PurchaseStatus> {
    taken_back(charges, refunds)
        .into_iter()
        .find(|(charge, _)| paid_by.iter().any(|id| charge.is_paid_by(id)))
        .map(|(_, standing)| standing)
}

/// The upgrade of `sub` to take back, if its newest proration invoice was refunded (as
/// `refunds` counts refunds): the subscription goes back to the price and seats that invoice
/// moved it from. Only while the upgrade still stands (the subscription holds what the invoice
/// moved it to) and was made in the current period (a period since paid in full at the higher
/// price is not taken back). A disputed upgrade payment reverts nothing: a dispute can be won.
pub fn upgrade_to_revert(
    sub: &StripeSubscription,
    invoices: &SubscriptionInvoices,
    charges: &[StripeCharge],
    refunds: RefundPolicy,
) -> Option<UpgradeRevert> {
    let newest = invoices.upgrades.first()?;
    let moved = newest.moved.as_ref()?;
    let refunded = taken_back(charges, refunds)
        .iter()
        .any(|(charge, standing)| {
            *standing == PurchaseStatus::Refunded
                && newest.paid_by.iter().any(|id| charge.is_paid_by(id))
        });
    let stands = sub.status.stands()
        && sub.price_id.as_deref() == Some(moved.to.0.as_str())
        && sub.quantity == moved.to.1;
    let this_period = sub
        .current_period_start
        .is_none_or(|start| newest.created >= start);
    (refunded && stands && this_period && moved.from != moved.to).then(|| UpgradeRevert {
        subscription_id: sub.id.clone(),
        invoice_id: newest.invoice_id.clone(),
        price_id: moved.from.0.clone(),
        quantity: moved.from.1,
    })
}

/// What changes when Tollgate stores what Stripe holds for the subject's customer.
pub fn reconcile(
    catalog: &Catalog,
    subject: &str,
    customer_id: &str,
    stored: &Stored,
    holds: &StripeHolds,
    refunds: RefundPolicy,
    now: DateTime<Utc>,
) -> Changes {
    let mut changes = Changes::default();

    for read in &holds.subscriptions {
        let before = stored
            .subscriptions
            .iter()
            .find(|s| s.stripe_subscription_id == read.id);
        let revoked = if holds.charges_read {
            holds.revoked_periods.get(&read.id).copied()
        } else {
            // Not re-read: what was revoked stays revoked for the period it paid for.
            before
                .filter(|b| b.current_period_start == read.current_period_start)
                .and_then(|b| b.period_payment_revoked)
        };
        let after = subscription_record(
            catalog,
            subject,
            read,
            before,
            revoked,
            holds.failure_reported_at,
            now,
        );
        push_if_changed(&mut changes.subscriptions, before, after);
    }

    for charge in &holds.charges {
        let before = stored.payments.iter().find(|p| p.payment_id == charge.id);
        let after = payment_record(subject, customer_id, charge);
        push_if_changed(&mut changes.payments, before, after);
    }

    // Refunds and disputes revoke the one-time purchases their payment paid for; a won dispute
    // restores them; a refund is final.
    let standing_of = |payment_intent: Option<&str>| {
        let payment_intent = payment_intent?;
        holds
            .charges
            .iter()
            .filter(|c| c.payment_intent_id.as_deref() == Some(payment_intent))
            .find_map(|c| c.purchase_standing(refunds))
    };
    let mut new_purchases: Vec<PurchaseRecord> = Vec::new();
    for session in &holds.sessions {
        let Some(purchase) = purchase_of(catalog, subject, session, now) else {
            continue;
        };
        let known = stored
            .purchases
            .iter()
            .chain(&new_purchases)
            .any(|p| p.checkout_session_id == purchase.checkout_session_id);
        if !known {
            new_purchases.push(purchase);
        }
    }
    for before in &stored.purchases {
        if before.status == PurchaseStatus::Refunded {
            continue;
        }
        if let Some(standing) = standing_of(before.payment_intent_id.as_deref()) {
            let after = PurchaseRecord {
                status: standing,
                ..before.clone()
            };
            push_if_changed(&mut changes.purchases, Some(before), after);
        }
    }
    for mut purchase in new_purchases {
        if let Some(standing) = standing_of(purchase.payment_intent_id.as_deref()) {
            purchase.status = standing;
        }
        changes.purchases.push(Change {
            before: None,
            after: purchase,
        });
    }
    changes
}

/// A second standing subscription: one this sync made stand while an older one of the same
/// subject already stood, and that older one. Standing twice means paying twice (two
/// checkouts paid at once, a session paid in the instant before it was expired, a subscription
/// made outside Tollgate); both are mirrored as Stripe holds them, and the later is flagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondStanding {
    pub subscription_id: String,
    /// The older standing subscription it stands beside.
    pub beside: String,
}

/// What is done with a second standing subscription of one subject
/// (`billing.second_subscription`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondSubscription {
    /// Flagged (an audit row, a metric, `subscription.duplicate`); an operator undoes it.
    #[default]
    Flag,
    /// Flagged, then canceled at once on Stripe and every payment it took refunded.
    CancelAndRefund,
}

/// Which of `changes` made a subscription stand (new, or standing again) beside an older
/// standing one of the subject; `standing` is every subscription of the subject that stands
/// after the changes, as (id, created). Subscriptions that stood before are not flagged again.
pub fn second_standing(
    changes: &[Change<SubscriptionRecord>],
    standing: &[(String, DateTime<Utc>)],
) -> Vec<SecondStanding> {
    changes
        .iter()
        .filter(|c| c.starts_standing())
        .filter_map(|c| {
            let (id, created) = (&c.after.stripe_subscription_id, c.after.stripe_created_at);
            standing
                .iter()
                .filter(|(other, at)| other != id && (*at, other) < (created, id))
                .min_by_key(|(other, at)| (*at, other.clone()))
                .map(|(older, _)| SecondStanding {
                    subscription_id: id.clone(),
                    beside: older.clone(),
                })
        })
        .collect()
}

/// A subscription of a customer Stripe deleted: Stripe canceled it when it deleted the
/// customer, so it ended now unless it ended earlier. `None` when it had ended already.
pub fn ended_by_deletion(
    stored: &SubscriptionRecord,
    now: DateTime<Utc>,
) -> Option<SubscriptionRecord> {
    (stored.status != SubscriptionStatus::Canceled).then(|| SubscriptionRecord {
        status: SubscriptionStatus::Canceled,
        ended_at: Some(stored.ended_at.unwrap_or(now)),
        canceled_at: Some(stored.canceled_at.unwrap_or(now)),
        ..stored.clone()
    })
}

fn push_if_changed<T: Clone + PartialEq>(into: &mut Vec<Change<T>>, before: Option<&T>, after: T) {
    if before != Some(&after) {
        into.push(Change {
            before: before.cloned(),
            after,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::test_support::catalog;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0).unwrap()
    }

    fn sub(status: SubscriptionStatus) -> StripeSubscription {
        StripeSubscription {
            id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status,
            price_id: Some("price_pro_m".into()),
            quantity: 1,
            current_period_start: Some(t(10)),
            current_period_end: Some(t(10) + Duration::days(30)),
            trial_start: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            ended_at: None,
            latest_invoice_id: Some("in_1".into()),
            created: t(1),
            manager: None,
            pause_collection: None,
            schedule_id: None,
            next_phase: None,
        }
    }

    fn charge(id: &str, pi: &str, created: DateTime<Utc>) -> StripeCharge {
        StripeCharge {
            id: id.into(),
            amount: 900,
            amount_refunded: 0,
            currency: "usd".into(),
            status: "succeeded".into(),
            refunded: false,
            disputed: false,
            dispute_status: None,
            customer_id: Some("cus_1".into()),
            payment_intent_id: Some(pi.into()),
            description: None,
            created,
        }
    }

    fn refunded(mut c: StripeCharge) -> StripeCharge {
        c.refunded = true;
        c.amount_refunded = c.amount;
        c
    }

    fn disputed(mut c: StripeCharge, status: &str) -> StripeCharge {
        c.disputed = true;
        c.dispute_status = Some(status.into());
        c
    }

    fn session(plan: &str) -> StripeCheckout {
        StripeCheckout {
            id: "cs_1".into(),
            url: None,
            customer_id: Some("cus_1".into()),
            client_reference_id: Some("user:u1".into()),
            subject: Some("user:u1".into()),
            plan: Some(plan.into()),
            manager: Some("u1".into()),
            mode: CheckoutMode::Payment,
            status: Some("complete".into()),
            paid: true,
            subscription_id: None,
            payment_intent_id: Some("pi_life".into()),
            amount_total: Some(19900),
            currency: Some("usd".into()),
            created: t(5),
        }
    }

    /// What a sync that read everything holds (charges included).
    fn holds() -> StripeHolds {
        StripeHolds {
            charges_read: true,
            ..StripeHolds::default()
        }
    }

    #[test]
    fn a_sync_without_charges_keeps_a_revoked_period_until_the_period_moves() {
        let cat = catalog();
        let mut read = sub(SubscriptionStatus::Active);
        read.current_period_start = Some(t(1));
        let refunded = {
            let holds = StripeHolds {
                subscriptions: vec![read.clone()],
                revoked_periods: HashMap::from([(read.id.clone(), PurchaseStatus::Refunded)]),
                ..holds()
            };
            reconcile(
                &cat,
                "user:u1",
                "cus_1",
                &Stored::default(),
                &holds,
                RefundPolicy::default(),
                t(2),
            )
        };
        let stored = Stored {
            subscriptions: vec![refunded.subscriptions[0].after.clone()],
            ..Stored::default()
        };
        assert_eq!(
            stored.subscriptions[0].period_payment_revoked,
            Some(PurchaseStatus::Refunded)
        );
        // A subscription event's sync reads no charges: the revocation stands, nothing changes.
        let no_charges = StripeHolds {
            subscriptions: vec![read.clone()],
            ..StripeHolds::default()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &no_charges,
            RefundPolicy::default(),
            t(3),
        );
        assert!(changes.subscriptions.is_empty(), "{changes:?}");
        // The next period started: what was revoked was the previous one's.
        let renewed = StripeSubscription {
            current_period_start: Some(t(20)),
            ..read.clone()
        };
        let moved = StripeHolds {
            subscriptions: vec![renewed],
            ..StripeHolds::default()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &moved,
            RefundPolicy::default(),
            t(21),
        );
        assert_eq!(changes.subscriptions[0].after.period_payment_revoked, None);
        // A sync that read the charges decides from them, as before.
        let read_all = StripeHolds {
            subscriptions: vec![read],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &read_all,
            RefundPolicy::default(),
            t(3),
        );
        assert_eq!(changes.subscriptions[0].after.period_payment_revoked, None);
    }

    // upgrade_to_revert

    #[test]
    fn a_refunded_upgrade_is_taken_back_while_it_stands_in_its_period() {
        let mut held = sub(SubscriptionStatus::Active);
        held.price_id = Some("price_pro".into());
        held.quantity = 2;
        held.current_period_start = Some(t(1));
        let upgrade = UpgradeInvoice {
            invoice_id: "in_up".into(),
            created: t(5),
            paid_by: vec!["pi_up".into()],
            moved: Some(PriceMove {
                from: ("price_basic".into(), 1),
                to: ("price_pro".into(), 2),
            }),
        };
        let invoices = SubscriptionInvoices {
            period: vec!["pi_period".into()],
            upgrades: vec![upgrade.clone()],
        };
        let paid = charge("ch_up", "pi_up", t(5));
        let policy = RefundPolicy::default();
        let revert = |s: &StripeSubscription, i: &SubscriptionInvoices, c: StripeCharge, p| {
            upgrade_to_revert(s, i, &[c], p)
        };
        assert_eq!(
            revert(&held, &invoices, refunded(paid.clone()), policy),
            Some(UpgradeRevert {
                subscription_id: held.id.clone(),
                invoice_id: "in_up".into(),
                price_id: "price_basic".into(),
                quantity: 1,
            })
        );
        // Paid, or disputed (a dispute can be won): the upgrade stands.
        assert_eq!(revert(&held, &invoices, paid.clone(), policy), None);
        assert_eq!(
            revert(&held, &invoices, disputed(paid.clone(), "lost"), policy),
            None
        );
        // A partial refund counts as the refund policy says.
        let mut partial = paid.clone();
        partial.amount_refunded = paid.amount / 2;
        assert_eq!(revert(&held, &invoices, partial.clone(), policy), None);
        let strict = RefundPolicy {
            partial_revokes_over_percent: 40,
        };
        assert!(revert(&held, &invoices, partial, strict).is_some());
        // Another period's payment refunded: not this upgrade's.
        let period = charge("ch_period", "pi_period", t(1));
        assert_eq!(revert(&held, &invoices, refunded(period), policy), None);
        // Changed since (another plan or seats), or ended: nothing to take back.
        let mut moved_on = held.clone();
        moved_on.quantity = 3;
        assert_eq!(
            revert(&moved_on, &invoices, refunded(paid.clone()), policy),
            None
        );
        let ended = StripeSubscription {
            status: SubscriptionStatus::Canceled,
            ..held.clone()
        };
        assert_eq!(
            revert(&ended, &invoices, refunded(paid.clone()), policy),
            None
        );
        // A newer plan change billed at once decides, not the refunded one before it.
        let newer = SubscriptionInvoices {
            upgrades: vec![
                UpgradeInvoice {
                    invoice_id: "in_newer".into(),
                    paid_by: vec!["pi_newer".into()],
                    ..upgrade.clone()
                },
                upgrade.clone(),
            ],
            ..invoices.clone()
        };
        assert_eq!(revert(&held, &newer, refunded(paid.clone()), policy), None);
        // Made in an earlier period, which a renewal since paid in full at the higher price.
        let renewed = StripeSubscription {
            current_period_start: Some(t(6)),
            ..held.clone()
        };
        assert_eq!(
            revert(&renewed, &invoices, refunded(paid.clone()), policy),
            None
        );
        // Lines that do not say what it moved from: nothing is guessed.
        let unsaid = SubscriptionInvoices {
            upgrades: vec![UpgradeInvoice {
                moved: None,
                ..upgrade
            }],
            ..invoices
        };
        assert_eq!(revert(&held, &unsaid, refunded(paid), policy), None);
    }

    // grace_start

    #[test]
    fn a_standing_or_ended_subscription_has_no_grace_period() {
        for status in [
            SubscriptionStatus::Active,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Paused,
            SubscriptionStatus::Incomplete,
        ] {
            assert_eq!(
                grace_start(&status, Some(t(11)), Some(t(10)), Some(t(11)), t(12)),
                None,
                "{status:?}"
            );
        }
    }

    #[test]
    fn a_first_failure_starts_grace_when_it_was_reported() {
        let start = grace_start(
            &SubscriptionStatus::PastDue,
            None,
            Some(t(10)),
            Some(t(11)),
            t(12),
        );
        assert_eq!(start, Some(t(11)));
    }

    #[test]
    fn a_failure_reported_in_the_future_starts_grace_now() {
        let start = grace_start(
            &SubscriptionStatus::PastDue,
            None,
            Some(t(10)),
            Some(t(20)),
            t(12),
        );
        assert_eq!(start, Some(t(12)));
    }

    #[test]
    fn a_late_discovery_starts_grace_when_the_period_began_not_when_it_was_seen() {
        let start = grace_start(&SubscriptionStatus::Unpaid, None, Some(t(10)), None, t(25));
        assert_eq!(start, Some(t(10)));
        assert_eq!(
            grace_start(&SubscriptionStatus::PastDue, None, None, None, t(25)),
            Some(t(25)),
            "with no period and no report, now"
        );
    }

    #[test]
    fn a_resync_keeps_the_stored_start_in_the_same_period() {
        let start = grace_start(
            &SubscriptionStatus::PastDue,
            Some(t(11)),
            Some(t(10)),
            Some(t(13)),
            t(14),
        );
        assert_eq!(start, Some(t(11)));
    }

    #[test]
    fn a_failure_stored_for_an_earlier_period_does_not_carry_over() {
        // The stored start predates the new period: a new failure, a new grace period.
        let start = grace_start(
            &SubscriptionStatus::PastDue,
            Some(t(2)),
            Some(t(10)),
            Some(t(12)),
            t(13),
        );
        assert_eq!(start, Some(t(12)));
    }

    // subscription_record

    #[test]
    fn a_subscription_takes_its_plan_and_interval_from_the_catalog() {
        let cat = catalog();
        let record = subscription_record(
            &cat,
            "user:u1",
            &sub(SubscriptionStatus::Active),
            None,
            None,
            None,
            t(12),
        );
        assert_eq!(record.plan_id.as_deref(), Some("pro"));
        assert_eq!(record.price_interval, Some(Interval::Month));
        assert_eq!(record.payment_failed_at, None);

        let mut foreign = sub(SubscriptionStatus::Active);
        foreign.price_id = Some("price_elsewhere".into());
        let record = subscription_record(&cat, "user:u1", &foreign, None, None, None, t(12));
        assert_eq!((record.plan_id, record.price_interval), (None, None));
    }

    #[test]
    fn a_subscription_record_carries_the_manager_and_the_revoked_period() {
        let mut read = sub(SubscriptionStatus::Active);
        read.manager = Some("alice".into());
        let record = subscription_record(
            &catalog(),
            "tenant:t1",
            &read,
            None,
            Some(PurchaseStatus::Disputed),
            None,
            t(12),
        );
        assert_eq!(record.manager_user_id.as_deref(), Some("alice"));
        assert_eq!(
            record.period_payment_revoked,
            Some(PurchaseStatus::Disputed)
        );
        assert_eq!(record.subject, "tenant:t1");
    }

    // PaymentStatus

    #[test]
    fn a_charge_shows_its_outcome_refunds_and_disputes() {
        let c = charge("ch_1", "pi_1", t(10));
        assert_eq!(PaymentStatus::of(&c), PaymentStatus::Paid);
        let pending = StripeCharge {
            status: "pending".into(),
            ..c.clone()
        };
        assert_eq!(PaymentStatus::of(&pending), PaymentStatus::Pending);
        let failed = StripeCharge {
            status: "failed".into(),
            ..c.clone()
        };
        assert_eq!(PaymentStatus::of(&failed), PaymentStatus::Failed);
        let partial = StripeCharge {
            amount_refunded: 100,
            ..c.clone()
        };
        assert_eq!(
            PaymentStatus::of(&partial),
            PaymentStatus::PartiallyRefunded
        );
        assert_eq!(
            PaymentStatus::of(&refunded(c.clone())),
            PaymentStatus::Refunded
        );
        assert_eq!(
            PaymentStatus::of(&disputed(c.clone(), "needs_response")),
            PaymentStatus::Disputed
        );
        assert_eq!(
            PaymentStatus::of(&disputed(refunded(c.clone()), "lost")),
            PaymentStatus::Disputed
        );
        assert_eq!(PaymentStatus::of(&disputed(c, "won")), PaymentStatus::Paid);
    }

    #[test]
    fn payment_statuses_read_back_as_written() {
        for s in [
            PaymentStatus::Paid,
            PaymentStatus::Pending,
            PaymentStatus::Failed,
            PaymentStatus::Refunded,
            PaymentStatus::PartiallyRefunded,
            PaymentStatus::Disputed,
        ] {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(PaymentStatus::parse("lost"), None);
    }

    // purchase_of

    #[test]
    fn a_paid_one_time_session_for_a_lifetime_plan_or_pack_is_a_purchase() {
        let cat = catalog();
        let life = purchase_of(&cat, "user:u1", &session("lifetime"), t(6)).unwrap();
        assert_eq!(
            (life.plan_id.as_str(), life.kind, life.status),
            ("lifetime", PlanKind::Lifetime, PurchaseStatus::Paid)
        );
        assert_eq!((life.amount, life.purchased_at), (19900, t(5)));
        let pack = purchase_of(&cat, "user:u1", &session("credits"), t(6)).unwrap();
        assert_eq!(pack.kind, PlanKind::CreditPack);
    }

    #[test]
    fn unpaid_subscription_and_unknown_sessions_are_no_purchase() {
        let cat = catalog();
        let unpaid = StripeCheckout {
            paid: false,
            ..session("lifetime")
        };
        let subscription = StripeCheckout {
            mode: CheckoutMode::Subscription,
            ..session("lifetime")
        };
        let unknown = session("platinum");
        let sub_plan = session("pro");
        let no_plan = StripeCheckout {
            plan: None,
            ..session("lifetime")
        };
        for s in [unpaid, subscription, unknown, sub_plan, no_plan] {
            assert_eq!(purchase_of(&cat, "user:u1", &s, t(6)), None, "{s:?}");
        }
    }

    #[test]
    fn a_purchase_without_an_amount_takes_the_catalog_price_and_never_dates_in_the_future() {
        let s = StripeCheckout {
            amount_total: None,
            currency: None,
            created: t(20),
            ..session("lifetime")
        };
        let p = purchase_of(&catalog(), "user:u1", &s, t(6)).unwrap();
        assert_eq!(
            (p.amount, p.currency.as_str(), p.purchased_at),
            (900, "usd", t(6))
        );
    }

    // revoked periods

    #[test]
    fn only_paying_subscriptions_a_recent_taken_back_charge_may_have_paid_are_checked() {
        let subs = vec![
            sub(SubscriptionStatus::Active),
            StripeSubscription {
                id: "sub_canceled".into(),
                ..sub(SubscriptionStatus::Canceled)
            },
        ];
        assert!(
            periods_to_check(
                &subs,
                &[charge("ch_1", "pi_1", t(10))],
                RefundPolicy::default()
            )
            .is_empty(),
            "nothing taken back"
        );
        let old = refunded(charge("ch_old", "pi_old", t(2)));
        assert!(
            periods_to_check(&subs, &[old], RefundPolicy::default()).is_empty(),
            "refunded long before the period"
        );
        let recent = refunded(charge("ch_new", "pi_new", t(9) + Duration::hours(13)));
        let checked: Vec<&str> = periods_to_check(&subs, &[recent], RefundPolicy::default())
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(checked, ["sub_1"]);
    }

    #[test]
    fn a_period_is_revoked_by_the_taken_back_charge_that_paid_its_invoice() {
        let charges = [
            refunded(charge("ch_1", "pi_1", t(10))),
            disputed(charge("ch_2", "pi_2", t(10)), "under_review"),
            charge("ch_3", "pi_3", t(10)),
        ];
        assert_eq!(
            revoked_by(&charges, &["pi_1".into()], RefundPolicy::default()),
            Some(PurchaseStatus::Refunded)
        );
        assert_eq!(
            revoked_by(&charges, &["ch_2".into()], RefundPolicy::default()),
            Some(PurchaseStatus::Disputed)
        );
        assert_eq!(
            revoked_by(
                &charges,
                &["ch_3".into(), "pi_3".into()],
                RefundPolicy::default()
            ),
            None
        );
        assert_eq!(revoked_by(&charges, &[], RefundPolicy::default()), None);
    }

    // reconcile

    fn stored_record(cat: &Catalog, read: &StripeSubscription) -> SubscriptionRecord {
        subscription_record(cat, "user:u1", read, None, None, None, t(12))
    }

    #[test]
    fn stripe_showing_what_is_stored_changes_nothing() {
        let cat = catalog();
        let read = sub(SubscriptionStatus::Active);
        let c = charge("ch_1", "pi_1", t(10));
        let stored = Stored {
            subscriptions: vec![stored_record(&cat, &read)],
            purchases: vec![],
            payments: vec![payment_record("user:u1", "cus_1", &c)],
        };
        let holds = StripeHolds {
            subscriptions: vec![read],
            charges: vec![c],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &holds,
            RefundPolicy::default(),
            t(13),
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert!(!changes.touch_snapshot());
    }

    #[test]
    fn a_changed_subscription_is_written_with_what_was_stored() {
        let cat = catalog();
        let read = sub(SubscriptionStatus::Active);
        let stored = Stored {
            subscriptions: vec![stored_record(&cat, &read)],
            ..Stored::default()
        };
        let canceling = StripeSubscription {
            cancel_at_period_end: true,
            ..read
        };
        let holds = StripeHolds {
            subscriptions: vec![canceling],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &holds,
            RefundPolicy::default(),
            t(13),
        );
        assert_eq!(changes.subscriptions.len(), 1);
        let change = &changes.subscriptions[0];
        assert_eq!(
            change.before.as_ref().map(|b| b.cancel_at_period_end),
            Some(false)
        );
        assert!(change.after.cancel_at_period_end);
        assert!(changes.touch_snapshot());
    }

    #[test]
    fn a_collection_pause_is_mirrored_and_lifting_it_is_a_change() {
        let cat = catalog();
        let read = sub(SubscriptionStatus::Active);
        let stored = Stored {
            subscriptions: vec![stored_record(&cat, &read)],
            ..Stored::default()
        };
        let pause = CollectionPause {
            behavior: "void".into(),
            resumes_at: Some(t(20)),
        };
        let paused = StripeSubscription {
            pause_collection: Some(pause.clone()),
            ..read.clone()
        };
        let read_paused = StripeHolds {
            subscriptions: vec![paused.clone()],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &read_paused,
            RefundPolicy::default(),
            t(13),
        );
        assert_eq!(changes.subscriptions.len(), 1);
        let after = &changes.subscriptions[0].after;
        assert_eq!(after.status, SubscriptionStatus::Active, "the status stays");
        assert_eq!(after.pause_collection.as_ref(), Some(&pause));
        assert_eq!(after.facts().pause_collection, Some(pause));

        // Lifted on Stripe: the stored pause goes.
        let stored = Stored {
            subscriptions: vec![stored_record(&cat, &paused)],
            ..Stored::default()
        };
        let read_lifted = StripeHolds {
            subscriptions: vec![read],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &read_lifted,
            RefundPolicy::default(),
            t(14),
        );
        assert_eq!(changes.subscriptions.len(), 1);
        assert_eq!(changes.subscriptions[0].after.pause_collection, None);
    }

    #[test]
    fn a_subscription_that_starts_standing_beside_an_older_one_is_flagged_once() {
        let cat = catalog();
        let older = sub(SubscriptionStatus::Active);
        let later = StripeSubscription {
            id: "sub_2".into(),
            created: t(5),
            ..sub(SubscriptionStatus::Active)
        };
        let record = |s: &StripeSubscription| stored_record(&cat, s);
        let standing = vec![("sub_1".to_owned(), t(1)), ("sub_2".to_owned(), t(5))];
        let new = Change {
            before: None,
            after: record(&later),
        };
        assert_eq!(
            second_standing(std::slice::from_ref(&new), &standing),
            [SecondStanding {
                subscription_id: "sub_2".into(),
                beside: "sub_1".into()
            }]
        );
        // The older one, changing, is not the second; nor is one that already stood.
        let older_changed = Change {
            before: Some(record(&older)),
            after: SubscriptionRecord {
                cancel_at_period_end: true,
                ..record(&older)
            },
        };
        assert!(second_standing(&[older_changed], &standing).is_empty());
        let again = Change {
            before: Some(record(&later)),
            after: record(&later),
        };
        assert!(second_standing(&[again], &standing).is_empty());
        // Standing again after it ended (resumed) counts; alone, nothing does.
        let ended = record(&StripeSubscription {
            status: SubscriptionStatus::Canceled,
            ..later.clone()
        });
        let back = Change {
            before: Some(ended),
            after: record(&later),
        };
        assert_eq!(
            second_standing(std::slice::from_ref(&back), &standing).len(),
            1
        );
        assert!(second_standing(&[back], &standing[1..]).is_empty());
        // A new subscription that does not stand (incomplete) is not flagged.
        let incomplete = Change {
            before: None,
            after: record(&StripeSubscription {
                status: SubscriptionStatus::Incomplete,
                ..later
            }),
        };
        assert!(second_standing(&[incomplete], &standing).is_empty());
    }

    #[test]
    fn a_new_subscription_and_a_new_charge_are_created() {
        let cat = catalog();
        let holds = StripeHolds {
            subscriptions: vec![sub(SubscriptionStatus::Active)],
            charges: vec![charge("ch_1", "pi_1", t(10))],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &Stored::default(),
            &holds,
            RefundPolicy::default(),
            t(13),
        );
        assert_eq!(
            (changes.subscriptions.len(), changes.payments.len()),
            (1, 1)
        );
        assert!(changes.subscriptions[0].before.is_none());
        assert_eq!(changes.payments[0].after.status, PaymentStatus::Paid);
    }

    #[test]
    fn a_resync_of_a_delinquent_subscription_keeps_its_grace_start() {
        let cat = catalog();
        let read = sub(SubscriptionStatus::PastDue);
        let first = StripeHolds {
            subscriptions: vec![read.clone()],
            failure_reported_at: Some(t(11)),
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &Stored::default(),
            &first,
            RefundPolicy::default(),
            t(11),
        );
        let stored = Stored {
            subscriptions: vec![changes.subscriptions[0].after.clone()],
            ..Stored::default()
        };
        assert_eq!(stored.subscriptions[0].payment_failed_at, Some(t(11)));
        // Another failure reported days later changes nothing.
        let later = StripeHolds {
            subscriptions: vec![read],
            failure_reported_at: Some(t(14)),
            ..holds()
        };
        assert!(reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &later,
            RefundPolicy::default(),
            t(14)
        )
        .is_empty());
    }

    #[test]
    fn a_new_purchase_is_recorded_once_with_its_payment_standing() {
        let cat = catalog();
        let s = session("lifetime");
        let paid = StripeHolds {
            sessions: vec![s.clone(), s.clone()],
            charges: vec![charge("ch_l", "pi_life", t(5))],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &Stored::default(),
            &paid,
            RefundPolicy::default(),
            t(6),
        );
        assert_eq!(
            changes.purchases.len(),
            1,
            "the same session twice is one purchase"
        );
        assert_eq!(changes.purchases[0].after.status, PurchaseStatus::Paid);

        let refunded_first = StripeHolds {
            sessions: vec![s],
            charges: vec![refunded(charge("ch_l", "pi_life", t(5)))],
            ..holds()
        };
        let changes = reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &Stored::default(),
            &refunded_first,
            RefundPolicy::default(),
            t(6),
        );
        assert_eq!(changes.purchases[0].after.status, PurchaseStatus::Refunded);
    }

    #[test]
    fn a_partial_refund_revokes_a_purchase_or_a_period_only_above_the_configured_share() {
        let cat = catalog();
        let session = session("lifetime");
        let pi = session.payment_intent_id.clone().unwrap();
        // Paid when the subscription's period below started, so it may have paid for it too.
        let mut partly = charge("ch_1", &pi, t(10));
        partly.amount_refunded = 600; // of 900
        let holds = StripeHolds {
            sessions: vec![session],
            charges: vec![partly.clone()],
            ..holds()
        };
        let status_under = |over: u8| {
            let refunds = RefundPolicy {
                partial_revokes_over_percent: over,
            };
            reconcile(
                &cat,
                "user:u1",
                "cus_1",
                &Stored::default(),
                &holds,
                refunds,
                t(11),
            )
            .purchases[0]
                .after
                .status
        };
        assert_eq!(status_under(100), PurchaseStatus::Paid, "the default");
        assert_eq!(status_under(67), PurchaseStatus::Paid, "600 is 66.7%");
        assert_eq!(status_under(66), PurchaseStatus::Refunded);
        assert_eq!(status_under(0), PurchaseStatus::Refunded);
        // The payments history says what Stripe says, whatever the policy.
        assert_eq!(PaymentStatus::of(&partly), PaymentStatus::PartiallyRefunded);
        // A subscription's period the charge paid for, the same.
        let half = RefundPolicy {
            partial_revokes_over_percent: 50,
        };
        let paid_by = [pi.clone()];
        let partly = [partly];
        assert_eq!(
            revoked_by(&partly, &paid_by, half),
            Some(PurchaseStatus::Refunded)
        );
        assert_eq!(revoked_by(&partly, &paid_by, RefundPolicy::default()), None);
        let subs = [sub(SubscriptionStatus::Active)];
        assert_eq!(periods_to_check(&subs, &partly, half).len(), 1);
        assert!(periods_to_check(&subs, &partly, RefundPolicy::default()).is_empty());
    }

    #[test]
    fn a_stored_purchase_is_not_recorded_again() {
        let cat = catalog();
        let s = session("lifetime");
        let stored = Stored {
            purchases: vec![purchase_of(&cat, "user:u1", &s, t(6)).unwrap()],
            ..Stored::default()
        };
        let holds = StripeHolds {
            sessions: vec![s],
            ..holds()
        };
        assert!(reconcile(
            &cat,
            "user:u1",
            "cus_1",
            &stored,
            &holds,
            RefundPolicy::default(),
            t(7)
        )
        .is_empty());
    }

    #[test]
    fn disputes_revoke_purchases_a_won_one_restores_them_a_refund_is_final() {
        let cat = catalog();
        let purchase = purchase_of(&cat, "user:u1", &session("lifetime"), t(6)).unwrap();
        let with = |status: PurchaseStatus, c: StripeCharge| {
            let stored = Stored {
                purchases: vec![PurchaseRecord {
                    status,
                    ..purchase.clone()
                }],
                ..Stored::default()
            };
            let holds = StripeHolds {
                charges: vec![c],
                ..holds()
            };
            reconcile(
                &cat,
                "user:u1",
                "cus_1",
                &stored,
                &holds,
                RefundPolicy::default(),
                t(7),
            )
            .purchases
            .first()
            .map(|c| c.after.status)
        };
        let c = charge("ch_l", "pi_life", t(5));
        assert_eq!(
            with(PurchaseStatus::Paid, disputed(c.clone(), "needs_response")),
            Some(PurchaseStatus::Disputed)
        );
        assert_eq!(
            with(PurchaseStatus::Disputed, disputed(c.clone(), "won")),
            Some(PurchaseStatus::Paid)
        );
        assert_eq!(
            with(PurchaseStatus::Disputed, disputed(c.clone(), "lost")),
            None,
            "unchanged"
        );
        assert_eq!(
            with(PurchaseStatus::Paid, refunded(c.clone())),
            Some(PurchaseStatus::Refunded)
        );
        assert_eq!(
            with(PurchaseStatus::Refunded, disputed(c.clone(), "won")),
            None,
            "a refund is final"
        );
        assert_eq!(
            with(PurchaseStatus::Paid, c.clone()),
            None,
            "a plain charge says nothing new"
        );
        let other = charge("ch_x", "pi_other", t(5));
        assert_eq!(
            with(PurchaseStatus::Paid, refunded(other)),
            None,
            "another payment's refund"
        );
    }

    #[test]
    fn a_deleted_customer_ends_what_still_stands_and_keeps_earlier_ends() {
        let cat = catalog();
        let active = stored_record(&cat, &sub(SubscriptionStatus::Active));
        let ended = ended_by_deletion(&active, t(20)).unwrap();
        assert_eq!(
            (ended.status.clone(), ended.ended_at, ended.canceled_at),
            (SubscriptionStatus::Canceled, Some(t(20)), Some(t(20)))
        );
        let mut canceling = active.clone();
        canceling.status = SubscriptionStatus::PastDue;
        canceling.canceled_at = Some(t(15));
        assert_eq!(
            ended_by_deletion(&canceling, t(20)).unwrap().canceled_at,
            Some(t(15))
        );
        assert_eq!(ended_by_deletion(&ended, t(21)), None, "already ended");
    }
}
