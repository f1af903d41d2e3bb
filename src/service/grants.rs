//! Grants: support and integrators give a user or a tenant a plan without a payment (a comp, a
//! partner deal, a test user's plan), and take it back. A grant takes part in access like any
//! other source (`billing::access`, reason `granted`); each write is audited and rewrites the
//! subject's snapshot in its transaction.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::billing::grant::{self, GrantAsk, GrantId, GrantRefusal, GrantStatus};
use crate::billing::ids::{TenantId, UserId};
use crate::billing::scope::Scope;
use crate::billing::subject::Subject;
use crate::db::audit::Origin;
use crate::db::grants::{self, GrantRow};
use crate::db::{self, to_db_time};
use crate::state::AppState;

use super::error::ServiceError;
use super::events::Emitter;

/// What a new grant gives, to whom (as the plan's scope needs: a user, a tenant, or a user in
/// a tenant), and why.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user_id: Option<UserId>,
    pub tenant_id: Option<TenantId>,
    pub plan_id: String,
    pub until: Option<DateTime<Utc>>,
    pub note: String,
}

/// A grant as stored, with where it stands at the request's time.
#[derive(Debug, Clone)]
pub struct GrantView {
    pub row: GrantRow,
    pub subject: Subject,
    pub status: GrantStatus,
}

impl GrantView {
    fn of(row: GrantRow, now: DateTime<Utc>) -> anyhow::Result<GrantView> {
        let subject = Subject::parse_key(&row.subject)
            .ok_or_else(|| anyhow::anyhow!("grant {} has a malformed subject", row.grant_id))?;
        Ok(GrantView {
            status: row.status(now),
            subject,
            row,
        })
    }
}

/// Gives `new.subject` the plan, until `new.until` (for ever without one).
pub async fn create(
    state: &AppState,
    new: NewGrant,
    by: &UserId,
) -> Result<GrantView, ServiceError> {
    const SOURCE: &str = "api:grants.create";
    let now = stored_time(state.now());
    let ask = GrantAsk {
        user_id: new.user_id.as_ref(),
        tenant_id: new.tenant_id.as_ref(),
        plan_id: &new.plan_id,
        until: new.until,
        note: &new.note,
    };
    let subject = grant::holder(&state.catalog, ask, now).map_err(|r| refused(r, &new.plan_id))?;
    let row = GrantRow {
        grant_id: GrantId::from_bits(uuid::Uuid::new_v4().as_u128()).to_string(),
        subject: subject.key(),
        plan_id: new.plan_id,
        until: new.until.map(to_db_time),
        note: new.note.trim().to_owned(),
        created_by: by.to_string(),
        created_at: to_db_time(now),
        revoked_at: None,
        revoked_by: None,
    };
    let stored = row.clone();
    let emitter = Emitter::of(state, &subject);
    let ((), appended) = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                emitter.around(conn, &stored.subject.clone(), now, |conn| {
                    grants::insert(
                        conn,
                        &stored,
                        Origin {
                            source: SOURCE,
                            now,
                        },
                    )
                })
            })
        })
        .await?;
    appended.committed(state);
    state.db.snapshot_written(&row.subject);
    tracing::info!(grant = %row.grant_id, subject = %row.subject, plan = %row.plan_id, by = %by, "plan granted");
    Ok(GrantView::of(row, now)?)
}

