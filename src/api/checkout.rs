//! Checkout, verify and portal for the frontend.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use super::status::StatusOut;
use crate::billing::catalog::Interval;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::checkout::{self as flow, CheckoutRequest};
use crate::service::status::{status_of, Exemption};
use crate::startup::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutIn {
    /// Plan id or alias (see `GET /v1/config`).
    pub plan: String,
    pub interval: Interval,
    /// A promotion code customers know (e.g. `EARLYCODE`); without one they may type a code.
    pub promo_code: Option<String>,
    /// Must be on an allowed origin; `{CHECKOUT_SESSION_ID}` is filled in by Stripe.
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    /// Seats, for subscription plans (default 1).
    pub quantity: Option<u64>,
    /// For tenant and membership plans: the tenant to buy for, which the token's tenant claim
    /// must list (default: the one tenant the claim names).
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutOut {
    pub session_id: String,
    /// Redirect the browser here.
    pub url: String,
}

/// Starts a Stripe Checkout for a plan and interval.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.checkout.create",
    security(("bearer" = [])),
    request_body = CheckoutIn,
    responses(
        (status = 201, body = CheckoutOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "price outside STRIPE_ALLOWED_PRICE_IDS (`price_not_allowed`), a tenant the token does not list (`tenant_not_allowed`), or a tenant subscription managed by another member (`not_billing_manager`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "a subscription already stands, or the tenant was removed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown plan, interval, promotion code or redirect", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Stripe is not configured", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/checkout")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn create_checkout(
    state: web::Data<AppState>,
    user: EndUser,
    body: web::Json<CheckoutIn>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let promo_code = body
        .promo_code
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(params::promo_code)
        .transpose()?;
    let request = CheckoutRequest {
        plan: body.plan,
        interval: body.interval,
        promo_code,
        success_url: body.success_url,
        cancel_url: body.cancel_url,
        quantity: body.quantity.unwrap_or(1),
        tenant_id: params::optional_tenant_id(body.tenant_id.as_deref())?,
    };
    let session = flow::start_checkout(&state, &user.0, request).await?;
    let url = session.url.ok_or_else(|| {
        ApiError::upstream(anyhow::anyhow!(
            "Stripe returned a Checkout Session without a url"
        ))
    })?;
    Ok(HttpResponse::Created().json(CheckoutOut {
        session_id: session.id,
        url,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The `{CHECKOUT_SESSION_ID}` Stripe put in the success URL.
    pub session_id: String,
}

/// After the redirect back: activates at once from the Checkout Session and returns the status.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.checkout.verify",
    security(("bearer" = [])),
    params(VerifyQuery),
    responses(
        (status = 200, body = StatusOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "the session is someone else's", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/v1/checkout/verify")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn verify_checkout(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    let session_id = params::session_id(&query.session_id)?;
    let actor = flow::verify_checkout(&state, &user.0, &session_id).await?;
    let view = status_of(&state, &actor, Exemption::Token(user.0.exempt)).await?;
    Ok(HttpResponse::Ok().json(StatusOut::from(view)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalIn {
    /// Where the portal's back link goes; must be on an allowed origin.
    pub return_url: Option<String>,
    /// The tenant to act in (see `POST /v1/checkout`); a tenant's portal opens only for its
    /// billing manager.
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalOut {
    pub url: String,
}

/// Opens the Stripe customer portal (also for past-due customers, so they can pay).
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.portal.create",
    security(("bearer" = [])),
    request_body(content = Option<PortalIn>),
    responses(
        (status = 200, body = PortalOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`tenant_not_allowed`, or `not_billing_manager` for a tenant's portal", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no Stripe customer yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/portal")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn create_portal(
    state: web::Data<AppState>,
    user: EndUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional, but one that is sent must be right.
    let body: PortalIn = if body.iter().all(u8::is_ascii_whitespace) {
        PortalIn::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_body", format!("the JSON body does not fit: {e}"))
        })?
    };
    let tenant_id = params::optional_tenant_id(body.tenant_id.as_deref())?;
    let url = flow::open_portal(&state, &user.0, body.return_url, tenant_id).await?;
    Ok(HttpResponse::Ok().json(PortalOut { url }))
}
