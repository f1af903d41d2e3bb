//! Reaching Stripe from a use case: the gateway, unless billing is off or Stripe is not
//! configured, and what a gateway failure answers.

use actix_web::http::StatusCode;

use crate::error::ApiError;
use crate::startup::AppState;
use crate::stripe::{GatewayError, StripeGateway};

/// A failed request to Stripe: 502, with Stripe's own refusals logged.
pub(crate) fn gateway_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::Refused {
            status,
            code,
            message,
        } => {
            tracing::warn!(status, ?code, %message, "Stripe refused a request");
            ApiError::upstream(anyhow::anyhow!("Stripe refused ({status}): {message}"))
        }
        GatewayError::Other(e) => ApiError::upstream(e),
    }
}

/// The Stripe gateway, unless billing is switched off (`SAAS=false`: nothing asks Stripe) or
/// no key is configured.
pub fn stripe(state: &AppState) -> Result<&StripeGateway, ApiError> {
    if !state.settings.saas {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "billing_disabled",
            "billing is switched off (SAAS=false): everyone has access and nothing is sold",
        ));
    }
    state
        .stripe
        .as_ref()
        .ok_or_else(ApiError::stripe_not_configured)
}
