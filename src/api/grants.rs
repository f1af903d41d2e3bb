//! `POST /v1/grants`, `GET /v1/grants`, `DELETE /v1/grants/{grant_id}`: plans given without a
//! payment, by support (comps, partner deals) or by an integrator's tests (a test user's plan),
//! and taken back (scope `billing:admin`).

use actix_web::{delete, get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use crate::billing::grant::{GrantId, GrantStatus};
use crate::billing::ids::{TenantId, UserId};
use crate::db::from_db_time;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::grants::{self, GrantView, Listing, NewGrant};
use crate::state::AppState;

const GRANT_ID_PATTERN: &str = "^grant_[0-9a-f]{32}$";

/// A plan to give, until a time or for ever: to a user (`user_id`), a tenant (`tenant_id`; its
/// members share it) or a user in one tenant (both), as the plan's `scope` says.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "plan": "pro",
    "until": "2027-01-31T00:00:00Z",
    "note": "Partner deal with Acme, ticket #4521"
})))]
pub struct GrantIn {
    /// The user who gets the plan (a plan of scope `user` or `membership`).
    #[schema(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// The tenant that gets the plan (a plan of scope `tenant`, shared by its members; or
    /// `membership`, with `user_id`).
    #[schema(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// A paid subscription or lifetime plan of `GET /v1/config` (not the free plan, not a credit
    /// pack).
    #[schema(example = "pro")]
    pub plan: String,
    /// When the grant ends (RFC 3339); leave it out for a grant without end.
    pub until: Option<DateTime<Utc>>,
    /// Why the plan is given (1 to 500 characters): kept with the grant and its audit rows.
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "Partner deal with Acme, ticket #4521"
    )]
    pub note: String,
}

/// A grant, and where it stands now.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "grant_7f9c2ba4e88f827d616045507605853e",
    "user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "tenant_id": null,
    "plan": "pro",
    "until": "2027-01-31T00:00:00Z",
    "note": "Partner deal with Acme, ticket #4521",
    "status": "active",
    "created_by": "support-console",
    "created_at": "2026-11-30T12:00:00Z",
    "revoked_at": null,
    "revoked_by": null
})))]
pub struct GrantOut {
    #[schema(pattern = "^grant_[0-9a-f]{32}$")]
    pub id: String,
    /// The user it was given to (`null` for a tenant's grant).
    pub user_id: Option<String>,
    /// The tenant it was given to (`null` for a user's grant; both are set for a membership's).
    pub tenant_id: Option<String>,
    pub plan: String,
    /// When it ends; `null`: it does not.
    pub until: Option<DateTime<Utc>>,
    pub note: String,
    /// `active` (it takes part in access), `ended` (`until` has passed) or `revoked`.
    #[schema(example = "active")]
    pub status: String,
    /// The caller that gave it (the service token's subject).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The caller that revoked it.
    pub revoked_by: Option<String>,
}

impl From<GrantView> for GrantOut {
    fn from(v: GrantView) -> Self {
        let row = v.row;
        GrantOut {
            id: row.grant_id,
            user_id: v.subject.user_id().map(str::to_owned),
            tenant_id: v.subject.tenant_id().map(str::to_owned),
            plan: row.plan_id,
            until: row.until.map(from_db_time),
            note: row.note,
            status: v.status.as_str().to_owned(),
            created_by: row.created_by,
            created_at: from_db_time(row.created_at),
            revoked_at: row.revoked_at.map(from_db_time),
            revoked_by: row.revoked_by,
        }
    }
}

