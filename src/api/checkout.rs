//! Checkout, verify and portal for the frontend.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use super::status::StatusOut;
use crate::billing::catalog::Interval;
use crate::billing::ids::TenantId;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::checkout::{self as flow, CheckoutRequest};
use crate::service::status::{status_of, Exemption};
use crate::state::AppState;
use crate::stripe::CheckoutSessionId;

/// What to buy, and where Stripe sends the browser afterwards.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({
    "plan": "pro",
    "interval": "month",
    "success_url": "https://app.example.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://app.example.com/pricing",
    "quantity": 1
})))]
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
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 10_000)]
    pub quantity: Option<serde_json::Number>,
    /// For tenant and membership plans: the tenant to buy for, which the token's tenant claim
    /// must list (default: the one tenant the claim names).
    #[schema(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
}

/// A Stripe Checkout Session started for the caller.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "session_id": "cs_test_a1b2c3",
    "url": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3"
})))]
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
        (status = 201, description = "the Checkout Session: send the browser to `url`", body = CheckoutOut),
        (status = 400, description = "`invalid_body`, `invalid_tenant_id`, or `tenant_required` (a tenant or membership plan, and no tenant named)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`price_not_allowed` (outside STRIPE_ALLOWED_PRICE_IDS), `tenant_not_allowed` (the token does not list the tenant), or `not_billing_manager` (another member manages the tenant's subscription)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`subscription_exists` (change it through the portal or `/v1/subscription/change`), `already_purchased` (the lifetime plan is owned), `tenant_removed`, or `checkout_just_completed` (an older open checkout of the subject was paid meanwhile: verify it)", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 422, description = "`unknown_plan`, `unknown_interval`, `invalid_quantity`, `redirect_not_allowed`, or `unknown_promotion_code`: the request is well formed but names something the configuration or Stripe does not have", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`: too many checkouts a minute; try again after `Retry-After` seconds", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "seconds until the next checkout is allowed"))),
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/checkout")]
pub async fn create_checkout(
    state: web::Data<AppState>,
    user: EndUser,
    body: super::params::JsonObject<CheckoutIn>,
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
        quantity: body.quantity.as_ref().map_or(1, params::quantity),
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
    #[param(value_type = CheckoutSessionId, inline, example = "cs_test_a1b2c3")]
    pub session_id: String,
}

/// After the redirect back: activates at once from the Checkout Session and returns the status.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.checkout.verify",
    security(("bearer" = [])),
    params(VerifyQuery),
    responses(
        (status = 200, description = "the caller's status after syncing the session's customer", body = StatusOut),
        (status = 400, description = "`invalid_query`, or `invalid_session_id` (not `cs_` followed by letters, digits and `_`)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`not_your_session`: the session belongs to someone else", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`checkout_session_not_found`: Stripe has no such Checkout Session", body = Problem, content_type = "application/problem+json"),
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[get("/v1/checkout/verify")]
pub async fn verify_checkout(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<VerifyQuery>,
) -> Result<HttpResponse, ApiError> {
    let session_id = params::session_id(&query.session_id)?;
    let actor = flow::verify_checkout(&state, &user.0, &session_id).await?;
    let view = status_of(&state, &actor, Exemption::Token(user.0.exempt)).await?;
    Ok(HttpResponse::Ok().json(StatusOut::of(view, None)))
}

/// Optional settings of a portal session.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"return_url": "https://app.example.com/account"})))]
pub struct PortalIn {
    /// Where the portal's back link goes; must be on an allowed origin.
    pub return_url: Option<String>,
    /// The tenant to act in (see `POST /v1/checkout`); a tenant's portal opens only for its
    /// billing manager.
    #[schema(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
}

/// A Stripe customer portal session.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"url": "https://billing.stripe.com/p/session/test_YWNjdF8xTnZGcTI"})))]
pub struct PortalOut {
    /// Redirect the browser here.
    pub url: String,
}

/// Opens the Stripe customer portal (also for past-due customers, so they can pay).
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.portal.create",
    security(("bearer" = [])),
    request_body(content = Option<PortalIn>),
    responses(
        (status = 200, description = "the portal session: send the browser to `url`", body = PortalOut),
        (status = 400, description = "`invalid_body` or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`tenant_not_allowed`, or `not_billing_manager` for a tenant's portal", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`no_billing_account`: no Stripe customer yet (start a checkout first)", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        (status = 422, description = "`redirect_not_allowed`: `return_url` is not on an allowed origin", body = Problem, content_type = "application/problem+json"),
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/portal")]
pub async fn create_portal(
    state: web::Data<AppState>,
    user: EndUser,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // The body is optional (none, or `null`), but one that is sent must be right.
    let body: PortalIn = if body.iter().all(u8::is_ascii_whitespace) {
        PortalIn::default()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Null) => PortalIn::default(),
            Ok(value) => params::object(value)?,
            Err(e) => return Err(ApiError::body_does_not_fit(e)),
        }
    };
    let tenant_id = params::optional_tenant_id(body.tenant_id.as_deref())?;
    let url = flow::open_portal(&state, &user.0, body.return_url, tenant_id).await?;
    Ok(HttpResponse::Ok().json(PortalOut { url }))
}
