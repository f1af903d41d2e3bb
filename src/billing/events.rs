//! Outbound events (docs/EVENTS.md): the catalog, what a change of stored state tells the
//! product, each subject's entitlement document, the envelope every delivery carries, which
//! endpoint wants which type, and the retry schedule. Pure: the outbox (db::outbox) stores what
//! these rules decide, in the transaction of the change.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::access::{self, AccessPolicy, Reason};
use super::catalog::{Catalog, Interval, PlanKind, QuotaLimit, QuotaPeriod};
use super::facts::{PurchaseStatus, SubjectFacts, SubscriptionStatus};
use super::mirror::{
    Change, Changes, PaymentRecord, PaymentStatus, PurchaseRecord, SubscriptionRecord,
};
use super::quota::{self, BillingPeriod};
use super::subject::Subject;

/// The catalog of event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    /// The subject's entitlement document changed; the event carries the new one whole.
    EntitlementsChanged,
    SubscriptionCreated,
    SubscriptionUpdated,
    SubscriptionCanceled,
    /// A second subscription stands beside an older one of the same subject: billed twice.
    SubscriptionDuplicate,
    PurchaseCompleted,
    PurchaseRefunded,
    PurchaseDisputed,
    PaymentSucceeded,
    PaymentFailed,
    TrialWillEnd,
    QuotaThresholdReached,
    TenantRemoved,
    /// A purchase created a license (docs/LICENSES.md): send the buyer the link to submit
    /// their GitHub username.
    LicenseCreated,
    /// The buyer was invited to the GitHub organization.
    LicenseInvited,
    /// The buyer accepted: access granted.
    LicenseActive,
    /// GitHub dropped the invitation unaccepted: the buyer may ask for a new one.
    LicenseInvitationExpired,
    /// Access removed after a refund or a lost (or open) dispute.
    LicenseRevoked,
    /// A won dispute restored a revoked license.
    LicenseRestored,
}

impl EventType {
    pub const ALL: [EventType; 19] = [
        EventType::EntitlementsChanged,
        EventType::SubscriptionCreated,
        EventType::SubscriptionUpdated,
        EventType::SubscriptionCanceled,
        EventType::SubscriptionDuplicate,
        EventType::PurchaseCompleted,
        EventType::PurchaseRefunded,
        EventType::PurchaseDisputed,
        EventType::PaymentSucceeded,
        EventType::PaymentFailed,
        EventType::TrialWillEnd,
        EventType::QuotaThresholdReached,
        EventType::TenantRemoved,
        EventType::LicenseCreated,
        EventType::LicenseInvited,
        EventType::LicenseActive,
        EventType::LicenseInvitationExpired,
        EventType::LicenseRevoked,
        EventType::LicenseRestored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::EntitlementsChanged => "entitlements.changed",
            EventType::SubscriptionCreated => "subscription.created",
            EventType::SubscriptionUpdated => "subscription.updated",
            EventType::SubscriptionCanceled => "subscription.canceled",
            EventType::SubscriptionDuplicate => "subscription.duplicate",
            EventType::PurchaseCompleted => "purchase.completed",
            EventType::PurchaseRefunded => "purchase.refunded",
            EventType::PurchaseDisputed => "purchase.disputed",
            EventType::PaymentSucceeded => "payment.succeeded",
            EventType::PaymentFailed => "payment.failed",
            EventType::TrialWillEnd => "trial.will_end",
            EventType::QuotaThresholdReached => "quota.threshold_reached",
            EventType::TenantRemoved => "tenant.removed",
            EventType::LicenseCreated => "license.created",
            EventType::LicenseInvited => "license.invited",
            EventType::LicenseActive => "license.active",
            EventType::LicenseInvitationExpired => "license.invitation_expired",
            EventType::LicenseRevoked => "license.revoked",
            EventType::LicenseRestored => "license.restored",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append to a subject's stream: its type and its `data`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    pub data: Value,
}

/// A subject's entitlement document: what a receiver keeps to answer feature checks itself, and
/// replaces whole on `entitlements.changed`. Only what changes by a write or by a deadline is in
/// it (no usage counts, which change on every consumption).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Entitlements {
    pub access: bool,
    pub reason: Reason,
    pub plan: String,
    pub features: Vec<String>,
    /// The quotas the subject's grant brings: allowances and purchased credits.
    pub quotas: Vec<QuotaAllowance>,
    pub lifetime: bool,
    /// While a payment failed: when access ends unless a payment succeeds.
    pub grace_until: Option<DateTime<Utc>>,
    /// The subscription that decided the verdict, if one did.
    pub subscription_id: Option<String>,
    /// The grant that decided the verdict, if one did.
    pub grant_id: Option<String>,
}

/// One quota of an entitlement document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaAllowance {
    pub key: String,
    /// The allowance per period, `"unlimited"`, or `null` (only purchased credits).
    pub limit: Option<QuotaLimit>,
    pub period: Option<QuotaPeriod>,
    /// Credits bought for the quota (credit packs).
    pub purchased: u64,
    /// When the allowance's window starts again from zero (`null`: never); a reset is a change
    /// of the document, told when it comes.
    pub resets_at: Option<DateTime<Utc>>,
}

