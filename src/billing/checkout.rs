//! Whether a checkout may start: the rules that refuse one on what is already stored, before
//! anything is asked of Stripe.

use super::catalog::{Plan, PlanKind};
use super::facts::{PurchaseStatus, SubjectFacts, SubscriptionStatus};
use super::subject::Subject;

/// Seats a subscription may have.
pub const MAX_QUANTITY: u64 = 10_000;

/// Why a checkout may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutRefusal {
    /// The tenant was removed: it is not billed again.
    TenantRemoved,
    /// A subscription that stands already bills the subject: a second would bill twice; plans
    /// change through the portal (or `POST /v1/subscription/change`).
    SubscriptionExists {
        subscription_id: String,
        status: SubscriptionStatus,
        /// Who manages it, for a tenant's (only they are told it exists).
        manager: Option<String>,
    },
    /// A lifetime plan the subject already holds.
    AlreadyPurchased,
}

/// Whether `quantity` seats may be asked for `kind`: 1 to [`MAX_QUANTITY`] for subscriptions,
/// exactly 1 for one-time plans.
pub fn quantity_allowed(kind: PlanKind, quantity: u64) -> bool {
    match kind {
        PlanKind::Subscription => (1..=MAX_QUANTITY).contains(&quantity),
        PlanKind::Lifetime | PlanKind::CreditPack => quantity == 1,
    }
}

/// The refusal a checkout of `plan` for `subject` meets, given what is stored of the subject
/// (`removed`: its removal is recorded). A removed member may be billed again (added back); a
/// removed tenant may not. Credit packs may be bought again and again.
pub fn refusal(
    plan: &Plan,
    subject: &Subject,
    removed: bool,
    stored: &SubjectFacts,
) -> Option<CheckoutRefusal> {
    if removed && matches!(subject, Subject::Tenant { .. }) {
        return Some(CheckoutRefusal::TenantRemoved);
    }
    match plan.kind {
        PlanKind::Subscription => {
            stored
                .subscriptions
                .iter()
                .find(|s| s.status.stands())
                .map(|s| CheckoutRefusal::SubscriptionExists {
                    subscription_id: s.id.clone(),
                    status: s.status.clone(),
                    manager: s.manager_user_id.clone(),
                })
        }
        PlanKind::Lifetime => stored
            .purchases
            .iter()
            .any(|p| p.plan_id == plan.id && p.status == PurchaseStatus::Paid)
            .then_some(CheckoutRefusal::AlreadyPurchased),
        PlanKind::CreditPack => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::facts::{PurchaseFacts, SubscriptionFacts};
    use crate::billing::test_support::catalog;
    use chrono::{TimeZone, Utc};

    fn sub(status: SubscriptionStatus) -> SubscriptionFacts {
        let t = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        SubscriptionFacts {
            id: "sub_1".into(),
            plan_id: Some("basic".into()),
            status,
            current_period_start: Some(t),
            current_period_end: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            payment_failed_at: None,
            period_payment_revoked: None,
            created_at: t,
            price_interval: None,
            quantity: 1,
            manager_user_id: Some("alice".into()),
            pause_collection: None,
            scheduled_change: None,
        }
    }

    fn bought(plan: &str, status: PurchaseStatus) -> PurchaseFacts {
        PurchaseFacts {
            plan_id: plan.into(),
            kind: PlanKind::Lifetime,
            status,
            purchased_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
        }
    }

    fn facts(subscriptions: Vec<SubscriptionFacts>, purchases: Vec<PurchaseFacts>) -> SubjectFacts {
        SubjectFacts {
            subscriptions,
            purchases,
            ..SubjectFacts::default()
        }
    }

    #[test]
    fn seats_are_one_to_ten_thousand_and_one_time_plans_take_one() {
        assert!(quantity_allowed(PlanKind::Subscription, 1));
        assert!(quantity_allowed(PlanKind::Subscription, MAX_QUANTITY));
        assert!(!quantity_allowed(PlanKind::Subscription, 0));
        assert!(!quantity_allowed(PlanKind::Subscription, MAX_QUANTITY + 1));
        assert!(quantity_allowed(PlanKind::Lifetime, 1));
        assert!(!quantity_allowed(PlanKind::Lifetime, 2));
        assert!(!quantity_allowed(PlanKind::CreditPack, 0));
    }

    #[test]
    fn a_standing_subscription_refuses_a_second_and_an_ended_one_does_not() {
        let cat = catalog();
        let pro = cat.plan("pro").unwrap();
        let user = Subject::user("u1");
        for status in [
            SubscriptionStatus::Active,
            SubscriptionStatus::Trialing,
            SubscriptionStatus::PastDue,
            SubscriptionStatus::Unpaid,
            SubscriptionStatus::Paused,
        ] {
            let refused = refusal(pro, &user, false, &facts(vec![sub(status.clone())], vec![]));
            assert_eq!(
                refused,
                Some(CheckoutRefusal::SubscriptionExists {
                    subscription_id: "sub_1".into(),
                    status,
                    manager: Some("alice".into()),
                })
            );
        }
        for status in [
            SubscriptionStatus::Canceled,
            SubscriptionStatus::Incomplete,
            SubscriptionStatus::IncompleteExpired,
        ] {
            assert_eq!(
                refusal(pro, &user, false, &facts(vec![sub(status)], vec![])),
                None
            );
        }
    }

    #[test]
    fn a_lifetime_plan_is_bought_once_unless_it_was_taken_back() {
        let cat = catalog();
        let life = cat.plan("lifetime").unwrap();
        let user = Subject::user("u1");
        let paid = facts(vec![], vec![bought("lifetime", PurchaseStatus::Paid)]);
        assert_eq!(
            refusal(life, &user, false, &paid),
            Some(CheckoutRefusal::AlreadyPurchased)
        );
        let refunded = facts(vec![], vec![bought("lifetime", PurchaseStatus::Refunded)]);
        assert_eq!(refusal(life, &user, false, &refunded), None);
        // A subscription that stands does not stop a lifetime purchase, nor a pack.
        let subscribed = facts(vec![sub(SubscriptionStatus::Active)], vec![]);
        assert_eq!(refusal(life, &user, false, &subscribed), None);
        let pack = cat.plan("credits").unwrap();
        let packs = facts(vec![], vec![bought("credits", PurchaseStatus::Paid)]);
        assert_eq!(refusal(pack, &user, false, &packs), None);
    }

    #[test]
    fn a_removed_tenant_is_not_billed_again_a_removed_member_may_be() {
        let cat = catalog();
        let pro = cat.plan("pro").unwrap();
        let tenant = Subject::Tenant {
            tenant_id: "t1".into(),
        };
        assert_eq!(
            refusal(pro, &tenant, true, &SubjectFacts::default()),
            Some(CheckoutRefusal::TenantRemoved)
        );
        assert_eq!(refusal(pro, &tenant, false, &SubjectFacts::default()), None);
        let member = Subject::Membership {
            tenant_id: "t1".into(),
            user_id: "u1".into(),
        };
        assert_eq!(refusal(pro, &member, true, &SubjectFacts::default()), None);
    }
}
