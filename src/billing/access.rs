//! Who has access: one pure function of (subscriptions, purchases, exemption, policy, now).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::catalog::{Catalog, Plan, PlanKind};
use super::facts::{
    GrantFacts, PurchaseFacts, PurchaseStatus, SubscriptionFacts, SubscriptionStatus,
};

#[derive(Debug, Clone, Copy)]
pub struct AccessPolicy {
    pub saas_enabled: bool,
    pub grace_period: Duration,
    /// Whether a subscription keeps its plan while its payment collection is paused on Stripe
    /// (`billing.access_while_collection_paused`; off: reason `paused`).
    pub access_while_collection_paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    SaasDisabled,
    Exempt,
    Lifetime,
    Active,
    Trialing,
    /// Cancels at period end; access until then.
    Canceling,
    /// Payment failed; access until `grace_until`.
    Grace,
    GraceExpired,
    Canceled,
    Unpaid,
    Incomplete,
    /// The subscription is paused, or its payment collection is (Stripe's `pause_collection`;
    /// the status stays `active`) and `billing.access_while_collection_paused` is off.
    Paused,
    /// The payment was refunded, or is contested by an open or lost chargeback (SPEC's list of
    /// reasons has no separate one for disputes; the purchase and payment say `disputed`).
    Refunded,
    /// A plan given without a payment (`POST /v1/grants`), until the grant ends.
    Granted,
    /// No paid plan at all.
    Free,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::SaasDisabled,
        Reason::Exempt,
        Reason::Lifetime,
        Reason::Active,
        Reason::Trialing,
        Reason::Canceling,
        Reason::Grace,
        Reason::GraceExpired,
        Reason::Canceled,
        Reason::Unpaid,
        Reason::Incomplete,
        Reason::Paused,
        Reason::Refunded,
        Reason::Granted,
        Reason::Free,
    ];

    /// As serialised (`grace_expired`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SaasDisabled => "saas_disabled",
            Reason::Exempt => "exempt",
            Reason::Lifetime => "lifetime",
            Reason::Active => "active",
            Reason::Trialing => "trialing",
            Reason::Canceling => "canceling",
            Reason::Grace => "grace",
            Reason::GraceExpired => "grace_expired",
            Reason::Canceled => "canceled",
            Reason::Unpaid => "unpaid",
            Reason::Incomplete => "incomplete",
            Reason::Paused => "paused",
            Reason::Refunded => "refunded",
            Reason::Granted => "granted",
            Reason::Free => "free",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The verdict, plus the facts of the subscription or purchase that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub access: bool,
    pub reason: Reason,
    pub plan_id: String,
    pub features: Vec<String>,
    /// The subscription that decided the verdict, if one did.
    pub subscription_id: Option<String>,
    pub grace_until: Option<DateTime<Utc>>,
    pub lifetime: bool,
    /// The grant that decided the verdict, if one did.
    pub grant: Option<GrantFacts>,
}

impl Access {
    /// Whether `feature` is allowed: always with unconditional access (billing off, exempt),
    /// else when the plan in force lists it (without access, the free plan is in force). A
    /// feature no plan of `catalog` declares is refused as `unknown_feature`, whatever the
    /// subject holds: a misspelt name says so instead of quietly denying.
    pub fn allows(&self, catalog: &Catalog, feature: &str) -> FeatureVerdict {
        let unconditional = matches!(self.reason, Reason::SaasDisabled | Reason::Exempt);
        if !unconditional && !catalog.declares_feature(feature) {
            return FeatureVerdict {
                allowed: false,
                reason: FeatureReason::UnknownFeature,
            };
        }
        let in_plan = self.features.iter().any(|f| f == feature);
        let allowed = unconditional || in_plan;
        FeatureVerdict {
            allowed,
            reason: if allowed || !self.access {
                FeatureReason::Access(self.reason)
            } else {
                FeatureReason::NotInPlan
            },
        }
    }
}

/// The answer for one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureVerdict {
    pub allowed: bool,
    pub reason: FeatureReason,
}

/// Why a feature is allowed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureReason {
    /// The access reason decides (`active`, `canceled`, `free`, ...).
    Access(Reason),
    /// Access stands, but the plan in force lacks the feature.
    NotInPlan,
    /// No plan declares the feature (a misspelt name, or one the catalog does not sell).
    UnknownFeature,
}

