//! Reconciliation: re-read every customer (or one) from Stripe and repair what drifted, for
//! events that were missed or never sent. `tollgate sync`, `POST /v1/admin/sync` and the
//! in-service schedule all run this; the schedule runs on one replica at a time.

use std::time::Duration;

use crate::billing::subject::Subject;
use crate::db::customers;
use crate::state::AppState;
use crate::stripe::{CustomerId, StripeGateway};

use super::sync::{sync_customer, SyncCause, SyncOutcome};

/// What one reconciliation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Customers re-read from Stripe.
    pub customers: usize,
    /// Customers whose stored state differed from Stripe's (now repaired).
    pub drifted: usize,
    /// Stored records changed.
    pub changes: usize,
    /// Customers that could not be re-read (logged; the next run retries them).
    pub failed: usize,
}

impl ReconcileReport {
    fn add(&mut self, outcome: anyhow::Result<SyncOutcome>, customer: &str) {
        self.customers += 1;
        match outcome {
            Ok(SyncOutcome::Synced { changes, .. }) => {
                self.changes += changes;
                self.drifted += usize::from(changes > 0);
            }
            Ok(_) => {}
            Err(e) => {
                self.failed += 1;
                tracing::warn!(customer, error = %e, "reconciliation of a customer failed");
            }
        }
    }
}

const PAGE: i64 = 200;

/// Re-reads one subject's customer; `None` when the subject has no Stripe customer.
pub async fn reconcile_subject(
    state: &AppState,
    stripe: &StripeGateway,
    subject: &Subject,
) -> anyhow::Result<Option<ReconcileReport>> {
    let s = subject.clone();
    let Some(customer_id) = state
        .db
        .run(move |conn| customers::find(conn, &s))
        .await?
        .and_then(|c| c.stripe_customer_id)
    else {
        return Ok(None);
    };
    let mut report = ReconcileReport::default();
    report.add(sync(state, stripe, &customer_id).await, &customer_id);
    record_metrics(&report);
    Ok(Some(report))
}

async fn sync(
    state: &AppState,
    stripe: &StripeGateway,
    customer_id: &str,
) -> anyhow::Result<SyncOutcome> {
    let customer_id = CustomerId::parse(customer_id)?;
    sync_customer(state, stripe, &customer_id, SyncCause::reconcile()).await
}

/// Re-reads every customer, page by page; `progress(done, total)` after each.
pub async fn reconcile_all(
    state: &AppState,
    stripe: &StripeGateway,
    progress: impl Fn(usize, usize),
) -> anyhow::Result<ReconcileReport> {
    let total = usize::try_from(state.db.run(customers::count_linked).await?).unwrap_or(0);
    let mut report = ReconcileReport::default();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.clone();
        let page = state
            .db
            .run(move |conn| customers::linked_page(conn, cursor.as_deref(), PAGE))
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, customer_id) in &page {
            report.add(sync(state, stripe, customer_id).await, customer_id);
            progress(report.customers, total.max(report.customers));
        }
    }
    record_metrics(&report);
    tracing::info!(?report, "reconciliation finished");
    Ok(report)
}

fn record_metrics(report: &ReconcileReport) {
    metrics::counter!("tollgate_reconcile_runs_total").increment(1);
    metrics::counter!("tollgate_reconcile_customers_total").increment(report.customers as u64);
    metrics::counter!("tollgate_reconcile_changes_total").increment(report.changes as u64);
    metrics::counter!("tollgate_reconcile_failures_total").increment(report.failed as u64);
    metrics::gauge!("tollgate_reconcile_drifted_customers").set(report.drifted as f64);
    metrics::gauge!("tollgate_reconcile_last_run_timestamp_seconds")
        .set(chrono::Utc::now().timestamp() as f64);
}

/// The in-service schedule: every `interval`, one replica (whichever takes the lock) runs a
/// full reconciliation.
pub async fn run_schedule(state: std::sync::Arc<AppState>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(stripe) = state.stripe.as_ref() else {
            return;
        };
        let run = state
            .db
            .exclusively("tollgate:reconcile", || {
                reconcile_all(&state, stripe, |_, _| {})
            })
            .await;
        match run {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!("reconciliation is running on another replica"),
            Err(e) => tracing::warn!(
                error = format_args!("{e:#}"),
                "scheduled reconciliation failed"
            ),
        }
    }
}
