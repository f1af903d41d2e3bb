//! Licenses as stored (docs/LICENSES.md): one row per provisioning purchase, holding where the
//! license stands, the GitHub work it waits for (`step`, due at `step_due_at`) and that work's
//! lease. Every change of where it stands is audited (entity `license`).

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::audit::{self, Origin};
use super::schema::licenses;
use super::{from_db_time, on_backend, to_db_time, write_transaction, DbConnection};
use crate::billing::license::{self, License, LicenseState, LicenseStatus, Step};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = licenses)]
#[diesel(treat_none_as_null = true)]
pub struct LicenseRow {
    pub license_id: String,
    pub checkout_session_id: String,
    pub subject: String,
    pub user_id: String,
    pub plan_id: String,
    pub provisioner: String,
    pub status: String,
    pub github_username: Option<String>,
    pub github_user_id: Option<i64>,
    pub replaced_usernames: Option<String>,
    pub invitation_id: Option<i64>,
    pub team_only: bool,
    pub username_submitted_at: Option<NaiveDateTime>,
    pub invited_at: Option<NaiveDateTime>,
    pub invitation_expired_at: Option<NaiveDateTime>,
    pub accepted_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub step: Option<String>,
    pub step_due_at: Option<NaiveDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub leased_until: Option<NaiveDateTime>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl LicenseRow {
    /// A new `pending` license of a purchase.
    pub fn new(
        checkout_session_id: &str,
        subject: &str,
        user_id: &str,
        plan_id: &str,
        now: DateTime<Utc>,
    ) -> LicenseRow {
        LicenseRow {
            license_id: format!("lic_{}", uuid::Uuid::new_v4().simple()),
            checkout_session_id: checkout_session_id.to_owned(),
            subject: subject.to_owned(),
            user_id: user_id.to_owned(),
            plan_id: plan_id.to_owned(),
            provisioner: "github".to_owned(),
            status: LicenseStatus::Pending.as_str().to_owned(),
            github_username: None,
            github_user_id: None,
            replaced_usernames: None,
            invitation_id: None,
            team_only: false,
            username_submitted_at: None,
            invited_at: None,
            invitation_expired_at: None,
            accepted_at: None,
            revoked_at: None,
            step: None,
            step_due_at: None,
            attempts: 0,
            last_error: None,
            leased_until: None,
            version: 0,
            created_at: to_db_time(now),
            updated_at: to_db_time(now),
        }
    }

    pub fn status(&self) -> LicenseStatus {
        LicenseStatus::parse(&self.status).unwrap_or(LicenseStatus::Pending)
    }

    pub fn step(&self) -> Option<Step> {
        self.step.as_deref().and_then(Step::parse)
    }

    /// What the rules read of it.
    pub fn state(&self) -> LicenseState {
        LicenseState {
            status: self.status(),
            github_username: self.github_username.clone(),
            step: self.step(),
            invitation_expired: self.invitation_expired_at.is_some(),
        }
    }

    /// The license as told and shown.
    pub fn license(&self) -> License {
        License {
            id: self.license_id.clone(),
            status: self.status(),
            plan: self.plan_id.clone(),
            checkout_session_id: self.checkout_session_id.clone(),
            user_id: self.user_id.clone(),
            github_username: self.github_username.clone(),
            pending_step: self.step(),
            created_at: from_db_time(self.created_at),
            username_submitted_at: self.username_submitted_at.map(from_db_time),
            invited_at: self.invited_at.map(from_db_time),
            invitation_expired_at: self.invitation_expired_at.map(from_db_time),
            accepted_at: self.accepted_at.map(from_db_time),
            revoked_at: self.revoked_at.map(from_db_time),
        }
    }

    pub fn replaced(&self) -> Vec<String> {
        self.replaced_usernames
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    pub fn set_replaced(&mut self, usernames: &[String]) {
        self.replaced_usernames = (!usernames.is_empty()).then(|| usernames.join(" "));
    }

    /// Waits for `step` from `at` on, as a fresh step (no failed attempts).
    pub fn schedule(&mut self, step: Option<Step>, at: DateTime<Utc>) {
        self.step = step.map(|s| s.as_str().to_owned());
        self.step_due_at = step.map(|_| to_db_time(at));
        self.attempts = 0;
        self.last_error = None;
        self.leased_until = None;
    }

    /// Since when it waits in its status: `pending` since it was last written (its purchase, or
    /// the won dispute that restored it: a pending license has no step, so nothing else writes
    /// it), `username_submitted` since the submission, `invited` since the invitation.
    pub fn waiting_since(&self) -> Option<DateTime<Utc>> {
        match self.status() {
            LicenseStatus::Pending => Some(self.updated_at),
            LicenseStatus::UsernameSubmitted => self.username_submitted_at,
            LicenseStatus::Invited => self.invited_at,
            LicenseStatus::Active | LicenseStatus::Revoked => None,
        }
        .map(from_db_time)
    }

    pub fn is_stuck(&self, now: DateTime<Utc>) -> bool {
        license::is_stuck(self.status(), self.waiting_since(), now)
    }
}

const ENTITY: &str = "license";

/// What the audit trail keeps of a license (not its leases and attempts).
fn audited(row: &LicenseRow) -> serde_json::Value {
    serde_json::json!({
        "status": row.status,
        "github_username": row.github_username,
        "replaced_usernames": row.replaced_usernames,
        "invitation_id": row.invitation_id,
        "team_only": row.team_only,
        "step": row.step,
    })
}

pub fn insert(conn: &mut DbConnection, row: &LicenseRow, origin: Origin<'_>) -> anyhow::Result<()> {
    diesel::insert_into(licenses::table)
        .values(row)
        .execute(conn)?;
    audit::record_change(
        conn,
        (&row.subject, ENTITY, &row.license_id),
        None,
        &audited(row),
        origin,
    )?;
    Ok(())
}

/// Writes a change of what the license should become (a submission, a purchase's refund or
/// restoration): bumps its version, so that a worker holding an older claim records nothing.
pub fn save_intent(
    conn: &mut DbConnection,
    before: &LicenseRow,
    after: &mut LicenseRow,
    origin: Origin<'_>,
) -> anyhow::Result<()> {
    after.version = before.version + 1;
    after.updated_at = to_db_time(origin.now);
    diesel::update(licenses::table.find(&after.license_id))
        .set(&*after)
        .execute(conn)?;
    audit::record_change(
        conn,
        (&after.subject, ENTITY, &after.license_id),
        Some(&audited(before)),
        &audited(after),
        origin,
    )?;
    Ok(())
}

/// Records a worker's outcome for the license it claimed as `claimed`, only if nothing changed
/// what the license should become since (its version); tells whether it did.
pub fn save_outcome(
    conn: &mut DbConnection,
    claimed: &LicenseRow,
    after: &mut LicenseRow,
    origin: Origin<'_>,
) -> anyhow::Result<bool> {
    after.updated_at = to_db_time(origin.now);
    let written = diesel::update(
        licenses::table
            .find(&claimed.license_id)
            .filter(licenses::version.eq(claimed.version)),
    )
    .set(&*after)
    .execute(conn)?;
    if written == 0 {
        return Ok(false);
    }
    audit::record_change(
        conn,
        (&after.subject, ENTITY, &after.license_id),
        Some(&audited(claimed)),
        &audited(after),
        origin,
    )?;
    Ok(true)
}

pub fn find(conn: &mut DbConnection, license_id: &str) -> anyhow::Result<Option<LicenseRow>> {
    Ok(licenses::table
        .find(license_id)
        .select(LicenseRow::as_select())
        .first(conn)
        .optional()?)
}

/// The license of a purchase, locked for the transaction on PostgreSQL.
pub fn of_purchase(
    conn: &mut DbConnection,
    checkout_session_id: &str,
) -> anyhow::Result<Option<LicenseRow>> {
    if let DbConnection::Pg(c) = conn {
        licenses::table
            .filter(licenses::checkout_session_id.eq(checkout_session_id))
            .select(licenses::license_id)
            .for_update()
            .load::<String>(c)?;
    }
    Ok(licenses::table
        .filter(licenses::checkout_session_id.eq(checkout_session_id))
        .select(LicenseRow::as_select())
        .first(conn)
        .optional()?)
}

/// A license locked for the transaction on PostgreSQL (SQLite's writer lock covers it).
pub fn locked(conn: &mut DbConnection, license_id: &str) -> anyhow::Result<Option<LicenseRow>> {
    if let DbConnection::Pg(c) = conn {
        licenses::table
            .find(license_id)
            .select(licenses::license_id)
            .for_update()
            .load::<String>(c)?;
    }
    find(conn, license_id)
}

/// A user's licenses, newest first.
pub fn of_user(conn: &mut DbConnection, user_id: &str) -> anyhow::Result<Vec<LicenseRow>> {
    Ok(licenses::table
        .filter(licenses::user_id.eq(user_id))
        .order((licenses::created_at.desc(), licenses::license_id.desc()))
        .select(LicenseRow::as_select())
        .load(conn)?)
}

/// Claims up to `limit` licenses whose step is due and not claimed by a live worker, until
/// `lease_until` ([`super::lease_due`]: one worker per license, across replicas).
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<LicenseRow>> {
    const QUEUE: (&str, &str, &str, &str) =
        ("licenses", "license_id", "step IS NOT NULL", "step_due_at");
    write_transaction(conn, |conn| {
        let ids = super::lease_due(conn, QUEUE, now, lease_until, limit)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(licenses::table
            .filter(super::any_of(licenses::license_id, &ids))
            .order(licenses::step_due_at.asc())
            .select(LicenseRow::as_select())
            .load(conn)?)
    })
}

/// Gives up a claim without recording anything (the license's intent changed meanwhile).
pub fn release(conn: &mut DbConnection, license_id: &str) -> anyhow::Result<()> {
    diesel::update(licenses::table.find(license_id))
        .set(licenses::leased_until.eq(None::<NaiveDateTime>))
        .execute(conn)?;
    Ok(())
}

/// When the earliest step is due (for the worker's sleep), `None` without any.
pub fn next_due(conn: &mut DbConnection) -> anyhow::Result<Option<DateTime<Utc>>> {
    let at: Option<NaiveDateTime> = licenses::table
        .filter(licenses::step.is_not_null())
        .select(diesel::dsl::min(licenses::step_due_at))
        .first(conn)?;
    Ok(at.map(from_db_time))
}

/// The operators' listing filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<LicenseStatus>,
    /// Only stuck ones (see [`license::is_stuck`]).
    pub stuck: bool,
    /// Older than this (created_at, license_id), newest first.
    pub before: Option<(NaiveDateTime, String)>,
}

/// Licenses newest first by `filter`, at most `limit`.
pub fn list(
    conn: &mut DbConnection,
    filter: &Filter,
    now: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<LicenseRow>> {
    let mut query = licenses::table.into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(licenses::status.eq(status.as_str()));
    }
    if filter.stuck {
        let pending_since = to_db_time(now - license::STUCK_PENDING);
        let invited_since = to_db_time(now - license::STUCK_INVITED);
        // As LicenseRow::waiting_since says.
        query = query.filter(
            (licenses::status
                .eq(LicenseStatus::Pending.as_str())
                .and(licenses::updated_at.lt(pending_since)))
            .or(licenses::status
                .eq(LicenseStatus::UsernameSubmitted.as_str())
                .and(licenses::username_submitted_at.lt(pending_since)))
            .or(licenses::status
                .eq(LicenseStatus::Invited.as_str())
                .and(licenses::invited_at.lt(invited_since))),
        );
    }
    if let Some((at, id)) = &filter.before {
        query = query.filter(
            licenses::created_at.lt(*at).or(licenses::created_at
                .eq(*at)
                .and(licenses::license_id.lt(id.clone()))),
        );
    }
    Ok(query
        .order((licenses::created_at.desc(), licenses::license_id.desc()))
        .limit(limit)
        .select(LicenseRow::as_select())
        .load(conn)?)
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many licenses stand in each status.
pub fn counts(conn: &mut DbConnection) -> anyhow::Result<Vec<(String, i64)>> {
    let rows: Vec<StatusCount> = on_backend!(conn, |c| {
        diesel::sql_query("SELECT status, COUNT(*) AS n FROM licenses GROUP BY status")
            .load::<StatusCount>(c)
    })?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}