/// The entitlement document of one subject, on its own facts, at `now`.
pub fn entitlements(
    catalog: &Catalog,
    policy: AccessPolicy,
    facts: &SubjectFacts,
    exempt: bool,
    now: DateTime<Utc>,
) -> Entitlements {
    let verdict = access::evaluate(
        catalog,
        policy,
        &facts.subscriptions,
        &facts.purchases,
        &facts.grants,
        exempt,
        now,
    );
    let billing = verdict
        .subscription_id
        .as_deref()
        .and_then(|id| facts.subscription(id))
        .filter(|_| verdict.access)
        .and_then(|s| {
            Some(BillingPeriod {
                start: s.current_period_start?,
                end: s.current_period_end,
            })
        });
    let quotas = quota::applied(catalog, &verdict, &facts.purchases, billing, now)
        .into_iter()
        .map(|a| QuotaAllowance {
            key: a.key,
            limit: a.limit,
            period: a.period,
            purchased: a.purchased,
            resets_at: a.window.resets_at,
        })
        .collect();
    Entitlements {
        access: verdict.access,
        reason: verdict.reason,
        plan: verdict.plan_id,
        features: verdict.features,
        quotas,
        lifetime: verdict.lifetime,
        grace_until: verdict.grace_until,
        subscription_id: verdict.subscription_id,
        grant_id: verdict.grant.map(|g| g.id),
    }
}

/// When the document of `facts` may next change by time alone, after `now`: the earliest of
/// the ends the facts and the document hold (a grace period, a trial, a period that ends with a
/// cancellation, a cancellation date, a grant's end, a quota window's reset). The document is
/// evaluated again then; `None`: nothing ends by itself.
pub fn next_change(
    facts: &SubjectFacts,
    document: &Entitlements,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let subscriptions = facts
        .subscriptions
        .iter()
        .filter(|s| s.status.stands())
        .flat_map(|s| {
            [
                s.trial_end,
                s.cancel_at,
                s.current_period_end.filter(|_| s.cancel_at_period_end),
                s.pause_collection.as_ref().and_then(|p| p.resumes_at),
            ]
        });
    let grants = facts.grants.iter().map(|g| g.until);
    let quotas = document.quotas.iter().map(|q| q.resets_at);
    std::iter::once(document.grace_until)
        .chain(subscriptions)
        .chain(grants)
        .chain(quotas)
        .flatten()
        .filter(|t| *t > now)
        .min()
}

impl Entitlements {
    /// The document as told and stored (`event_heads.document`).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an entitlement document serializes")
    }
}

/// `entitlements.changed` when the document differs from `before` (the one last told, as
/// [`Entitlements::to_json`] gave it): the new document whole, and what the subject had before
/// (`previous`), so that a receiver can tell a loss of access from a gain.
pub fn entitlements_changed(before: &Value, after: &Entitlements) -> Option<Event> {
    if *before == after.to_json() {
        return None;
    }
    let text = |key: &str| before.get(key).and_then(Value::as_str).map(str::to_owned);
    let data = EntitlementsChangedData {
        entitlements: after.clone(),
        previous: EntitlementsBefore {
            access: before.get("access").and_then(Value::as_bool),
            reason: text("reason"),
            plan: text("plan"),
        },
    };
    Some(Event::of(EventType::EntitlementsChanged, &data))
}

/// The events a sync's changes tell, each with the key of the subject it belongs to, in the
/// order subscriptions, purchases, payments.
pub fn of_changes(changes: &Changes) -> Vec<(String, Event)> {
    let mut out = Vec::new();
    for change in &changes.subscriptions {
        if let Some(kind) = subscription_event(change) {
            let data = subscription_data(&change.after, change.before.as_ref());
            out.push((change.after.subject.clone(), Event::of(kind, &data)));
        }
    }
    for change in &changes.purchases {
        if let Some(kind) = purchase_event(change) {
            let data = purchase_data(&change.after);
            out.push((change.after.subject.clone(), Event::of(kind, &data)));
        }
    }
    for change in &changes.payments {
        if let Some(kind) = payment_event(change) {
            let data = payment_data(&change.after);
            out.push((change.after.subject.clone(), Event::of(kind, &data)));
        }
    }
    out
}

/// `trial.will_end` for each subscription of `facts` whose trial is still to end (Stripe says
/// so three days before, `customer.subscription.trial_will_end`).
pub fn trials_ending(facts: &SubjectFacts, now: DateTime<Utc>) -> Vec<Event> {
    facts
        .subscriptions
        .iter()
        .filter(|s| s.status == SubscriptionStatus::Trialing)
        .filter_map(|s| {
            let trial_end = s.trial_end.filter(|end| *end > now)?;
            let data = TrialWillEndData {
                subscription_id: s.id.clone(),
                plan: s.plan_id.clone(),
                trial_end,
                interval: s.price_interval,
                quantity: s.quantity,
                cancel_at_period_end: s.cancel_at_period_end,
            };
            Some(Event::of(EventType::TrialWillEnd, &data))
        })
        .collect()
}