/// Revokes a grant at once. Repeating it changes nothing and answers the grant as revoked.
pub async fn revoke(
    state: &AppState,
    grant_id: &GrantId,
    by: &UserId,
) -> Result<GrantView, ServiceError> {
    const SOURCE: &str = "api:grants.delete";
    let now = stored_time(state.now());
    let not_found = || ServiceError::not_found("grant_not_found", format!("no grant `{grant_id}`"));
    let (id, who) = (grant_id.to_string(), by.to_string());
    let found = id.clone();
    let holder = state
        .db
        .run(move |conn| grants::find(conn, &found))
        .await?
        .ok_or_else(not_found)?
        .subject;
    let subject = Subject::parse_key(&holder)
        .ok_or_else(|| anyhow::anyhow!("stored subject `{holder}` is malformed"))?;
    let emitter = Emitter::of(state, &subject);
    let (revoked, appended) = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                emitter.around(conn, &holder, now, |conn| {
                    grants::revoke(
                        conn,
                        &id,
                        &who,
                        Origin {
                            source: SOURCE,
                            now,
                        },
                    )
                })
            })
        })
        .await?;
    appended.committed(state);
    let (row, changed) = revoked.ok_or_else(not_found)?;
    if changed {
        state.db.snapshot_written(&row.subject);
        tracing::info!(grant = %row.grant_id, subject = %row.subject, by = %by, "grant revoked");
    }
    Ok(GrantView::of(row, now)?)
}

/// Which grants to list; `after` is the last grant of the previous page.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub subject: Option<Subject>,
    pub plan_id: Option<String>,
    pub status: Option<GrantStatus>,
    pub after: Option<(NaiveDateTime, String)>,
    pub limit: u32,
}

/// A page of grants, newest first, and whether more follow.
pub async fn list(
    state: &AppState,
    listing: Listing,
) -> Result<(Vec<GrantView>, bool), ServiceError> {
    let now = state.now();
    let limit = i64::from(listing.limit.max(1));
    let filter = grants::Filter {
        subject: listing.subject.map(|s| s.key()),
        plan_id: listing.plan_id,
        status: listing.status,
        before: listing.after,
        // One more than asked: whether another page follows.
        limit: limit + 1,
    };
    let mut rows = state
        .db
        .run(move |conn| grants::list(conn, &filter, now))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let views = rows
        .into_iter()
        .map(|row| GrantView::of(row, now))
        .collect::<anyhow::Result<_>>()?;
    Ok((views, more))
}

/// `now` as the databases store it (PostgreSQL keeps microseconds), so that the first answer
/// shows the times every later read shows.
fn stored_time(now: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    now.trunc_subsecs(6)
}

fn refused(refusal: GrantRefusal, plan_id: &str) -> ServiceError {
    match refusal {
        GrantRefusal::UnknownPlan => ServiceError::unprocessable(
            "unknown_plan",
            format!("no plan `{plan_id}` (GET /v1/config lists them)"),
        ),
        GrantRefusal::NotGrantable { kind } => ServiceError::unprocessable(
            "plan_not_grantable",
            format!(
                "`{plan_id}` is {}: grants give a paid subscription or lifetime plan",
                match kind {
                    "free" => "the free plan, which everyone has",
                    _ => "a credit pack, which adds quota rather than a plan",
                }
            ),
        ),
        GrantRefusal::WrongHolder { scope } => ServiceError::unprocessable(
            "holder_mismatch",
            match scope {
                Scope::User => format!("`{plan_id}` is a user's plan: send `user_id` alone"),
                Scope::Tenant => format!(
                    "`{plan_id}` is a tenant's plan (shared by its members): send `tenant_id` alone"
                ),
                Scope::Membership => format!(
                    "`{plan_id}` is held by a user in one tenant: send `user_id` and `tenant_id`"
                ),
            },
        ),
        GrantRefusal::EndsInThePast => ServiceError::unprocessable(
            "until_not_in_future",
            "`until` must be later than now (leave it out for a grant without end)",
        ),
        GrantRefusal::EndsTooLate => ServiceError::unprocessable(
            "until_too_late",
            "`until` must be before the year 10000 (leave it out for a grant without end)",
        ),
        GrantRefusal::BadNote => ServiceError::invalid(
            "invalid_note",
            format!(
                "`note` says why the plan is given: 1 to {} characters",
                grant::MAX_NOTE_CHARS
            ),
        ),
    }
}
