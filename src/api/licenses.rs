//! `GET /v1/licenses` and `POST /v1/licenses/{license_id}/github` (the buyer), and
//! `GET /v1/admin/licenses` (operators): licenses that provision GitHub access after a purchase
//! (docs/LICENSES.md).

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use crate::billing::license::{GithubUsername, License, LicenseStatus};
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, EndUser, Service};
use crate::service::error::ServiceError;
use crate::service::licenses::{self, AdminListing, AdminView};
use crate::state::AppState;

const LICENSE_ID_PATTERN: &str = "^lic_[0-9a-f]{32}$";

fn license_id(value: &str) -> Result<String, ApiError> {
    let ok = value.len() == 36
        && value.starts_with("lic_")
        && value[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_license_id",
            format!("a license id matches {LICENSE_ID_PATTERN}"),
        ))
    }
}

/// The caller's licenses.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "data": [{
        "id": "lic_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b",
        "status": "invited",
        "plan": "lifetime",
        "checkout_session_id": "cs_test_a1b2c3",
        "user_id": "alice",
        "github_username": "octocat",
        "pending_step": "check",
        "created_at": "2026-11-30T12:00:00Z",
        "username_submitted_at": "2026-11-30T12:05:00Z",
        "invited_at": "2026-11-30T12:05:01Z",
        "invitation_expired_at": null,
        "accepted_at": null,
        "revoked_at": null
    }]
})))]
pub struct LicensesOut {
    pub data: Vec<License>,
}

/// The buyer's licenses, newest first: one per purchase of a plan that provisions GitHub
/// access, with where each stands (`pending` until a GitHub username is submitted, then
/// `username_submitted`, `invited`, `active`; `revoked` after a refund or a lost dispute).
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.licenses.list",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the caller's licenses, newest first", body = LicensesOut),
        super::responses::Unauthorized,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/licenses")]
pub async fn list_licenses(
    state: web::Data<AppState>,
    user: EndUser,
) -> Result<HttpResponse, ApiError> {
    let data = licenses::own(&state, &user.0.subject).await?;
    Ok(HttpResponse::Ok().json(LicensesOut { data }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LicensePath {
    /// The license's id, as `GET /v1/licenses` or `license.created` gave it.
    #[param(
        pattern = "^lic_[0-9a-f]{32}$",
        example = "lic_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b"
    )]
    pub license_id: String,
}

/// The GitHub account to invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({ "username": "octocat" })))]
pub struct GithubIn {
    /// A GitHub username: 1 to 39 letters, digits or single hyphens, neither first nor last.
    #[schema(
        min_length = 1,
        max_length = 39,
        pattern = "^[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}$",
        example = "octocat"
    )]
    pub username: String,
}

/// The buyer names the GitHub account to invite. The username is checked against GitHub's
/// rules, then with GitHub (it must exist); the invitation to the organization, with the team
/// that reads the repository, is then sent in the background (`license.invited`) and tracked
/// until accepted (`license.active`). Another username before acceptance cancels the pending
/// invitation and invites the new one; the same username again after GitHub expired the
/// invitation sends a new one; the same username while invited changes nothing.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.licenses.github",
    security(("bearer" = [])),
    params(LicensePath),
    request_body = GithubIn,
    responses(
        (status = 200, description = "the same username was already submitted or invited: the license as it stands", body = License),
        (status = 202, description = "the username is stored (`username_submitted`); the invitation follows", body = License),
        (status = 400, description = "`invalid_body`, `invalid_license_id`, or `invalid_github_username` (not a username GitHub allows)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`not_license_holder`: only the buyer names the account", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`license_not_found`", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`license_revoked` (refunded or disputed) or `license_active` (already accepted)", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 422, description = "`github_user_not_found`: GitHub has no such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many usernames submitted this hour (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`github_unavailable` (GitHub did not answer the check; `Retry-After`), `github_not_configured`, or `identity_provider_unavailable`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/licenses/{license_id}/github")]
