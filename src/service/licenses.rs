//! Licenses (docs/LICENSES.md): a purchase of a plan with `provision = ["github"]` creates a
//! license in the purchase's transaction; its buyer submits a GitHub username; a worker in every
//! replica does the GitHub work each license waits for (invite, check for acceptance, revoke),
//! one replica at a time per license, retried until GitHub answers, and records each outcome
//! only if the license still wants it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use crate::billing::events::{Event, EventType};
use crate::billing::ids::UserId;
use crate::billing::license::{
    self, Checked, GithubUsername, License, LicenseStatus, Membership, PurchaseTurn, Step,
    Submission, SubmitRefusal,
};
use crate::billing::mirror::{Change, PurchaseRecord};
use crate::billing::subject::Subject;
use crate::db::audit::Origin;
use crate::db::licenses::{self, Filter, LicenseRow};
use crate::db::{self, from_db_time, to_db_time, DbConnection};
use crate::github::{CallError, GitHub, Invitation};
use crate::state::AppState;

use super::error::ServiceError;
use super::events::{AppendedEvents, Emitter};

/// Times are stored to the microsecond (PostgreSQL's precision), so that what a worker claimed
/// compares equal to what it reads back.
fn stored_time(now: DateTime<Utc>) -> DateTime<Utc> {
    now.trunc_subsecs(6)
}

fn tell(
    emitter: &Emitter,
    conn: &mut DbConnection,
    row: &LicenseRow,
    kind: EventType,
    now: DateTime<Utc>,
    appended: &mut AppendedEvents,
) -> anyhow::Result<()> {
    emitter.append(
        conn,
        &row.subject,
        &Event::license(kind, &row.license()),
        now,
        appended,
    )
}

/// In a sync's transaction, after its purchases were written: creates the license of each new
/// paid purchase of a provisioning plan (`license.created`), revokes the license of a refunded
/// or disputed one, restores it when a dispute is won. Tells whether GitHub work was scheduled.
pub(crate) fn follow_purchases(
    conn: &mut DbConnection,
    plans: &HashSet<String>,
    changes: &[Change<PurchaseRecord>],
    emitter: &Emitter,
    origin: Origin<'_>,
    appended: &mut AppendedEvents,
) -> anyhow::Result<bool> {
    let now = stored_time(origin.now);
    let origin = Origin { now, ..origin };
    let mut scheduled = false;
    for change in changes {
        let purchase = &change.after;
        if !plans.contains(&purchase.plan_id) {
            continue;
        }
        let Some(Subject::User { user_id }) = Subject::parse_key(&purchase.subject) else {
            tracing::warn!(subject = %purchase.subject, purchase = %purchase.checkout_session_id,
                "a provisioning purchase not bought by a user: no license");
            continue;
        };
        let existing = licenses::of_purchase(conn, &purchase.checkout_session_id)?;
        let Some(turn) = license::on_purchase(
            existing.as_ref().map(|l| l.state()).as_ref(),
            purchase.status,
        ) else {
            continue;
        };
        match (turn, existing) {
            (PurchaseTurn::Create, _) => {
                let row = LicenseRow::new(
                    &purchase.checkout_session_id,
                    &purchase.subject,
                    &user_id,
                    &purchase.plan_id,
                    now,
                );
                licenses::insert(conn, &row, origin)?;
                tell(
                    emitter,
                    conn,
                    &row,
                    EventType::LicenseCreated,
                    now,
                    appended,
                )?;
                tracing::info!(license = %row.license_id, user = %user_id, "license created");
            }
            (PurchaseTurn::RevokeNow, Some(before)) => {
                let mut row = before.clone();
                row.status = LicenseStatus::Revoked.as_str().to_owned();
                row.revoked_at = Some(to_db_time(now));
                row.schedule(None, now);
                licenses::save_intent(conn, &before, &mut row, origin)?;
                tell(
                    emitter,
                    conn,
                    &row,
                    EventType::LicenseRevoked,
                    now,
                    appended,
                )?;
            }
            (PurchaseTurn::Revoke, Some(before)) => {
                let mut row = before.clone();
                row.schedule(Some(Step::Revoke), now);
                licenses::save_intent(conn, &before, &mut row, origin)?;
                scheduled = true;
            }
            (PurchaseTurn::Restore, Some(before)) => {
                let mut row = before.clone();
                row.revoked_at = None;
                row.invitation_expired_at = None;
                row.team_only = false;
                if row.github_username.is_some() {
                    row.status = LicenseStatus::UsernameSubmitted.as_str().to_owned();
                    row.schedule(Some(Step::Invite), now);
                    scheduled = true;
                } else {
                    row.status = LicenseStatus::Pending.as_str().to_owned();
                    row.schedule(None, now);
                }
                licenses::save_intent(conn, &before, &mut row, origin)?;
                tell(
                    emitter,
                    conn,
                    &row,
                    EventType::LicenseRestored,
                    now,
                    appended,
                )?;
            }
            (_, None) => {}
        }
    }
    Ok(scheduled)
}