/// New: created; reaching `canceled`: canceled; any other change of what is stored: updated.
fn subscription_event(change: &Change<SubscriptionRecord>) -> Option<EventType> {
    let canceled = |s: &SubscriptionRecord| s.status == SubscriptionStatus::Canceled;
    Some(match &change.before {
        None => EventType::SubscriptionCreated,
        Some(before) if canceled(&change.after) && !canceled(before) => {
            EventType::SubscriptionCanceled
        }
        Some(before) if before == &change.after => return None,
        Some(_) => EventType::SubscriptionUpdated,
    })
}

/// A purchase recorded paid: completed; its payment refunded or disputed: refunded, disputed.
/// (A dispute won brings the purchase back to `paid` without a purchase event: its
/// `entitlements.changed` tells the access that returns.)
fn purchase_event(change: &Change<PurchaseRecord>) -> Option<EventType> {
    let before = change.before.as_ref().map(|b| b.status);
    if before == Some(change.after.status) {
        return None;
    }
    match (before, change.after.status) {
        (None, PurchaseStatus::Paid) => Some(EventType::PurchaseCompleted),
        (_, PurchaseStatus::Refunded) => Some(EventType::PurchaseRefunded),
        (_, PurchaseStatus::Disputed) => Some(EventType::PurchaseDisputed),
        (Some(_), PurchaseStatus::Paid) => None,
    }
}

/// A charge first seen (or newly seen) succeeded or failed.
fn payment_event(change: &Change<PaymentRecord>) -> Option<EventType> {
    let before = change.before.as_ref().map(|b| b.status);
    if before == Some(change.after.status) {
        return None;
    }
    match change.after.status {
        PaymentStatus::Paid
            if before
                .is_none_or(|b| matches!(b, PaymentStatus::Pending | PaymentStatus::Failed)) =>
        {
            Some(EventType::PaymentSucceeded)
        }
        PaymentStatus::Failed => Some(EventType::PaymentFailed),
        _ => None,
    }
}

/// `data` of `subscription.created`, `subscription.updated` and `subscription.canceled`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionEventData {
    #[schema(example = "sub_1NvFq2")]
    pub subscription_id: String,
    #[schema(example = "cus_P5f0T3")]
    pub customer_id: String,
    /// The plan of its price (`null`: a price the catalog does not know).
    #[schema(example = "pro")]
    pub plan: Option<String>,
    /// Stripe's status (`active`, `trialing`, `past_due`, `canceled`, ...).
    #[schema(example = "active")]
    pub status: String,
    pub interval: Option<Interval>,
    /// Seats bought.
    pub quantity: i64,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Stripe's payment collection is paused.
    pub collection_paused: bool,
    /// For a tenant's subscription: the member who manages it.
    pub manager_user_id: Option<String>,
    /// A change Stripe makes when the period ends (a downgrade kept to the period's end);
    /// `null`: none.
    pub scheduled_change: Option<ScheduledChangeData>,
    /// What changed from (`subscription.updated`, `subscription.canceled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<SubscriptionBefore>,
}

/// What a subscription becomes when its period ends.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScheduledChangeData {
    /// The plan of the new price (`null`: a price the catalog does not know).
    #[schema(example = "maker")]
    pub plan: Option<String>,
    pub interval: Option<Interval>,
    pub quantity: i64,
    /// When Stripe makes the change.
    pub at: DateTime<Utc>,
}

/// A subscription before a change.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionBefore {
    pub plan: Option<String>,
    pub status: String,
    pub quantity: i64,
    pub cancel_at_period_end: bool,
    pub manager_user_id: Option<String>,
}

/// `data` of `purchase.completed`, `purchase.refunded` and `purchase.disputed`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PurchaseEventData {
    #[schema(example = "cs_test_a1b2c3")]
    pub checkout_session_id: String,
    pub customer_id: Option<String>,
    #[schema(example = "lifetime")]
    pub plan: String,
    pub kind: PlanKind,
    /// `paid`, `refunded` or `disputed`.
    #[schema(example = "paid")]
    pub status: String,
    /// In the currency's minor unit (cents).
    #[schema(example = 19900)]
    pub amount: i64,
    #[schema(example = "usd")]
    pub currency: String,
    pub payment_intent_id: Option<String>,
    pub purchased_at: DateTime<Utc>,
}

/// `data` of `payment.succeeded` and `payment.failed`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PaymentEventData {
    #[schema(example = "ch_3NvFq2")]
    pub payment_id: String,
    pub customer_id: Option<String>,
    /// `paid`, `failed`, ... as `GET /v1/payments` shows it.
    #[schema(example = "paid")]
    pub status: String,
    /// In the currency's minor unit (cents).
    #[schema(example = 900)]
    pub amount: i64,
    pub amount_refunded: i64,
    #[schema(example = "usd")]
    pub currency: String,
    pub description: Option<String>,
    pub payment_intent_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// `data` of `trial.will_end`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TrialWillEndData {
    pub subscription_id: String,
    pub plan: Option<String>,
    pub trial_end: DateTime<Utc>,
    pub interval: Option<Interval>,
    pub quantity: i64,
    /// `false`: the card is charged when the trial ends.
    pub cancel_at_period_end: bool,
}

