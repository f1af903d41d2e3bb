//! Full reconciliations requested over the API (`POST /v1/admin/sync {"all": true}`): one row
//! per job with its progress, so that every replica answers for a job another one runs. At most
//! one job is `running` at a time (a unique index on the running row). What a stopped heartbeat
//! means is the service's to say; this module stores what it is told.

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::schema::sync_jobs;
use super::{to_db_time, write_transaction, DbConnection};

/// The stored statuses.
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
/// Its process stopped without finishing it (found when a new job starts).
pub const INTERRUPTED: &str = "interrupted";

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sync_jobs)]
pub struct SyncJobRow {
    pub job_id: String,
    pub status: String,
    pub customers_total: i64,
    pub customers_done: i64,
    pub drifted: i64,
    pub changes: i64,
    pub failed: i64,
    pub started_at: NaiveDateTime,
    /// The last time the process running it wrote its progress.
    pub heartbeat_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
    pub error: Option<String>,
}

/// A job's counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: i64,
    pub done: i64,
    pub drifted: i64,
    pub changes: i64,
    pub failed: i64,
}

/// Starts job `job_id` unless one is running: `(the new job, true)`, or `(the running one,
/// false)`. A running job whose heartbeat is older than `stale_before` belongs to a process
/// that died: it is marked interrupted first, and no longer stands in the way.
pub fn start(
    conn: &mut DbConnection,
    job_id: &str,
    now: DateTime<Utc>,
    stale_before: DateTime<Utc>,
) -> anyhow::Result<(SyncJobRow, bool)> {
    let attempt = write_transaction(conn, |conn| {
        diesel::update(
            sync_jobs::table
                .filter(sync_jobs::status.eq(RUNNING))
                .filter(sync_jobs::heartbeat_at.lt(to_db_time(stale_before))),
        )
        .set(sync_jobs::status.eq(INTERRUPTED))
        .execute(conn)?;
        if let Some(running) = running(conn)? {
            return Ok((running, false));
        }
        diesel::insert_into(sync_jobs::table)
            .values((
                sync_jobs::job_id.eq(job_id),
                sync_jobs::status.eq(RUNNING),
                sync_jobs::started_at.eq(to_db_time(now)),
                sync_jobs::heartbeat_at.eq(to_db_time(now)),
            ))
            .execute(conn)?;
        let job = find(conn, job_id)?.context("the new sync job vanished")?;
        Ok((job, true))
    });
    match attempt {
        // Another replica inserted its job between this one's read and insert (PostgreSQL;
        // SQLite's write lock orders the two): answer that one.
        Err(e) if is_unique_violation(&e) => running(conn)?
            .map(|job| (job, false))
            .context("a sync job started and ended while this one was starting; ask again"),
        other => other,
    }
}

fn is_unique_violation(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<DieselError>(),
        Some(DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation,
            _
        ))
    )
}

fn running(conn: &mut DbConnection) -> anyhow::Result<Option<SyncJobRow>> {
    Ok(sync_jobs::table
        .filter(sync_jobs::status.eq(RUNNING))
        .select(SyncJobRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find(conn: &mut DbConnection, job_id: &str) -> anyhow::Result<Option<SyncJobRow>> {
    Ok(sync_jobs::table
        .find(job_id)
        .select(SyncJobRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records the running job's counts and that its process lives. `false` when the job no
/// longer runs (another replica found its heartbeat stale and marked it interrupted).
pub fn heartbeat(
    conn: &mut DbConnection,
    job_id: &str,
    progress: Progress,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let updated = diesel::update(
        sync_jobs::table
            .find(job_id)
            .filter(sync_jobs::status.eq(RUNNING)),
    )
    .set((
        sync_jobs::customers_total.eq(progress.total),
        sync_jobs::customers_done.eq(progress.done),
        sync_jobs::drifted.eq(progress.drifted),
        sync_jobs::changes.eq(progress.changes),
        sync_jobs::failed.eq(progress.failed),
        sync_jobs::heartbeat_at.eq(to_db_time(now)),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Ends the running job with `status` ([`SUCCEEDED`] or [`FAILED`]), its final counts and
/// what went wrong, if anything. `false` when it no longer ran.
pub fn finish(
    conn: &mut DbConnection,
    job_id: &str,
    status: &str,
    progress: Progress,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let now = to_db_time(now);
    let updated = diesel::update(
        sync_jobs::table
            .find(job_id)
            .filter(sync_jobs::status.eq(RUNNING)),
    )
    .set((
        sync_jobs::status.eq(status),
        sync_jobs::customers_total.eq(progress.total),
        sync_jobs::customers_done.eq(progress.done),
        sync_jobs::drifted.eq(progress.drifted),
        sync_jobs::changes.eq(progress.changes),
        sync_jobs::failed.eq(progress.failed),
        sync_jobs::heartbeat_at.eq(now),
        sync_jobs::finished_at.eq(Some(now)),
        sync_jobs::error.eq(error),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}
