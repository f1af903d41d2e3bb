//! The billing rules: pure functions of data and `now`, with no actix, diesel or Stripe types.

pub mod access;
pub mod catalog;
pub mod change;
pub mod checkout;
pub mod events;
pub mod explain;
pub mod facts;
pub mod grant;
pub mod ids;
pub mod license;
pub mod mirror;
pub mod payment;
pub mod quota;
pub mod redirect;
pub mod scope;
pub mod subject;

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    use super::access::{Access, Reason};
    use super::catalog::{
        Catalog, Interval, Plan, PlanKind, Price, Quota, QuotaLimit, QuotaPeriod,
    };

    fn with_quotas(mut plan: Plan, quotas: &[(&str, u64, QuotaPeriod)]) -> Plan {
        for (key, limit, period) in quotas {
            plan.quotas.insert(
                key.to_string(),
                Quota {
                    limit: QuotaLimit::Limited(*limit),
                    period: *period,
                },
            );
        }
        plan
    }

    fn plan(id: &str, rank: i32, kind: PlanKind, features: &[&str], prices: Vec<Price>) -> Plan {
        Plan {
            id: id.into(),
            name: id.to_uppercase(),
            aliases: vec![],
            rank,
            kind,
            features: features.iter().map(|f| f.to_string()).collect(),
            quotas: BTreeMap::new(),
            scope: super::scope::Scope::User,
            trial_days: 0,
            trial_requires_card: true,
            prices,
        }
    }

    fn price(interval: Interval, id: &str) -> Price {
        Price {
            interval,
            price_id: Some(id.into()),
            amount: 900,
            currency: "usd".into(),
        }
    }

    /// Noon UTC on `day` of November 2026.
    pub fn at(day: u32) -> chrono::DateTime<chrono::Utc> {
        use chrono::TimeZone;
        chrono::Utc
            .with_ymd_and_hms(2026, 11, day, 12, 0, 0)
            .unwrap()
    }

    /// Billing on, a 24-hour grace period, no access while collection is paused.
    pub fn policy() -> super::access::AccessPolicy {
        super::access::AccessPolicy {
            saas_enabled: true,
            grace_period: chrono::Duration::hours(24),
            access_while_collection_paused: false,
        }
    }

    /// A verdict with no features, subscription or grace: what quota and scope rules read.
    pub fn verdict(access: bool, reason: Reason, plan: &str) -> Access {
        Access {
            access,
            reason,
            plan_id: plan.into(),
            features: vec![],
            subscription_id: None,
            grace_until: None,
            lifetime: false,
            grant: None,
        }
    }

    /// free < basic < pro < lifetime, plus a credit pack. Quotas: `credits` 10 a day on free,
    /// 100 a day on pro, 100 per pack; `generations` 250 per billing period on pro.
    pub fn catalog() -> Catalog {
        Catalog::new(
            vec![
                with_quotas(
                    plan("free", 0, PlanKind::Subscription, &["basic"], vec![]),
                    &[("credits", 10, QuotaPeriod::Day)],
                ),
                plan(
                    "basic",
                    1,
                    PlanKind::Subscription,
                    &["basic"],
                    vec![price(Interval::Month, "price_basic_m")],
                ),
                with_quotas(
                    plan(
                        "pro",
                        2,
                        PlanKind::Subscription,
                        &["export", "priority_support"],
                        vec![
                            price(Interval::Month, "price_pro_m"),
                            price(Interval::Year, "price_pro_y"),
                        ],
                    ),
                    &[
                        ("credits", 100, QuotaPeriod::Day),
                        ("generations", 250, QuotaPeriod::BillingPeriod),
                    ],
                ),
                plan(
                    "lifetime",
                    3,
                    PlanKind::Lifetime,
                    &["export", "priority_support", "lifetime_badge"],
                    vec![price(Interval::Once, "price_life")],
                ),
                with_quotas(
                    plan(
                        "credits",
                        0,
                        PlanKind::CreditPack,
                        &[],
                        vec![price(Interval::Once, "price_credits")],
                    ),
                    &[("credits", 100, QuotaPeriod::None)],
                ),
            ],
            "free",
        )
        .expect("the free plan is among them")
    }
}
