//! `POST /v1/webhooks/stripe`.

use actix_web::{post, web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::service::gateway::stripe;
use crate::service::webhooks::{receive, record_only, EventOutcome};
use crate::state::AppState;
use crate::stripe::webhook::{verify, WebhookRejection};

/// The event was taken.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"received": true, "duplicate": false})))]
pub struct WebhookOut {
    /// The event is stored: it will be applied (by a worker, in any replica), or needed no
    /// work.
    pub received: bool,
    /// True when this event id was stored before (nothing more is done).
    pub duplicate: bool,
}

/// Stripe's signed events, acknowledged from a durable inbox: a verified event is stored and
/// answered `200` as soon as its row is committed; workers apply it (one re-read of its
/// customer from Stripe for all the customer's pending events). A failure to store it answers
/// 5xx so that Stripe retries.
#[utoipa::path(
    tag = "stripe",
    operation_id = "v1.webhooks.stripe",
    request_body(content = String, description = "The event exactly as Stripe signed it", content_type = "application/json"),
    params(("Stripe-Signature" = String, Header, description = "t=...,v1=...")),
    responses(
        (status = 200, description = "stored (to be applied by a worker), or a duplicate of an event stored before", body = WebhookOut),
        (status = 400, description = "`missing_signature`, `invalid_signature`, `stale_signature`, or `invalid_payload`: refused for good, nothing stored", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        (status = 500, description = "`internal_error`: not stored; Stripe will retry", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`stripe_not_configured` (no STRIPE_SECRET_KEY or webhook secret), or `billing_disabled` (SAAS=false and no webhook secret: events are not even stored)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/webhooks/stripe")]
#[tracing::instrument(skip_all, fields(event_id, event_type))]
pub async fn stripe_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // With billing off, events are still checked and stored (see `record_only`).
    let gateway = match stripe(&state) {
        Ok(gateway) => Some(gateway),
        Err(_) if !state.settings.saas && !state.settings.stripe.webhook_secrets.is_empty() => None,
        Err(e) => return Err(e.into()),
    };
    let payload = std::str::from_utf8(&body)
        .map_err(|_| rejected(WebhookRejection::Malformed("the body is not UTF-8".into())))?;
    let signature = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|v| v.to_str().ok());
    let event =
        verify(payload, signature, &state.settings.stripe.webhook_secrets).map_err(rejected)?;
    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("event_type", event.event_type.as_str());
    let outcome = match gateway {
        Some(_) => receive(&state, &event, payload).await,
        None => record_only(&state, &event, payload).await,
    };
    // Applying is counted by the workers (`processed`, `failed`); here what was received.
    let label = match &outcome {
        Ok(EventOutcome::Stored) => "stored",
        Ok(EventOutcome::Recorded) => "processed",
        Ok(EventOutcome::Duplicate) => "duplicate",
        Err(_) => "not_stored",
    };
    metrics::counter!("tollgate_webhook_events_total", "type" => event.event_type.clone(), "outcome" => label)
        .increment(1);
    let outcome = outcome?;
    Ok(HttpResponse::Ok().json(WebhookOut {
        received: true,
        duplicate: outcome == EventOutcome::Duplicate,
    }))
}

/// A delivery refused for good (a 4xx is not retried by Stripe): counted by its code in
/// `tollgate_webhook_rejections_total` and logged, so that a signed event Tollgate could not
/// take is seen, not silently lost. A wrong or rotated webhook secret shows as
/// `invalid_signature`.
fn rejected(rejection: WebhookRejection) -> ApiError {
    let code = match rejection {
        WebhookRejection::MissingSignature => "missing_signature",
        WebhookRejection::BadSignature => "invalid_signature",
        WebhookRejection::Stale => "stale_signature",
        WebhookRejection::Malformed(_) => "invalid_payload",
    };
    metrics::counter!("tollgate_webhook_rejections_total", "code" => code).increment(1);
    tracing::warn!(code, reason = %rejection, "webhook refused");
    ApiError::bad_request(code, rejection.to_string())
}

#[cfg(test)]
mod tests {
    /// `tollgate stripe webhook-endpoint` checks URLs against the path served here.
    #[test]
    fn the_endpoint_command_knows_the_webhook_path() {
        assert!(super::super::openapi()
            .paths
            .paths
            .contains_key(crate::stripe::endpoints::WEBHOOK_PATH));
    }
}