/// The caller's licenses, newest first.
pub async fn own(state: &AppState, user: &UserId) -> anyhow::Result<Vec<License>> {
    let user = user.to_string();
    let rows = state
        .db
        .run(move |conn| licenses::of_user(conn, &user))
        .await?;
    Ok(rows.iter().map(LicenseRow::license).collect())
}

/// The buyer submits the GitHub username to invite: checked against GitHub, then stored with
/// the invitation scheduled (`username_submitted`); the worker sends it. Answers the license
/// and whether the submission changed it (the same username again changes nothing).
pub async fn submit_username(
    state: &AppState,
    buyer: &UserId,
    license_id: &str,
    username: GithubUsername,
) -> Result<(License, bool), ServiceError> {
    const SOURCE: &str = "api:licenses.github";
    let terms = &state.licenses;
    let found = license_id.to_owned();
    let row = state
        .db
        .run(move |conn| licenses::find(conn, &found))
        .await?
        .ok_or_else(|| not_found(license_id))?;
    if row.user_id != buyer.as_str() {
        return Err(ServiceError::forbidden(
            "not_license_holder",
            "only the buyer of a license submits its GitHub username",
        ));
    }
    if let Submission::AlreadyInvited = license::submit(&row.state(), &username).map_err(refused)? {
        return Ok((row.license(), false));
    }
    let Some(github) = terms.github.clone() else {
        return Err(ServiceError::unavailable(
            "github_not_configured",
            "GitHub provisioning is not configured on this server (provisioning.github)",
        ));
    };
    if terms.limiter.check_key(&buyer.to_string()).is_err() {
        return Err(ServiceError::too_many(
            "rate_limited",
            format!(
                "at most {} GitHub usernames an hour; try again later",
                terms.submissions_per_hour
            ),
            3600_u64.div_ceil(u64::from(terms.submissions_per_hour.max(1))),
        ));
    }
    let user = match github.user(&username).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return Err(ServiceError::unprocessable(
                "github_user_not_found",
                format!(
                    "GitHub has no user `{}`: check the spelling",
                    username.as_str()
                ),
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "GitHub did not answer a username check");
            return Err(ServiceError::unavailable(
                "github_unavailable",
                "GitHub did not answer the username check; try again shortly",
            ));
        }
    };
    let now = stored_time(state.now());
    let id = license_id.to_owned();
    let stored = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let before = licenses::locked(conn, &id)?
                    .ok_or_else(|| anyhow::anyhow!("license {id} vanished"))?;
                // Decided again on the row as locked: a refund may have come meanwhile.
                let replaces = match license::submit(&before.state(), &username) {
                    Ok(Submission::Invite { replaces }) => replaces,
                    Ok(Submission::AlreadyInvited) => return Ok(Ok((before, false))),
                    Err(refusal) => return Ok(Err(refusal)),
                };
                let mut row = before.clone();
                let mut replaced = row.replaced();
                if let Some(old) = replaces {
                    if !replaced.iter().any(|r| r.eq_ignore_ascii_case(&old)) {
                        replaced.push(old);
                    }
                }
                replaced.retain(|r| !username.same_as(r));
                row.set_replaced(&replaced);
                row.github_username = Some(user.login.clone());
                row.github_user_id = Some(user.id);
                row.status = LicenseStatus::UsernameSubmitted.as_str().to_owned();
                row.username_submitted_at = Some(to_db_time(now));
                row.invited_at = None;
                row.invitation_id = None;
                row.invitation_expired_at = None;
                row.schedule(Some(Step::Invite), now);
                licenses::save_intent(
                    conn,
                    &before,
                    &mut row,
                    Origin {
                        source: SOURCE,
                        now,
                    },
                )?;
                Ok(Ok((row, true)))
            })
        })
        .await?
        .map_err(refused)?;
    let (stored, changed) = stored;
    if changed {
        terms.wake.notify_one();
        tracing::info!(license = %stored.license_id, github = %stored.github_username.as_deref().unwrap_or_default(), "GitHub username submitted");
    }
    Ok((stored.license(), changed))
}

