//! The billing facts Tollgate stores of a subject: what access, quotas and the API read, and
//! nothing else. `db::snapshots` keeps them (versioned) in one row per subject, and the
//! snapshot cache holds them parsed; `mirror` decides them from what Stripe holds.

use chrono::{DateTime, Utc};

use super::catalog::{Interval, PlanKind};

/// Stripe subscription statuses, as Tollgate stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Active,
    Trialing,
    PastDue,
    Unpaid,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Paused,
    /// A status this version does not know; grants nothing.
    Other(String),
}

impl SubscriptionStatus {
    pub fn parse(s: &str) -> SubscriptionStatus {
        match s {
            "active" => Self::Active,
            "trialing" => Self::Trialing,
            "past_due" => Self::PastDue,
            "unpaid" => Self::Unpaid,
            "canceled" => Self::Canceled,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "paused" => Self::Paused,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The subscription still stands: it is the one to manage, and a new one would bill twice.
    /// (`incomplete` does not: its first payment failed, and checking out again is the way on.)
    pub fn stands(&self) -> bool {
        matches!(
            self,
            Self::Active | Self::Trialing | Self::PastDue | Self::Unpaid | Self::Paused
        )
    }

    /// The current period is being paid for: refunding or disputing its payment takes it back,
    /// and a scheduled end that has passed ends it.
    pub fn pays(&self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }

    /// A payment of the current period failed: the grace period runs from the first failure.
    pub fn delinquent(&self) -> bool {
        matches!(self, Self::PastDue | Self::Unpaid)
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Trialing => "trialing",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
            Self::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseStatus {
    Paid,
    Refunded,
    Disputed,
}

impl PurchaseStatus {
    pub fn parse(s: &str) -> Option<PurchaseStatus> {
        match s {
            "paid" => Some(Self::Paid),
            "refunded" => Some(Self::Refunded),
            "disputed" => Some(Self::Disputed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Refunded => "refunded",
            Self::Disputed => "disputed",
        }
    }
}

/// What access needs to know of one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionFacts {
    pub id: String,
    /// `None` when the subscription's price is not in the catalog (it then grants nothing).
    pub plan_id: Option<String>,
    pub status: SubscriptionStatus,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    /// When the first payment of the current period failed (start of the grace period).
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// The payment for the current period was refunded or is disputed: the period it paid for
    /// grants nothing (a later period's paid invoice clears it).
    pub period_payment_revoked: Option<PurchaseStatus>,
    pub created_at: DateTime<Utc>,
    /// What the API shows of it.
    pub price_interval: Option<Interval>,
    pub quantity: i64,
    /// For a tenant's subscription: the member who may manage it.
    pub manager_user_id: Option<String>,
    /// Stripe's "pause payment collection" (Dashboard or API): the status stays `active`, but
    /// nothing is collected while it is in force.
    pub pause_collection: Option<CollectionPause>,
    /// A change Stripe will make when the period ends (a downgrade kept to the period's end).
    pub scheduled_change: Option<ScheduledChange>,
}

/// A plan change Stripe will make at a set time: the next phase of the subscription's schedule
/// (a downgrade made through Tollgate, the portal or the Dashboard that waits for the period
/// to end). Until `at` the subscription keeps its plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScheduledChange {
    pub price_id: String,
    /// `None` when the catalog does not know the price.
    pub plan_id: Option<String>,
    pub price_interval: Option<Interval>,
    pub quantity: i64,
    pub at: DateTime<Utc>,
}

/// A subscription's payment collection paused on Stripe (`pause_collection`): its invoices are
/// kept as drafts, marked uncollectible or voided (`behavior`) until `resumes_at`, or until it
/// is lifted when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionPause {
    /// `keep_as_draft`, `mark_uncollectible` or `void`, as Stripe says.
    pub behavior: String,
    pub resumes_at: Option<DateTime<Utc>>,
}

impl CollectionPause {
    /// Whether nothing is collected at `now` (Stripe lifts the pause at `resumes_at`).
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.resumes_at.is_none_or(|at| now < at)
    }
}

/// What access needs to know of one one-time purchase.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseFacts {
    pub plan_id: String,
    pub kind: PlanKind,
    pub status: PurchaseStatus,
    pub purchased_at: DateTime<Utc>,
}

/// A plan given without a payment (a comp, a partner deal, a test user's plan): it grants its
/// plan until `until` (for ever without one). Revoked grants are not facts.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantFacts {
    pub id: String,
    pub plan_id: String,
    pub until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Everything stored of one subject that access and quotas evaluate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubjectFacts {
    /// Newest first.
    pub subscriptions: Vec<SubscriptionFacts>,
    /// Newest first.
    pub purchases: Vec<PurchaseFacts>,
    /// Standing grants (not revoked; possibly ended), newest first.
    pub grants: Vec<GrantFacts>,
}

impl SubjectFacts {
    pub fn subscription(&self, id: &str) -> Option<&SubscriptionFacts> {
        self.subscriptions.iter().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_answers_whether_it_stands_pays_and_is_delinquent() {
        use SubscriptionStatus as S;
        // (status, stands, pays, delinquent)
        let table = [
            (S::Active, true, true, false),
            (S::Trialing, true, true, false),
            (S::PastDue, true, true, true),
            (S::Unpaid, true, false, true),
            (S::Paused, true, false, false),
            (S::Incomplete, false, false, false),
            (S::IncompleteExpired, false, false, false),
            (S::Canceled, false, false, false),
            (S::Other("future_status".into()), false, false, false),
        ];
        for (status, stands, pays, delinquent) in table {
            assert_eq!(
                (status.stands(), status.pays(), status.delinquent()),
                (stands, pays, delinquent),
                "{status:?}"
            );
            assert_eq!(SubscriptionStatus::parse(status.as_str()), status);
        }
    }
}