pub async fn submit_github(
    state: web::Data<AppState>,
    user: EndUser,
    path: web::Path<LicensePath>,
    body: params::JsonObject<GithubIn>,
) -> Result<HttpResponse, ApiError> {
    let id = license_id(&path.license_id)?;
    let username = GithubUsername::parse(body.into_inner().username.trim()).map_err(|e| {
        ApiError::bad_request(
            "invalid_github_username",
            format!("the GitHub username {e}"),
        )
    })?;
    let (license, changed) = licenses::submit_username(&state, &user.0.subject, &id, username)
        .await
        .map_err(|e| match e {
            // GitHub's outages are short: worth trying again soon.
            ServiceError::Refused {
                code: "github_unavailable",
                ..
            } => ApiError::from(e).retry_after(10),
            e => ApiError::from(e),
        })?;
    Ok(if changed {
        HttpResponse::Accepted().json(license)
    } else {
        HttpResponse::Ok().json(license)
    })
}

/// A license with the work Tollgate is doing for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminLicenseOut {
    #[serde(flatten)]
    pub license: License,
    /// Failed attempts of the pending step.
    pub attempts: i32,
    /// The last failure of the pending step (GitHub's answer).
    pub last_error: Option<String>,
    /// When the pending step is next tried.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// `pending` more than 24 hours (since the purchase, or the won dispute that restored it),
    /// `username_submitted` more than 24 hours without an invitation, or `invited` more than 7
    /// days without acceptance.
    pub stuck: bool,
}

impl From<AdminView> for AdminLicenseOut {
    fn from(v: AdminView) -> Self {
        AdminLicenseOut {
            license: v.license,
            attempts: v.attempts,
            last_error: v.last_error,
            next_attempt_at: v.next_attempt_at,
            stuck: v.stuck,
        }
    }
}

/// One page of licenses, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminLicensesOut {
    pub data: Vec<AdminLicenseOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminLicensesQuery {
    /// Only licenses in this state.
    #[param(
        pattern = "^(pending|username_submitted|invited|active|revoked)$",
        example = "invited"
    )]
    pub status: Option<String>,
    /// `true`: only stuck licenses (pending or not yet invited more than 24 hours, invited more
    /// than 7 days).
    #[param(pattern = "^(true|false)$", example = "true")]
    pub stuck: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,17}:lic_[0-9a-f]{32}$",
        example = "1795262400000000:lic_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b"
    )]
    pub cursor: Option<String>,
}

/// `<microseconds since 1970>:<license id>`, as `next_cursor` gives it.
fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let (us, id) = cursor.split_once(':')?;
    if us.is_empty() || us.len() > 17 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = DateTime::from_timestamp_micros(us.parse().ok()?)?;
    Some((at, license_id(id).ok()?))
}

/// Licenses for operators and support, newest first: by state, or only the stuck ones, with
/// the GitHub work pending for each and its last error.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.licenses.list",
    security(("bearer" = [])),
    params(AdminLicensesQuery),
    responses(
        (status = 200, description = "one page of licenses, newest first", body = AdminLicensesOut),
        (status = 400, description = "`invalid_query`, `invalid_status`, `invalid_stuck` (not true or false), `invalid_limit` (not 1 to 100), or `invalid_cursor`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
    )
)]
#[get("/v1/admin/licenses")]
pub async fn admin_list_licenses(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    query: web::Query<AdminLicensesQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(LicenseStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_status",
                "status must be pending, username_submitted, invited, active or revoked",
            )
        })?),
    };
    let stuck = match query.stuck.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_stuck",
                "stuck must be true or false",
            ))
        }
    };
    let (limit, before) = params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    let mut views = licenses::list(
        &state,
        AdminListing {
            status,
            stuck,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let more = views.len() as i64 > limit;
    views.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            views.last().map(|v| {
                format!(
                    "{}:{}",
                    v.license.created_at.timestamp_micros(),
                    v.license.id
                )
            })
        })
        .flatten();
    let data = views.into_iter().map(AdminLicenseOut::from).collect();
    Ok(HttpResponse::Ok().json(AdminLicensesOut { data, next_cursor }))
}
