//! Remedies a sync decided and queued in its own transaction (`db::remedies`), done on Stripe by
//! this worker in every replica:
//!
//! - a second subscription of one subject (`billing.second_subscription =
//!   "cancel_and_refund"`): every payment it took is refunded, it is canceled at once;
//! - an upgrade whose invoice was refunded: the subscription goes back to the price and seats
//!   it had before, prorating nothing (the refund already returned the difference).
//!
//! Then the customer is re-read and what was done is audited. Each step is safe to repeat
//! (refunds carry idempotency keys; a canceled subscription is not canceled again; a price
//! already back is not moved), so a crash at any point only delays it.

use std::sync::Arc;
use std::time::Duration;

use crate::billing::change::{ChangeBilling, Direction, Proration};
use crate::billing::facts::SubscriptionStatus;
use crate::db::remedies::{self, Remedy, RemedyRow};
use crate::db::{self, audit};
use crate::state::AppState;
use crate::stripe::budget::Priority;
use crate::stripe::{CustomerId, StripeGateway, SubscriptionId};

use super::sync::{sync_customer, SyncCause};

/// The comment Stripe records on the cancellation of a second subscription.
const COMMENT: &str = "a second subscription of one subject (two checkouts paid at once): \
                       canceled and refunded by Tollgate";
const SOURCE: &str = "worker:remedies";
/// How long a worker's claim lasts: the Stripe calls with their retries, and a margin.
const LEASE: Duration = Duration::from_secs(120);
/// How often the worker looks for due work without being woken.
const POLL: Duration = Duration::from_secs(2);

/// What was done, for the audit row: its action and what it says.
type Done = (&'static str, serde_json::Value);

/// Does the remedy on Stripe and re-reads the customer.
async fn perform(
    state: &AppState,
    stripe: &StripeGateway,
    row: &RemedyRow,
    remedy: &Remedy,
) -> anyhow::Result<Done> {
    let subscription = SubscriptionId::parse(&row.stripe_subscription_id)?;
    let customer = CustomerId::parse(&row.stripe_customer_id)?;
    let current = stripe
        .customer_subscriptions(&customer)
        .await?
        .into_iter()
        .find(|s| s.id == row.stripe_subscription_id);
    let done = match remedy {
        Remedy::SecondSubscription { beside } => {
            let refunded = stripe.refund_subscription(&subscription).await?;
            if current.is_some_and(|s| s.status != SubscriptionStatus::Canceled) {
                stripe.cancel_now(&subscription, COMMENT).await?;
            }
            (
                "second_subscription_undone",
                serde_json::json!({"beside": beside, "refunded_payment_intents": refunded}),
            )
        }
        Remedy::RevertUpgrade {
            invoice_id,
            price_id,
            quantity,
        } => {
            // Only what still stands is moved: a subscription that ended, or already holds the
            // price and seats, is left as it is.
            let moved = current.as_ref().is_some_and(|s| {
                s.status.stands()
                    && (s.price_id.as_deref() != Some(price_id) || s.quantity != *quantity)
            });
            if moved {
                let billing = ChangeBilling {
                    direction: Direction::Downgrade,
                    proration: Proration::None,
                    only_when_paid: false,
                    at_period_end: false,
                };
                stripe
                    .change_price(&subscription, price_id, Some(*quantity), billing)
                    .await?;
            }
            (
                "upgrade_reverted",
                serde_json::json!({
                    "invoice": invoice_id,
                    "from_price": current.as_ref().and_then(|s| s.price_id.clone()),
                    "from_quantity": current.as_ref().map(|s| s.quantity),
                    "price": price_id,
                    "quantity": quantity,
                    "moved": moved,
                }),
            )
        }
    };
    sync_customer(state, stripe, &customer, SyncCause::call(SOURCE)).await?;
    Ok(done)
}

/// The wait after failed attempt number `attempts`: 5 s doubling, at most an hour.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(Duration::from_secs(3600))
}

/// The worker: runs for the life of the process, in every replica, when Stripe is configured.
/// Its Stripe requests are background work (`stripe.background_share` of the budget).
pub async fn run_worker(state: Arc<AppState>) {
    Priority::Webhooks.scope(work(state)).await
}

async fn work(state: Arc<AppState>) {
    let Some(stripe) = state.stripe.clone() else {
        return;
    };
    loop {
        let now = state.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let claimed = state
            .db
            .run(move |conn| remedies::claim(conn, now, lease_until, 8))
            .await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming subscription remedies failed; retrying");
                Vec::new()
            }
        };
        for row in &rows {
            let Some(remedy) = row.remedy() else {
                // Written by a newer version: left for it.
                tracing::warn!(id = %row.id, kind = %row.kind, "a subscription remedy this version does not know; left pending");
                continue;
            };
            let result = perform(&state, &stripe, row, &remedy).await;
            let now = state.now();
            let row = row.clone();
            let outcome = match &result {
                Ok(_) => "done",
                Err(_) => "retry",
            };
            metrics::counter!("tollgate_subscription_remedies_total", "remedy" => remedy.kind(), "outcome" => outcome)
                .increment(1);
            let recorded = match result {
                Ok((action, changes)) => {
                    tracing::warn!(subject = %row.subject, subscription = %row.stripe_subscription_id, action, %changes, "a subscription was remedied on Stripe");
                    state
                        .db
                        .run(move |conn| {
                            db::write_transaction(conn, |conn| {
                                audit::record(
                                    conn,
                                    audit::Entry {
                                        subject: &row.subject,
                                        entity: "subscription",
                                        entity_id: &row.stripe_subscription_id,
                                        action,
                                        changes,
                                        source: SOURCE,
                                    },
                                    now,
                                )?;
                                remedies::done(conn, &row.id, now)
                            })
                        })
                        .await
                }
                Err(e) => {
                    let attempts = u32::try_from(row.attempts).unwrap_or(0) + 1;
                    let wait = backoff(attempts);
                    tracing::warn!(id = %row.id, subscription = %row.stripe_subscription_id, attempts, retry_in_seconds = wait.as_secs(), error = %format!("{e:#}"), "remedying a subscription on Stripe failed; retrying");
                    let due = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    let error: String = format!("{e:#}").chars().take(500).collect();
                    state
                        .db
                        .run(move |conn| {
                            remedies::retry_at(
                                conn,
                                &row.id,
                                i32::try_from(attempts).unwrap_or(i32::MAX),
                                due,
                                &error,
                            )
                        })
                        .await
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %format!("{e:#}"), "recording a remedied subscription failed; its lease runs out and it is done again");
            }
        }
        if rows.is_empty() {
            let _ = tokio::time::timeout(POLL, state.remedy_wake.notified()).await;
        }
    }
}
