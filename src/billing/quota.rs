//! Quotas: which window a periodic allowance counts in, and whether a consumption fits.
//!
//! A quota is counted per subject, key and **window**. The window of a `day` quota is the UTC
//! day, of a `month` quota the calendar month, of a `billing_period` quota the current period
//! of the subscription that grants the plan (a paid renewal moves the period start, so the
//! count restarts; a duplicate `invoice.paid` does not move it), and a `none` quota has one
//! window for ever. Resets therefore need no job: a new window simply starts at zero.
//! Purchased credits (credit packs) form a balance that never resets and is spent only after
//! the periodic allowance.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};

use super::access::{Access, Reason};
use super::catalog::{Catalog, PlanKind, QuotaLimit, QuotaPeriod, Unlimited};
use super::facts::{PurchaseFacts, PurchaseStatus};
use super::scope::Actor;

/// The counter a consumption is added to, and when it starts again from zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Stable key of the window, stored with the counter (`day:2026-11-21`, `month:2026-11`,
    /// `period:<unix start>`, `none`).
    pub bucket: String,
    pub resets_at: Option<DateTime<Utc>>,
}

/// The bucket key of the purchased balance (never resets).
pub const BALANCE_BUCKET: &str = "balance";

/// The subscription period a `billing_period` quota follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingPeriod {
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// The window `now` falls in. A `billing_period` quota without a subscription period (a
/// lifetime or free plan, or an exempt caller) counts by calendar month.
pub fn window(period: QuotaPeriod, now: DateTime<Utc>, billing: Option<BillingPeriod>) -> Window {
    match (period, billing) {
        (QuotaPeriod::Day, _) => {
            let day = now.date_naive();
            Window {
                bucket: format!("day:{day}"),
                resets_at: Some(midnight(day + Duration::days(1))),
            }
        }
        (QuotaPeriod::BillingPeriod, Some(p)) => Window {
            bucket: format!("period:{}", p.start.timestamp()),
            resets_at: p.end,
        },
        (QuotaPeriod::BillingMonth, Some(p)) => {
            // The last monthly anniversary of the period start not after now.
            let months = months_between(p.start, now);
            let start = add_months(p.start, months);
            let next = add_months(p.start, months + 1);
            Window {
                bucket: format!("billing_month:{}", start.timestamp()),
                resets_at: Some(p.end.map_or(next, |end| next.min(end))),
            }
        }
        (QuotaPeriod::Month | QuotaPeriod::BillingPeriod | QuotaPeriod::BillingMonth, _) => {
            let (y, m) = (now.year(), now.month());
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Window {
                bucket: format!("month:{y:04}-{m:02}"),
                resets_at: NaiveDate::from_ymd_opt(next.0, next.1, 1).map(midnight),
            }
        }
        (QuotaPeriod::None, _) => Window {
            bucket: "none".to_owned(),
            resets_at: None,
        },
    }
}

/// Whole months from `start` to `now` (0 when `now` is before the first anniversary).
fn months_between(start: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
    let rough = (now.year() - start.year()) * 12 + now.month() as i32 - start.month() as i32;
    let mut months = u32::try_from(rough.max(0)).unwrap_or(0);
    while months > 0 && add_months(start, months) > now {
        months -= 1;
    }
    months
}

/// `t` plus `n` calendar months; a day missing in the target month becomes its last day, as
/// Stripe's billing anchors do.
fn add_months(t: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    t.checked_add_months(chrono::Months::new(n)).unwrap_or(t)
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// One quota as it applies to a subject now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub key: String,
    /// The allowance per window; `None` when the plan in force has no such quota (only a
    /// purchased balance can then be spent).
    pub limit: Option<QuotaLimit>,
    pub period: Option<QuotaPeriod>,
    pub window: Window,
    /// Credits bought for this quota by paid credit packs (refunded packs do not count).
    pub purchased: u64,
}