fn not_found(license_id: &str) -> ServiceError {
    ServiceError::not_found("license_not_found", format!("no license `{license_id}`"))
}

fn refused(refusal: SubmitRefusal) -> ServiceError {
    match refusal {
        SubmitRefusal::Revoked => ServiceError::conflict(
            "license_revoked",
            "the license was revoked (its purchase was refunded or disputed)",
        ),
        SubmitRefusal::Active => ServiceError::conflict(
            "license_active",
            "the invitation was accepted: access follows that GitHub account, renamed or not",
        ),
    }
}

/// A license as operators see it: with its pending work and whether it is stuck.
#[derive(Debug, Clone)]
pub struct AdminView {
    pub license: License,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub stuck: bool,
}

pub struct AdminListing {
    pub status: Option<LicenseStatus>,
    pub stuck: bool,
    pub before: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

/// Licenses for operators, newest first; the last one's (created_at, id) continues the listing.
pub async fn list(state: &AppState, listing: AdminListing) -> anyhow::Result<Vec<AdminView>> {
    let now = state.now();
    let filter = Filter {
        status: listing.status,
        stuck: listing.stuck,
        before: listing.before.map(|(at, id)| (to_db_time(at), id)),
    };
    let limit = listing.limit;
    let rows = state
        .db
        .run(move |conn| licenses::list(conn, &filter, now, limit))
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| AdminView {
            license: row.license(),
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            next_attempt_at: row.step_due_at.map(from_db_time),
            stuck: row.is_stuck(now),
        })
        .collect())
}

// --- The worker --------------------------------------------------------------------------------

/// What one step came to.
#[derive(Debug)]
enum Outcome {
    /// Invited (GitHub's invitation id, when this attempt created it).
    Invited {
        invitation_id: Option<i64>,
    },
    /// Accepted the invitation: a member of the organization and the team.
    Accepted,
    /// A member of the organization already (before this license, or accepted an invitation
    /// whose recording a crash cut short): added to the team.
    Joined,
    Waiting,
    Expired,
    Revoked,
}

/// Does the step: its outcome, and the account's login when GitHub knows it by another one now
/// (renamed since it was submitted).
async fn perform(
    github: &GitHub,
    row: &LicenseRow,
    step: Step,
) -> Result<(Outcome, Option<String>), CallError> {
    let mut username = row
        .github_username
        .as_deref()
        .map(stored_name)
        .transpose()?;
    let mut renamed = None;
    // Checks and removals follow the account, not the login it had when submitted: a renamed
    // account is found by its id.
    if matches!(step, Step::Check | Step::Revoke) {
        if let Some(user) = match row.github_user_id {
            Some(id) => github.user_by_id(id).await?,
            None => None,
        } {
            if username.as_ref().is_none_or(|u| !u.same_as(&user.login)) {
                username = Some(stored_name(&user.login)?);
                renamed = Some(user.login);
            }
        }
    }
    Ok((perform_step(github, row, step, username).await?, renamed))
}

/// A username as stored (it was checked when submitted, or came from GitHub).
fn stored_name(s: &str) -> Result<GithubUsername, CallError> {
    GithubUsername::parse(s).map_err(|e| CallError {
        asked: None,
        detail: format!("the stored username `{s}` {e}"),
    })
}

