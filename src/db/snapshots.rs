//! One row per subject with everything the access function reads, so that an entitlement check
//! or a consumption needs one primary-key read. Every change to a subject's subscriptions or
//! purchases rewrites its row in the same transaction (see `service::sync`); the tables stay the
//! record, the snapshot is derived from them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;

use super::schema::{purchases, subject_snapshots, subscriptions};
use super::snapshot_cache::SnapshotCache;
use super::state::{self, PurchaseRow, SubjectState, SubscriptionRow};
use super::{on_backend, to_db_time, DbConnection};

/// What the hot path knows of a subject.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: SubjectState,
    /// The user's own token last showed an exempt role.
    pub role_exempt: bool,
}

/// The snapshots of several subjects, in the order of `subjects`; a subject without a row has
/// nothing on record. Served from `cache` where it holds them; what is read from the database
/// is stored in it (see [`SnapshotCache::fill`] for why that is safe under concurrent writes).
pub fn read_many(
    conn: &mut DbConnection,
    cache: Option<&SnapshotCache>,
    subjects: &[String],
) -> anyhow::Result<Vec<Arc<Snapshot>>> {
    // The ticket is taken before anything is read, so that a write committed meanwhile shows.
    let ticket = cache.and_then(SnapshotCache::ticket);
    let mut found: Vec<Option<Arc<Snapshot>>> = subjects
        .iter()
        .map(|s| cache.and_then(|c| c.get(s)))
        .collect();
    let missing: Vec<&str> = subjects
        .iter()
        .zip(&found)
        .filter(|(_, hit)| hit.is_none())
        .map(|(s, _)| s.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(found.into_iter().flatten().collect());
    }
    let rows: Vec<(String, String, bool)> = if let [one] = missing[..] {
        // The common case keeps the primary-key lookup.
        subject_snapshots::table
            .find(one)
            .select((
                subject_snapshots::subject,
                subject_snapshots::state,
                subject_snapshots::role_exempt,
            ))
            .load(conn)?
    } else {
        subject_snapshots::table
            .filter(subject_snapshots::subject.eq_any(missing))
            .select((
                subject_snapshots::subject,
                subject_snapshots::state,
                subject_snapshots::role_exempt,
            ))
            .load(conn)?
    };
    for (subject, slot) in subjects.iter().zip(found.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let snapshot = match rows.iter().find(|(s, _, _)| s == subject) {
            Some((_, json, role_exempt)) => Snapshot {
                state: serde_json::from_str(json)?,
                role_exempt: *role_exempt,
            },
            None => Snapshot::default(),
        };
        let snapshot = Arc::new(snapshot);
        if let (Some(cache), Some(ticket)) = (cache, ticket) {
            cache.fill(ticket, subject, snapshot.clone());
        }
        *slot = Some(snapshot);
    }
    Ok(found.into_iter().flatten().collect())
}

/// The snapshots of all `subjects` if the cache holds every one of them (no database needed).
pub fn cached(cache: Option<&SnapshotCache>, subjects: &[String]) -> Option<Vec<Arc<Snapshot>>> {
    let cache = cache?;
    subjects.iter().map(|s| cache.get(s)).collect()
}

/// Rewrites the subject's snapshot from its tables (inside the transaction that changed them).
pub fn refresh(conn: &mut DbConnection, subject: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
    let current = state::load(conn, subject)?;
    write(conn, subject, &current, now)
}

fn write(
    conn: &mut DbConnection,
    subject: &str,
    current: &SubjectState,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let json = serde_json::to_string(current)?;
    let insert = diesel::insert_into(subject_snapshots::table).values((
        subject_snapshots::subject.eq(subject),
        subject_snapshots::state.eq(&json),
        subject_snapshots::role_exempt.eq(false),
        subject_snapshots::updated_at.eq(to_db_time(now)),
    ));
    on_backend!(conn, |c| insert
        .on_conflict(subject_snapshots::subject)
        .do_update()
        .set((
            subject_snapshots::state.eq(excluded(subject_snapshots::state)),
            subject_snapshots::updated_at.eq(excluded(subject_snapshots::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Records what the user's own token said of an exempt role.
pub fn set_role_exempt(
    conn: &mut DbConnection,
    subject: &str,
    exempt: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let insert = diesel::insert_into(subject_snapshots::table).values((
        subject_snapshots::subject.eq(subject),
        subject_snapshots::state.eq("{\"subscriptions\":[],\"purchases\":[]}"),
        subject_snapshots::role_exempt.eq(exempt),
        subject_snapshots::updated_at.eq(to_db_time(now)),
    ));
    on_backend!(conn, |c| insert
        .on_conflict(subject_snapshots::subject)
        .do_update()
        .set((
            subject_snapshots::role_exempt.eq(excluded(subject_snapshots::role_exempt)),
            subject_snapshots::updated_at.eq(excluded(subject_snapshots::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Writes the snapshots of subjects that have subscriptions or purchases but no snapshot (data
/// from before snapshots, or written by other tools), a batch at a time. Tells how many.
pub fn backfill(conn: &mut DbConnection, now: DateTime<Utc>) -> anyhow::Result<usize> {
    const BATCH: i64 = 500;
    let mut written = 0;
    loop {
        let mut missing: Vec<String> = subscriptions::table
            .filter(diesel::dsl::not(diesel::dsl::exists(
                subject_snapshots::table
                    .filter(subject_snapshots::subject.eq(subscriptions::subject)),
            )))
            .select(subscriptions::subject)
            .distinct()
            .limit(BATCH)
            .load(conn)?;
        if missing.is_empty() {
            missing = purchases::table
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    subject_snapshots::table
                        .filter(subject_snapshots::subject.eq(purchases::subject)),
                )))
                .select(purchases::subject)
                .distinct()
                .limit(BATCH)
                .load(conn)?;
        }
        if missing.is_empty() {
            return Ok(written);
        }
        let subs: Vec<SubscriptionRow> = subscriptions::table
            .filter(subscriptions::subject.eq_any(&missing))
            .order(subscriptions::stripe_created_at.desc())
            .select(SubscriptionRow::as_select())
            .load(conn)?;
        let buys: Vec<PurchaseRow> = purchases::table
            .filter(purchases::subject.eq_any(&missing))
            .order(purchases::purchased_at.desc())
            .select(PurchaseRow::as_select())
            .load(conn)?;
        let mut states: std::collections::HashMap<&str, SubjectState> = missing
            .iter()
            .map(|m| (m.as_str(), SubjectState::default()))
            .collect();
        for sub in subs {
            if let Some(state) = states.get_mut(sub.subject.as_str()) {
                state.subscriptions.push(sub);
            }
        }
        for buy in buys {
            if let Some(state) = states.get_mut(buy.subject.as_str()) {
                state.purchases.push(buy);
            }
        }
        let mut rows = Vec::with_capacity(states.len());
        for (subject, current) in &states {
            rows.push((
                subject_snapshots::subject.eq(*subject),
                subject_snapshots::state.eq(serde_json::to_string(current)?),
                subject_snapshots::role_exempt.eq(false),
                subject_snapshots::updated_at.eq(to_db_time(now)),
            ));
        }
        let insert = diesel::insert_into(subject_snapshots::table).values(&rows);
        on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
        written += missing.len();
    }
}
