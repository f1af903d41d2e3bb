//! Grants as stored: one row per grant, revoked ones kept. Every write records an audit row and
//! rewrites the subject's snapshot in the caller's transaction (the snapshot holds the grants
//! that are not revoked, so that access reads them with everything else).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;

use super::audit::{self, Origin};
use super::schema::grants;
use super::{from_db_time, snapshots, to_db_time, DbConnection};
use crate::billing::facts::GrantFacts;
use crate::billing::grant::GrantStatus;

#[derive(
    Debug, Clone, PartialEq, Queryable, Selectable, Insertable, serde::Serialize, serde::Deserialize,
)]
#[diesel(table_name = grants)]
pub struct GrantRow {
    pub grant_id: String,
    pub subject: String,
    pub plan_id: String,
    pub until: Option<NaiveDateTime>,
    pub note: String,
    /// The caller that made it (the service token's subject).
    pub created_by: String,
    pub created_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_by: Option<String>,
}

impl GrantRow {
    pub fn facts(&self) -> GrantFacts {
        GrantFacts {
            id: self.grant_id.clone(),
            plan_id: self.plan_id.clone(),
            until: self.until.map(from_db_time),
            created_at: from_db_time(self.created_at),
        }
    }

    pub fn status(&self, now: DateTime<Utc>) -> GrantStatus {
        GrantStatus::of(
            self.until.map(from_db_time),
            self.revoked_at.map(from_db_time),
            now,
        )
    }
}

const ENTITY: &str = "grant";

/// Stores a new grant, with its audit row and the subject's new snapshot.
pub fn insert(conn: &mut DbConnection, row: &GrantRow, origin: Origin<'_>) -> anyhow::Result<()> {
    diesel::insert_into(grants::table)
        .values(row)
        .execute(conn)?;
    audit::record_change(
        conn,
        (&row.subject, ENTITY, &row.grant_id),
        None,
        row,
        origin,
    )?;
    snapshots::refresh(conn, &row.subject, origin.now)?;
    Ok(())
}

/// Revokes a grant (the first revocation stands: a repeat changes nothing). `None` when there
/// is no such grant; else the grant as it now stands, and whether this call revoked it.
pub fn revoke(
    conn: &mut DbConnection,
    grant_id: &str,
    revoked_by: &str,
    origin: Origin<'_>,
) -> anyhow::Result<Option<(GrantRow, bool)>> {
    let Some(before) = find(conn, grant_id)? else {
        return Ok(None);
    };
    if before.revoked_at.is_some() {
        return Ok(Some((before, false)));
    }
    let after = GrantRow {
        revoked_at: Some(to_db_time(origin.now)),
        revoked_by: Some(revoked_by.to_owned()),
        ..before.clone()
    };
    diesel::update(
        grants::table
            .find(grant_id)
            .filter(grants::revoked_at.is_null()),
    )
    .set((
        grants::revoked_at.eq(after.revoked_at),
        grants::revoked_by.eq(&after.revoked_by),
    ))
    .execute(conn)?;
    audit::record_change(
        conn,
        (&after.subject, ENTITY, grant_id),
        Some(&before),
        &after,
        origin,
    )?;
    snapshots::refresh(conn, &after.subject, origin.now)?;
    Ok(Some((after, true)))
}

pub fn find(conn: &mut DbConnection, grant_id: &str) -> anyhow::Result<Option<GrantRow>> {
    Ok(grants::table
        .find(grant_id)
        .select(GrantRow::as_select())
        .first(conn)
        .optional()?)
}

/// The subject's grants that are not revoked, newest first (what its snapshot holds).
pub fn standing(conn: &mut DbConnection, subject: &str) -> anyhow::Result<Vec<GrantRow>> {
    Ok(grants::table
        .filter(grants::subject.eq(subject))
        .filter(grants::revoked_at.is_null())
        .order((grants::created_at.desc(), grants::grant_id.desc()))
        .select(GrantRow::as_select())
        .load(conn)?)
}

/// The standing grants of several subjects (for rewriting their snapshots).
pub fn standing_of(conn: &mut DbConnection, subjects: &[String]) -> anyhow::Result<Vec<GrantRow>> {
    Ok(grants::table
        .filter(grants::subject.eq_any(subjects))
        .filter(grants::revoked_at.is_null())
        .order((grants::created_at.desc(), grants::grant_id.desc()))
        .select(GrantRow::as_select())
        .load(conn)?)
}

/// Which grants a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub subject: Option<String>,
    pub plan_id: Option<String>,
    pub status: Option<GrantStatus>,
    /// Only grants older than this one, in listing order `(created_at, grant_id)` descending.
    pub before: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// Grants newest first, by keyset: a page starts after the last one of the previous page, so
/// grants made meanwhile neither shift nor repeat it.
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<GrantRow>> {
    let mut query = grants::table.select(GrantRow::as_select()).into_boxed();
    if let Some(subject) = &filter.subject {
        query = query.filter(grants::subject.eq(subject));
    }
    if let Some(plan) = &filter.plan_id {
        query = query.filter(grants::plan_id.eq(plan));
    }
    let now = to_db_time(now);
    match filter.status {
        None => {}
        Some(GrantStatus::Revoked) => query = query.filter(grants::revoked_at.is_not_null()),
        Some(GrantStatus::Ended) => {
            query = query
                .filter(grants::revoked_at.is_null())
                .filter(grants::until.le(now))
        }
        Some(GrantStatus::Active) => {
            query = query
                .filter(grants::revoked_at.is_null())
                .filter(grants::until.is_null().or(grants::until.gt(now)))
        }
    }
    if let Some((at, id)) = &filter.before {
        query = query.filter(
            grants::created_at
                .lt(*at)
                .or(grants::created_at.eq(*at).and(grants::grant_id.lt(id))),
        );
    }
    Ok(query
        .order((grants::created_at.desc(), grants::grant_id.desc()))
        .limit(filter.limit)
        .load(conn)?)
}
