//! Plan changes of a standing subscription (`POST /v1/subscription/change`): whether a change
//! is an upgrade or a downgrade, and how each is billed.
//!
//! An upgrade is charged when it is made and granted only once that charge is paid (Stripe's
//! pending updates: a failed payment leaves the old plan). A downgrade takes effect when the
//! paid period ends (a subscription schedule on Stripe; the default) or at once, billed as
//! configured.

use serde::{Deserialize, Serialize};

use super::catalog::{Interval, Plan, Price};

/// How Stripe bills the difference of a plan change (`proration_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Proration {
    /// Invoice the difference now and charge it.
    AlwaysInvoice,
    /// Add the difference to the next invoice.
    CreateProrations,
    /// Bill nothing for the rest of the period; the new price applies from the next one.
    None,
}

impl Proration {
    pub fn as_str(self) -> &'static str {
        match self {
            Proration::AlwaysInvoice => "always_invoice",
            Proration::CreateProrations => "create_prorations",
            Proration::None => "none",
        }
    }
}

/// When a downgrade takes effect (`billing.downgrade_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DowngradeAt {
    /// The subscriber keeps what they paid for until the period ends; Stripe then moves the
    /// subscription to the lower plan (a subscription schedule), billing nothing in between.
    #[default]
    PeriodEnd,
    /// At once, billed as `billing.downgrade_proration` says.
    Now,
}

/// How plan changes are billed: `billing.upgrade_proration`, `billing.downgrade_proration`
/// and `billing.downgrade_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeTerms {
    pub upgrade: Proration,
    pub downgrade: Proration,
    pub downgrade_at: DowngradeAt,
}

impl Default for ChangeTerms {
    fn default() -> Self {
        ChangeTerms {
            upgrade: Proration::AlwaysInvoice,
            downgrade: Proration::CreateProrations,
            downgrade_at: DowngradeAt::PeriodEnd,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Grants more: a higher-ranked plan, or at the same rank a change that costs more (seats).
    Upgrade,
    /// Everything else.
    Downgrade,
}

/// What a change asks of Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeBilling {
    pub direction: Direction,
    pub proration: Proration,
    /// Apply the change only once its invoice is paid (`payment_behavior =
    /// pending_if_incomplete`): upgrades billed now, so that an unpaid upgrade grants nothing.
    pub only_when_paid: bool,
    /// Leave the subscription as it is until its period ends, then change it (a downgrade
    /// under `downgrade_at = "period_end"`): nothing is prorated.
    pub at_period_end: bool,
}

/// The subscription as it stands: its plan and price (when the catalog knows them) and seats.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    pub priced: Option<(&'a Plan, &'a Price)>,
    pub quantity: u64,
}

/// Whether moving from `from` to `to` (plan, price, seats) is an upgrade: one that grants more,
/// and so is paid before it is granted. A higher-ranked plan is an upgrade and a lower-ranked
/// one a downgrade, whatever they cost; at the same rank, what a year costs (price × seats,
/// in the same currency) decides: more seats is an upgrade, yearly billing of the same plan
/// is not. A subscription whose price the catalog does not know counts as the lowest: the
/// change is paid before it is granted.
pub fn direction(from: Holding<'_>, to: (&Plan, &Price), to_quantity: u64) -> Direction {
    let Some((from_plan, from_price)) = from.priced else {
        return Direction::Upgrade;
    };
    let (to_plan, to_price) = to;
    if to_plan.rank != from_plan.rank {
        return if to_plan.rank > from_plan.rank {
            Direction::Upgrade
        } else {
            Direction::Downgrade
        };
    }
    let costs_more = from_price.currency == to_price.currency
        && match (
            yearly(from_price, from.quantity),
            yearly(to_price, to_quantity),
        ) {
            (Some(before), Some(after)) => after > before,
            _ => false,
        };
    if costs_more {
        Direction::Upgrade
    } else {
        Direction::Downgrade
    }
}

/// What a year of `price` costs for `quantity` seats (`None` for one-time prices).
fn yearly(price: &Price, quantity: u64) -> Option<i128> {
    let per_year = match price.interval {
        Interval::Month => 12,
        Interval::Year => 1,
        Interval::Once => return None,
    };
    Some(i128::from(price.amount) * i128::from(quantity) * per_year)
}

