//! Reaching Stripe from a use case: the gateway, unless billing is off or Stripe is not
//! configured, and what a gateway failure answers.

use crate::billing::subject::Subject;
use crate::db::state::{SubjectState, SubscriptionRow};
use crate::db::{self, customers};
use crate::state::AppState;
use crate::stripe::{CustomerId, GatewayError, StripeGateway, SubscriptionId};

use super::error::ServiceError;
use super::sync::{sync_customer, SyncCause};

/// A failed request to Stripe: 502, with Stripe's own refusals logged.
pub(crate) fn gateway_error(e: GatewayError) -> ServiceError {
    match e {
        GatewayError::Refused {
            status,
            code,
            message,
        } => {
            tracing::warn!(status, ?code, %message, "Stripe refused a request");
            ServiceError::upstream(anyhow::anyhow!("Stripe refused ({status}): {message}"))
        }
        GatewayError::Other(e) => ServiceError::upstream(e),
    }
}

/// The Stripe gateway, unless billing is switched off (`SAAS=false`: nothing asks Stripe) or
/// no key is configured.
pub fn stripe(state: &AppState) -> Result<&StripeGateway, ServiceError> {
    if !state.policy.saas_enabled {
        return Err(ServiceError::unavailable(
            "billing_disabled",
            "billing is switched off (SAAS=false): everyone has access and nothing is sold",
        ));
    }
    state
        .stripe
        .as_ref()
        .ok_or_else(ServiceError::stripe_not_configured)
}

/// A stored subscription's Stripe id, checked before it goes into a request to Stripe.
pub(crate) fn subscription_id(sub: &SubscriptionRow) -> Result<SubscriptionId, ServiceError> {
    SubscriptionId::parse(&sub.stripe_subscription_id).map_err(ServiceError::upstream)
}

/// The subject's Stripe customer, if it has one, and its state as stored after re-reading that
/// customer from Stripe: what a decision to change something on Stripe must rest on.
pub(crate) async fn fresh_state(
    state: &AppState,
    subject: &Subject,
    source: &str,
) -> Result<(Option<CustomerId>, SubjectState), ServiceError> {
    let s = subject.clone();
    let customer = state.db.run(move |conn| customers::find(conn, &s)).await?;
    let customer_id = customer
        .and_then(|c| c.stripe_customer_id)
        .map(|id| CustomerId::parse(&id))
        .transpose()
        .map_err(ServiceError::upstream)?;
    if let Some(customer_id) = &customer_id {
        sync_customer(state, stripe(state)?, customer_id, SyncCause::call(source))
            .await
            .map_err(ServiceError::upstream)?;
    }
    let key = subject.key();
    let stored = state
        .db
        .run(move |conn| db::state::load(conn, &key))
        .await?;
    Ok((customer_id, stored))
}