impl FeatureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureReason::Access(reason) => reason.as_str(),
            FeatureReason::NotInPlan => "not_in_plan",
            FeatureReason::UnknownFeature => "unknown_feature",
        }
    }
}

struct Verdict<'a> {
    access: bool,
    reason: Reason,
    plan: Option<&'a Plan>,
    subscription_id: Option<String>,
    grace_until: Option<DateTime<Utc>>,
    lifetime: bool,
    grant: Option<GrantFacts>,
    /// Newer facts explain a refusal better than older ones.
    at: DateTime<Utc>,
}

/// Decides the caller's access. The highest-ranked plan with access wins (on a tie, a paid
/// subscription or purchase before a grant); with none, the most recent subscription or
/// purchase explains why, and the free plan applies. A grant that has ended explains nothing:
/// it was never paid for.
pub fn evaluate(
    catalog: &Catalog,
    policy: AccessPolicy,
    subscriptions: &[SubscriptionFacts],
    purchases: &[PurchaseFacts],
    grants: &[GrantFacts],
    exempt: bool,
    now: DateTime<Utc>,
) -> Access {
    let everything = |reason| {
        let plan = catalog.top_plan();
        Access {
            access: true,
            reason,
            plan_id: plan.id.clone(),
            features: plan.features.clone(),
            subscription_id: None,
            grace_until: None,
            lifetime: false,
            grant: None,
        }
    };
    if !policy.saas_enabled {
        return everything(Reason::SaasDisabled);
    }
    if exempt {
        return everything(Reason::Exempt);
    }

    let verdicts = subscriptions
        .iter()
        .map(|s| subscription_verdict(catalog, policy, s, now))
        .chain(
            purchases
                .iter()
                .filter_map(|p| purchase_verdict(catalog, p)),
        )
        .chain(grants.iter().filter_map(|g| grant_verdict(catalog, g, now)));

    let mut best_grant: Option<Verdict> = None;
    let mut latest_refusal: Option<Verdict> = None;
    for v in verdicts {
        if v.access {
            let rank = |v: &Verdict| v.plan.map_or(i32::MIN, |p| p.rank);
            if best_grant.as_ref().is_none_or(|b| rank(&v) > rank(b)) {
                best_grant = Some(v);
            }
        } else if latest_refusal.as_ref().is_none_or(|r| v.at > r.at) {
            latest_refusal = Some(v);
        }
    }

    let free = catalog.free_plan();
    match best_grant {
        Some(v) => {
            let plan = v.plan.unwrap_or(free);
            Access {
                access: true,
                reason: v.reason,
                plan_id: plan.id.clone(),
                features: plan.features.clone(),
                subscription_id: v.subscription_id,
                grace_until: v.grace_until,
                lifetime: v.lifetime,
                grant: v.grant,
            }
        }
        None => {
            let (reason, subscription_id, grace_until) = match latest_refusal {
                Some(v) => (v.reason, v.subscription_id, v.grace_until),
                None => (Reason::Free, None, None),
            };
            Access {
                access: false,
                reason,
                plan_id: free.id.clone(),
                features: free.features.clone(),
                subscription_id,
                grace_until,
                lifetime: false,
                grant: None,
            }
        }
    }
}

