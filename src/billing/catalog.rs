//! The plan catalog: plans are configuration, parsed once into this validated form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::scope::Scope;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Month,
    Year,
    /// A one-time payment.
    Once,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Month => "month",
            Interval::Year => "year",
            Interval::Once => "once",
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        match s {
            "month" => Some(Interval::Month),
            "year" => Some(Interval::Year),
            "once" => Some(Interval::Once),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Recurring subscription (monthly and/or yearly prices).
    #[default]
    Subscription,
    /// One-time payment granting the plan for ever.
    Lifetime,
    /// One-time payment adding to a quota balance.
    CreditPack,
}

impl PlanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanKind::Subscription => "subscription",
            PlanKind::Lifetime => "lifetime",
            PlanKind::CreditPack => "credit_pack",
        }
    }

    pub fn parse(s: &str) -> Option<PlanKind> {
        match s {
            "subscription" => Some(PlanKind::Subscription),
            "lifetime" => Some(PlanKind::Lifetime),
            "credit_pack" => Some(PlanKind::CreditPack),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// The UTC day.
    Day,
    /// The calendar month (UTC).
    Month,
    /// The subscription's billing period: restarts when a paid invoice opens a new period.
    BillingPeriod,
    /// A month of the billing period: restarts at each paid renewal and, within a longer
    /// (yearly) period, at each monthly anniversary of its start ("250 a month" on monthly and
    /// yearly prices alike).
    BillingMonth,
    /// Never resets.
    None,
}

impl QuotaPeriod {
    pub const ALL: [QuotaPeriod; 5] = [
        QuotaPeriod::Day,
        QuotaPeriod::Month,
        QuotaPeriod::BillingPeriod,
        QuotaPeriod::BillingMonth,
        QuotaPeriod::None,
    ];

    /// As configured and serialised (`billing_period`).
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
            QuotaPeriod::BillingPeriod => "billing_period",
            QuotaPeriod::BillingMonth => "billing_month",
            QuotaPeriod::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<QuotaPeriod> {
        QuotaPeriod::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum QuotaLimit {
    Limited(u64),
    /// Serialised as `"unlimited"`.
    #[schema(value_type = String)]
    Unlimited(Unlimited),
}

impl QuotaLimit {
    /// As stored: a number, or `unlimited`.
    pub fn to_text(self) -> String {
        match self {
            QuotaLimit::Limited(n) => n.to_string(),
            QuotaLimit::Unlimited(_) => "unlimited".to_owned(),
        }
    }

    pub fn parse(s: &str) -> Option<QuotaLimit> {
        match s {
            "unlimited" => Some(QuotaLimit::Unlimited(Unlimited)),
            n => n.parse().ok().map(QuotaLimit::Limited),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unlimited;

impl Serialize for Unlimited {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("unlimited")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Quota {
    pub limit: QuotaLimit,
    pub period: QuotaPeriod,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Price {
    pub interval: Interval,
    /// Stripe price id; absent while Stripe is not configured.
    pub price_id: Option<String>,
    /// In the currency's minor unit (cents).
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub rank: i32,
    pub kind: PlanKind,
    pub features: Vec<String>,
    pub quotas: BTreeMap<String, Quota>,
    /// Who the plan is bought for.
    pub scope: Scope,
    pub trial_days: u32,
    /// Whether checkout collects a card before a trial.
    pub trial_requires_card: bool,
    pub prices: Vec<Price>,
}

impl Plan {
    pub fn price(&self, interval: Interval) -> Option<&Price> {
        self.prices.iter().find(|p| p.interval == interval)
    }

    pub fn is_free(&self) -> bool {
        self.prices.is_empty()
    }
}

/// The validated plan catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    plans: Vec<Plan>,
    free_plan: usize,
}

impl Catalog {
    /// The catalog of `plans`, valid as configuration checks them (`config`), with
    /// `free_plan` the id of the plan everyone holds without paying; `None` when no plan has
    /// that id.
    pub fn new(plans: Vec<Plan>, free_plan: &str) -> Option<Catalog> {
        let free_plan = plans.iter().position(|p| p.id == free_plan)?;
        Some(Catalog { plans, free_plan })
    }

    #[cfg(test)]
    pub(crate) fn set_free_plan_scope(&mut self, scope: Scope) {
        self.plans[self.free_plan].scope = scope;
    }

    #[cfg(test)]
    pub(crate) fn set_scope_for_tests(&mut self, plan: &str, scope: Scope) {
        if let Some(p) = self.plans.iter_mut().find(|p| p.id == plan) {
            p.scope = scope;
        }
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    pub fn free_plan(&self) -> &Plan {
        &self.plans[self.free_plan]
    }

    /// The plan with this id or alias (case-insensitive).
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| {
            p.id.eq_ignore_ascii_case(name)
                || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
    }

    /// The plan and price a Stripe price id belongs to.
    pub fn by_price_id(&self, price_id: &str) -> Option<(&Plan, &Price)> {
        self.plans.iter().find_map(|plan| {
            plan.prices
                .iter()
                .find(|p| p.price_id.as_deref() == Some(price_id))
                .map(|price| (plan, price))
        })
    }

    /// Whether any plan lists the feature `name`.
    pub fn declares_feature(&self, name: &str) -> bool {
        self.plans
            .iter()
            .any(|p| p.features.iter().any(|f| f == name))
    }

    /// Whether any plan declares the quota `key`.
    pub fn declares_quota(&self, key: &str) -> bool {
        self.plans.iter().any(|p| p.quotas.contains_key(key))
    }

    /// Every quota key any plan declares (credit packs included), sorted.
    pub fn quota_keys(&self) -> Vec<String> {
        let keys: std::collections::BTreeSet<&String> =
            self.plans.iter().flat_map(|p| p.quotas.keys()).collect();
        keys.into_iter().cloned().collect()
    }

    /// The highest-ranked plan that grants access (what exempt callers and SAAS=false get).
    pub fn top_plan(&self) -> &Plan {
        self.plans
            .iter()
            .filter(|p| p.kind != PlanKind::CreditPack)
            .max_by_key(|p| p.rank)
            .unwrap_or(self.free_plan())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_periods_and_limits_are_stored_as_they_are_serialised() {
        for period in QuotaPeriod::ALL {
            let json = serde_json::to_value(period).unwrap();
            assert_eq!(json.as_str(), Some(period.as_str()));
            assert_eq!(QuotaPeriod::parse(period.as_str()), Some(period));
        }
        for limit in [
            QuotaLimit::Limited(0),
            QuotaLimit::Limited(250),
            QuotaLimit::Limited(u64::MAX),
            QuotaLimit::Unlimited(Unlimited),
        ] {
            assert_eq!(QuotaLimit::parse(&limit.to_text()), Some(limit));
            let json = serde_json::to_value(limit).unwrap();
            assert_eq!(json.to_string().trim_matches('"'), limit.to_text());
        }
        assert_eq!(QuotaLimit::parse("-1"), None);
        assert_eq!(QuotaLimit::parse(""), None);
    }
}
