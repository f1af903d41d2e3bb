//! Managing a subscription without the portal (the caller's own, their membership's, or, for
//! its billing manager, the tenant's): cancel at period end, resume,
//! change plan. Each asks Stripe to make the change, then re-reads the customer from Stripe
//! (the same sync as webhooks), so what is stored is what Stripe holds.
//!
//! A downgrade kept to the period's end is a subscription schedule on Stripe. While one
//! manages the subscription Stripe refuses direct changes of its cancellation, so cancel,
//! resume and a change that takes effect at once release it first: the scheduled change is
//! dropped, and what the caller asked for now is what happens.

use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::change;
use crate::billing::facts::SubscriptionStatus;
use crate::billing::scope::Actor;
use crate::db::state::SubscriptionRow;
use crate::identity::Caller;
use crate::state::AppState;
use crate::stripe::CustomerId;

use super::actors::{billing_subject, require_manager};
use super::error::ServiceError;
use super::gateway::{fresh_state, subscription_id};
use super::gateway::{gateway_error, stripe};
use super::plans::{catalog_price, check_quantity, stripe_price_id};
use super::sync::{sync_customer, SyncCause};

/// The subscription the caller manages: the newest one that still stands, of the subject
/// [`billing_subject`] picks; a tenant's only for its billing manager.
/// Re-read from Stripe first: the decision (is it already canceling? which price? who manages
/// it?) must not rest on a stale copy.
async fn standing_subscription(
    state: &AppState,
    caller: &Caller,
    actor: &Actor,
    source: &str,
) -> Result<SubscriptionRow, ServiceError> {
    let (subject, _) = billing_subject(state, actor).await?;
    let (_, stored) = fresh_state(state, &subject, source).await?;
    let sub = stored
        .subscriptions
        .into_iter()
        .find(|s| s.subscription_status().stands())
        .ok_or_else(|| {
            ServiceError::not_found("no_subscription", "you have no subscription to manage")
        })?;
    require_manager(caller, &subject, sub.manager_user_id.as_deref())?;
    Ok(sub)
}

async fn resync(state: &AppState, sub: &SubscriptionRow, source: &str) -> Result<(), ServiceError> {
    let stripe = stripe(state)?;
    let customer_id = CustomerId::parse(&sub.stripe_customer_id).map_err(ServiceError::upstream)?;
    sync_customer(state, stripe, &customer_id, SyncCause::call(source))
        .await
        .map_err(ServiceError::upstream)?;
    Ok(())
}

/// Cancels at the end of the paid period: access stays until then. Idempotent.
pub async fn cancel(state: &AppState, caller: &Caller, actor: &Actor) -> Result<(), ServiceError> {
    let stripe = stripe(state)?;
    const SOURCE: &str = "api:subscription.cancel";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    if !sub.cancel_at_period_end {
        release_schedule(stripe, &sub).await?;
        stripe
            .set_cancel_at_period_end(&subscription_id(&sub)?, true)
            .await
            .map_err(gateway_error)?;
        tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, "cancel at period end");
        resync(state, &sub, SOURCE).await?;
    }
    Ok(())
}

/// Withdraws a scheduled cancellation (at period end or on a date) and lifts a paused payment
/// collection, or resumes a paused subscription. Idempotent.
pub async fn resume(state: &AppState, caller: &Caller, actor: &Actor) -> Result<(), ServiceError> {
    let stripe = stripe(state)?;
    const SOURCE: &str = "api:subscription.resume";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    let id = subscription_id(&sub)?;
    let mut changed = false;
    if sub.subscription_status() == SubscriptionStatus::Paused {
        stripe.resume_paused(&id).await.map_err(gateway_error)?;
        changed = true;
    } else {
        if sub.cancel_at_period_end || sub.cancel_at.is_some() {
            // A schedule that ends the subscription (end_behavior = cancel) holds the
            // cancellation date; released, the subscription no longer has one.
            changed |= release_schedule(stripe, &sub).await?;
        }
        if sub.pause_collection_behavior.is_some() {
            // The subscriber asks to pay again: Stripe collects from the next invoice.
            stripe
                .clear_pause_collection(&id)
                .await
                .map_err(gateway_error)?;
            changed = true;
        }
        if sub.cancel_at_period_end {
            // Stripe also unsets the `cancel_at` it derived from the period end.
            stripe
                .set_cancel_at_period_end(&id, false)
                .await
                .map_err(gateway_error)?;
            changed = true;
        } else if sub.cancel_at.is_some() {
            // A cancellation scheduled for a date (the portal or the API set `cancel_at`).
            stripe.clear_cancel_at(&id).await.map_err(gateway_error)?;
            changed = true;
        }
    }
    if changed {
        resync(state, &sub, SOURCE).await?;
    }
    Ok(())
}

