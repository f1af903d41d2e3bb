//! `POST /v1/subscription/{cancel,resume,change}`: manage one's own subscription.

use actix_web::{post, web, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

use super::status::StatusOut;
use crate::billing::catalog::Interval;
use crate::billing::subject::Subject;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::manage;
use crate::service::status::{status_of, Exemption};
use crate::startup::AppState;

async fn status_after(
    state: &AppState,
    subject: Subject,
    user: &EndUser,
) -> Result<HttpResponse, ApiError> {
    let view = status_of(state, &subject, Exemption::Token(user.0.exempt)).await?;
    Ok(HttpResponse::Ok().json(StatusOut::from(view)))
}

/// Cancels at the end of the paid period; access stays until then. Idempotent.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.cancel",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no subscription to manage", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/subscription/cancel")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn cancel_subscription(
    state: web::Data<AppState>,
    user: EndUser,
) -> Result<HttpResponse, ApiError> {
    let subject = manage::cancel(&state, &user.0).await?;
    status_after(&state, subject, &user).await
}

/// Withdraws a scheduled cancellation, or resumes a paused subscription. Idempotent.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.resume",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no subscription to manage", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/subscription/resume")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn resume_subscription(
    state: web::Data<AppState>,
    user: EndUser,
) -> Result<HttpResponse, ApiError> {
    let subject = manage::resume(&state, &user.0).await?;
    status_after(&state, subject, &user).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeIn {
    /// Plan id or alias of a subscription plan.
    pub plan: String,
    pub interval: Interval,
}

/// Moves the subscription to another plan or interval, prorated as Stripe computes it.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.subscription.change",
    security(("bearer" = [])),
    request_body = ChangeIn,
    responses(
        (status = 200, description = "the status after the change", body = StatusOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "price outside STRIPE_ALLOWED_PRICE_IDS", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no subscription to manage", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown plan or interval, or a one-time plan", body = Problem, content_type = "application/problem+json"),
        (status = 502, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/subscription/change")]
#[tracing::instrument(skip_all, fields(caller))]
pub async fn change_subscription(
    state: web::Data<AppState>,
    user: EndUser,
    body: web::Json<ChangeIn>,
) -> Result<HttpResponse, ApiError> {
    let subject = manage::change(&state, &user.0, &body.plan, body.interval).await?;
    status_after(&state, subject, &user).await
}