async fn perform_step(
    github: &GitHub,
    row: &LicenseRow,
    step: Step,
    username: Option<GithubUsername>,
) -> Result<Outcome, CallError> {
    match step {
        Step::Invite => {
            let (Some(username), Some(user_id)) = (username, row.github_user_id) else {
                return Err(CallError {
                    asked: None,
                    detail: "no GitHub user to invite".into(),
                });
            };
            cancel_replaced(github, row).await?;
            match github.invite(user_id).await? {
                Invitation::Sent { id } => Ok(Outcome::Invited {
                    invitation_id: Some(id),
                }),
                // Already invited or a member (a retry after a crash lands here): GitHub's
                // membership says which.
                Invitation::Refused { message } => match github.membership(&username).await? {
                    Membership::Pending => Ok(Outcome::Invited {
                        invitation_id: None,
                    }),
                    Membership::Active => {
                        github.add_to_team(&username).await?;
                        Ok(Outcome::Joined)
                    }
                    Membership::None => Err(CallError {
                        asked: None,
                        detail: format!("GitHub refused the invitation: {message}"),
                    }),
                },
            }
        }
        Step::Check => {
            let Some(username) = username else {
                return Ok(Outcome::Expired);
            };
            Ok(
                match license::checked(github.membership(&username).await?) {
                    Checked::Accepted => Outcome::Accepted,
                    Checked::Waiting => Outcome::Waiting,
                    Checked::Expired => Outcome::Expired,
                },
            )
        }
        Step::Revoke => {
            cancel_replaced(github, row).await?;
            let Some(username) = username else {
                return Ok(Outcome::Revoked);
            };
            match github.membership(&username).await? {
                Membership::None => {}
                Membership::Pending => github.remove_membership(&username).await?,
                Membership::Active if row.team_only => github.remove_from_team(&username).await?,
                Membership::Active => {
                    github.remove_from_team(&username).await?;
                    github.remove_membership(&username).await?;
                }
            }
            Ok(Outcome::Revoked)
        }
    }
}

/// Takes back what usernames the buyer replaced were given: a pending invitation is canceled;
/// one that was accepted meanwhile loses the team (the organization's membership stays: it may
/// be the organization's own).
async fn cancel_replaced(github: &GitHub, row: &LicenseRow) -> Result<(), CallError> {
    for old in row.replaced() {
        let old = stored_name(&old)?;
        match github.membership(&old).await? {
            Membership::Pending => github.remove_membership(&old).await?,
            Membership::Active => github.remove_from_team(&old).await?,
            Membership::None => {}
        }
    }
    Ok(())
}

/// The license after `outcome`, and the event it tells.
fn after(
    claimed: &LicenseRow,
    outcome: &Outcome,
    now: DateTime<Utc>,
    check_every: Duration,
) -> (LicenseRow, Option<EventType>) {
    let mut row = claimed.clone();
    let next_check =
        now + chrono::Duration::from_std(check_every).unwrap_or(chrono::Duration::hours(1));
    let kind = match outcome {
        Outcome::Invited { invitation_id } => {
            row.status = LicenseStatus::Invited.as_str().to_owned();
            row.invited_at = Some(to_db_time(now));
            row.invitation_id = *invitation_id;
            row.invitation_expired_at = None;
            row.set_replaced(&[]);
            row.schedule(Some(Step::Check), next_check);
            Some(EventType::LicenseInvited)
        }
        Outcome::Accepted | Outcome::Joined => {
            row.status = LicenseStatus::Active.as_str().to_owned();
            row.accepted_at = Some(to_db_time(now));
            row.team_only = matches!(outcome, Outcome::Joined);
            row.set_replaced(&[]);
            row.schedule(None, now);
            Some(EventType::LicenseActive)
        }
        Outcome::Waiting => {
            row.schedule(Some(Step::Check), next_check);
            None
        }
        Outcome::Expired => {
            row.invitation_expired_at = Some(to_db_time(now));
            row.schedule(None, now);
            Some(EventType::LicenseInvitationExpired)
        }
        Outcome::Revoked => {
            row.status = LicenseStatus::Revoked.as_str().to_owned();
            row.revoked_at = Some(to_db_time(now));
            row.set_replaced(&[]);
            row.schedule(None, now);
            Some(EventType::LicenseRevoked)
        }
    };
    (row, kind)
}

