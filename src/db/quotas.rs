//! Quota counters and the usage ledger. A consumption locks the counters it may take from, so
//! concurrent consumptions on any number of replicas are decided one after another and the
//! total never exceeds the allowance: PostgreSQL decides inside the database, in one call of
//! the function `tollgate_consume` (migration 000006), under the counter's row lock; SQLite runs
//! the same steps in a `BEGIN IMMEDIATE` transaction here. Both decide by
//! [`crate::billing::quota::decide`]'s rule, and both record the ledger row with the decision.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::pg::{Pg, PgConnection};
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamp, Untyped};

use super::schema::{quota_counters, quota_crossings, usage_ledger};
use super::{on_backend, to_db_time, write_transaction, DbConnection};
use crate::billing::access::Reason;
use crate::billing::catalog::{QuotaLimit, QuotaPeriod};
use crate::billing::quota::{crossed, decide, Decision, QuotaRefusal, BALANCE_BUCKET};

/// One consumption or refusal: the decision, the terms it was decided under and the counters
/// after it. The answer is rendered from it (`service::quotas`), when first given and for every
/// replay of its idempotency key.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = usage_ledger)]
pub struct LedgerRow {
    /// Whose counters it was taken from.
    pub subject: String,
    /// Who asked ([`crate::billing::quota::requester`]): the idempotency key is theirs.
    pub requester: String,
    pub idempotency_key: String,
    pub quota: String,
    pub amount: i64,
    pub granted: bool,
    pub from_allowance: i64,
    pub from_balance: i64,
    /// The window of the allowance.
    pub bucket: String,
    pub status_code: i32,
    pub caller: String,
    pub created_at: NaiveDateTime,
    /// The allowance per window ([`QuotaLimit::to_text`]); `None`: the plan had none.
    pub allowance: Option<String>,
    /// [`QuotaPeriod::as_str`] of the allowance.
    pub period: Option<String>,
    pub resets_at: Option<NaiveDateTime>,
    /// Used of the allowance in `bucket`, after the decision.
    pub used_after: i64,
    /// Purchased credits left, after the decision.
    pub balance_after: i64,
    /// The subject's access reason ([`Reason::as_str`]).
    pub reason: Option<String>,
    /// A refusal's problem code.
    pub problem: Option<String>,
}

impl LedgerRow {
    pub fn limit(&self) -> anyhow::Result<Option<QuotaLimit>> {
        self.allowance
            .as_deref()
            .map(|a| QuotaLimit::parse(a).ok_or_else(|| anyhow::anyhow!("ledger allowance {a:?}")))
            .transpose()
    }

    pub fn quota_period(&self) -> anyhow::Result<Option<QuotaPeriod>> {
        self.period
            .as_deref()
            .map(|p| QuotaPeriod::parse(p).ok_or_else(|| anyhow::anyhow!("ledger period {p:?}")))
            .transpose()
    }

    pub fn access_reason(&self) -> anyhow::Result<Option<Reason>> {
        self.reason
            .as_deref()
            .map(|r| Reason::parse(r).ok_or_else(|| anyhow::anyhow!("ledger reason {r:?}")))
            .transpose()
    }
}

/// What a consumption asks for, what the subject's plan and purchases allow, and the terms
/// recorded with the decision.
#[derive(Debug, Clone)]
pub struct Consumption<'a> {
    pub subject: &'a str,
    /// Who asked: the idempotency key is unique per requester, whatever subject pays.
    pub requester: &'a str,
    pub quota: &'a str,
    pub amount: u64,
    pub idempotency_key: &'a str,
    /// The service that asked (its token's subject).
    pub caller: &'a str,
    /// The window of the periodic allowance.
    pub bucket: &'a str,
    /// The plan's allowance per window; `None` when the plan has no such quota.
    pub limit: Option<QuotaLimit>,
    pub period: Option<QuotaPeriod>,
    /// When the window ends.
    pub resets_at: Option<DateTime<Utc>>,
    /// Credits bought for this quota (credit packs), before spending.
    pub purchased: u64,
    /// The subject's access reason.
    pub reason: Reason,
    /// How a refusal is explained.
    pub refusal: QuotaRefusal,
    pub now: DateTime<Utc>,
    /// Percents of the allowance whose crossing is recorded (`events.quota_thresholds`).
    pub thresholds: &'a [i32],
}