/// How the change is billed under `terms`.
pub fn billing(terms: ChangeTerms, direction: Direction) -> ChangeBilling {
    let proration = match direction {
        Direction::Upgrade => terms.upgrade,
        Direction::Downgrade => terms.downgrade,
    };
    ChangeBilling {
        direction,
        proration,
        // Pending updates need an invoice now: only an upgrade invoiced at once waits for its
        // payment. Billed later (create_prorations), it is granted at once, as configured.
        only_when_paid: direction == Direction::Upgrade && proration == Proration::AlwaysInvoice,
        at_period_end: direction == Direction::Downgrade
            && terms.downgrade_at == DowngradeAt::PeriodEnd,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::test_support::catalog;

    fn priced<'a>(
        cat: &'a crate::billing::catalog::Catalog,
        plan: &str,
        interval: Interval,
    ) -> (&'a Plan, &'a Price) {
        let plan = cat.plan(plan).unwrap();
        let price = plan.prices.iter().find(|p| p.interval == interval).unwrap();
        (plan, price)
    }

    #[test]
    fn a_higher_ranked_plan_is_an_upgrade_whatever_it_costs() {
        let cat = catalog();
        let basic = priced(&cat, "basic", Interval::Month);
        let pro_y = priced(&cat, "pro", Interval::Year);
        let held = |p, quantity| Holding {
            priced: Some(p),
            quantity,
        };
        // Ten seats of basic billed monthly cost more than one of pro billed yearly.
        assert_eq!(direction(held(basic, 10), pro_y, 1), Direction::Upgrade);
        assert_eq!(direction(held(pro_y, 1), basic, 10), Direction::Downgrade);
        // Unknown current price: paid before it is granted.
        let unknown = Holding {
            priced: None,
            quantity: 1,
        };
        assert_eq!(direction(unknown, basic, 1), Direction::Upgrade);
    }

    #[test]
    fn at_the_same_rank_what_a_year_costs_decides() {
        let cat = catalog();
        let pro_m = priced(&cat, "pro", Interval::Month);
        let pro_y = priced(&cat, "pro", Interval::Year);
        let held = |p, quantity| Holding {
            priced: Some(p),
            quantity,
        };
        // More seats of the same price.
        assert_eq!(direction(held(pro_m, 1), pro_m, 2), Direction::Upgrade);
        assert_eq!(direction(held(pro_m, 3), pro_m, 2), Direction::Downgrade);
        // Both prices are 900: a year billed monthly (10,800) costs more than one billed
        // yearly (900).
        assert_eq!((pro_m.1.amount, pro_y.1.amount), (900, 900));
        assert_eq!(direction(held(pro_m, 1), pro_y, 1), Direction::Downgrade);
        assert_eq!(direction(held(pro_y, 1), pro_m, 1), Direction::Upgrade);
        assert_eq!(direction(held(pro_y, 13), pro_m, 1), Direction::Downgrade);
        // Across currencies nothing says it costs more.
        let mut euros = pro_m.1.clone();
        euros.currency = "eur".into();
        euros.amount = 1_000_000;
        assert_eq!(
            direction(held(pro_m, 1), (pro_m.0, &euros), 1),
            Direction::Downgrade
        );
    }

    #[test]
    fn only_an_upgrade_invoiced_now_waits_for_its_payment() {
        let terms = ChangeTerms::default();
        assert_eq!(
            billing(terms, Direction::Upgrade),
            ChangeBilling {
                direction: Direction::Upgrade,
                proration: Proration::AlwaysInvoice,
                only_when_paid: true,
                at_period_end: false,
            }
        );
        assert_eq!(
            billing(terms, Direction::Downgrade),
            ChangeBilling {
                direction: Direction::Downgrade,
                proration: Proration::CreateProrations,
                only_when_paid: false,
                at_period_end: true,
            }
        );
        let later = ChangeTerms {
            upgrade: Proration::CreateProrations,
            downgrade: Proration::AlwaysInvoice,
            downgrade_at: DowngradeAt::Now,
        };
        assert!(!billing(later, Direction::Upgrade).only_when_paid);
        assert!(!billing(later, Direction::Downgrade).only_when_paid);
        assert!(!billing(later, Direction::Downgrade).at_period_end);
        for p in [
            Proration::AlwaysInvoice,
            Proration::CreateProrations,
            Proration::None,
        ] {
            let json = serde_json::to_value(p).unwrap();
            assert_eq!(json.as_str(), Some(p.as_str()));
        }
    }

    #[test]
    fn only_a_downgrade_waits_for_the_period_end_and_only_when_configured() {
        let terms = ChangeTerms::default();
        assert_eq!(terms.downgrade_at, DowngradeAt::PeriodEnd);
        assert!(billing(terms, Direction::Downgrade).at_period_end);
        // An upgrade is never held back to the period end, whatever the setting.
        assert!(!billing(terms, Direction::Upgrade).at_period_end);
        let now = ChangeTerms {
            downgrade_at: DowngradeAt::Now,
            ..terms
        };
        assert!(!billing(now, Direction::Downgrade).at_period_end);
        assert_eq!(
            serde_json::from_str::<DowngradeAt>("\"period_end\"").unwrap(),
            DowngradeAt::PeriodEnd
        );
        assert_eq!(
            serde_json::from_str::<DowngradeAt>("\"now\"").unwrap(),
            DowngradeAt::Now
        );
    }
}