/// One page of grants, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "data": [{
        "id": "grant_7f9c2ba4e88f827d616045507605853e",
        "user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC", "tenant_id": null,
        "plan": "pro", "until": "2027-01-31T00:00:00Z",
        "note": "Partner deal with Acme, ticket #4521", "status": "active",
        "created_by": "support-console", "created_at": "2026-11-30T12:00:00Z",
        "revoked_at": null, "revoked_by": null
    }],
    "next_cursor": "1795262400000000:grant_7f9c2ba4e88f827d616045507605853e"
})))]
pub struct GrantsOut {
    pub data: Vec<GrantOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Gives a user or a tenant a plan without a payment, at once: it takes part in access like a
/// subscription (reason `granted`; the strongest source wins, and a paid plan of the same rank
/// stands before it), shows in status and entitlements (`grant_id`, `grant_until`), and ends
/// by itself at `until`. Audited. This is also how an integrator's tests give a test user a
/// plan without Stripe.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.grants.create",
    security(("bearer" = [])),
    request_body = GrantIn,
    responses(
        (status = 201, description = "the grant, in force now", body = GrantOut),
        (status = 400, description = "`invalid_body` (not the object described; an RFC 3339 `until`), `invalid_user_id`, `invalid_tenant_id`, or `invalid_note` (1 to 500 characters)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 422, description = "`unknown_plan`, `plan_not_grantable` (the free plan or a credit pack), `holder_mismatch` (not the ids the plan's scope needs: `user_id` for a user's plan, `tenant_id` for a tenant's, both for a membership's), `until_not_in_future`, or `until_too_late` (after the year 9999)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/grants")]
pub async fn create_grant(
    state: web::Data<AppState>,
    service: Service<AdminScope>,
    body: params::JsonObject<GrantIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = NewGrant {
        user_id: body.user_id.as_deref().map(params::user_id).transpose()?,
        tenant_id: params::optional_tenant_id(body.tenant_id.as_deref())?,
        plan_id: body.plan,
        until: body.until,
        note: body.note,
    };
    let view = grants::create(&state, new, &service.0.subject).await?;
    Ok(HttpResponse::Created().json(GrantOut::from(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct GrantPath {
    /// The grant's id, as `POST /v1/grants` answered it.
    #[param(
        pattern = "^grant_[0-9a-f]{32}$",
        example = "grant_7f9c2ba4e88f827d616045507605853e"
    )]
    pub grant_id: String,
}

fn grant_id(value: &str) -> Result<GrantId, ApiError> {
    GrantId::parse(value).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_grant_id",
            format!("a grant id matches {GRANT_ID_PATTERN}"),
        )
    })
}

/// Takes a grant back at once: it no longer takes part in access (on every replica, as soon as
/// the write commits). The grant is kept, `revoked`, with its audit rows. Repeating it answers
/// the grant as it was revoked the first time.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.grants.delete",
    security(("bearer" = [])),
    params(GrantPath),
    responses(
        (status = 200, description = "the grant, revoked", body = GrantOut),
        (status = 400, description = "`invalid_grant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::BodyTooLarge,
        (status = 404, description = "`grant_not_found`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/v1/grants/{grant_id}")]
pub async fn delete_grant(
    state: web::Data<AppState>,
    service: Service<AdminScope>,
    path: web::Path<GrantPath>,
) -> Result<HttpResponse, ApiError> {
    let id = grant_id(&path.grant_id)?;
    let view = grants::revoke(&state, &id, &service.0.subject).await?;
    Ok(HttpResponse::Ok().json(GrantOut::from(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantsQuery {
    /// Only grants held by this user (with `tenant_id`: by this user in that tenant).
    #[param(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// Only grants held by this tenant (with `user_id`: by that user in this tenant).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// Only grants of this plan (also a plan the catalog no longer has: its grants are kept).
    #[param(value_type = Option<String>, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$", example = "pro")]
    pub plan: Option<String>,
    /// `active`, `ended` or `revoked`.
    #[param(pattern = "^(active|ended|revoked)$", example = "active")]
    pub status: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,17}:grant_[0-9a-f]{32}$",
        example = "1795262400000000:grant_7f9c2ba4e88f827d616045507605853e"
    )]
    pub cursor: Option<String>,
}

/// `<microseconds since 1970>:<grant id>`, as `next_cursor` gives it.
fn parse_cursor(cursor: &str) -> Option<(chrono::NaiveDateTime, String)> {
    let (us, id) = cursor.split_once(':')?;
    if us.is_empty() || us.len() > 17 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = DateTime::from_timestamp_micros(us.parse().ok()?)?.naive_utc();
    Some((at, GrantId::parse(id)?.to_string()))
}

/// Grants, newest first; the filters combine. A page starts after the previous page's last
/// grant, so grants made meanwhile neither repeat nor shift it.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.grants.list",
    security(("bearer" = [])),
    params(GrantsQuery),
    responses(
        (status = 200, description = "one page of grants, newest first", body = GrantsOut),
        (status = 400, description = "`invalid_query`, `invalid_user_id`, `invalid_tenant_id`, `invalid_plan` (blank, too long, or with a control character), `invalid_status` (not active, ended or revoked), `invalid_limit` (not 1 to 100), or `invalid_cursor` (not a `next_cursor` this endpoint gave)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
    )
)]
#[get("/v1/grants")]
pub async fn list_grants(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    query: web::Query<GrantsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let subject = params::subject(query.user_id.as_deref(), query.tenant_id.as_deref())?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(GrantStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("invalid_status", "status must be active, ended or revoked")
        })?),
    };
    let (limit, after) = params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    if let Some(plan) = query.plan.as_deref() {
        crate::billing::ids::check_external_id(plan).map_err(|e| {
            ApiError::bad_request(
                "invalid_plan",
                format!("`plan` {e}: a plan id as configured"),
            )
        })?;
    }
    let listing = Listing {
        subject,
        plan_id: query.plan,
        status,
        after,
        limit: limit as u32,
    };
    let (views, more) = grants::list(&state, listing).await?;
    let next_cursor = more
        .then(|| {
            views.last().map(|v| {
                format!(
                    "{}:{}",
                    v.row.created_at.and_utc().timestamp_micros(),
                    v.row.grant_id
                )
            })
        })
        .flatten();
    let data = views.into_iter().map(GrantOut::from).collect();
    Ok(HttpResponse::Ok().json(GrantsOut { data, next_cursor }))
}