/// Releases the schedule managing the subscription, if one does. Answers whether there was one.
async fn release_schedule(
    stripe: &crate::stripe::StripeGateway,
    sub: &SubscriptionRow,
) -> Result<bool, ServiceError> {
    let Some(schedule) = sub.schedule_id.as_deref() else {
        return Ok(false);
    };
    stripe
        .release_schedule(schedule)
        .await
        .map_err(gateway_error)?;
    tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, schedule, "subscription schedule released");
    Ok(true)
}

/// What a plan change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The subscription already was what was asked for (a change scheduled for the period
    /// end, if any, was withdrawn).
    Nothing,
    /// Changed on Stripe now.
    Now,
    /// Left as it is until the period ends, then changed (a downgrade).
    AtPeriodEnd,
}

/// Moves the subscription to another plan, interval or number of seats: an upgrade at once
/// (paid first, as configured), a downgrade at the period end or at once, as configured.
pub async fn change(
    state: &AppState,
    caller: &Caller,
    actor: &Actor,
    plan: &str,
    interval: Interval,
    quantity: Option<u64>,
) -> Result<Changed, ServiceError> {
    // What the caller got wrong is answered before what Tollgate lacks (Stripe's keys).
    let (wanted, price) = catalog_price(state, plan, interval)?;
    if wanted.kind != PlanKind::Subscription {
        return Err(ServiceError::unprocessable(
            "not_a_subscription_plan",
            format!("plan `{}` is bought once: use POST /v1/checkout", wanted.id),
        ));
    }
    if let Some(q) = quantity {
        check_quantity(wanted.kind, q)?;
    }
    let stripe = stripe(state)?;
    let price_id = stripe_price_id(state, wanted, price, interval)?;
    const SOURCE: &str = "api:subscription.change";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    let same_seats = quantity.is_none_or(|q| i64::try_from(q).ok() == Some(sub.quantity));
    if sub.price_id.as_deref() == Some(price_id.as_str()) && same_seats {
        // Asking for what it has withdraws a change scheduled for the period end.
        if sub.scheduled_change.is_some() && release_schedule(stripe, &sub).await? {
            resync(state, &sub, SOURCE).await?;
        }
        return Ok(Changed::Nothing);
    }
    let held = u64::try_from(sub.quantity).unwrap_or(1);
    let from = change::Holding {
        priced: sub
            .price_id
            .as_deref()
            .and_then(|p| state.catalog.by_price_id(p)),
        quantity: held,
    };
    let direction = change::direction(from, (wanted, price), quantity.unwrap_or(held));
    let billing = change::billing(state.changes, direction);
    if billing.at_period_end {
        if sub.cancel_at_period_end || sub.cancel_at.is_some() {
            return Err(ServiceError::conflict(
                "cancellation_scheduled",
                "the subscription is canceled at the end of its period, so there is no next \
                 period to downgrade: resume it (POST /v1/subscription/resume) first, or let \
                 it end",
            ));
        }
        let at = stripe
            .schedule_change(
                &subscription_id(&sub)?,
                sub.schedule_id.as_deref(),
                &price_id,
                quantity.unwrap_or(held),
                interval,
            )
            .await
            .map_err(gateway_error)?;
        tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, plan = %wanted.id, ?quantity, %at, "downgrade scheduled for the period end");
        resync(state, &sub, SOURCE).await?;
        return Ok(Changed::AtPeriodEnd);
    }
    // A change made now replaces one scheduled for the period end.
    release_schedule(stripe, &sub).await?;
    let pending = stripe
        .change_price(&subscription_id(&sub)?, &price_id, quantity, billing)
        .await
        .map_err(gateway_error)?;
    tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, plan = %wanted.id, ?quantity, ?direction, proration = billing.proration.as_str(), pending = pending.is_some(), "plan change");
    resync(state, &sub, SOURCE).await?;
    match pending {
        None => Ok(Changed::Now),
        Some(p) => Err(ServiceError::payment_required(
            "upgrade_not_paid",
            format!(
                "the upgrade to `{}` was not paid (the card was declined or needs \
                 authentication), so the current plan stays; Stripe keeps the change until {}, \
                 and paying the open invoice in the billing portal (POST /v1/portal) applies it",
                wanted.id,
                p.expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )),
    }
}
