//! Applying a verified Stripe event: store it by id, then re-read what it concerns.

use crate::db::{self, events};
use crate::state::AppState;
use crate::stripe::webhook::{VerifiedEvent, EVENTS};
use crate::stripe::{ChargeId, CustomerId, PaymentIntentId, StripeGateway};

use super::sync::{sync_customer, SyncCause, SyncOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Processed,
    /// Seen and processed before: nothing changed.
    Duplicate,
}

pub async fn handle_event(
    state: &AppState,
    stripe: &StripeGateway,
    event: &VerifiedEvent,
    payload: &str,
) -> anyhow::Result<EventOutcome> {
    let now = state.now();
    let (stored, body) = (event.clone(), payload.to_owned());
    let already = state
        .db
        .run(move |conn| events::record(conn, stored_event(&stored, &body), now))
        .await?;
    if already {
        return Ok(EventOutcome::Duplicate);
    }
    match apply(state, stripe, event).await {
        Ok(SyncOutcome::AlreadyProcessed) => Ok(EventOutcome::Duplicate),
        Ok(_) => Ok(EventOutcome::Processed),
        Err(e) => {
            let (id, msg) = (event.id.clone(), format!("{e:#}"));
            if let Err(log_err) = state
                .db
                .run(move |conn| events::mark_failed(conn, id.as_str(), &msg))
                .await
            {
                tracing::error!(
                    error = format_args!("{log_err:#}"),
                    "could not record the event failure"
                );
            }
            Err(e)
        }
    }
}

async fn apply(
    state: &AppState,
    stripe: &StripeGateway,
    event: &VerifiedEvent,
) -> anyhow::Result<SyncOutcome> {
    let customer = if EVENTS.contains(&event.event_type.as_str()) {
        match &event.customer {
            Some(id) => Some(id.clone()),
            None => customer_of_payment(state, stripe, event).await?,
        }
    } else {
        None
    };
    let Some(customer) = customer else {
        let claimed = mark_processed(state, event).await?;
        return Ok(if claimed {
            SyncOutcome::UnknownCustomer
        } else {
            SyncOutcome::AlreadyProcessed
        });
    };
    let mut cause = SyncCause::call(&format!("event:{} {}", event.id, event.event_type));
    cause.event_id = Some(event.id.as_str());
    if let Some(session_id) = &event.checkout_session {
        // The event's copy may be stale: read the session as it is now.
        cause.checkout = stripe.checkout_session(session_id).await?;
    }
    cause.customer_deleted = event.event_type == "customer.deleted";
    // A charge's own events name it (a dispute through its `charge`): the sync reads it even
    // when it is older than the page of charges it reads.
    cause.charge_id = event.charge.clone();
    cause.trial_will_end = event.event_type == "customer.subscription.trial_will_end";
    if event.event_type == "invoice.payment_failed" {
        cause.payment_failed_at = Some(event.created);
    }
    sync_customer(state, stripe, &customer, cause).await
}

/// Marks an event that changes nothing stored as processed: `false` when a concurrent copy of
/// it (another delivery, another replica) got there first.
async fn mark_processed(state: &AppState, event: &VerifiedEvent) -> anyhow::Result<bool> {
    let (id, now) = (event.id.clone(), state.now());
    state
        .db
        .run(move |conn| events::mark_processed(conn, id.as_str(), now))
        .await
}

/// A dispute names its charge and payment intent but not the customer: find the customer
/// through the payment Tollgate recorded, or else ask Stripe for the charge.
async fn customer_of_payment(
    state: &AppState,
    stripe: &StripeGateway,
    event: &VerifiedEvent,
) -> anyhow::Result<Option<CustomerId>> {
    let (charge, payment_intent) = (event.charge.clone(), event.payment_intent.clone());
    if charge.is_none() && payment_intent.is_none() {
        return Ok(None);
    }
    let recorded = state
        .db
        .run(move |conn| {
            db::state::customer_of_payment(
                conn,
                charge.as_ref().map(ChargeId::as_str),
                payment_intent.as_ref().map(PaymentIntentId::as_str),
            )
        })
        .await?;
    match (recorded, &event.charge) {
        (Some(customer), _) => Ok(Some(CustomerId::parse(&customer)?)),
        (None, Some(charge)) => Ok(stripe
            .charge(charge)
            .await?
            .and_then(|c| c.customer_id)
            .map(|id| CustomerId::parse(&id))
            .transpose()?),
        (None, None) => Ok(None),
    }
}

/// The event as the event log stores it.
fn stored_event<'a>(event: &'a VerifiedEvent, payload: &'a str) -> events::NewEvent<'a> {
    events::NewEvent {
        id: event.id.as_str(),
        event_type: &event.event_type,
        customer_id: event.customer.as_ref().map(CustomerId::as_str),
        livemode: event.livemode,
        created: event.created,
        payload,
    }
}

/// With billing off (`SAAS=false`) nothing asks Stripe: a signed event is stored and
/// acknowledged (so Stripe keeps the endpoint), and `tollgate sync --all` catches up once
/// billing is switched on.
pub async fn record_only(
    state: &AppState,
    event: &VerifiedEvent,
    payload: &str,
) -> anyhow::Result<EventOutcome> {
    let now = state.now();
    let (stored, body) = (event.clone(), payload.to_owned());
    state
        .db
        .run(move |conn| {
            // Recorded and claimed at once: of concurrent copies, one is processed.
            if events::record(conn, stored_event(&stored, &body), now)?
                || !events::mark_processed(conn, stored.id.as_str(), now)?
            {
                return Ok(EventOutcome::Duplicate);
            }
            Ok(EventOutcome::Processed)
        })
        .await
}
