//! What a payment still pays for after refunds and disputes.
//!
//! Stripe keeps `charge.disputed = true` after a dispute is won, so the dispute's own status
//! decides; a refund is final.

use super::facts::PurchaseStatus;

/// The standing of what a charge paid for, from Stripe's view of the charge and of its newest
/// dispute (`None` when Stripe lists none).
///
/// - Fully refunded: `Refunded` (a partial refund revokes nothing).
/// - A chargeback that is open (`needs_response`, `under_review`) or `lost`: `Disputed`.
/// - A dispute that was `won` or `prevented`, or an inquiry (`warning_*`, where no funds
///   were withdrawn): still `Paid`.
/// - `disputed` with no dispute listed, or a status this version does not know: `Disputed`
///   (Stripe says the money is contested; we do not guess it is safe).
pub fn standing(
    fully_refunded: bool,
    disputed: bool,
    dispute_status: Option<&str>,
) -> PurchaseStatus {
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
    } else if fully_refunded {
        PurchaseStatus::Refunded
    } else {
        PurchaseStatus::Paid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
