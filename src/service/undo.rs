//! Undoing a second subscription of one subject (`billing.second_subscription =
//! "cancel_and_refund"`): the sync that finds one queues it in its own transaction
//! (`db::undos`); this worker, in every replica, refunds every payment it took, cancels it at
//! once on Stripe, re-reads the customer and records what it did. Each step is safe to repeat
//! (refunds carry idempotency keys; a canceled subscription is not canceled again), so a crash
//! at any point only delays it.

use std::sync::Arc;
use std::time::Duration;

use crate::billing::facts::SubscriptionStatus;
use crate::db::{self, audit, undos};
use crate::state::AppState;
use crate::stripe::{CustomerId, StripeGateway, SubscriptionId};

use super::sync::{sync_customer, SyncCause};

/// The comment Stripe records on the cancellation.
const COMMENT: &str = "a second subscription of one subject (two checkouts paid at once): \
                       canceled and refunded by Tollgate";
const SOURCE: &str = "worker:second_subscription";
/// How long a worker's claim lasts: the Stripe calls with their retries, and a margin.
const LEASE: Duration = Duration::from_secs(120);
/// How often the worker looks for due work without being woken.
const POLL: Duration = Duration::from_secs(2);

/// Refunds, cancels and re-reads; answers the payment intents refunded.
async fn undo(
    state: &AppState,
    stripe: &StripeGateway,
    row: &undos::UndoRow,
) -> anyhow::Result<Vec<String>> {
    let subscription = SubscriptionId::parse(&row.stripe_subscription_id)?;
    let customer = CustomerId::parse(&row.stripe_customer_id)?;
    let refunded = stripe.refund_subscription(&subscription).await?;
    let standing = stripe
        .customer_subscriptions(&customer)
        .await?
        .into_iter()
        .find(|s| s.id == row.stripe_subscription_id)
        .is_some_and(|s| s.status != SubscriptionStatus::Canceled);
    if standing {
        stripe.cancel_now(&subscription, COMMENT).await?;
    }
    sync_customer(state, stripe, &customer, SyncCause::call(SOURCE)).await?;
    Ok(refunded)
}

/// The wait after failed attempt number `attempts`: 5 s doubling, at most an hour.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(5)
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(Duration::from_secs(3600))
}

/// The worker: runs for the life of the process, in every replica, when Stripe is configured
/// and `billing.second_subscription` is `cancel_and_refund`.
pub async fn run_worker(state: Arc<AppState>) {
    let Some(stripe) = state.stripe.clone() else {
        return;
    };
    loop {
        let now = state.now();
        let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let claimed = state
            .db
            .run(move |conn| undos::claim(conn, now, lease_until, 8))
            .await;
        let rows = match claimed {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming second subscriptions to undo failed; retrying");
                Vec::new()
            }
        };
        for row in &rows {
            let result = undo(&state, &stripe, row).await;
            let now = state.now();
            let row = row.clone();
            let outcome = match &result {
                Ok(_) => "done",
                Err(_) => "retry",
            };
            metrics::counter!("tollgate_second_subscriptions_undone_total", "outcome" => outcome)
                .increment(1);
            let recorded = match result {
                Ok(refunded) => {
                    tracing::warn!(subject = %row.subject, subscription = %row.stripe_subscription_id, beside = %row.beside, ?refunded, "a second subscription was canceled and refunded");
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
                                        action: "second_subscription_undone",
                                        changes: serde_json::json!({
                                            "beside": row.beside,
                                            "refunded_payment_intents": refunded,
                                        }),
                                        source: SOURCE,
                                    },
                                    now,
                                )?;
                                undos::done(conn, &row.stripe_subscription_id, now)
                            })
                        })
                        .await
                }
                Err(e) => {
                    let attempts = u32::try_from(row.attempts).unwrap_or(0) + 1;
                    let wait = backoff(attempts);
                    tracing::warn!(subscription = %row.stripe_subscription_id, attempts, retry_in_seconds = wait.as_secs(), error = %format!("{e:#}"), "undoing a second subscription failed; retrying");
                    let due = now + chrono::Duration::from_std(wait).unwrap_or_default();
                    let error: String = format!("{e:#}").chars().take(500).collect();
                    state
                        .db
                        .run(move |conn| {
                            undos::retry_at(
                                conn,
                                &row.stripe_subscription_id,
                                i32::try_from(attempts).unwrap_or(i32::MAX),
                                due,
                                &error,
                            )
                        })
                        .await
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(error = %format!("{e:#}"), "recording an undone second subscription failed; its lease runs out and it is done again");
            }
        }
        if rows.is_empty() {
            let _ = tokio::time::timeout(POLL, state.undo_wake.notified()).await;
        }
    }
}
