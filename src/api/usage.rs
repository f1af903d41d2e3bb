//! `POST /v1/usage`: sibling services spend a subject's quota.

use actix_web::http::StatusCode;
use actix_web::{post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::access::Reason;
use crate::billing::ids::{IdempotencyKey, TenantId, UserId};
use crate::billing::quota::QuotaRefusal;
use crate::error::{ApiError, Problem};
use crate::identity::{Service, WriteScope};
use crate::service::quotas::{consume, UsageOutcome, UsageRequest};
use crate::service::status::Exemption;
use crate::state::AppState;

use super::params::service_actor;
use super::status::QuotaView;

/// A consumption of a user's quota.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "quota": "generations",
    "amount": 1,
    "idempotency_key": "render-7f3a9c"
})))]
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

/// A granted consumption.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "granted": true, "quota": "generations", "amount": 1, "idempotency_key": "render-7f3a9c",
    "from_allowance": 1, "from_balance": 0,
    "key": "generations", "limit": 250, "period": "billing_period", "used": 13, "balance": 0,
    "remaining": 237, "resets_at": "2026-12-21T12:00:00Z"
})))]
pub struct UsageOut {
    pub granted: bool,
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// Taken from the periodic allowance.
    pub from_allowance: u64,
    /// Taken from purchased credits.
    pub from_balance: u64,
    #[serde(flatten)]
    pub after: QuotaView,
}

/// A refused consumption: a problem document (`quota_exhausted`, `no_access`,
/// `quota_not_in_plan`) that also says what is left. Nothing was consumed.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "type": "urn:tollgate:problem:quota_exhausted", "title": "Payment Required", "status": 402,
    "detail": "2 of `generations` asked, 1 left; nothing was consumed",
    "code": "quota_exhausted",
    "granted": false, "quota": "generations", "amount": 2, "idempotency_key": "render-7f3a9d",
    "reason": "active",
    "key": "generations", "limit": 250, "period": "billing_period", "used": 249, "balance": 0,
    "remaining": 1, "resets_at": "2026-12-21T12:00:00Z"
})))]
pub struct UsageRefusal {
    #[serde(flatten)]
    pub problem: Problem,
    pub granted: bool,
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// The access reason of the subject (e.g. `free`, `canceled`).
    pub reason: Reason,
    #[serde(flatten)]
    pub after: QuotaView,
}

/// The answer a decision gives, the first time and for every replay: `UsageOut`, or a
/// `UsageRefusal` problem document (402 when an allowance or credits exist but do not cover the
/// amount, 403 when the subject has neither the quota nor credits for it).
fn answer(outcome: UsageOutcome, idempotency_key: String) -> HttpResponse {
    let after = QuotaView::from(outcome.after);
    let Some(refusal) = outcome.refusal else {
        let mut response = HttpResponse::Ok();
        if outcome.replayed {
            response.insert_header(("Idempotent-Replayed", "true"));
        }
        return response.json(UsageOut {
            granted: true,
            quota: outcome.quota,
            amount: outcome.amount,
            idempotency_key,
            from_allowance: outcome.from_allowance,
            from_balance: outcome.from_balance,
            after,
        });
    };
    let (status, detail) = match refusal {
        QuotaRefusal::Exhausted => (
            StatusCode::PAYMENT_REQUIRED,
            format!(
                "{} of `{}` asked, {} left; nothing was consumed",
                outcome.amount,
                outcome.quota,
                after.remaining.unwrap_or(0)
            ),
        ),
        QuotaRefusal::NotInPlan => (
            StatusCode::FORBIDDEN,
            format!(
                "the plan in force has no `{}` quota and no credits were bought for it",
                outcome.quota
            ),
        ),
        QuotaRefusal::NoAccess => (
            StatusCode::FORBIDDEN,
            format!(
                "the subject has no access that includes `{}`",
                outcome.quota
            ),
        ),
    };
    let mut response = HttpResponse::build(status);
    response.content_type("application/problem+json");
    if outcome.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    let body = UsageRefusal {
        problem: Problem::new(status, refusal.code(), detail),
        granted: false,
        quota: outcome.quota,
        amount: outcome.amount,
        idempotency_key,
        reason: outcome.reason,
        after,
    };
    // `json` keeps the problem content type set above.
    response.json(body)
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
        super::responses::Unauthorized,
        (status = 402, description = "`quota_exhausted`: not enough left; nothing consumed", body = UsageRefusal, content_type = "application/problem+json"),
        (status = 403, description = "`missing_scope` (the token lacks the write scope), `no_access` (the subject has no access) or `quota_not_in_plan` (its plan lacks the quota); the last two carry the `UsageRefusal` fields", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_key_reused`: the key was used for another quota or amount", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 422, description = "`unknown_quota`: no plan declares the quota", body = Problem, content_type = "application/problem+json"),
        super::responses::IdentityUnavailable,
    )
)]
#[post("/v1/usage")]
pub async fn create_usage(
    state: web::Data<AppState>,
    service: Service<WriteScope>,
    body: super::params::JsonObject<UsageIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let actor = service_actor(&body.user_id, body.tenant_id.as_deref())?;
    let idempotency_key = body.idempotency_key.clone();
    let outcome = consume(
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
    Ok(answer(outcome, idempotency_key))
}