/// Does the claimed license's step and records what came of it.
async fn work(state: &Arc<AppState>, github: &GitHub, claimed: LicenseRow) -> anyhow::Result<()> {
    let Some(step) = claimed.step() else {
        return Ok(());
    };
    let result = perform(github, &claimed, step).await;
    let now = stored_time(state.now());
    let terms = &state.licenses;
    let source = format!("worker:license.{}", step.as_str());
    match result {
        Ok((outcome, renamed)) => {
            let (mut row, kind) = after(&claimed, &outcome, now, terms.check_every);
            if let Some(login) = renamed {
                tracing::info!(license = %claimed.license_id, from = %claimed.github_username.as_deref().unwrap_or_default(), to = %login, "the buyer's GitHub account was renamed");
                row.github_username = Some(login);
            }
            let emitter = Emitter::unlisted(state);
            let accepted_after = match (&outcome, claimed.invited_at) {
                (Outcome::Accepted, Some(invited)) => Some(now - from_db_time(invited)),
                _ => None,
            };
            let (saved, appended) = state
                .db
                .run(move |conn| {
                    db::write_transaction(conn, |conn| {
                        let mut appended = AppendedEvents::default();
                        let origin = Origin {
                            source: &source,
                            now,
                        };
                        if !licenses::save_outcome(conn, &claimed, &mut row, origin)? {
                            licenses::release(conn, &claimed.license_id)?;
                            return Ok((false, appended));
                        }
                        if let Some(kind) = kind {
                            tell(&emitter, conn, &row, kind, now, &mut appended)?;
                        }
                        Ok((true, appended))
                    })
                })
                .await?;
            appended.committed(state);
            if saved {
                if let Some(waited) = accepted_after.and_then(|d| d.to_std().ok()) {
                    metrics::histogram!("tollgate_license_acceptance_seconds")
                        .record(waited.as_secs_f64());
                }
            } else {
                // What the license should become changed meanwhile: its new step runs next.
                terms.wake.notify_one();
            }
        }
        Err(error) => {
            let attempts = u32::try_from(claimed.attempts).unwrap_or(0) + 1;
            let wait = terms.retry.delay(attempts, error.asked);
            tracing::warn!(license = %claimed.license_id, step = step.as_str(), attempts, retry_in_seconds = wait.as_secs(), error = %error, "a GitHub step failed; retrying");
            let due = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1));
            let mut row = claimed.clone();
            row.attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
            row.last_error = Some(error.detail.chars().take(500).collect());
            row.step_due_at = Some(to_db_time(due));
            row.leased_until = None;
            state
                .db
                .run(move |conn| {
                    db::write_transaction(conn, |conn| {
                        let origin = Origin {
                            source: "worker:license.retry",
                            now,
                        };
                        if !licenses::save_outcome(conn, &claimed, &mut row, origin)? {
                            licenses::release(conn, &claimed.license_id)?;
                        }
                        Ok(())
                    })
                })
                .await?;
        }
    }
    Ok(())
}

/// Licenses one claim takes at most.
const CLAIM_BATCH: i64 = 8;
/// How often the licenses-by-state gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(15);

/// The worker: runs for the life of the process, in every replica, when GitHub provisioning is
/// configured.
pub async fn run_worker(state: Arc<AppState>) {
    let Some(github) = state.licenses.github.clone() else {
        return;
    };
    let terms = &state.licenses;
    let mut gauges_at = std::time::Instant::now() - GAUGE_EVERY;
    loop {
        if gauges_at.elapsed() >= GAUGE_EVERY {
            gauges_at = std::time::Instant::now();
            if let Ok(counts) = state.db.run(licenses::counts).await {
                for status in LicenseStatus::ALL {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == status.as_str())
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("tollgate_licenses", "status" => status.as_str()).set(n as f64);
                }
            }
        }
        let now = stored_time(state.now());
        let lease_until =
            now + chrono::Duration::from_std(terms.lease).unwrap_or(chrono::Duration::minutes(1));
        let claimed = state
            .db
            .run(move |conn| licenses::claim(conn, now, lease_until, CLAIM_BATCH))
            .await;
        let busy = match claimed {
            Ok(claimed) => {
                let busy = !claimed.is_empty();
                for row in claimed {
                    let id = row.license_id.clone();
                    if let Err(e) = work(&state, &github, row).await {
                        tracing::warn!(license = %id, error = %format!("{e:#}"), "recording a license step failed; its lease runs out and it is tried again");
                    }
                }
                busy
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "claiming license work failed; retrying");
                false
            }
        };
        if busy {
            continue;
        }
        let _ = tokio::time::timeout(terms.poll, terms.wake.notified()).await;
    }
}