/// The quotas of the plan in force, plus any quota with purchased credits. Callers with
/// unconditional access (`SAAS=false`, exempt) get every quota of the catalog, unlimited.
/// A `billing_period` quota follows `billing`, the period of the subscription that grants
/// access.
pub fn applied(
    catalog: &Catalog,
    access: &Access,
    purchases: &[PurchaseFacts],
    billing: Option<BillingPeriod>,
    now: DateTime<Utc>,
) -> Vec<Applied> {
    let mut out: Vec<Applied> = Vec::new();
    let unconditional = matches!(access.reason, Reason::SaasDisabled | Reason::Exempt);
    if unconditional {
        for key in catalog.quota_keys() {
            out.push(Applied {
                limit: Some(QuotaLimit::Unlimited(Unlimited)),
                period: Some(QuotaPeriod::None),
                window: window(QuotaPeriod::None, now, None),
                purchased: purchased(catalog, purchases, &key),
                key,
            });
        }
        return out;
    }
    if let Some(plan) = catalog.plan(&access.plan_id) {
        for (key, quota) in &plan.quotas {
            out.push(Applied {
                key: key.clone(),
                limit: Some(quota.limit),
                period: Some(quota.period),
                window: window(quota.period, now, billing),
                purchased: purchased(catalog, purchases, key),
            });
        }
    }
    for key in catalog.quota_keys() {
        let bought = purchased(catalog, purchases, &key);
        if bought > 0 && !out.iter().any(|a| a.key == key) {
            out.push(Applied {
                key,
                limit: None,
                period: None,
                window: window(QuotaPeriod::None, now, None),
                purchased: bought,
            });
        }
    }
    out
}

/// Credits the paid credit packs add to `key`.
fn purchased(catalog: &Catalog, purchases: &[PurchaseFacts], key: &str) -> u64 {
    purchases
        .iter()
        .filter(|p| p.kind == PlanKind::CreditPack && p.status == PurchaseStatus::Paid)
        .filter_map(|p| catalog.plan(&p.plan_id)?.quotas.get(key))
        .map(|q| match q.limit {
            QuotaLimit::Limited(n) => n,
            QuotaLimit::Unlimited(_) => 0,
        })
        .fold(0_u64, u64::saturating_add)
}

/// How much is left: `None` when unlimited.
pub fn remaining(limit: Option<QuotaLimit>, used: u64, balance: u64) -> Option<u64> {
    match limit {
        Some(QuotaLimit::Unlimited(_)) => None,
        Some(QuotaLimit::Limited(l)) => Some(l.saturating_sub(used).saturating_add(balance)),
        None => Some(balance),
    }
}

/// One quota as the subject has it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaStanding {
    pub key: String,
    /// The allowance per period; `None` when the plan in force has no such quota.
    pub limit: Option<QuotaLimit>,
    /// `None` with no allowance.
    pub period: Option<QuotaPeriod>,
    /// Used of the allowance in the current period.
    pub used: u64,
    /// Purchased credits left.
    pub balance: u64,
    /// Allowance left plus the balance; `None` when unlimited.
    pub remaining: Option<u64>,
    /// When the allowance starts again from zero (`None` if never, or with no allowance).
    pub resets_at: Option<DateTime<Utc>>,
}

impl QuotaStanding {
    /// The quota as it applies, with `used` of this window's allowance and `balance_spent` of
    /// the purchased credits.
    pub fn new(a: &Applied, used: u64, balance_spent: u64) -> QuotaStanding {
        let balance = a.purchased.saturating_sub(balance_spent);
        QuotaStanding::of(&a.key, a.limit, a.period, a.window.resets_at, used, balance)
    }

    pub fn of(
        key: &str,
        limit: Option<QuotaLimit>,
        period: Option<QuotaPeriod>,
        resets_at: Option<DateTime<Utc>>,
        used: u64,
        balance: u64,
    ) -> QuotaStanding {
        QuotaStanding {
            key: key.to_owned(),
            limit,
            period: period.filter(|_| limit.is_some()),
            used,
            balance,
            remaining: remaining(limit, used, balance),
            resets_at: resets_at.filter(|_| limit.is_some()),
        }
    }
}

/// Why a consumption was refused (nothing was consumed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// An allowance or credits exist but do not cover the amount.
    Exhausted,
    /// Access stands, but neither the plan nor purchased credits have the quota.
    NotInPlan,
    /// The subject has no access, and no credits for the quota.
    NoAccess,
}

impl QuotaRefusal {
    /// How a refusal under these terms is explained.
    pub fn of(applied: &Applied, has_access: bool) -> QuotaRefusal {
        if applied.limit.is_some() || applied.purchased > 0 {
            QuotaRefusal::Exhausted
        } else if has_access {
            QuotaRefusal::NotInPlan
        } else {
            QuotaRefusal::NoAccess
        }
    }

