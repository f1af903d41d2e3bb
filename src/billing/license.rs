//! Licenses that provision access outside Tollgate after a one-time purchase (seed 002: a
//! lifetime license whose buyer gets read access to a private GitHub repository through an
//! organization team). The states, what a purchase's standing does to its license, what the
//! buyer may submit, what each GitHub answer moves the license to, when a failed call is tried
//! again, and which licenses are stuck: pure rules, the worker and the database follow them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::facts::PurchaseStatus;

/// Where a license stands (the seed's `github_access_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    /// Paid; the buyer has not submitted a GitHub username yet.
    Pending,
    /// A username was submitted and checked; the invitation is being sent.
    UsernameSubmitted,
    /// GitHub holds an invitation for the buyer (or held one that expired, see
    /// `invitation_expired_at`).
    Invited,
    /// The buyer accepted: a member of the organization and its team.
    Active,
    /// The purchase was refunded or lost a dispute: access removed.
    Revoked,
}

impl LicenseStatus {
    pub const ALL: [LicenseStatus; 5] = [
        LicenseStatus::Pending,
        LicenseStatus::UsernameSubmitted,
        LicenseStatus::Invited,
        LicenseStatus::Active,
        LicenseStatus::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Pending => "pending",
            LicenseStatus::UsernameSubmitted => "username_submitted",
            LicenseStatus::Invited => "invited",
            LicenseStatus::Active => "active",
            LicenseStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<LicenseStatus> {
        LicenseStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The GitHub work a license waits for; each is idempotent, so a step cut short by a crash is
/// simply done again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Cancel the invitation of a username the buyer replaced (if still pending), then invite
    /// the submitted username to the organization with the team.
    Invite,
    /// Ask GitHub whether the invitation was accepted.
    Check,
    /// Remove the buyer from the team and the organization, or cancel the pending invitation.
    Revoke,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Invite => "invite",
            Step::Check => "check",
            Step::Revoke => "revoke",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        [Step::Invite, Step::Check, Step::Revoke]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A GitHub username as GitHub accepts them: 1 to 39 characters, ASCII letters, digits and
/// single hyphens, neither first nor last. Safe in a URL path as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GithubUsername(String);

impl GithubUsername {
    pub const MAX_LEN: usize = 39;
    /// The rule, as a JSON-schema pattern (OpenAPI).
    pub const PATTERN: &'static str = "^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$";

    pub fn parse(s: &str) -> Result<GithubUsername, &'static str> {
        if s.is_empty() {
            return Err("is empty");
        }
        if s.len() > Self::MAX_LEN {
            return Err("is longer than 39 characters");
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("may hold only letters, digits and hyphens");
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err("may not begin or end with a hyphen");
        }
        if s.contains("--") {
            return Err("may not hold two hyphens in a row");
        }
        Ok(GithubUsername(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// GitHub logins compare without case.
    pub fn same_as(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

/// A license as the buyer, operators and events see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct License {
    #[schema(example = "lic_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b")]
    pub id: String,
    pub status: LicenseStatus,
    #[schema(example = "lifetime")]
    pub plan: String,
    /// The purchase's Checkout Session.
    #[schema(example = "cs_test_a1b2c3")]
    pub checkout_session_id: String,
    /// The buyer.
    #[schema(example = "alice")]
    pub user_id: String,
    /// The GitHub account invited (or to invite), once submitted.
    #[schema(example = "octocat")]
    pub github_username: Option<String>,
    /// The GitHub work Tollgate is doing for it: `invite`, `check` (waiting for the buyer to
    /// accept) or `revoke`; `null`: none.
    pub pending_step: Option<Step>,
    pub created_at: DateTime<Utc>,
    pub username_submitted_at: Option<DateTime<Utc>>,
    pub invited_at: Option<DateTime<Utc>>,
    /// GitHub no longer holds the invitation (it expires after 7 days): submit the username
    /// again to send a new one.
    pub invitation_expired_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a license holds that the rules read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseState {
    pub status: LicenseStatus,
    pub github_username: Option<String>,
    pub step: Option<Step>,
    /// GitHub no longer holds the invitation (expired or declined): the buyer may ask again.
    pub invitation_expired: bool,
}

/// What a purchase's standing does to its license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseTurn {
    /// A paid purchase without a license: create it, `pending`.
    Create,
    /// Refunded or disputed before anything reached GitHub: `revoked` at once.
    RevokeNow,
    /// Refunded or disputed after a username was submitted: remove access on GitHub, then
    /// `revoked`.
    Revoke,
    /// Paid again (a dispute won) after a revocation: invite the known username again, or wait
    /// for one (`pending`).
    Restore,
}

/// What the purchase's new `standing` does to its `license` (`None`: none exists yet).
pub fn on_purchase(
    license: Option<&LicenseState>,
    standing: PurchaseStatus,
) -> Option<PurchaseTurn> {
    let paid = standing == PurchaseStatus::Paid;
    let Some(license) = license else {
        return paid.then_some(PurchaseTurn::Create);
    };
    let revoking = license.status == LicenseStatus::Revoked || license.step == Some(Step::Revoke);
    match (paid, revoking) {
        (true, true) => Some(PurchaseTurn::Restore),
        (false, false) if license.status == LicenseStatus::Pending => Some(PurchaseTurn::RevokeNow),
        (false, false) => Some(PurchaseTurn::Revoke),
        _ => None,
    }
}

/// Why the buyer may not submit a username now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitRefusal {
    /// The license was revoked (or is being revoked).
    Revoked,
    /// The invitation was accepted: access follows the GitHub account, renamed or not.
    Active,
}

/// What submitting `username` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Invite `username`; first cancel the pending invitation of `replaces`, if any.
    Invite { replaces: Option<String> },
    /// The same username is already invited and GitHub still holds the invitation: nothing to do.
    AlreadyInvited,
}

pub fn submit(
    license: &LicenseState,
    username: &GithubUsername,
) -> Result<Submission, SubmitRefusal> {
    if license.status == LicenseStatus::Revoked || license.step == Some(Step::Revoke) {
        return Err(SubmitRefusal::Revoked);
    }
    if license.status == LicenseStatus::Active {
        return Err(SubmitRefusal::Active);
    }
    let current = license.github_username.as_deref();
    let same = current.is_some_and(|c| username.same_as(c));
    match license.status {
        LicenseStatus::Invited if same && !license.invitation_expired => {
            Ok(Submission::AlreadyInvited)
        }
        LicenseStatus::UsernameSubmitted if same => Ok(Submission::AlreadyInvited),
        LicenseStatus::Invited | LicenseStatus::UsernameSubmitted if !same => {
            Ok(Submission::Invite {
                replaces: current.map(str::to_owned),
            })
        }
        _ => Ok(Submission::Invite { replaces: None }),
    }
}

/// What GitHub says of a user's membership in the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Neither a member nor invited.
    None,
    /// Invited; the invitation is not accepted yet.
    Pending,
    /// A member.
    Active,
}

/// Where an invitation check leaves the license.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Accepted: `active`.
    Accepted,
    /// Still pending: look again later.
    Waiting,
    /// GitHub holds no invitation any more (expired after 7 days, or declined): the buyer may
    /// ask for a new one.
    Expired,
}

pub fn checked(membership: Membership) -> Checked {
    match membership {
        Membership::Active => Checked::Accepted,
        Membership::Pending => Checked::Waiting,
        Membership::None => Checked::Expired,
    }
}

/// Not submitted a username a day after the purchase, as the seed defines stuck.
pub const STUCK_PENDING: chrono::Duration = chrono::Duration::hours(24);
/// Not accepted a week after the invitation.
pub const STUCK_INVITED: chrono::Duration = chrono::Duration::days(7);

/// Whether a license is stuck at `now`, waiting in `status` since `since`: `pending` (since the
/// purchase, or the won dispute that restored it) or `username_submitted` (since the
/// submission, not yet invited) longer than [`STUCK_PENDING`], or `invited` longer than
/// [`STUCK_INVITED`].
pub fn is_stuck(status: LicenseStatus, since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let limit = match status {
        LicenseStatus::Pending | LicenseStatus::UsernameSubmitted => STUCK_PENDING,
        LicenseStatus::Invited => STUCK_INVITED,
        LicenseStatus::Active | LicenseStatus::Revoked => return false,
    };
    since.is_some_and(|since| now - since > limit)
}

/// How failed GitHub calls are tried again: never given up (a license must reach GitHub in the
/// end; a stuck one shows its last error to operators), doubling from `first` up to `max`, and
/// never sooner than GitHub asked (`Retry-After`, or the rate limit's reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GithubRetry {
    pub first: Duration,
    pub max: Duration,
}

impl GithubRetry {
    /// The wait after failed attempt number `attempts` (1 for the first).
    pub fn delay(&self, attempts: u32, asked: Option<Duration>) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let backoff = self.first.saturating_mul(1u32 << doublings).min(self.max);
        asked.map_or(backoff, |asked| backoff.max(asked.min(self.max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn state(status: LicenseStatus, username: Option<&str>) -> LicenseState {
        LicenseState {
            status,
            github_username: username.map(str::to_owned),
            step: None,
            invitation_expired: false,
        }
    }

    fn name(s: &str) -> GithubUsername {
        GithubUsername::parse(s).unwrap()
    }

    #[test]
    fn usernames_follow_githubs_rules() {
        for ok in ["a", "octocat", "Octo-Cat", "a1-b2-c3", &"x".repeat(39)] {
            assert!(GithubUsername::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-octo",
            "octo-",
            "oc--to",
            "octo cat",
            "octo_cat",
            "octo/../cat",
            "ôcto",
            &"x".repeat(40),
        ] {
            assert!(GithubUsername::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_paid_purchase_creates_a_license_once() {
        assert_eq!(
            on_purchase(None, PurchaseStatus::Paid),
            Some(PurchaseTurn::Create)
        );
        assert_eq!(on_purchase(None, PurchaseStatus::Refunded), None);
        let pending = state(LicenseStatus::Pending, None);
        assert_eq!(on_purchase(Some(&pending), PurchaseStatus::Paid), None);
    }

    #[test]
    fn a_refund_or_dispute_revokes_at_once_or_through_github() {
        let pending = state(LicenseStatus::Pending, None);
        for lost in [PurchaseStatus::Refunded, PurchaseStatus::Disputed] {
            assert_eq!(
                on_purchase(Some(&pending), lost),
                Some(PurchaseTurn::RevokeNow)
            );
            for status in [
                LicenseStatus::UsernameSubmitted,
                LicenseStatus::Invited,
                LicenseStatus::Active,
            ] {
                let l = state(status, Some("octocat"));
                assert_eq!(on_purchase(Some(&l), lost), Some(PurchaseTurn::Revoke));
            }
            let revoked = state(LicenseStatus::Revoked, Some("octocat"));
            assert_eq!(on_purchase(Some(&revoked), lost), None);
            let mut revoking = state(LicenseStatus::Active, Some("octocat"));
            revoking.step = Some(Step::Revoke);
            assert_eq!(on_purchase(Some(&revoking), lost), None);
        }
    }

    #[test]
    fn a_won_dispute_restores_a_revoked_license() {
        let revoked = state(LicenseStatus::Revoked, Some("octocat"));
        assert_eq!(
            on_purchase(Some(&revoked), PurchaseStatus::Paid),
            Some(PurchaseTurn::Restore)
        );
        let mut revoking = state(LicenseStatus::Active, Some("octocat"));
        revoking.step = Some(Step::Revoke);
        assert_eq!(
            on_purchase(Some(&revoking), PurchaseStatus::Paid),
            Some(PurchaseTurn::Restore)
        );
        let active = state(LicenseStatus::Active, Some("octocat"));
        assert_eq!(on_purchase(Some(&active), PurchaseStatus::Paid), None);
    }

    #[test]
    fn submissions_invite_replace_or_wait() {
        let pending = state(LicenseStatus::Pending, None);
        assert_eq!(
            submit(&pending, &name("octocat")),
            Ok(Submission::Invite { replaces: None })
        );
        let invited = state(LicenseStatus::Invited, Some("octocat"));
        assert_eq!(
            submit(&invited, &name("OctoCat")),
            Ok(Submission::AlreadyInvited),
            "GitHub logins compare without case"
        );
        assert_eq!(
            submit(&invited, &name("hubot")),
            Ok(Submission::Invite {
                replaces: Some("octocat".into())
            })
        );
        let submitted = state(LicenseStatus::UsernameSubmitted, Some("octocat"));
        assert_eq!(
            submit(&submitted, &name("hubot")),
            Ok(Submission::Invite {
                replaces: Some("octocat".into())
            })
        );
        assert_eq!(
            submit(&submitted, &name("octocat")),
            Ok(Submission::AlreadyInvited)
        );
        let mut expired = invited.clone();
        expired.invitation_expired = true;
        assert_eq!(
            submit(&expired, &name("octocat")),
            Ok(Submission::Invite { replaces: None }),
            "an expired invitation is sent again"
        );
        assert_eq!(
            submit(
                &state(LicenseStatus::Active, Some("octocat")),
                &name("hubot")
            ),
            Err(SubmitRefusal::Active)
        );
        assert_eq!(
            submit(
                &state(LicenseStatus::Revoked, Some("octocat")),
                &name("hubot")
            ),
            Err(SubmitRefusal::Revoked)
        );
        let mut revoking = invited.clone();
        revoking.step = Some(Step::Revoke);
        assert_eq!(
            submit(&revoking, &name("hubot")),
            Err(SubmitRefusal::Revoked)
        );
    }

    #[test]
    fn checks_follow_the_membership() {
        assert_eq!(checked(Membership::Active), Checked::Accepted);
        assert_eq!(checked(Membership::Pending), Checked::Waiting);
        assert_eq!(checked(Membership::None), Checked::Expired);
    }

    #[test]
    fn stuck_is_a_day_pending_or_a_week_invited() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap();
        let hour = chrono::Duration::hours(1);
        let day = Some(t0);
        for waiting in [LicenseStatus::Pending, LicenseStatus::UsernameSubmitted] {
            assert!(!is_stuck(waiting, day, t0 + STUCK_PENDING));
            assert!(is_stuck(waiting, day, t0 + STUCK_PENDING + hour));
        }
        assert!(!is_stuck(
            LicenseStatus::Invited,
            day,
            t0 + STUCK_PENDING + hour
        ));
        assert!(!is_stuck(LicenseStatus::Invited, day, t0 + STUCK_INVITED));
        assert!(is_stuck(
            LicenseStatus::Invited,
            day,
            t0 + STUCK_INVITED + hour
        ));
        assert!(!is_stuck(
            LicenseStatus::Invited,
            None,
            t0 + STUCK_INVITED * 2
        ));
        for done in [LicenseStatus::Active, LicenseStatus::Revoked] {
            assert!(!is_stuck(done, day, t0 + chrono::Duration::days(90)));
        }
    }

    #[test]
    fn retries_double_up_to_the_cap_and_wait_as_long_as_github_asks() {
        let retry = GithubRetry {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3600),
        };
        assert_eq!(retry.delay(1, None), Duration::from_secs(5));
        assert_eq!(retry.delay(3, None), Duration::from_secs(20));
        assert_eq!(retry.delay(40, None), Duration::from_secs(3600));
        assert_eq!(
            retry.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        assert_eq!(
            retry.delay(3, Some(Duration::from_secs(1))),
            Duration::from_secs(20)
        );
        assert_eq!(
            retry.delay(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600),
            "a reset far away waits the cap, then asks again"
        );
    }

    #[test]
    fn statuses_and_steps_read_back() {
        for s in LicenseStatus::ALL {
            assert_eq!(LicenseStatus::parse(s.as_str()), Some(s));
        }
        for s in [Step::Invite, Step::Check, Step::Revoke] {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        assert_eq!(LicenseStatus::parse("Active"), None);
    }
}
