//! What a payment still pays for after refunds and disputes.
//!
//! Stripe keeps `charge.disputed = true` after a dispute is won, so the dispute's own status
//! decides; a refund is final.

use super::facts::PurchaseStatus;

/// When a refund takes back what its payment paid for (`billing.partial_refund_revokes_over_percent`).
/// A full refund always does; a partial one when more than `partial_revokes_over_percent` of
/// the amount was refunded (100, the default: never; 0: any partial refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefundPolicy {
    pub partial_revokes_over_percent: u8,
}

impl Default for RefundPolicy {
    fn default() -> Self {
        RefundPolicy {
            partial_revokes_over_percent: 100,
        }
    }
}

impl RefundPolicy {
    /// Whether a charge of `amount` with `refunded_amount` refunded (`fully`: Stripe says all
    /// of it) no longer pays for what it bought.
    pub fn revokes(self, amount: i64, refunded_amount: i64, fully: bool) -> bool {
        fully
            || (amount > 0
                && refunded_amount > 0
                && i128::from(refunded_amount) * 100
                    > i128::from(amount) * i128::from(self.partial_revokes_over_percent))
    }
}

/// The standing of what a charge paid for, from Stripe's view of the charge and of its newest
/// dispute (`None` when Stripe lists none).
///
/// - Refunded as [`RefundPolicy::revokes`] says (`refunded`): `Refunded`.
/// - A chargeback that is open (`needs_response`, `under_review`) or `lost`: `Disputed`.
/// - A dispute that was `won` or `prevented`, or an inquiry (`warning_*`, where no funds
///   were withdrawn): still `Paid`.
/// - `disputed` with no dispute listed, or a status this version does not know: `Disputed`
///   (Stripe says the money is contested; we do not guess it is safe).
pub fn standing(refunded: bool, disputed: bool, dispute_status: Option<&str>) -> PurchaseStatus {
    let contested = disputed
        && match dispute_status {
            Some(
                "won"
                | "prevented"
                | "warning_needs_response"
                | "warning_under_review"
                | "warning_closed",
            ) => false,
            Some(_) | None => true,
        };
    if contested {
        PurchaseStatus::Disputed
    } else if refunded {
        PurchaseStatus::Refunded
    } else {
        PurchaseStatus::Paid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_refund_revokes_only_above_the_configured_share() {
        let never = RefundPolicy::default();
        assert!(never.revokes(1000, 1000, true), "a full refund always");
        assert!(!never.revokes(1000, 999, false));
        let half = RefundPolicy {
            partial_revokes_over_percent: 50,
        };
        assert!(
            !half.revokes(1000, 500, false),
            "exactly half is not more than half"
        );
        assert!(half.revokes(1000, 501, false));
        assert!(!half.revokes(1000, 0, false));
        let any = RefundPolicy {
            partial_revokes_over_percent: 0,
        };
        assert!(any.revokes(1000, 1, false));
        assert!(
            !any.revokes(1000, 0, false),
            "nothing refunded revokes nothing"
        );
        assert!(!any.revokes(0, 0, false), "a free charge");
    }

    #[test]
    fn a_plain_payment_stands() {
        assert_eq!(standing(false, false, None), PurchaseStatus::Paid);
    }

    #[test]
    fn a_full_refund_revokes_and_a_won_dispute_does_not_undo_it() {
        assert_eq!(standing(true, false, None), PurchaseStatus::Refunded);
        assert_eq!(standing(true, true, Some("won")), PurchaseStatus::Refunded);
    }

    #[test]
    fn open_and_lost_chargebacks_revoke_won_and_prevented_ones_restore() {
        for status in ["needs_response", "under_review", "lost"] {
            assert_eq!(
                standing(false, true, Some(status)),
                PurchaseStatus::Disputed,
                "{status}"
            );
        }
        for status in ["won", "prevented"] {
            assert_eq!(
                standing(false, true, Some(status)),
                PurchaseStatus::Paid,
                "{status}"
            );
        }
    }

    #[test]
    fn inquiries_withdraw_no_funds_and_revoke_nothing() {
        for status in [
            "warning_needs_response",
            "warning_under_review",
            "warning_closed",
        ] {
            assert_eq!(
                standing(false, true, Some(status)),
                PurchaseStatus::Paid,
                "{status}"
            );
        }
    }

    #[test]
    fn a_dispute_flag_without_a_known_outcome_revokes() {
        assert_eq!(standing(false, true, None), PurchaseStatus::Disputed);
        assert_eq!(
            standing(false, true, Some("some_future_status")),
            PurchaseStatus::Disputed
        );
    }

    #[test]
    fn a_dispute_status_without_the_flag_changes_nothing() {
        assert_eq!(standing(false, false, Some("lost")), PurchaseStatus::Paid);
    }
}
