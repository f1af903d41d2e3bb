//! `POST /v1/subscription/{cancel,resume,change}`: manage one's own subscription, or a
//! tenant's as its billing manager.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::status::{StatusOut, TenantQuery};
use crate::billing::catalog::Interval;
use crate::billing::ids::TenantId;
use crate::billing::scope::Actor;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::actors::actor_for;
use crate::service::manage;
use crate::service::status::{status_of, Exemption};
use crate::state::AppState;

async fn status_after(
    state: &AppState,
    actor: &Actor,
    user: &EndUser,
) -> Result<HttpResponse, ApiError> {
    let view = status_of(state, actor, Exemption::Token(user.0.exempt)).await?;
    Ok(HttpResponse::Ok().json(StatusOut::of(view, None)))
}

/// What cancel and resume ask of the subscription.
enum Change {
    Cancel,
    Resume,
}

/// The body cancel and resume share: who acts, the change, then the status after it.
async fn apply(
    state: &AppState,
    user: &EndUser,
    query: &TenantQuery,
    change: Change,
) -> Result<HttpResponse, ApiError> {
    let actor = actor_for(
        &user.0,
        super::params::optional_tenant_id(query.tenant_id.as_deref())?,
    )?;
    match change {
        Change::Cancel => manage::cancel(state, &user.0, &actor).await?,
        Change::Resume => manage::resume(state, &user.0, &actor).await?,
    }
    status_after(state, &actor, user).await
}

/// Cancels at the end of the paid period; access stays until then. Idempotent.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.cancel",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 400, description = "`invalid_query` or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`tenant_not_allowed`, or `not_billing_manager` for a tenant's subscription", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`no_subscription`: nothing to manage", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/subscription/cancel")]
pub async fn cancel_subscription(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, &user, &query, Change::Cancel).await
}

/// Withdraws a scheduled cancellation and lifts a paused payment collection (Stripe collects
/// again from the next invoice), or resumes a paused subscription. Idempotent.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.resume",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 400, description = "`invalid_query` or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`tenant_not_allowed`, or `not_billing_manager` for a tenant's subscription", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`no_subscription`: nothing to manage", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/subscription/resume")]
pub async fn resume_subscription(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    apply(&state, &user, &query, Change::Resume).await
}

/// The plan, interval and seats to move the subscription to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"plan": "pro", "interval": "year", "quantity": 1})))]
pub struct ChangeIn {
    /// Plan id or alias of a subscription plan.
    pub plan: String,
    pub interval: Interval,
    /// Seats (default: unchanged).
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 10_000)]
    pub quantity: Option<serde_json::Number>,
    /// The tenant to act in (see `POST /v1/checkout`).
    #[schema(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
}

/// Moves the subscription to another plan, interval or number of seats. An upgrade (a
/// higher-ranked plan, or more seats) is billed as `billing.upgrade_proration` says; with the
/// default, `always_invoice`, it is charged at once and granted only once paid (`402
/// upgrade_not_paid` otherwise, and the current plan stays). A downgrade takes effect at once,
/// billed as `billing.downgrade_proration` says.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.change",
    security(("bearer" = [])),
    request_body = ChangeIn,
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 400, description = "`invalid_body` or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 402, description = "`upgrade_not_paid`: the upgrade's invoice was not paid (declined, or the card needs authentication); the current plan stays, and paying the open invoice in the portal within 23 hours applies the change", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`price_not_allowed`, `tenant_not_allowed`, or `not_billing_manager`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`no_subscription`: nothing to change", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 422, description = "`unknown_plan`, `unknown_interval`, `invalid_quantity`, or `not_a_subscription_plan`", body = Problem, content_type = "application/problem+json"),
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/subscription/change")]
pub async fn change_subscription(
    state: web::Data<AppState>,
    user: EndUser,
    body: super::params::JsonObject<ChangeIn>,
) -> Result<HttpResponse, ApiError> {
    let actor = actor_for(
        &user.0,
        super::params::optional_tenant_id(body.tenant_id.as_deref())?,
    )?;
    manage::change(
        &state,
        &user.0,
        &actor,
        &body.plan,
        body.interval,
        body.quantity.as_ref().map(super::params::quantity),
    )
    .await?;
    status_after(&state, &actor, &user).await
}