fn subscription_verdict<'a>(
    catalog: &'a Catalog,
    policy: AccessPolicy,
    s: &SubscriptionFacts,
    now: DateTime<Utc>,
) -> Verdict<'a> {
    let plan = s.plan_id.as_deref().and_then(|id| catalog.plan(id));
    let verdict = |access: bool, reason: Reason, grace_until: Option<DateTime<Utc>>| Verdict {
        // A subscription whose price is not in the catalog grants nothing.
        access: access && plan.is_some(),
        reason,
        plan,
        subscription_id: Some(s.id.clone()),
        grace_until,
        lifetime: false,
        grant: None,
        at: s.created_at,
    };
    let grace_from = |start: DateTime<Utc>| start + policy.grace_period;

    // A scheduled end (cancel at period end, or `cancel_at`) that has passed ends access even if
    // the webhook saying so has not arrived yet.
    let scheduled_end = match (s.cancel_at_period_end, s.cancel_at) {
        (_, Some(at)) => Some(at),
        (true, None) => s.current_period_end,
        (false, None) => None,
    };
    if s.status.pays() {
        if let Some(end) = scheduled_end {
            if now >= end {
                return verdict(false, Reason::Canceled, None);
            }
        }
        match s.period_payment_revoked {
            Some(PurchaseStatus::Refunded | PurchaseStatus::Disputed) => {
                return verdict(false, Reason::Refunded, None)
            }
            Some(PurchaseStatus::Paid) | None => {}
        }
        // Payment collection paused ("pause payment collection" in the Dashboard): Stripe
        // keeps the status, but nothing is paid while it lasts. A trial still running was
        // never going to be paid for, so it keeps its access.
        let collection_paused = s.pause_collection.as_ref().is_some_and(|p| p.in_force(now));
        let in_trial =
            s.status == SubscriptionStatus::Trialing && s.trial_end.is_none_or(|end| now < end);
        if collection_paused && !in_trial && !policy.access_while_collection_paused {
            return verdict(false, Reason::Paused, None);
        }
    }

    match &s.status {
        SubscriptionStatus::Active if scheduled_end.is_some() => {
            verdict(true, Reason::Canceling, None)
        }
        SubscriptionStatus::Active => verdict(true, Reason::Active, None),
        SubscriptionStatus::Trialing => match s.trial_end {
            // The trial ended and Stripe has not told us of a payment yet: treat it as a failed
            // payment at the trial's end, so an unpaid trial cannot keep access for ever.
            Some(end) if now >= end => {
                let until = grace_from(end);
                if now < until {
                    verdict(true, Reason::Grace, Some(until))
                } else {
                    verdict(false, Reason::GraceExpired, Some(until))
                }
            }
            _ if scheduled_end.is_some() => verdict(true, Reason::Canceling, None),
            _ => verdict(true, Reason::Trialing, None),
        },
        SubscriptionStatus::PastDue => {
            // Without a recorded failure, a renewal failure happens when the period starts.
            let failed_at = s
                .payment_failed_at
                .or(s.current_period_start)
                .unwrap_or(now);
            let until = grace_from(failed_at);
            if now < until {
                verdict(true, Reason::Grace, Some(until))
            } else {
                verdict(false, Reason::GraceExpired, Some(until))
            }
        }
        SubscriptionStatus::Unpaid => verdict(false, Reason::Unpaid, None),
        SubscriptionStatus::Canceled => verdict(false, Reason::Canceled, None),
        SubscriptionStatus::Incomplete | SubscriptionStatus::IncompleteExpired => {
            verdict(false, Reason::Incomplete, None)
        }
        SubscriptionStatus::Paused => verdict(false, Reason::Paused, None),
        SubscriptionStatus::Other(_) => verdict(false, Reason::Incomplete, None),
    }
}

fn purchase_verdict<'a>(catalog: &'a Catalog, p: &PurchaseFacts) -> Option<Verdict<'a>> {
    // Credit packs add quota; they do not grant a plan.
    if p.kind != PlanKind::Lifetime {
        return None;
    }
    let plan = catalog.plan(&p.plan_id);
    let (access, reason) = match p.status {
        PurchaseStatus::Paid => (plan.is_some(), Reason::Lifetime),
        PurchaseStatus::Refunded | PurchaseStatus::Disputed => (false, Reason::Refunded),
    };
    Some(Verdict {
        access,
        reason,
        plan,
        subscription_id: None,
        grace_until: None,
        lifetime: access,
        grant: None,
        at: p.purchased_at,
    })
}