#[derive(Debug, Clone)]
pub enum Consumed {
    /// Decided now.
    Fresh(LedgerRow),
    /// The idempotency key was seen before: its first decision, nothing consumed.
    Replay(LedgerRow),
}

/// The idempotency key has a ledger row already (an earlier or concurrent request).
#[derive(Debug, thiserror::Error)]
#[error("idempotency key taken by a concurrent request")]
struct KeyTaken;

/// What the ledger's `status_code` column records for a refusal: the HTTP status the answer
/// carried when the column was introduced (`api/usage.rs` answers with the same). Tollgate reads
/// the refusal back from `problem`; the column is kept for the ledger's other readers.
fn recorded_status(refusal: QuotaRefusal) -> i32 {
    match refusal {
        QuotaRefusal::Exhausted => 402,
        QuotaRefusal::NotInPlan | QuotaRefusal::NoAccess => 403,
    }
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Decides and records one consumption, atomically: all of `amount` or nothing, never beyond
/// the allowance plus the purchased balance, once per requester's idempotency key.
pub fn consume(conn: &mut DbConnection, c: &Consumption<'_>) -> anyhow::Result<Consumed> {
    match conn {
        DbConnection::Pg(pg) => {
            let outcome: Outcome = ConsumeCall::new(c).get_result(pg)?;
            Ok(if outcome.replayed {
                Consumed::Replay(outcome.row)
            } else {
                Consumed::Fresh(outcome.row)
            })
        }
        DbConnection::Sqlite(_) => consume_in_transaction(conn, c),
    }
}

/// What `tollgate_consume` returns: the key's ledger row, and whether it was there before.
#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = Bool)]
    replayed: bool,
    #[diesel(embed)]
    row: LedgerRow,
}

/// `SELECT * FROM tollgate_consume(...)`, with a static query id so that each connection
/// prepares it once.
struct ConsumeCall<'a> {
    c: &'a Consumption<'a>,
    amount: i64,
    limit: Option<i64>,
    unlimited: bool,
    purchased: i64,
    allowance: Option<String>,
    period: Option<&'static str>,
    resets_at: Option<NaiveDateTime>,
    reason: &'static str,
    refusal_status: i32,
    now: NaiveDateTime,
}

impl<'a> ConsumeCall<'a> {
    fn new(c: &'a Consumption<'a>) -> ConsumeCall<'a> {
        ConsumeCall {
            c,
            amount: to_i64(c.amount),
            limit: match c.limit {
                Some(QuotaLimit::Limited(n)) => Some(to_i64(n)),
                _ => None,
            },
            unlimited: matches!(c.limit, Some(QuotaLimit::Unlimited(_))),
            purchased: to_i64(c.purchased),
            allowance: c.limit.map(QuotaLimit::to_text),
            period: c.period.map(QuotaPeriod::as_str),
            resets_at: c.resets_at.map(to_db_time),
            reason: c.reason.as_str(),
            refusal_status: recorded_status(c.refusal),
            now: to_db_time(c.now),
        }
    }
}

impl QueryId for ConsumeCall<'_> {
    type QueryId = ConsumeCall<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for ConsumeCall<'_> {
    type SqlType = Untyped;
}

impl RunQueryDsl<PgConnection> for ConsumeCall<'_> {}

impl QueryFragment<Pg> for ConsumeCall<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM tollgate_consume(");
        out.push_bind_param::<Text, _>(self.c.subject)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.requester)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.idempotency_key)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.quota)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.amount)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.bucket)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.limit)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.unlimited)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.purchased)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.allowance)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.period)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Timestamp>, _>(&self.resets_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.reason)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.refusal_status)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.refusal.code())?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.c.caller)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamp, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Array<Integer>, _>(self.c.thresholds)?;
        out.push_sql(")");
        Ok(())
    }
}