/// `data` of `quota.threshold_reached`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QuotaThresholdData {
    #[schema(example = "generations")]
    pub quota: String,
    /// The percent of the allowance reached (`events.quota_thresholds`).
    #[schema(example = 80)]
    pub threshold: i32,
    /// Used of the allowance in the window, after the consumption that reached it.
    #[schema(example = 200)]
    pub used: i64,
    #[schema(example = 250)]
    pub limit: i64,
    /// `day`, `month`, `billing_period`, ...
    pub period: Option<String>,
    /// When the window starts again from zero.
    pub resets_at: Option<DateTime<Utc>>,
    pub reached_at: DateTime<Utc>,
}

/// `data` of `subscription.duplicate`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionDuplicateData {
    /// The subscription that started to stand second.
    #[schema(example = "sub_2Pq")]
    pub subscription_id: String,
    /// The older standing subscription of the same subject.
    #[schema(example = "sub_1NvFq2")]
    pub beside: String,
}

/// `data` of `tenant.removed`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TenantRemovedData {
    pub tenant_id: Option<String>,
    /// The member removed (`null`: the tenant itself was removed).
    pub user_id: Option<String>,
    pub removed_at: DateTime<Utc>,
}

/// `data` of `entitlements.changed`: the subject's whole new document, and what it had before.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EntitlementsChangedData {
    #[serde(flatten)]
    pub entitlements: Entitlements,
    pub previous: EntitlementsBefore,
}

/// What the subject was entitled to before the change (`null`s: nothing was told before).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EntitlementsBefore {
    pub access: Option<bool>,
    #[schema(example = "free")]
    pub reason: Option<String>,
    #[schema(example = "free")]
    pub plan: Option<String>,
}

impl Event {
    fn of(kind: EventType, data: &impl Serialize) -> Event {
        Event {
            kind,
            data: serde_json::to_value(data).expect("event data serializes"),
        }
    }

    pub fn subscription_duplicate(data: &SubscriptionDuplicateData) -> Event {
        Event::of(EventType::SubscriptionDuplicate, data)
    }

    pub fn tenant_removed(data: &TenantRemovedData) -> Event {
        Event::of(EventType::TenantRemoved, data)
    }

    pub fn quota_threshold_reached(data: &QuotaThresholdData) -> Event {
        Event::of(EventType::QuotaThresholdReached, data)
    }

    /// One of the `license.*` types, with the license as it stands after the change.
    pub fn license(kind: EventType, license: &crate::billing::license::License) -> Event {
        Event::of(kind, license)
    }
}

fn subscription_data(
    s: &SubscriptionRecord,
    before: Option<&SubscriptionRecord>,
) -> SubscriptionEventData {
    SubscriptionEventData {
        subscription_id: s.stripe_subscription_id.clone(),
        customer_id: s.stripe_customer_id.clone(),
        plan: s.plan_id.clone(),
        status: s.status.as_str().to_owned(),
        interval: s.price_interval,
        quantity: s.quantity,
        current_period_start: s.current_period_start,
        current_period_end: s.current_period_end,
        trial_end: s.trial_end,
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at,
        canceled_at: s.canceled_at,
        ended_at: s.ended_at,
        collection_paused: s.pause_collection.is_some(),
        manager_user_id: s.manager_user_id.clone(),
        scheduled_change: s.scheduled_change.as_ref().map(|c| ScheduledChangeData {
            plan: c.plan_id.clone(),
            interval: c.price_interval,
            quantity: c.quantity,
            at: c.at,
        }),
        previous: before.map(|b| SubscriptionBefore {
            plan: b.plan_id.clone(),
            status: b.status.as_str().to_owned(),
            quantity: b.quantity,
            cancel_at_period_end: b.cancel_at_period_end,
            manager_user_id: b.manager_user_id.clone(),
        }),
    }
}

fn purchase_data(p: &PurchaseRecord) -> PurchaseEventData {
    PurchaseEventData {
        checkout_session_id: p.checkout_session_id.clone(),
        customer_id: p.stripe_customer_id.clone(),
        plan: p.plan_id.clone(),
        kind: p.kind,
        status: p.status.as_str().to_owned(),
        amount: p.amount,
        currency: p.currency.clone(),
        payment_intent_id: p.payment_intent_id.clone(),
        purchased_at: p.purchased_at,
    }
}

fn payment_data(p: &PaymentRecord) -> PaymentEventData {
    PaymentEventData {
        payment_id: p.payment_id.clone(),
        customer_id: p.stripe_customer_id.clone(),
        status: p.status.as_str().to_owned(),
        amount: p.amount,
        amount_refunded: p.amount_refunded,
        currency: p.currency.clone(),
        description: p.description.clone(),
        payment_intent_id: p.payment_intent_id.clone(),
        occurred_at: p.occurred_at,
    }
}

