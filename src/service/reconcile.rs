//! Reconciliation: re-read every customer (or one) from Stripe and repair what drifted, for
//! events that were missed or never sent. `tollgate sync`, `POST /v1/admin/sync` and the
//! in-service schedule all run this; a full run holds a lock, so that one replica at a time
//! runs one. A full run asked for over the API is a job whose progress is stored, so that any
//! replica can answer for it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::billing::subject::Subject;
use crate::db::sync_jobs::{self, Progress, SyncJobRow};
use crate::db::{customers, from_db_time};
use crate::state::AppState;
use crate::stripe::budget::Priority;
use crate::stripe::{CustomerId, StripeGateway};

use super::error::ServiceError;
use super::gateway::stripe as configured_stripe;
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
    /// Customers that carry a subject whose linked customer is another one (two checkouts
    /// that each created a customer, a customer made by hand): re-read like the linked one,
    /// counted as drifted, and logged, since one subject should have one customer.
    pub duplicates: usize,
}

impl ReconcileReport {
    fn add(&mut self, outcome: &anyhow::Result<SyncOutcome>, customer: &str, duplicate: bool) {
        self.customers += 1;
        self.duplicates += usize::from(duplicate);
        match outcome {
            Ok(SyncOutcome::Synced { changes, .. }) => {
                self.changes += changes;
                self.drifted += usize::from(*changes > 0 || duplicate);
            }
            Ok(_) => self.drifted += usize::from(duplicate),
            Err(e) => {
                self.failed += 1;
                tracing::warn!(customer, error = %e, "reconciliation of a customer failed");
            }
        }
        if duplicate {
            tracing::warn!(
                customer,
                "a second Stripe customer carries a subject that is linked to another one: \
                 re-read, and reported as drift"
            );
        }
    }
}

const PAGE: i64 = 200;