/// SQLite: the steps of `tollgate_consume` in one write transaction (a single writer at a time).
fn consume_in_transaction(
    conn: &mut DbConnection,
    c: &Consumption<'_>,
) -> anyhow::Result<Consumed> {
    let result = write_transaction(conn, |conn| {
        let mut buckets = vec![c.bucket];
        if c.purchased > 0 {
            buckets.push(BALANCE_BUCKET);
        }
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
        let granted = matches!(decision, Decision::Granted { .. });
        let row = LedgerRow {
            subject: c.subject.to_owned(),
            requester: c.requester.to_owned(),
            idempotency_key: c.idempotency_key.to_owned(),
            quota: c.quota.to_owned(),
            amount: to_i64(c.amount),
            granted,
            from_allowance: to_i64(from_allowance),
            from_balance: to_i64(from_balance),
            bucket: c.bucket.to_owned(),
            status_code: if granted {
                200
            } else {
                recorded_status(c.refusal)
            },
            caller: c.caller.to_owned(),
            created_at: to_db_time(c.now),
            allowance: c.limit.map(QuotaLimit::to_text),
            period: c.period.map(|p| p.as_str().to_owned()),
            resets_at: c.resets_at.map(to_db_time),
            used_after: to_i64(used.saturating_add(from_allowance)),
            balance_after: to_i64(
                c.purchased
                    .saturating_sub(spent)
                    .saturating_sub(from_balance),
            ),
            reason: Some(c.reason.as_str().to_owned()),
            problem: (!granted).then(|| c.refusal.code().to_owned()),
        };
        let insert = diesel::insert_into(usage_ledger::table).values(&row);
        let inserted = on_backend!(conn, |b| insert.on_conflict_do_nothing().execute(b))?;
        if inserted == 0 {
            // The key was used before: undo this decision, then answer the first one.
            return Err(KeyTaken.into());
        }
        if let Some(QuotaLimit::Limited(limit)) = c.limit {
            for threshold in crossed(used, from_allowance, limit, c.thresholds) {
                record_crossing(conn, c, threshold, used + from_allowance, limit)?;
            }
        }
        Ok(Consumed::Fresh(row))
    });
    match result {
        Err(e) if e.is::<KeyTaken>() => find(conn, c.requester, c.idempotency_key)?
            .map(Consumed::Replay)
            .ok_or_else(|| anyhow::anyhow!("ledger row of a taken key vanished")),
        other => other,
    }
}

/// Records that a consumption took the window's use across `threshold`% of `limit` (once
/// per window: a second record of the same crossing is ignored).
fn record_crossing(
    conn: &mut DbConnection,
    c: &Consumption<'_>,
    threshold: i32,
    used: u64,
    limit: u64,
) -> anyhow::Result<()> {
    let insert = diesel::insert_into(quota_crossings::table).values((
        quota_crossings::subject.eq(c.subject),
        quota_crossings::quota.eq(c.quota),
        quota_crossings::bucket.eq(c.bucket),
        quota_crossings::threshold.eq(threshold),
        quota_crossings::used.eq(to_i64(used)),
        quota_crossings::quota_limit.eq(to_i64(limit)),
        quota_crossings::period.eq(c.period.map(QuotaPeriod::as_str)),
        quota_crossings::resets_at.eq(c.resets_at.map(to_db_time)),
        quota_crossings::created_at.eq(to_db_time(c.now)),
    ));
    on_backend!(conn, |b| insert.on_conflict_do_nothing().execute(b))?;
    Ok(())
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

/// The ledger row of a requester's idempotency key.
pub fn find(
    conn: &mut DbConnection,
    requester: &str,
    idempotency_key: &str,
) -> anyhow::Result<Option<LedgerRow>> {
    Ok(usage_ledger::table
        .find((requester, idempotency_key))
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
    let mut buckets: Vec<&str> = wanted.iter().map(|(_, b)| b.as_str()).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let rows: Vec<(String, String, i64)> = quota_counters::table
        .filter(quota_counters::subject.eq(subject))
        .filter(super::any_of(quota_counters::bucket, &buckets))
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

/// The subject's ledger, newest first (for audits and tests). The ledger is keyed by requester,
/// so this reads the whole table; an audit read on a hot path would want an index on
/// `(subject, created_at)`, which costs every consumption an index insert.
pub fn ledger(conn: &mut DbConnection, subject: &str) -> anyhow::Result<Vec<LedgerRow>> {
    Ok(usage_ledger::table
        .filter(usage_ledger::subject.eq(subject))
        .order(usage_ledger::created_at.desc())
        .select(LedgerRow::as_select())
        .load(conn)?)
}