    /// The stable problem code (also what the ledger records).
    pub fn code(self) -> &'static str {
        match self {
            QuotaRefusal::Exhausted => "quota_exhausted",
            QuotaRefusal::NotInPlan => "quota_not_in_plan",
            QuotaRefusal::NoAccess => "no_access",
        }
    }

    pub fn parse(code: &str) -> Option<QuotaRefusal> {
        [
            QuotaRefusal::Exhausted,
            QuotaRefusal::NotInPlan,
            QuotaRefusal::NoAccess,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// The quota key that counts seats, when a plan limits them that way.
pub const SEATS_QUOTA: &str = "seats";

/// Seats in a subscription or plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    /// `None`: unlimited.
    pub allowed: Option<u64>,
    /// `None` when unknown.
    pub used: Option<u64>,
    pub available: Option<u64>,
}

/// Seats: allowed by the plan's `seats` quota, else by the quantity of the subscription that
/// grants access; used as the caller reports its member count (`members`), else as counted by
/// the `seats` quota. `None` when neither the plan nor a granting subscription speaks of seats.
pub fn seats(
    quotas: &[QuotaStanding],
    granting_quantity: Option<i64>,
    members: Option<u64>,
) -> Option<Seats> {
    let quota = quotas.iter().find(|q| q.key == SEATS_QUOTA);
    let allowed = match quota {
        Some(q) => match q.limit? {
            QuotaLimit::Limited(n) => Some(n),
            QuotaLimit::Unlimited(_) => None,
        },
        None => Some(u64::try_from(granting_quantity?).ok()?),
    };
    let used = members.or(quota.map(|q| q.used));
    Some(Seats {
        allowed,
        used,
        available: match (allowed, used) {
            (Some(a), Some(u)) => Some(a.saturating_sub(u)),
            _ => None,
        },
    })
}

/// What a consumption takes from where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// All of `amount` is granted: first from the periodic allowance, the rest from the
    /// purchased balance.
    Granted {
        from_allowance: u64,
        from_balance: u64,
    },
    /// Nothing is consumed: the allowance and the balance together do not cover `amount`.
    Refused,
}

/// Who asked for a consumption, as its idempotency key's scope: the calling service (its
/// token's subject), the user and the tenant it named. A key is answered once per requester,
/// whichever subject's grant pays: a retry after the user bought a personal plan (so their own
/// subject pays now, not the tenant's) still answers the first decision. Two services, or two
/// users, may use the same key without meeting. A JSON array, so no id can fake another's.
pub fn requester(caller: &str, actor: &Actor) -> String {
    serde_json::json!([
        caller,
        actor.user_id.as_str(),
        actor.tenant_id.as_ref().map(|t| t.as_str())
    ])
    .to_string()
}

/// Whether `amount` fits in what is left of the allowance (`limit`, of which `used` is spent in
/// this window; `None` when the plan has no such quota) plus the purchased `balance`.
/// All or nothing: a consumption is never granted in part.
pub fn decide(amount: u64, limit: Option<QuotaLimit>, used: u64, balance: u64) -> Decision {
    let left = match limit {
        Some(QuotaLimit::Unlimited(_)) => {
            return Decision::Granted {
                from_allowance: amount,
                from_balance: 0,
            }
        }
        Some(QuotaLimit::Limited(l)) => l.saturating_sub(used),
        None => 0,
    };
    let from_allowance = amount.min(left);
    let from_balance = amount - from_allowance;
    if from_balance <= balance {
        Decision::Granted {
            from_allowance,
            from_balance,
        }
    } else {
        Decision::Refused
    }
}

