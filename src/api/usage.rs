//! `POST /v1/usage`: sibling services spend a subject's quota.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::billing::ids::{IdempotencyKey, TenantId, UserId};
use crate::error::{ApiError, Problem};
use crate::identity::{Service, WriteScope};
use crate::service::quotas::{consume, UsageOut, UsageRefusal, UsageRequest};
use crate::service::status::Exemption;
use crate::startup::AppState;

use super::params::service_actor;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageIn {
    /// The identity provider's user id.
    #[schema(value_type = UserId)]
    pub user_id: String,
    /// The tenant the user acts in: a tenant's plan is spent by all its members together.
    #[schema(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// The quota key, as the plans declare it (e.g. `credits`, `generations`).
    pub quota: String,
    /// How much to consume (1 to 1,000,000,000): all of it or nothing.
    #[schema(value_type = u64, minimum = 1, maximum = 1_000_000_000)]
    pub amount: serde_json::Number,
    /// Unique per logical consumption (1 to 255 characters); a retry with the same key gets
    /// the first answer again and consumes nothing more.
    #[schema(value_type = IdempotencyKey)]
    pub idempotency_key: String,
}

/// Consumes `amount` of a quota for a user (in a tenant: from the grant that stands for them,
/// so a tenant's plan is shared by its members): atomically (all or nothing), never beyond the
/// period's allowance plus purchased credits (also with many replicas), once per
/// `idempotency_key`. Every consumption and refusal is written to the usage ledger.
/// A replayed answer carries the header `Idempotent-Replayed: true`.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.usage.create",
    security(("bearer" = [])),
    request_body = UsageIn,
    responses(
        (status = 200, description = "granted: what is left (a replay carries `Idempotent-Replayed: true`)", body = UsageOut),
        (status = 400, description = "`invalid_body`, `invalid_user_id`, `invalid_tenant_id`, `invalid_amount` (not 1 to 1,000,000,000), or `invalid_idempotency_key`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = super::responses::UNAUTHORIZED, body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "`quota_exhausted`: not enough left; nothing consumed", body = UsageRefusal, content_type = "application/problem+json"),
        (status = 403, description = "`missing_scope` (the token lacks the write scope), `no_access` (the subject has no access) or `quota_not_in_plan` (its plan lacks the quota); the last two carry the `UsageRefusal` fields", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_key_reused`: the key was used for another quota or amount", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = super::responses::BODY_TOO_LARGE, body = Problem, content_type = "application/problem+json"),
        (status = 415, description = super::responses::NOT_JSON, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`unknown_quota`: no plan declares the quota", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = super::responses::IDENTITY_UNAVAILABLE, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/usage")]
#[tracing::instrument(skip_all)]
pub async fn create_usage(
    state: web::Data<AppState>,
    service: Service<WriteScope>,
    body: web::Json<UsageIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let actor = service_actor(&body.user_id, body.tenant_id.as_deref())?;
    let answer = consume(
        &state,
        &actor,
        Exemption::for_service(&state, actor.user_id.as_str()),
        UsageRequest {
            quota: body.quota,
            // Out of range (negative, fractional, huge) is the documented `invalid_amount`,
            // not a body that does not fit.
            amount: super::params::whole_number(&body.amount).unwrap_or(0),
            idempotency_key: body.idempotency_key,
            caller: service.0.subject.into(),
        },
    )
    .await?;
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = HttpResponse::build(status);
    response.content_type(if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    });
    if answer.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.body(answer.body))
}
