//! Quota counters and the usage ledger. A consumption locks the counters it may take from
//! (PostgreSQL: the row locks of an upsert, held to commit; SQLite: `BEGIN IMMEDIATE`), so
//! concurrent consumptions on any number of replicas are decided one after another and the
//! total never exceeds the allowance.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::schema::{quota_counters, usage_ledger};
use super::{on_backend, to_db_time, write_transaction, DbConnection};
use crate::billing::catalog::QuotaLimit;
use crate::billing::quota::{decide, Decision, BALANCE_BUCKET};

/// One consumption or refusal, with the answer it was given.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_ledger)]
pub struct LedgerRow {
    pub subject: String,
    pub idempotency_key: String,
    pub quota: String,
    pub amount: i64,
    pub granted: bool,
    pub from_allowance: i64,
    pub from_balance: i64,
    pub bucket: String,
    pub status_code: i32,
    pub response: String,
    pub caller: String,
    pub created_at: NaiveDateTime,
}

/// What a consumption asks for, and what the subject's plan and purchases allow.
#[derive(Debug, Clone)]
pub struct Consumption<'a> {
    pub subject: &'a str,
    pub quota: &'a str,
    pub amount: u64,
    pub idempotency_key: &'a str,
    /// The service that asked (its token's subject).
    pub caller: &'a str,
    /// The window of the periodic allowance.
    pub bucket: &'a str,
    /// The plan's allowance per window; `None` when the plan has no such quota.
    pub limit: Option<QuotaLimit>,
    /// Credits bought for this quota (credit packs), before spending.
    pub purchased: u64,
    pub now: DateTime<Utc>,
}

/// The counters after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Used of the allowance in this window.
    pub used: u64,
    /// Spent of the purchased balance.
    pub balance_spent: u64,
}

#[derive(Debug, Clone)]
pub enum Consumed {
    /// Decided now.
    Fresh(LedgerRow),
    /// The idempotency key was seen before: its first answer, nothing consumed.
    Replay(LedgerRow),
}

/// The idempotency key has a ledger row already (an earlier or concurrent request).
#[derive(Debug, thiserror::Error)]
#[error("idempotency key taken by a concurrent request")]
struct KeyTaken;

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Decides and records one consumption, atomically: all of `amount` or nothing. `respond`
/// builds the answer (status and body) that is stored with the ledger row and replayed for the
/// same idempotency key.
pub fn consume(
    conn: &mut DbConnection,
    c: &Consumption<'_>,
    respond: impl FnOnce(Decision, Counted) -> anyhow::Result<(u16, String)>,
) -> anyhow::Result<Consumed> {
    let result = write_transaction(conn, |conn| {
        let mut buckets = vec![c.bucket];
        if c.purchased > 0 {
            buckets.push(BALANCE_BUCKET);
        }
        // A request with the same key for the same quota waits here for the first one to
        // commit; its ledger insert below then conflicts and it answers as a replay.
        let counters = lock_counters(conn, c, &buckets)?;
        let used = counters.get(c.bucket).copied().unwrap_or(0);
        let spent = counters.get(BALANCE_BUCKET).copied().unwrap_or(0);
        let decision = decide(c.amount, c.limit, used, c.purchased.saturating_sub(spent));
        let (from_allowance, from_balance) = match decision {
            Decision::Granted {
                from_allowance,
                from_balance,
            } => (from_allowance, from_balance),
            Decision::Refused => (0, 0),
        };
        add(conn, c, c.bucket, from_allowance)?;
        add(conn, c, BALANCE_BUCKET, from_balance)?;
        let counted = Counted {
            used: used.saturating_add(from_allowance),
            balance_spent: spent.saturating_add(from_balance),
        };
        let (status, response) = respond(decision, counted)?;
        let row = LedgerRow {
            subject: c.subject.to_owned(),
            idempotency_key: c.idempotency_key.to_owned(),
            quota: c.quota.to_owned(),
            amount: to_i64(c.amount),
            granted: matches!(decision, Decision::Granted { .. }),
            from_allowance: to_i64(from_allowance),
            from_balance: to_i64(from_balance),
            bucket: c.bucket.to_owned(),
            status_code: i32::from(status),
            response,
            caller: c.caller.to_owned(),
            created_at: to_db_time(c.now),
        };
        let insert = diesel::insert_into(usage_ledger::table).values(&row);
        let inserted = on_backend!(conn, |b| insert.on_conflict_do_nothing().execute(b))?;
        if inserted == 0 {
            // The key was used before: undo this decision, then answer the first one.
            return Err(KeyTaken.into());
        }
        Ok(Consumed::Fresh(row))
    });
    match result {
        Err(e) if e.is::<KeyTaken>() => find(conn, c.subject, c.idempotency_key)?
            .map(Consumed::Replay)
            .ok_or_else(|| anyhow::anyhow!("ledger row of a taken key vanished")),
        other => other,
    }
}