/// The body of every delivery of an event, and each entry of `GET /v1/events`: the Standard
/// Webhooks shape (`type`, `timestamp`, `data`) plus the id, the subject and its revision.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "evt_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b",
    "type": "entitlements.changed",
    "timestamp": "2026-12-01T09:30:00Z",
    "subject": {"key": "user:alice", "kind": "user", "user_id": "alice", "tenant_id": null},
    "revision": 3,
    "data": {
        "access": true, "reason": "active", "plan": "pro", "features": ["export"],
        "quotas": [{"key": "generations", "limit": 250, "period": "billing_period", "purchased": 0, "resets_at": "2026-12-21T12:00:00Z"}],
        "lifetime": false, "grace_until": null, "subscription_id": "sub_1NvFq2", "grant_id": null,
        "previous": {"access": false, "reason": "free", "plan": "free"}
    }
})))]
pub struct Envelope {
    /// The event's id: the `webhook-id` of every delivery of it (dedupe by it).
    #[schema(example = "evt_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b")]
    pub id: String,
    /// `entitlements.changed`, `subscription.created`, ... (docs/EVENTS.md).
    #[serde(rename = "type")]
    #[schema(example = "entitlements.changed")]
    pub kind: String,
    /// When the change committed.
    pub timestamp: DateTime<Utc>,
    pub subject: EnvelopeSubject,
    /// The subject's events count from 1 without gaps: a jump means one was missed.
    #[schema(example = 3)]
    pub revision: i64,
    /// The type's data.
    #[schema(value_type = EventData)]
    pub data: Value,
}

/// Whose event it is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EnvelopeSubject {
    /// The subject's key (`user:<id>`, `tenant:<id>`, `membership:<tenant>:<user>`).
    #[schema(example = "user:alice")]
    pub key: String,
    /// `user`, `tenant` or `membership` (a user in one tenant).
    #[schema(example = "user")]
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub tenant_id: Option<String>,
}

impl EnvelopeSubject {
    /// The subject whose stored key is `key`, with its ids (none for a key Tollgate cannot read).
    pub fn of_key(key: &str) -> EnvelopeSubject {
        let subject = Subject::parse_key(key);
        EnvelopeSubject {
            key: key.to_owned(),
            kind: subject.as_ref().map(|s| s.kind().to_owned()),
            user_id: subject
                .as_ref()
                .and_then(Subject::user_id)
                .map(str::to_owned),
            tenant_id: subject
                .as_ref()
                .and_then(Subject::tenant_id)
                .map(str::to_owned),
        }
    }
}

/// The `data` of each type (documentation of the envelope's `data`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventData {
    /// `entitlements.changed`
    EntitlementsChanged(EntitlementsChangedData),
    /// `subscription.created`, `subscription.updated`, `subscription.canceled`
    Subscription(SubscriptionEventData),
    /// `purchase.completed`, `purchase.refunded`, `purchase.disputed`
    Purchase(PurchaseEventData),
    /// `payment.succeeded`, `payment.failed`
    Payment(PaymentEventData),
    /// `subscription.duplicate`
    SubscriptionDuplicate(SubscriptionDuplicateData),
    /// `trial.will_end`
    TrialWillEnd(TrialWillEndData),
    /// `quota.threshold_reached`
    QuotaThresholdReached(QuotaThresholdData),
    /// `tenant.removed`
    TenantRemoved(TenantRemovedData),
    /// `license.created`, `license.invited`, `license.active`, `license.invitation_expired`,
    /// `license.revoked`, `license.restored`
    License(crate::billing::license::License),
}

/// The envelope of `event` as the subject's `revision`.
pub fn envelope(
    event_id: &str,
    subject_key: &str,
    revision: i64,
    event: &Event,
    created_at: DateTime<Utc>,
) -> Envelope {
    Envelope {
        id: event_id.to_owned(),
        kind: event.kind.as_str().to_owned(),
        timestamp: created_at,
        subject: EnvelopeSubject::of_key(subject_key),
        revision,
        data: event.data.clone(),
    }
}

/// Which event types an endpoint wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The endpoint's name (`events.endpoints[].name`), stored with each delivery.
    pub endpoint: String,
    /// `None`: every type.
    pub types: Option<BTreeSet<EventType>>,
}