/// The thresholds (percents of `limit`) a consumption of `taken` from the allowance crossed,
/// when `used` of it was used before: each threshold is crossed by exactly one consumption per
/// window, the one that takes the use from below it to at or above it.
pub fn crossed(used: u64, taken: u64, limit: u64, thresholds: &[i32]) -> Vec<i32> {
    if taken == 0 || limit == 0 {
        return Vec::new();
    }
    let (before, after) = (u128::from(used) * 100, u128::from(used + taken) * 100);
    thresholds
        .iter()
        .copied()
        .filter(|t| {
            let mark = u128::from(t.unsigned_abs()) * u128::from(limit);
            *t > 0 && before < mark && after >= mark
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_threshold_is_crossed_by_the_one_consumption_that_reaches_it() {
        // 250 allowed; 80% is 200, 100% is 250.
        assert_eq!(crossed(0, 199, 250, &[80, 100]), Vec::<i32>::new());
        assert_eq!(crossed(199, 1, 250, &[80, 100]), vec![80]);
        assert_eq!(crossed(200, 1, 250, &[80, 100]), Vec::<i32>::new());
        assert_eq!(crossed(150, 100, 250, &[80, 100]), vec![80, 100]);
        assert_eq!(crossed(249, 1, 250, &[80, 100]), vec![100]);
        // Nothing taken from the allowance (credits, a refusal), or no allowance.
        assert_eq!(crossed(199, 0, 250, &[80]), Vec::<i32>::new());
        assert_eq!(crossed(0, 5, 0, &[80]), Vec::<i32>::new());
        // A small allowance: 50% of 3 is 1.5, reached by the second unit.
        assert_eq!(crossed(1, 1, 3, &[50]), vec![50]);
        assert_eq!(crossed(0, 1, 3, &[50]), Vec::<i32>::new());
    }
    use super::*;
    use crate::billing::test_support::{catalog, verdict};

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    const TEN: Option<QuotaLimit> = Some(QuotaLimit::Limited(10));

    #[test]
    fn a_requester_is_the_service_the_user_and_the_tenant_and_nothing_else() {
        use crate::billing::ids::{TenantId, UserId};
        let actor = |user: &str, tenant: Option<&str>| {
            Actor::new(
                UserId::parse(user).unwrap(),
                tenant.map(|t| TenantId::parse(t).unwrap()),
            )
        };
        let alone = requester("svc-a", &actor("u1", None));
        assert_eq!(alone, r#"["svc-a","u1",null]"#);
        assert_eq!(alone, requester("svc-a", &actor("u1", None)), "stable");
        let distinct = [
            alone.clone(),
            requester("svc-b", &actor("u1", None)),
            requester("svc-a", &actor("u2", None)),
            requester("svc-a", &actor("u1", Some("t1"))),
            requester("svc-a", &actor("u1", Some("t2"))),
            // Separators inside a caller cannot make it read as another requester.
            requester(r#"svc-a","u1"#, &actor("t1", None)),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in &distinct[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
    const UNLIMITED: Option<QuotaLimit> = Some(QuotaLimit::Unlimited(Unlimited));

    #[test]
    fn a_day_window_is_the_utc_day_and_resets_at_midnight() {
        let w = window(QuotaPeriod::Day, at(2026, 11, 21, 23), None);
        assert_eq!(w.bucket, "day:2026-11-21");
        assert_eq!(w.resets_at, Some(at(2026, 11, 22, 0)));
        let next = window(QuotaPeriod::Day, at(2026, 11, 22, 0), None);
        assert_ne!(next.bucket, w.bucket);
    }

    #[test]
    fn a_month_window_is_the_calendar_month_also_across_the_year_end() {
        let w = window(QuotaPeriod::Month, at(2026, 11, 30, 23), None);
        assert_eq!(
            (w.bucket.as_str(), w.resets_at),
            ("month:2026-11", Some(at(2026, 12, 1, 0)))
        );
        let december = window(QuotaPeriod::Month, at(2026, 12, 31, 23), None);
        assert_eq!(
            (december.bucket.as_str(), december.resets_at),
            ("month:2026-12", Some(at(2027, 1, 1, 0)))
        );
    }

    #[test]
    fn a_billing_period_window_follows_the_subscription_period() {
        let period = BillingPeriod {
            start: at(2026, 11, 3, 10),
            end: Some(at(2026, 12, 3, 10)),
        };
        let w = window(
            QuotaPeriod::BillingPeriod,
            at(2026, 11, 21, 0),
            Some(period),
        );
        assert_eq!(
            w.bucket,
            format!("period:{}", at(2026, 11, 3, 10).timestamp())
        );
        assert_eq!(w.resets_at, Some(at(2026, 12, 3, 10)));
        // The same period (a duplicate renewal) is the same window; a new one is not.
        let again = window(
            QuotaPeriod::BillingPeriod,
            at(2026, 11, 25, 0),
            Some(period),
        );
        assert_eq!(again, w);
        let renewed = BillingPeriod {
            start: at(2026, 12, 3, 10),
            end: Some(at(2027, 1, 3, 10)),
        };
        assert_ne!(
            window(
                QuotaPeriod::BillingPeriod,
                at(2026, 12, 3, 11),
                Some(renewed)
            )
            .bucket,
            w.bucket
        );
    }

    #[test]
    fn a_billing_period_quota_without_a_period_counts_by_month() {
        for period in [QuotaPeriod::BillingPeriod, QuotaPeriod::BillingMonth] {
            let w = window(period, at(2026, 11, 21, 0), None);
            assert_eq!(w.bucket, "month:2026-11");
        }
    }

    #[test]
    fn a_billing_month_restarts_monthly_from_a_yearly_periods_start() {
        let yearly = BillingPeriod {
            start: at(2026, 1, 31, 10),
            end: Some(at(2027, 1, 31, 10)),
        };
        let first = window(QuotaPeriod::BillingMonth, at(2026, 2, 15, 0), Some(yearly));
        assert_eq!(
            first.bucket,
            format!("billing_month:{}", at(2026, 1, 31, 10).timestamp())
        );
        // February has no 31st: the anniversary is its last day, as Stripe anchors it.
        assert_eq!(first.resets_at, Some(at(2026, 2, 28, 10)));
        let march = window(QuotaPeriod::BillingMonth, at(2026, 3, 30, 0), Some(yearly));
        assert_eq!(
            march.bucket,
            format!("billing_month:{}", at(2026, 2, 28, 10).timestamp())
        );
        assert_eq!(march.resets_at, Some(at(2026, 3, 31, 10)));
        let last = window(QuotaPeriod::BillingMonth, at(2027, 1, 20, 0), Some(yearly));
        assert_eq!(
            last.bucket,
            format!("billing_month:{}", at(2026, 12, 31, 10).timestamp())
        );
        assert_eq!(last.resets_at, Some(at(2027, 1, 31, 10)));
        // Just before an anniversary still counts in the month before it.
        let edge = window(QuotaPeriod::BillingMonth, at(2026, 5, 31, 9), Some(yearly));
        assert_eq!(
            edge.bucket,
            format!("billing_month:{}", at(2026, 4, 30, 10).timestamp())
        );
    }

    #[test]
    fn a_billing_month_of_a_monthly_period_is_the_period_and_restarts_on_renewal() {
        let monthly = BillingPeriod {
            start: at(2026, 11, 3, 10),
            end: Some(at(2026, 12, 3, 10)),
        };
        let w = window(
            QuotaPeriod::BillingMonth,
            at(2026, 11, 21, 0),
            Some(monthly),
        );
        assert_eq!(
            w.bucket,
            format!("billing_month:{}", at(2026, 11, 3, 10).timestamp())
        );
        assert_eq!(w.resets_at, Some(at(2026, 12, 3, 10)));
        let renewed = BillingPeriod {
            start: at(2026, 12, 3, 10),
            end: Some(at(2027, 1, 3, 10)),
        };
        let next = window(
            QuotaPeriod::BillingMonth,
            at(2026, 12, 3, 11),
            Some(renewed),
        );
        assert_ne!(next.bucket, w.bucket);
    }

    #[test]
    fn a_none_window_never_resets() {
        let w = window(QuotaPeriod::None, at(2026, 11, 21, 0), None);
        assert_eq!((w.bucket.as_str(), w.resets_at), ("none", None));
        assert_eq!(window(QuotaPeriod::None, at(2030, 1, 1, 0), None), w);
    }

    #[test]
    fn consumption_within_the_allowance_takes_from_it() {
        assert_eq!(
            decide(3, TEN, 5, 0),
            Decision::Granted {
                from_allowance: 3,
                from_balance: 0
            }
        );
        assert_eq!(
            decide(5, TEN, 5, 0),
            Decision::Granted {
                from_allowance: 5,
                from_balance: 0
            }
        );
    }

    #[test]
    fn consumption_is_all_or_nothing() {
        assert_eq!(decide(6, TEN, 5, 0), Decision::Refused);
        assert_eq!(decide(1, TEN, 10, 0), Decision::Refused);
        assert_eq!(decide(1, TEN, 12, 0), Decision::Refused);
    }

    #[test]
    fn the_balance_is_spent_after_the_allowance() {
        assert_eq!(
            decide(8, TEN, 5, 100),
            Decision::Granted {
                from_allowance: 5,
                from_balance: 3
            }
        );
        assert_eq!(
            decide(4, TEN, 10, 4),
            Decision::Granted {
                from_allowance: 0,
                from_balance: 4
            }
        );
        assert_eq!(decide(5, TEN, 10, 4), Decision::Refused);
    }

    #[test]
    fn without_the_quota_in_the_plan_only_the_balance_counts() {
        assert_eq!(
            decide(2, None, 0, 2),
            Decision::Granted {
                from_allowance: 0,
                from_balance: 2
            }
        );
        assert_eq!(decide(3, None, 0, 2), Decision::Refused);
    }

    #[test]
    fn unlimited_grants_everything_from_the_allowance() {
        assert_eq!(
            decide(u64::MAX, UNLIMITED, u64::MAX, 0),
            Decision::Granted {
                from_allowance: u64::MAX,
                from_balance: 0
            }
        );
    }

    #[test]
    fn remaining_adds_the_balance_to_what_is_left_of_the_allowance() {
        assert_eq!(remaining(TEN, 4, 0), Some(6));
        assert_eq!(remaining(TEN, 14, 3), Some(3));
        assert_eq!(remaining(TEN, 4, 3), Some(9));
        assert_eq!(remaining(None, 0, 7), Some(7));
        assert_eq!(remaining(UNLIMITED, 1_000, 0), None);
    }

    fn access(plan: &str, reason: Reason) -> Access {
        verdict(reason != Reason::Free, reason, plan)
    }

    fn pack(status: PurchaseStatus) -> PurchaseFacts {
        PurchaseFacts {
            plan_id: "credits".into(),
            kind: PlanKind::CreditPack,
            status,
            purchased_at: at(2026, 11, 1, 0),
        }
    }

    fn keys(applied: &[Applied]) -> Vec<(&str, Option<QuotaLimit>, u64)> {
        applied
            .iter()
            .map(|a| (a.key.as_str(), a.limit, a.purchased))
            .collect()
    }

    #[test]
    fn the_plan_in_force_gives_its_quotas_in_their_windows() {
        let now = at(2026, 11, 21, 12);
        let period = BillingPeriod {
            start: at(2026, 11, 3, 10),
            end: Some(at(2026, 12, 3, 10)),
        };
        let pro = applied(
            &catalog(),
            &access("pro", Reason::Active),
            &[],
            Some(period),
            now,
        );
        assert_eq!(
            keys(&pro),
            [
                ("credits", Some(QuotaLimit::Limited(100)), 0),
                ("generations", Some(QuotaLimit::Limited(250)), 0)
            ]
        );
        assert_eq!(pro[0].window.bucket, "day:2026-11-21");
        assert_eq!(
            pro[1].window,
            window(QuotaPeriod::BillingPeriod, now, Some(period))
        );

        let free = applied(&catalog(), &access("free", Reason::Free), &[], None, now);
        assert_eq!(keys(&free), [("credits", Some(QuotaLimit::Limited(10)), 0)]);
    }

    #[test]
    fn paid_credit_packs_add_to_the_balance_and_refunded_ones_do_not() {
        let now = at(2026, 11, 21, 12);
        let packs = [
            pack(PurchaseStatus::Paid),
            pack(PurchaseStatus::Paid),
            pack(PurchaseStatus::Refunded),
            pack(PurchaseStatus::Disputed),
        ];
        let free = applied(&catalog(), &access("free", Reason::Free), &packs, None, now);
        assert_eq!(
            keys(&free),
            [("credits", Some(QuotaLimit::Limited(10)), 200)]
        );
        // A plan without the quota still lets the purchased balance be spent.
        let basic = applied(
            &catalog(),
            &access("basic", Reason::Active),
            &packs,
            None,
            now,
        );
        assert_eq!(keys(&basic), [("credits", None, 200)]);
        let none = applied(&catalog(), &access("basic", Reason::Active), &[], None, now);
        assert_eq!(keys(&none), []);
    }

    #[test]
    fn unconditional_access_makes_every_quota_unlimited() {
        let now = at(2026, 11, 21, 12);
        for reason in [Reason::Exempt, Reason::SaasDisabled] {
            let all = applied(&catalog(), &access("lifetime", reason), &[], None, now);
            assert_eq!(
                keys(&all),
                [("credits", UNLIMITED, 0), ("generations", UNLIMITED, 0)],
                "{reason:?}"
            );
        }
    }

    fn applied_with(limit: Option<QuotaLimit>, purchased: u64) -> Applied {
        Applied {
            key: "credits".into(),
            limit,
            period: limit.map(|_| QuotaPeriod::Day),
            window: window(QuotaPeriod::Day, at(2026, 11, 21, 12), None),
            purchased,
        }
    }

    #[test]
    fn a_refusal_says_exhausted_not_in_plan_or_no_access() {
        assert_eq!(
            QuotaRefusal::of(&applied_with(TEN, 0), true),
            QuotaRefusal::Exhausted
        );
        assert_eq!(
            QuotaRefusal::of(&applied_with(None, 5), false),
            QuotaRefusal::Exhausted
        );
        assert_eq!(
            QuotaRefusal::of(&applied_with(None, 0), true),
            QuotaRefusal::NotInPlan
        );
        assert_eq!(
            QuotaRefusal::of(&applied_with(None, 0), false),
            QuotaRefusal::NoAccess
        );
        for r in [
            QuotaRefusal::Exhausted,
            QuotaRefusal::NotInPlan,
            QuotaRefusal::NoAccess,
        ] {
            assert_eq!(QuotaRefusal::parse(r.code()), Some(r));
        }
        assert_eq!(QuotaRefusal::parse("quota_unknown"), None);
    }

    #[test]
    fn a_standing_adds_what_is_left_and_hides_period_and_reset_without_an_allowance() {
        let standing = QuotaStanding::new(&applied_with(TEN, 30), 4, 5);
        assert_eq!(
            (standing.used, standing.balance, standing.remaining),
            (4, 25, Some(31))
        );
        assert_eq!(standing.resets_at, Some(at(2026, 11, 22, 0)));
        assert_eq!(standing.period, Some(QuotaPeriod::Day));
        let credits_only = QuotaStanding::of(
            "credits",
            None,
            Some(QuotaPeriod::Day),
            Some(at(2026, 11, 22, 0)),
            0,
            7,
        );
        assert_eq!(
            (
                credits_only.period,
                credits_only.resets_at,
                credits_only.remaining
            ),
            (None, None, Some(7))
        );
        let unlimited = QuotaStanding::new(&applied_with(UNLIMITED, 0), 1_000, 0);
        assert_eq!(unlimited.remaining, None);
    }

    #[test]
    fn seats_come_from_the_seats_quota_else_the_granting_quantity() {
        let seat_quota =
            |limit| QuotaStanding::of(SEATS_QUOTA, limit, Some(QuotaPeriod::None), None, 3, 0);
        let by_quota = seats(&[seat_quota(TEN)], Some(50), None).unwrap();
        assert_eq!(
            (by_quota.allowed, by_quota.used, by_quota.available),
            (Some(10), Some(3), Some(7))
        );
        let reported = seats(&[seat_quota(TEN)], None, Some(12)).unwrap();
        assert_eq!((reported.used, reported.available), (Some(12), Some(0)));
        let unlimited = seats(&[seat_quota(UNLIMITED)], None, None).unwrap();
        assert_eq!((unlimited.allowed, unlimited.available), (None, None));
        let by_quantity = seats(&[], Some(5), Some(2)).unwrap();
        assert_eq!(
            (by_quantity.allowed, by_quantity.used, by_quantity.available),
            (Some(5), Some(2), Some(3))
        );
        assert_eq!(seats(&[], Some(5), None).unwrap().used, None);
        assert_eq!(
            seats(&[], None, Some(2)),
            None,
            "no plan nor subscription speaks of seats"
        );
        let no_limit = QuotaStanding::of(SEATS_QUOTA, None, None, None, 0, 4);
        assert_eq!(
            seats(&[no_limit], Some(5), None),
            None,
            "a seats balance without an allowance"
        );
    }
}