/// Creates the counters if needed and locks them to the end of the transaction, returning
/// what each has used.
fn lock_counters(
    conn: &mut DbConnection,
    c: &Consumption<'_>,
    buckets: &[&str],
) -> anyhow::Result<HashMap<String, u64>> {
    let now = to_db_time(c.now);
    let rows: Vec<_> = buckets
        .iter()
        .map(|bucket| {
            (
                quota_counters::subject.eq(c.subject),
                quota_counters::quota.eq(c.quota),
                quota_counters::bucket.eq(*bucket),
                quota_counters::used.eq(0_i64),
                quota_counters::updated_at.eq(now),
            )
        })
        .collect();
    let insert = diesel::insert_into(quota_counters::table).values(&rows);
    // A no-op update of an existing row takes its row lock (PostgreSQL) and returns it.
    let locked: Vec<(String, i64)> = on_backend!(conn, |b| insert
        .on_conflict((
            quota_counters::subject,
            quota_counters::quota,
            quota_counters::bucket,
        ))
        .do_update()
        .set(quota_counters::used.eq(quota_counters::used))
        .returning((quota_counters::bucket, quota_counters::used))
        .get_results(b))?;
    Ok(locked
        .into_iter()
        .map(|(bucket, used)| (bucket, to_u64(used)))
        .collect())
}

fn add(
    conn: &mut DbConnection,
    c: &Consumption<'_>,
    bucket: &str,
    amount: u64,
) -> anyhow::Result<()> {
    if amount == 0 {
        return Ok(());
    }
    diesel::update(quota_counters::table.find((c.subject, c.quota, bucket)))
        .set((
            quota_counters::used.eq(quota_counters::used + to_i64(amount)),
            quota_counters::updated_at.eq(to_db_time(c.now)),
        ))
        .execute(conn)?;
    Ok(())
}

/// The ledger row of an idempotency key.
pub fn find(
    conn: &mut DbConnection,
    subject: &str,
    idempotency_key: &str,
) -> anyhow::Result<Option<LedgerRow>> {
    Ok(usage_ledger::table
        .find((subject, idempotency_key))
        .select(LedgerRow::as_select())
        .first(conn)
        .optional()?)
}

/// What the subject used of each `(quota, bucket)`.
pub fn used(
    conn: &mut DbConnection,
    subject: &str,
    wanted: &[(String, String)],
) -> anyhow::Result<HashMap<(String, String), u64>> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let buckets: Vec<&str> = wanted.iter().map(|(_, b)| b.as_str()).collect();
    let rows: Vec<(String, String, i64)> = quota_counters::table
        .filter(quota_counters::subject.eq(subject))
        .filter(quota_counters::bucket.eq_any(buckets))
        .select((
            quota_counters::quota,
            quota_counters::bucket,
            quota_counters::used,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(q, b, used)| ((q, b), to_u64(used)))
        .filter(|(k, _)| wanted.contains(k))
        .collect())
}

/// The subject's ledger, newest first (for audits and tests).
pub fn ledger(conn: &mut DbConnection, subject: &str) -> anyhow::Result<Vec<LedgerRow>> {
    Ok(usage_ledger::table
        .filter(usage_ledger::subject.eq(subject))
        .order(usage_ledger::created_at.desc())
        .select(LedgerRow::as_select())
        .load(conn)?)
}