impl Route {
    pub fn wants(&self, kind: EventType) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(&kind))
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait before the first retry; each further one doubles it.
    pub first: Duration,
    /// No wait is longer.
    pub max: Duration,
    /// Retried for this long after the event was created; then the delivery has failed.
    pub window: Duration,
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempts` (1 for the first), with `jitter` in
    /// [0, 1) taking off up to a fifth, so that many deliveries that failed together do not
    /// come back together.
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let full = self.first.saturating_mul(1u32 << doublings).min(self.max);
        full.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
    }

    /// When the next attempt is due, or `None` when the window ends before it: the delivery
    /// has failed.
    pub fn next_attempt(
        &self,
        created_at: DateTime<Utc>,
        attempts: u32,
        now: DateTime<Utc>,
        jitter: f64,
    ) -> Option<DateTime<Utc>> {
        let next = now + chrono::Duration::from_std(self.delay(attempts, jitter)).ok()?;
        let end = created_at + chrono::Duration::from_std(self.window).ok()?;
        (next <= end).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::catalog::{Interval, PlanKind};
    use crate::billing::facts::PurchaseFacts;
    use crate::billing::test_support::{at, catalog, policy};
    use chrono::TimeZone;
    use serde_json::json;

    fn subscription(status: SubscriptionStatus) -> SubscriptionRecord {
        SubscriptionRecord {
            stripe_subscription_id: "sub_1".into(),
            subject: "user:alice".into(),
            stripe_customer_id: "cus_1".into(),
            status,
            plan_id: Some("pro".into()),
            price_id: Some("price_pro_monthly".into()),
            price_interval: Some(Interval::Month),
            quantity: 1,
            current_period_start: Some(at(1)),
            current_period_end: Some(at(28)),
            trial_start: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            ended_at: None,
            latest_invoice_id: None,
            payment_failed_at: None,
            stripe_created_at: at(1),
            period_payment_revoked: None,
            manager_user_id: None,
            pause_collection: None,
            schedule_id: None,
            scheduled_change: None,
        }
    }

    fn purchase(status: PurchaseStatus) -> PurchaseRecord {
        PurchaseRecord {
            checkout_session_id: "cs_1".into(),
            subject: "user:bob".into(),
            stripe_customer_id: Some("cus_2".into()),
            plan_id: "lifetime".into(),
            kind: PlanKind::Lifetime,
            payment_intent_id: Some("pi_1".into()),
            amount: 19900,
            currency: "usd".into(),
            status,
            purchased_at: at(2),
        }
    }

    fn payment(status: PaymentStatus) -> PaymentRecord {
        PaymentRecord {
            payment_id: "ch_1".into(),
            subject: "user:alice".into(),
            stripe_customer_id: Some("cus_1".into()),
            amount: 900,
            amount_refunded: 0,
            currency: "usd".into(),
            status,
            disputed: false,
            payment_intent_id: Some("pi_2".into()),
            description: None,
            occurred_at: at(3),
        }
    }

    fn kinds(changes: &Changes) -> Vec<EventType> {
        of_changes(changes)
            .into_iter()
            .map(|(_, e)| e.kind)
            .collect()
    }

    #[test]
    fn every_type_parses_back_from_its_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("entitlements.change"), None);
    }

    #[test]
    fn a_new_subscription_is_created_and_reaching_canceled_is_canceled() {
        let created = Changes {
            subscriptions: vec![Change {
                before: None,
                after: subscription(SubscriptionStatus::Active),
            }],
            ..Changes::default()
        };
        assert_eq!(kinds(&created), [EventType::SubscriptionCreated]);

        let canceled = Changes {
            subscriptions: vec![Change {
                before: Some(subscription(SubscriptionStatus::Active)),
                after: subscription(SubscriptionStatus::Canceled),
            }],
            ..Changes::default()
        };
        let events = of_changes(&canceled);
        assert_eq!(events[0].1.kind, EventType::SubscriptionCanceled);
        assert_eq!(events[0].0, "user:alice");
        assert_eq!(events[0].1.data["previous"]["status"], "active");
        assert_eq!(events[0].1.data["status"], "canceled");

        let mut later = subscription(SubscriptionStatus::Active);
        later.cancel_at_period_end = true;
        let updated = Changes {
            subscriptions: vec![Change {
                before: Some(subscription(SubscriptionStatus::Active)),
                after: later,
            }],
            ..Changes::default()
        };
        assert_eq!(kinds(&updated), [EventType::SubscriptionUpdated]);
        let unchanged = Changes {
            subscriptions: vec![Change {
                before: Some(subscription(SubscriptionStatus::Active)),
                after: subscription(SubscriptionStatus::Active),
            }],
            ..Changes::default()
        };
        assert!(kinds(&unchanged).is_empty());
    }

    #[test]
    fn purchases_complete_then_refund_or_dispute_once() {
        let change = |before: Option<PurchaseStatus>, after| Changes {
            purchases: vec![Change {
                before: before.map(purchase),
                after: purchase(after),
            }],
            ..Changes::default()
        };
        assert_eq!(
            kinds(&change(None, PurchaseStatus::Paid)),
            [EventType::PurchaseCompleted]
        );
        assert_eq!(
            kinds(&change(
                Some(PurchaseStatus::Paid),
                PurchaseStatus::Refunded
            )),
            [EventType::PurchaseRefunded]
        );
        assert_eq!(
            kinds(&change(
                Some(PurchaseStatus::Paid),
                PurchaseStatus::Disputed
            )),
            [EventType::PurchaseDisputed]
        );
        assert_eq!(
            kinds(&change(None, PurchaseStatus::Refunded)),
            [EventType::PurchaseRefunded]
        );
        assert!(kinds(&change(
            Some(PurchaseStatus::Disputed),
            PurchaseStatus::Paid
        ))
        .is_empty());
        assert!(kinds(&change(Some(PurchaseStatus::Paid), PurchaseStatus::Paid)).is_empty());
        let data = &of_changes(&change(None, PurchaseStatus::Paid))[0].1.data;
        assert_eq!(data["amount"], 19900);
        assert_eq!(data["kind"], "lifetime");
    }

    #[test]
    fn payments_tell_success_and_failure_once() {
        let change = |before: Option<PaymentStatus>, after| Changes {
            payments: vec![Change {
                before: before.map(payment),
                after: payment(after),
            }],
            ..Changes::default()
        };
        assert_eq!(
            kinds(&change(None, PaymentStatus::Paid)),
            [EventType::PaymentSucceeded]
        );
        assert_eq!(
            kinds(&change(Some(PaymentStatus::Pending), PaymentStatus::Paid)),
            [EventType::PaymentSucceeded]
        );
        assert_eq!(
            kinds(&change(None, PaymentStatus::Failed)),
            [EventType::PaymentFailed]
        );
        assert_eq!(
            kinds(&change(Some(PaymentStatus::Pending), PaymentStatus::Failed)),
            [EventType::PaymentFailed]
        );
        // A refund of a paid charge is not a new success.
        assert!(kinds(&change(Some(PaymentStatus::Refunded), PaymentStatus::Paid)).is_empty());
        assert!(kinds(&change(Some(PaymentStatus::Paid), PaymentStatus::Refunded)).is_empty());
        assert!(kinds(&change(None, PaymentStatus::Pending)).is_empty());
    }

    fn facts_with(status: SubscriptionStatus, failed_at: Option<DateTime<Utc>>) -> SubjectFacts {
        let mut record = subscription(status);
        record.payment_failed_at = failed_at;
        SubjectFacts {
            subscriptions: vec![record.facts()],
            ..SubjectFacts::default()
        }
    }

    #[test]
    fn the_document_follows_the_facts_and_a_deadline() {
        let catalog = catalog();
        let nothing = entitlements(&catalog, policy(), &SubjectFacts::default(), false, at(5));
        assert!(!nothing.access);
        assert_eq!(nothing.reason, Reason::Free);

        let active = entitlements(
            &catalog,
            policy(),
            &facts_with(SubscriptionStatus::Active, None),
            false,
            at(5),
        );
        assert!(active.access);
        assert_eq!(active.plan, "pro");
        assert_eq!(active.subscription_id.as_deref(), Some("sub_1"));

        let event = entitlements_changed(&nothing.to_json(), &active).expect("a change");
        assert_eq!(event.kind, EventType::EntitlementsChanged);
        assert_eq!(event.data["access"], true);
        assert_eq!(event.data["plan"], "pro");
        assert_eq!(event.data["previous"]["access"], false);
        assert_eq!(event.data["previous"]["reason"], "free");
        assert_eq!(
            entitlements_changed(&active.to_json(), &active.clone()),
            None
        );

        // Past due: access until the grace period ends, none after, on the same facts.
        let past_due = facts_with(SubscriptionStatus::PastDue, Some(at(5)));
        let in_grace = entitlements(&catalog, policy(), &past_due, false, at(5));
        let expired = entitlements(&catalog, policy(), &past_due, false, at(7));
        assert_eq!((in_grace.access, in_grace.reason), (true, Reason::Grace));
        assert_eq!(
            (expired.access, expired.reason),
            (false, Reason::GraceExpired)
        );
        assert!(entitlements_changed(&in_grace.to_json(), &expired).is_some());
    }

    #[test]
    fn quotas_in_the_document_carry_allowances_and_credits_not_usage() {
        let catalog = catalog();
        let mut facts = facts_with(SubscriptionStatus::Active, None);
        facts.purchases.push(PurchaseFacts {
            plan_id: "credits".into(),
            kind: PlanKind::CreditPack,
            status: PurchaseStatus::Paid,
            purchased_at: at(2),
        });
        let doc = entitlements(&catalog, policy(), &facts, false, at(5));
        let credits = doc
            .quotas
            .iter()
            .find(|q| q.key == "credits")
            .expect("credits");
        assert_eq!(credits.limit, Some(QuotaLimit::Limited(100)));
        assert_eq!(credits.period, Some(QuotaPeriod::Day));
        assert_eq!(credits.purchased, 100);
        let generations = doc
            .quotas
            .iter()
            .find(|q| q.key == "generations")
            .expect("generations");
        assert_eq!(generations.period, Some(QuotaPeriod::BillingPeriod));
        assert_eq!(
            credits.resets_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 6, 0, 0, 0).unwrap())
        );
        // Within the day the document stands; the next day's window is a change, told then.
        let later = entitlements(
            &catalog,
            policy(),
            &facts,
            false,
            at(5) + chrono::Duration::hours(11),
        );
        assert_eq!(doc, later);
        let next_day = entitlements(&catalog, policy(), &facts, false, at(6));
        assert_ne!(doc, next_day);
        assert_eq!(next_change(&facts, &doc, at(5)), credits.resets_at);
    }

    #[test]
    fn the_next_change_is_the_earliest_end_ahead() {
        let catalog = catalog();
        // Past due since noon on the 5th: the daily credits reset at midnight, then the grace
        // period (24 h) ends at noon.
        let past_due = facts_with(SubscriptionStatus::PastDue, Some(at(5)));
        let mut doc = entitlements(&catalog, policy(), &past_due, false, at(5));
        let midnight = Utc.with_ymd_and_hms(2026, 11, 6, 0, 0, 0).unwrap();
        assert_eq!(next_change(&past_due, &doc, at(5)), Some(midnight));
        doc.quotas.clear();
        assert_eq!(next_change(&past_due, &doc, at(5)), Some(at(6)));
        // After it: the next quota window of the free plan's daily allowance.
        let expired = entitlements(&catalog, policy(), &past_due, false, at(7));
        assert_eq!(
            next_change(&past_due, &expired, at(7)),
            Some(Utc.with_ymd_and_hms(2026, 11, 8, 0, 0, 0).unwrap())
        );
        // Canceling at period end: the period's end, unless a quota resets before.
        let mut canceling = facts_with(SubscriptionStatus::Active, None);
        canceling.subscriptions[0].cancel_at_period_end = true;
        let mut no_quotas = entitlements(&catalog, policy(), &canceling, false, at(27));
        no_quotas.quotas.clear();
        assert_eq!(next_change(&canceling, &no_quotas, at(27)), Some(at(28)));
        // A grant's end; nothing at all once everything has ended.
        let mut granted = SubjectFacts::default();
        granted.grants.push(crate::billing::facts::GrantFacts {
            id: "grant_1".into(),
            plan_id: "pro".into(),
            until: Some(at(10)),
            created_at: at(1),
        });
        let mut doc = entitlements(&catalog, policy(), &granted, false, at(9));
        doc.quotas.clear();
        assert_eq!(next_change(&granted, &doc, at(9)), Some(at(10)));
        assert_eq!(next_change(&granted, &doc, at(10)), None);
    }

    #[test]
    fn a_trial_ending_is_told_only_while_it_is_ahead() {
        let mut record = subscription(SubscriptionStatus::Trialing);
        record.trial_end = Some(at(10));
        let facts = SubjectFacts {
            subscriptions: vec![record.facts()],
            ..SubjectFacts::default()
        };
        let told = trials_ending(&facts, at(7));
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].kind, EventType::TrialWillEnd);
        assert_eq!(told[0].data["trial_end"], "2026-11-10T12:00:00Z");
        assert_eq!(told[0].data["plan"], "pro");
        assert!(trials_ending(&facts, at(11)).is_empty());
        let active = facts_with(SubscriptionStatus::Active, None);
        assert!(trials_ending(&active, at(7)).is_empty());
    }

    #[test]
    fn the_envelope_names_the_subject_and_its_revision() {
        let event = Event {
            kind: EventType::TenantRemoved,
            data: json!({"tenant_id": "acme"}),
        };
        let body =
            serde_json::to_value(envelope("evt_1", "membership:acme:alice", 7, &event, at(4)))
                .unwrap();
        assert_eq!(body["id"], "evt_1");
        assert_eq!(body["type"], "tenant.removed");
        assert_eq!(body["revision"], 7);
        assert_eq!(body["subject"]["kind"], "membership");
        assert_eq!(body["subject"]["user_id"], "alice");
        assert_eq!(body["subject"]["tenant_id"], "acme");
        assert_eq!(body["timestamp"], "2026-11-04T12:00:00Z");
        assert_eq!(body["data"]["tenant_id"], "acme");
    }

    #[test]
    fn routes_pick_types_or_everything() {
        let all = Route {
            endpoint: "crm".into(),
            types: None,
        };
        let some = Route {
            endpoint: "mail".into(),
            types: Some([EventType::PurchaseCompleted].into()),
        };
        assert!(all.wants(EventType::TenantRemoved));
        assert!(some.wants(EventType::PurchaseCompleted));
        assert!(!some.wants(EventType::EntitlementsChanged));
    }

    #[test]
    fn retries_double_up_to_the_cap_with_jitter_and_end_with_the_window() {
        let policy = RetryPolicy {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            window: Duration::from_secs(3 * 24 * 3600),
        };
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(policy.delay(2, 0.0), Duration::from_secs(10));
        assert_eq!(policy.delay(4, 0.0), Duration::from_secs(40));
        assert_eq!(policy.delay(20, 0.0), Duration::from_secs(3600));
        assert_eq!(policy.delay(u32::MAX, 0.0), Duration::from_secs(3600));
        // Jitter takes off at most a fifth.
        assert_eq!(policy.delay(2, 0.5), Duration::from_secs(9));
        assert!(policy.delay(2, 0.999) > Duration::from_secs(8));

        let created = at(1);
        assert_eq!(
            policy.next_attempt(created, 1, at(1), 0.0),
            Some(at(1) + chrono::Duration::seconds(5))
        );
        // Close to the window's end the next attempt would come after it: failed.
        let late = at(4) - chrono::Duration::seconds(60);
        assert_eq!(policy.next_attempt(created, 30, late, 0.0), None);
        assert!(policy.next_attempt(created, 1, late, 0.0).is_some());
    }
}