/// A grant in force grants its plan; one that has ended, or whose plan the catalog no longer
/// has, takes no part.
fn grant_verdict<'a>(
    catalog: &'a Catalog,
    g: &GrantFacts,
    now: DateTime<Utc>,
) -> Option<Verdict<'a>> {
    if g.until.is_some_and(|until| now >= until) {
        return None;
    }
    let plan = catalog.plan(&g.plan_id)?;
    Some(Verdict {
        access: true,
        reason: Reason::Granted,
        plan: Some(plan),
        subscription_id: None,
        grace_until: None,
        lifetime: false,
        grant: Some(g.clone()),
        at: g.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::catalog::Interval;
    use crate::billing::test_support::catalog;
    use chrono::TimeZone;

    #[test]
    fn reasons_are_stored_as_they_are_serialised() {
        for reason in Reason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json.as_str(), Some(reason.as_str()));
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("Active"), None);
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn policy() -> AccessPolicy {
        AccessPolicy {
            saas_enabled: true,
            grace_period: Duration::hours(24),
            access_while_collection_paused: false,
        }
    }

    fn sub(status: SubscriptionStatus) -> SubscriptionFacts {
        SubscriptionFacts {
            id: "sub_1".into(),
            plan_id: Some("pro".into()),
            status,
            current_period_start: Some(now() - Duration::days(10)),
            current_period_end: Some(now() + Duration::days(20)),
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            payment_failed_at: None,
            period_payment_revoked: None,
            created_at: now() - Duration::days(40),
            price_interval: Some(Interval::Month),
            quantity: 1,
            manager_user_id: None,
            pause_collection: None,
            scheduled_change: None,
        }
    }

    fn lifetime(status: PurchaseStatus) -> PurchaseFacts {
        PurchaseFacts {
            plan_id: "lifetime".into(),
            kind: PlanKind::Lifetime,
            status,
            purchased_at: now() - Duration::days(3),
        }
    }

    fn eval(subs: &[SubscriptionFacts], purchases: &[PurchaseFacts]) -> Access {
        evaluate(&catalog(), policy(), subs, purchases, &[], false, now())
    }

    #[test]
    fn every_status_maps_to_its_access_and_reason() {
        let cases = [
            (SubscriptionStatus::Active, true, Reason::Active),
            (SubscriptionStatus::Trialing, true, Reason::Trialing),
            (SubscriptionStatus::Unpaid, false, Reason::Unpaid),
            (SubscriptionStatus::Canceled, false, Reason::Canceled),
            (SubscriptionStatus::Incomplete, false, Reason::Incomplete),
            (
                SubscriptionStatus::IncompleteExpired,
                false,
                Reason::Incomplete,
            ),
            (SubscriptionStatus::Paused, false, Reason::Paused),
            (
                SubscriptionStatus::Other("future_status".into()),
                false,
                Reason::Incomplete,
            ),
        ];
        for (status, access, reason) in cases {
            let mut s = sub(status.clone());
            if status == SubscriptionStatus::Trialing {
                s.trial_end = Some(now() + Duration::days(2));
            }
            let a = eval(&[s], &[]);
            assert_eq!(
                (a.access, a.reason),
                (access, reason),
                "status {}",
                status.as_str()
            );
            assert_eq!(
                a.plan_id,
                if access { "pro" } else { "free" },
                "status {}",
                status.as_str()
            );
            assert_eq!(a.subscription_id.as_deref(), Some("sub_1"));
        }
    }

    #[test]
    fn granted_plan_carries_its_features_and_refusal_carries_the_free_plans() {
        let a = eval(&[sub(SubscriptionStatus::Active)], &[]);
        assert_eq!(
            a.features,
            vec!["export".to_string(), "priority_support".to_string()]
        );
        let a = eval(&[sub(SubscriptionStatus::Canceled)], &[]);
        assert_eq!(a.features, vec!["basic".to_string()]);
    }

    #[test]
    fn nothing_on_record_is_free_without_access() {
        let a = eval(&[], &[]);
        assert!(!a.access);
        assert_eq!(a.reason, Reason::Free);
        assert_eq!(a.plan_id, "free");
        assert_eq!(a.subscription_id, None);
    }

    #[test]
    fn past_due_has_access_within_grace_and_loses_it_after() {
        let mut s = sub(SubscriptionStatus::PastDue);
        s.payment_failed_at = Some(now() - Duration::hours(23));
        let a = eval(&[s.clone()], &[]);
        assert_eq!((a.access, a.reason), (true, Reason::Grace));
        assert_eq!(a.grace_until, Some(now() + Duration::hours(1)));

        s.payment_failed_at = Some(now() - Duration::hours(24));
        let a = eval(&[s.clone()], &[]);
        assert_eq!((a.access, a.reason), (false, Reason::GraceExpired));
        assert_eq!(a.grace_until, Some(now()));

        s.payment_failed_at = Some(now() - Duration::hours(25));
        assert_eq!(eval(&[s], &[]).reason, Reason::GraceExpired);
    }

    #[test]
    fn past_due_without_recorded_failure_counts_grace_from_period_start() {
        let mut s = sub(SubscriptionStatus::PastDue);
        s.current_period_start = Some(now() - Duration::hours(2));
        assert_eq!(eval(&[s.clone()], &[]).reason, Reason::Grace);
        s.current_period_start = Some(now() - Duration::days(2));
        assert_eq!(eval(&[s], &[]).reason, Reason::GraceExpired);
    }

    #[test]
    fn grace_length_follows_the_policy() {
        let mut s = sub(SubscriptionStatus::PastDue);
        s.payment_failed_at = Some(now() - Duration::hours(30));
        let long = AccessPolicy {
            grace_period: Duration::hours(48),
            ..policy()
        };
        let a = evaluate(&catalog(), long, &[s], &[], &[], false, now());
        assert_eq!((a.access, a.reason), (true, Reason::Grace));
    }

    #[test]
    fn a_paused_collection_ends_paid_access_until_it_resumes_unless_configured() {
        use crate::billing::facts::CollectionPause;
        let paused = |status, resumes_at| SubscriptionFacts {
            pause_collection: Some(CollectionPause {
                behavior: "mark_uncollectible".into(),
                resumes_at,
            }),
            ..sub(status)
        };
        for status in [SubscriptionStatus::Active, SubscriptionStatus::PastDue] {
            let a = eval(&[paused(status.clone(), None)], &[]);
            assert_eq!(
                (a.access, a.reason, a.plan_id.as_str()),
                (false, Reason::Paused, "free"),
                "{status:?}"
            );
            assert_eq!(a.subscription_id.as_deref(), Some("sub_1"));
        }
        // Until a resume date: paused before it, paid access again from it.
        let until = now() + Duration::days(3);
        let s = paused(SubscriptionStatus::Active, Some(until));
        let at = |t| {
            evaluate(
                &catalog(),
                policy(),
                std::slice::from_ref(&s),
                &[],
                &[],
                false,
                t,
            )
        };
        assert_eq!(at(until - Duration::seconds(1)).reason, Reason::Paused);
        assert_eq!((at(until).access, at(until).reason), (true, Reason::Active));
        // A product that gives its service during the pause keeps the plan.
        let keep = AccessPolicy {
            access_while_collection_paused: true,
            ..policy()
        };
        let a = evaluate(
            &catalog(),
            keep,
            std::slice::from_ref(&s),
            &[],
            &[],
            false,
            now(),
        );
        assert_eq!((a.access, a.reason), (true, Reason::Active));
        // A cancellation that has passed, or a refunded period, still says so.
        let mut ended = paused(SubscriptionStatus::Active, None);
        ended.cancel_at = Some(now() - Duration::hours(1));
        assert_eq!(eval(&[ended], &[]).reason, Reason::Canceled);
        let mut refunded = paused(SubscriptionStatus::Active, None);
        refunded.period_payment_revoked = Some(PurchaseStatus::Refunded);
        assert_eq!(eval(&[refunded], &[]).reason, Reason::Refunded);
    }

    #[test]
    fn a_paused_collection_leaves_a_running_trial_but_not_one_past_its_end() {
        use crate::billing::facts::CollectionPause;
        let mut s = sub(SubscriptionStatus::Trialing);
        s.pause_collection = Some(CollectionPause {
            behavior: "keep_as_draft".into(),
            resumes_at: None,
        });
        s.trial_end = Some(now() + Duration::days(2));
        let a = eval(&[s.clone()], &[]);
        assert_eq!((a.access, a.reason), (true, Reason::Trialing));
        s.trial_end = Some(now() - Duration::hours(1));
        let a = eval(&[s], &[]);
        assert_eq!((a.access, a.reason), (false, Reason::Paused));
    }

    #[test]
    fn cancel_at_period_end_keeps_access_until_the_end_then_ends_it() {
        let mut s = sub(SubscriptionStatus::Active);
        s.cancel_at_period_end = true;
        let a = eval(&[s.clone()], &[]);
        assert_eq!(
            (a.access, a.reason, a.plan_id.as_str()),
            (true, Reason::Canceling, "pro")
        );

        s.current_period_end = Some(now() - Duration::seconds(1));
        let a = eval(&[s.clone()], &[]);
        assert_eq!(
            (a.access, a.reason, a.plan_id.as_str()),
            (false, Reason::Canceled, "free")
        );

        s.current_period_end = Some(now());
        assert_eq!(eval(&[s], &[]).reason, Reason::Canceled);
    }

    #[test]
    fn cancel_at_date_behaves_like_a_scheduled_end() {
        let mut s = sub(SubscriptionStatus::Active);
        s.cancel_at = Some(now() + Duration::days(1));
        assert_eq!(eval(&[s.clone()], &[]).reason, Reason::Canceling);
        s.cancel_at = Some(now() - Duration::days(1));
        assert_eq!(eval(&[s], &[]).reason, Reason::Canceled);
    }

    #[test]
    fn trial_canceling_before_its_end_keeps_access() {
        let mut s = sub(SubscriptionStatus::Trialing);
        s.trial_end = Some(now() + Duration::days(2));
        s.current_period_end = s.trial_end;
        s.cancel_at_period_end = true;
        assert_eq!(eval(&[s], &[]).reason, Reason::Canceling);
    }

    #[test]
    fn trial_past_its_end_without_payment_gets_only_the_grace_period() {
        let mut s = sub(SubscriptionStatus::Trialing);
        s.trial_end = Some(now() - Duration::hours(1));
        let a = eval(&[s.clone()], &[]);
        assert_eq!((a.access, a.reason), (true, Reason::Grace));
        s.trial_end = Some(now() - Duration::days(3));
        let a = eval(&[s], &[]);
        assert_eq!((a.access, a.reason), (false, Reason::GraceExpired));
    }

    #[test]
    fn lifetime_purchase_grants_for_ever_and_refund_or_dispute_revokes() {
        let a = eval(&[], &[lifetime(PurchaseStatus::Paid)]);
        assert_eq!(
            (a.access, a.reason, a.plan_id.as_str(), a.lifetime),
            (true, Reason::Lifetime, "lifetime", true)
        );
        for (status, reason) in [
            (PurchaseStatus::Refunded, Reason::Refunded),
            (PurchaseStatus::Disputed, Reason::Refunded),
        ] {
            let a = eval(&[], &[lifetime(status)]);
            assert_eq!((a.access, a.reason, a.lifetime), (false, reason, false));
        }
    }

    #[test]
    fn a_revoked_period_payment_ends_the_periods_access_in_every_paying_status() {
        for status in [
            SubscriptionStatus::Active,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::PastDue,
        ] {
            for (revoked, reason) in [
                (PurchaseStatus::Refunded, Reason::Refunded),
                (PurchaseStatus::Disputed, Reason::Refunded),
            ] {
                let mut s = sub(status.clone());
                // Within the grace period, so that only the revocation refuses.
                s.payment_failed_at = Some(now() - Duration::hours(1));
                s.period_payment_revoked = Some(revoked);
                let a = eval(&[s.clone()], &[]);
                assert_eq!((a.access, a.reason), (false, reason), "{status:?}");
                assert_eq!(a.subscription_id.as_deref(), Some("sub_1"));
                // A paid period payment (or none recorded) leaves the status to decide.
                s.period_payment_revoked = Some(PurchaseStatus::Paid);
                assert!(eval(&[s], &[]).access, "{status:?}");
            }
        }
    }

    #[test]
    fn a_revoked_subscription_payment_does_not_hide_a_lifetime_purchase() {
        let mut s = sub(SubscriptionStatus::Active);
        s.period_payment_revoked = Some(PurchaseStatus::Refunded);
        let a = eval(&[s], &[lifetime(PurchaseStatus::Paid)]);
        assert_eq!((a.access, a.reason), (true, Reason::Lifetime));
    }

    #[test]
    fn credit_packs_grant_no_plan() {
        let pack = PurchaseFacts {
            plan_id: "credits".into(),
            kind: PlanKind::CreditPack,
            status: PurchaseStatus::Paid,
            purchased_at: now(),
        };
        assert_eq!(eval(&[], &[pack]).reason, Reason::Free);
    }

    #[test]
    fn highest_ranked_plan_with_access_wins() {
        // lifetime ranks above pro in the test catalog
        let a = eval(
            &[sub(SubscriptionStatus::Active)],
            &[lifetime(PurchaseStatus::Paid)],
        );
        assert_eq!(a.plan_id, "lifetime");
        let mut basic = sub(SubscriptionStatus::Active);
        basic.id = "sub_basic".into();
        basic.plan_id = Some("basic".into());
        let a = eval(&[basic, sub(SubscriptionStatus::Active)], &[]);
        assert_eq!(
            (a.plan_id.as_str(), a.subscription_id.as_deref()),
            ("pro", Some("sub_1"))
        );
    }

    #[test]
    fn a_grant_beats_any_refusal_and_the_newest_refusal_explains() {
        let mut old = sub(SubscriptionStatus::Canceled);
        old.id = "sub_old".into();
        old.created_at = now() - Duration::days(400);
        let a = eval(&[old.clone(), sub(SubscriptionStatus::Active)], &[]);
        assert_eq!(a.reason, Reason::Active);

        let newer = sub(SubscriptionStatus::Unpaid);
        let a = eval(&[old, newer], &[]);
        assert_eq!(
            (a.reason, a.subscription_id.as_deref()),
            (Reason::Unpaid, Some("sub_1"))
        );
    }

    #[test]
    fn unknown_price_grants_nothing() {
        let mut s = sub(SubscriptionStatus::Active);
        s.plan_id = None;
        let a = eval(&[s], &[]);
        assert!(!a.access);
        assert_eq!(a.plan_id, "free");
    }

    #[test]
    fn exempt_callers_get_the_top_plan_whatever_they_hold() {
        for subs in [vec![], vec![sub(SubscriptionStatus::Canceled)]] {
            let a = evaluate(&catalog(), policy(), &subs, &[], &[], true, now());
            assert_eq!(
                (a.access, a.reason, a.plan_id.as_str()),
                (true, Reason::Exempt, "lifetime")
            );
        }
    }

    #[test]
    fn saas_off_allows_everyone_and_wins_over_everything() {
        let off = AccessPolicy {
            saas_enabled: false,
            ..policy()
        };
        for exempt in [false, true] {
            let a = evaluate(
                &catalog(),
                off,
                &[sub(SubscriptionStatus::Unpaid)],
                &[],
                &[],
                exempt,
                now(),
            );
            assert_eq!((a.access, a.reason), (true, Reason::SaasDisabled));
        }
    }

    #[test]
    fn every_status_crossed_with_saas_and_exemption() {
        let statuses = [
            SubscriptionStatus::Active,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
            SubscriptionStatus::Paused,
        ];
        for status in statuses {
            for saas in [true, false] {
                for exempt in [true, false] {
                    let p = AccessPolicy {
                        saas_enabled: saas,
                        ..policy()
                    };
                    let a = evaluate(
                        &catalog(),
                        p,
                        &[sub(status.clone())],
                        &[],
                        &[],
                        exempt,
                        now(),
                    );
                    let expected = match (saas, exempt) {
                        (false, _) => Some(Reason::SaasDisabled),
                        (true, true) => Some(Reason::Exempt),
                        _ => None,
                    };
                    if let Some(reason) = expected {
                        assert_eq!(
                            (a.access, a.reason),
                            (true, reason),
                            "{} saas={saas} exempt={exempt}",
                            status.as_str()
                        );
                    } else {
                        let plain = eval(&[sub(status.clone())], &[]);
                        assert_eq!(a, plain);
                    }
                }
            }
        }
    }

    #[test]
    fn a_feature_is_allowed_by_the_plan_in_force_or_unconditional_access() {
        let cat = catalog();
        let pro = eval(&[sub(SubscriptionStatus::Active)], &[]);
        let verdict = pro.allows(&cat, "export");
        assert_eq!((verdict.allowed, verdict.reason.as_str()), (true, "active"));
        let missing = pro.allows(&cat, "lifetime_badge");
        assert_eq!(
            (missing.allowed, missing.reason),
            (false, FeatureReason::NotInPlan)
        );
        assert_eq!(missing.reason.as_str(), "not_in_plan");

        // Without access the free plan is in force: its features stand, others say why not.
        let canceled = eval(&[sub(SubscriptionStatus::Canceled)], &[]);
        assert!(canceled.allows(&cat, "basic").allowed);
        let refused = canceled.allows(&cat, "export");
        assert_eq!(
            (refused.allowed, refused.reason.as_str()),
            (false, "canceled")
        );

        for reason in [Reason::SaasDisabled, Reason::Exempt] {
            let mut everything = evaluate(
                &cat,
                policy(),
                &[],
                &[],
                &[],
                reason == Reason::Exempt,
                now(),
            );
            if reason == Reason::SaasDisabled {
                everything = evaluate(
                    &cat,
                    AccessPolicy {
                        saas_enabled: false,
                        ..policy()
                    },
                    &[],
                    &[],
                    &[],
                    false,
                    now(),
                );
            }
            let verdict = everything.allows(&cat, "not_a_feature_of_any_plan");
            assert_eq!(
                (verdict.allowed, verdict.reason),
                (true, FeatureReason::Access(reason))
            );
        }
    }

    #[test]
    fn a_feature_no_plan_declares_is_refused_as_unknown_whatever_is_held() {
        let cat = catalog();
        for held in [
            eval(&[sub(SubscriptionStatus::Active)], &[]),
            eval(&[sub(SubscriptionStatus::Canceled)], &[]),
            eval(&[], &[]),
        ] {
            let verdict = held.allows(&cat, "exprot");
            assert_eq!(
                (verdict.allowed, verdict.reason.as_str()),
                (false, "unknown_feature")
            );
            // A declared feature is judged as before.
            assert_ne!(
                held.allows(&cat, "export").reason,
                FeatureReason::UnknownFeature
            );
        }
    }

    fn grant(plan: &str, until: Option<DateTime<Utc>>) -> GrantFacts {
        GrantFacts {
            id: format!("grant_{plan}"),
            plan_id: plan.into(),
            until,
            created_at: now() - Duration::days(1),
        }
    }

    fn eval_with(
        subs: &[SubscriptionFacts],
        purchases: &[PurchaseFacts],
        grants: &[GrantFacts],
    ) -> Access {
        evaluate(&catalog(), policy(), subs, purchases, grants, false, now())
    }

    #[test]
    fn a_grant_in_force_grants_its_plan_until_it_ends() {
        for until in [None, Some(now() + Duration::seconds(1))] {
            let a = eval_with(&[], &[], &[grant("pro", until)]);
            assert_eq!(
                (a.access, a.reason, a.plan_id.as_str()),
                (true, Reason::Granted, "pro")
            );
            assert_eq!(a.grant, Some(grant("pro", until)));
            assert!(a.allows(&catalog(), "export").allowed);
            assert_eq!((a.subscription_id, a.lifetime), (None, false));
        }
        // Ended at `now` or before: it takes no part, and explains nothing.
        for until in [now(), now() - Duration::days(1)] {
            let a = eval_with(&[], &[], &[grant("pro", Some(until))]);
            assert_eq!((a.access, a.reason, a.grant), (false, Reason::Free, None));
        }
        let ended = eval_with(
            &[sub(SubscriptionStatus::Canceled)],
            &[],
            &[grant("pro", Some(now()))],
        );
        assert_eq!((ended.access, ended.reason), (false, Reason::Canceled));
    }

    #[test]
    fn the_strongest_source_wins_between_grants_and_payments() {
        // A higher plan granted beats a lower one paid for, and the other way round.
        let mut basic = sub(SubscriptionStatus::Active);
        basic.plan_id = Some("basic".into());
        let a = eval_with(&[basic], &[], &[grant("pro", None)]);
        assert_eq!((a.reason, a.plan_id.as_str()), (Reason::Granted, "pro"));
        let a = eval_with(
            &[sub(SubscriptionStatus::Active)],
            &[],
            &[grant("basic", None)],
        );
        assert_eq!((a.reason, a.plan_id.as_str()), (Reason::Active, "pro"));
        assert_eq!(a.grant, None);
        // The same plan paid and granted: the payment stands (it has a period, a manager ...).
        let a = eval_with(
            &[sub(SubscriptionStatus::Active)],
            &[],
            &[grant("pro", None)],
        );
        assert_eq!(a.reason, Reason::Active);
        // A grant keeps access that a failed payment lost.
        let a = eval_with(
            &[sub(SubscriptionStatus::Unpaid)],
            &[],
            &[grant("pro", None)],
        );
        assert_eq!((a.access, a.reason), (true, Reason::Granted));
        // Of two grants, the higher plan's.
        let a = eval_with(&[], &[], &[grant("basic", None), grant("lifetime", None)]);
        assert_eq!(a.plan_id, "lifetime");
        let a = eval_with(
            &[],
            &[lifetime(PurchaseStatus::Paid)],
            &[grant("pro", None)],
        );
        assert_eq!(a.reason, Reason::Lifetime);
    }

    #[test]
    fn a_grant_of_a_plan_the_catalog_no_longer_has_grants_nothing() {
        let a = eval_with(&[], &[], &[grant("retired", None)]);
        assert_eq!((a.access, a.reason), (false, Reason::Free));
    }
}