/// Re-reads every Stripe customer of one subject: the linked one, and any other whose metadata
/// names the subject (found by Stripe's customer search); `None` when Stripe has none.
pub async fn reconcile_subject(
    state: &AppState,
    stripe: &StripeGateway,
    subject: &Subject,
) -> anyhow::Result<Option<ReconcileReport>> {
    let s = subject.clone();
    let linked = state
        .db
        .run(move |conn| customers::find(conn, &s))
        .await?
        .and_then(|c| c.stripe_customer_id);
    let mut ids: Vec<String> = linked.iter().cloned().collect();
    match stripe.customers_of_subject(&subject.key()).await {
        Ok(found) => {
            for id in found {
                if !ids.iter().any(|i| i == id.as_str()) {
                    ids.push(id.as_str().to_owned());
                }
            }
        }
        // Search is not offered everywhere (and lags a minute behind): the linked customer is
        // still re-read.
        Err(e) => tracing::warn!(
            subject = %subject,
            error = format_args!("{e:#}"),
            "could not search Stripe for the subject's other customers"
        ),
    }
    if ids.is_empty() {
        return Ok(None);
    }
    let mut report = ReconcileReport::default();
    for (i, customer_id) in ids.iter().enumerate() {
        // The first is the linked one (or, with none linked, the one the sync links).
        let outcome = sync(state, stripe, customer_id).await;
        report.add(&outcome, customer_id, i > 0);
    }
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

/// Held by the replica running a full reconciliation (PostgreSQL; SQLite has one instance).
const FULL_RUN_LOCK: &str = "tollgate:reconcile";

/// Re-reads every customer, page by page; `progress(report so far, total)` after each. First
/// every linked customer; then every other customer of the Stripe account whose metadata names
/// a subject (a second customer of a subject, or one whose link was lost), found by listing
/// the account's customers (one request per 100).
pub async fn reconcile_all(
    state: &AppState,
    stripe: &StripeGateway,
    progress: impl Fn(&ReconcileReport, usize),
) -> anyhow::Result<ReconcileReport> {
    // Its Stripe reads take at most `stripe.reconcile_share` of the replica's budget.
    Priority::Reconcile
        .scope(reconcile_every_customer(state, stripe, progress))
        .await
}

async fn reconcile_every_customer(
    state: &AppState,
    stripe: &StripeGateway,
    progress: impl Fn(&ReconcileReport, usize),
) -> anyhow::Result<ReconcileReport> {
    let total = usize::try_from(state.db.run(customers::count_linked).await?).unwrap_or(0);
    let mut report = ReconcileReport::default();
    let mut linked = HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after.clone();
        let page = state
            .db
            .run(move |conn| customers::linked_page(conn, cursor.as_deref(), PAGE))
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (_, customer_id) in page {
            let outcome = sync(state, stripe, &customer_id).await;
            report.add(&outcome, &customer_id, false);
            progress(&report, total.max(report.customers));
            linked.insert(customer_id);
        }
    }
    let mut after: Option<CustomerId> = None;
    loop {
        let (page, more) = match stripe.customers_page(after.as_ref()).await {
            Ok(listed) => listed,
            Err(e) => {
                // The linked customers were re-read; the next run lists the others again.
                report.failed += 1;
                tracing::warn!(
                    error = format_args!("{e:#}"),
                    "could not list the Stripe account's customers to find unlinked ones"
                );
                break;
            }
        };
        for (customer_id, subject) in &page {
            if subject.is_none() || linked.contains(customer_id.as_str()) {
                continue;
            }
            let outcome = sync_customer(state, stripe, customer_id, SyncCause::reconcile()).await;
            // Linked by this sync (its subject had none): drift, not a duplicate.
            let duplicate = match &outcome {
                Ok(SyncOutcome::Synced { subject, .. }) => {
                    let s = subject.clone();
                    let link = state
                        .db
                        .run(move |conn| customers::find(conn, &s))
                        .await?
                        .and_then(|c| c.stripe_customer_id);
                    link.as_deref() != Some(customer_id.as_str())
                }
                _ => false,
            };
            report.add(&outcome, customer_id.as_str(), duplicate);
            progress(&report, total.max(report.customers));
        }
        match page.last() {
            Some((last, _)) if more => after = Some(last.clone()),
            _ => break,
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
    metrics::gauge!("tollgate_reconcile_duplicate_customers").set(report.duplicates as f64);
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
            .exclusively(FULL_RUN_LOCK, || reconcile_all(&state, stripe, |_, _| {}))
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

/// How often the replica running a job writes its progress (and so shows that it lives).
const JOB_HEARTBEAT: Duration = Duration::from_secs(2);
/// A running job whose progress was not written for this long belongs to a process that
/// stopped (a crash, a deploy): it reads as interrupted, and a new job may start.
const JOB_STALE_AFTER: Duration = Duration::from_secs(60);

/// Where a full reconciliation job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    /// Every customer was re-read.
    Succeeded,
    /// It stopped on an error, or some customers could not be re-read (`error` says which).
    Failed,
    /// The process running it stopped before it finished.
    Interrupted,
}

/// A full reconciliation started over the API, as any replica reads it.
#[derive(Debug, Clone)]
pub struct SyncJob {
    pub id: String,
    pub status: JobStatus,
    pub customers_total: u64,
    pub customers_done: u64,
    pub drifted: u64,
    pub changes: u64,
    pub failed: u64,
    pub started_at: DateTime<Utc>,
    /// When its progress was last written.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

fn stale_after() -> chrono::Duration {
    chrono::Duration::from_std(JOB_STALE_AFTER).unwrap_or(chrono::Duration::MAX)
}

fn job_of(row: SyncJobRow, now: DateTime<Utc>) -> SyncJob {
    let updated_at = from_db_time(row.heartbeat_at);
    let status = match row.status.as_str() {
        sync_jobs::RUNNING if now - updated_at > stale_after() => JobStatus::Interrupted,
        sync_jobs::RUNNING => JobStatus::Running,
        sync_jobs::SUCCEEDED => JobStatus::Succeeded,
        sync_jobs::FAILED => JobStatus::Failed,
        _ => JobStatus::Interrupted,
    };
    let error = match status {
        JobStatus::Interrupted => Some(format!(
            "no progress since {}: the process running it stopped before it finished; start \
             another",
            updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )),
        _ => row.error,
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    SyncJob {
        id: row.job_id,
        status,
        customers_total: count(row.customers_total),
        customers_done: count(row.customers_done),
        drifted: count(row.drifted),
        changes: count(row.changes),
        failed: count(row.failed),
        started_at: from_db_time(row.started_at),
        updated_at,
        finished_at: row.finished_at.map(from_db_time),
        error,
    }
}

/// Starts a full reconciliation in the background, unless one is running on any replica: then
/// that one is the answer (its `started_at` is earlier).
pub async fn start_full_sync(state: Arc<AppState>) -> Result<SyncJob, ServiceError> {
    configured_stripe(&state)?;
    let job_id = uuid::Uuid::new_v4().to_string();
    let now = state.now();
    let stale_before = now - stale_after();
    let id = job_id.clone();
    let (row, started) = state
        .db
        .run(move |conn| sync_jobs::start(conn, &id, now, stale_before))
        .await?;
    if started {
        tracing::info!(job_id, "sync job started");
        tokio::spawn(run_job(state.clone(), job_id));
    }
    Ok(job_of(row, now))
}

/// The job `job_id`, as it stands now.
pub async fn sync_job(state: &AppState, job_id: &uuid::Uuid) -> Result<SyncJob, ServiceError> {
    let (id, now) = (job_id.to_string(), state.now());
    state
        .db
        .run(move |conn| sync_jobs::find(conn, &id))
        .await?
        .map(|row| job_of(row, now))
        .ok_or_else(|| {
            ServiceError::not_found(
                "sync_job_not_found",
                format!("there is no sync job {job_id}"),
            )
        })
}

fn progress_of(report: &ReconcileReport, total: usize) -> Progress {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    Progress {
        total: count(total),
        done: count(report.customers),
        drifted: count(report.drifted),
        changes: count(report.changes),
        failed: count(report.failed),
    }
}

/// Runs the job and writes its progress every [`JOB_HEARTBEAT`] until it ends.
async fn run_job(state: Arc<AppState>, job_id: String) {
    let Some(stripe) = state.stripe.as_ref() else {
        return;
    };
    let progress = Mutex::new(Progress::default());
    let record = |report: &ReconcileReport, total: usize| {
        if let Ok(mut p) = progress.lock() {
            *p = progress_of(report, total);
        }
    };
    let run = async {
        loop {
            let ran = state
                .db
                .exclusively(FULL_RUN_LOCK, || reconcile_all(&state, stripe, record))
                .await?;
            match ran {
                Some(report) => return anyhow::Ok(report),
                // The schedule is running a full reconciliation on another replica: this job
                // re-reads everyone after it, as asked.
                None => tokio::time::sleep(JOB_HEARTBEAT).await,
            }
        }
    };
    let heartbeat = async {
        let mut ticker = tokio::time::interval(JOB_HEARTBEAT);
        loop {
            ticker.tick().await;
            let p = progress.lock().map(|p| *p).unwrap_or_default();
            let (id, now) = (job_id.clone(), state.now());
            match state
                .db
                .run(move |conn| sync_jobs::heartbeat(conn, &id, p, now))
                .await
            {
                Ok(true) => {}
                // Another replica took it for dead and marked it interrupted.
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(job_id, error = ?e, "could not record a sync job's progress")
                }
            }
        }
    };
    let result = tokio::select! {
        result = run => result,
        () = heartbeat => {
            tracing::warn!(job_id, "sync job stopped: it was marked interrupted");
            return;
        }
    };
    let last = progress.lock().map(|p| *p).unwrap_or_default();
    let (status, counts, error) = match result {
        Ok(report) => {
            let mut counts = progress_of(&report, 0);
            counts.total = last.total.max(counts.done);
            if report.failed == 0 {
                (sync_jobs::SUCCEEDED, counts, None)
            } else {
                let error = format!(
                    "{} customer(s) could not be re-read (the log names them, with this job_id); \
                     the next run retries them",
                    report.failed
                );
                (sync_jobs::FAILED, counts, Some(error))
            }
        }
        Err(e) => {
            // The cause stays in the log: the answer says only where to find it.
            tracing::error!(job_id, error = ?e, "sync job failed");
            let error = format!(
                "stopped after {} of {} customers on an error, logged with this job_id",
                last.done, last.total
            );
            (sync_jobs::FAILED, last, Some(error))
        }
    };
    let (id, now) = (job_id.clone(), state.now());
    let finished = state
        .db
        .run(move |conn| sync_jobs::finish(conn, &id, status, counts, error.as_deref(), now))
        .await;
    match finished {
        Ok(_) => tracing::info!(job_id, status, "sync job finished"),
        Err(e) => tracing::error!(job_id, error = ?e, "could not record the end of a sync job"),
    }
}
