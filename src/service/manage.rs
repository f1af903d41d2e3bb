//! Managing the caller's own subscription without the portal: cancel at period end, resume,
//! change plan. Each asks Stripe to make the change, then re-reads the customer from Stripe
//! (the same sync as webhooks), so what is stored is what Stripe holds.

use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::subject::Subject;
use crate::db::state::SubscriptionRow;
use crate::db::{self, customers};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::startup::AppState;

use super::checkout::{gateway_error, priced_plan, stripe, STANDING};
use super::sync::{sync_customer, SyncCause};

/// The subscription the caller manages: the newest one that still stands.
/// Re-read from Stripe first: the decision (is it already canceling? which price?) must not
/// rest on a stale copy.
async fn standing_subscription(
    state: &AppState,
    subject: &Subject,
    source: &str,
) -> Result<SubscriptionRow, ApiError> {
    let s = subject.clone();
    let customer = state.db.run(move |conn| customers::find(conn, &s)).await?;
    if let Some(customer_id) = customer.and_then(|c| c.stripe_customer_id) {
        sync_customer(state, stripe(state)?, &customer_id, SyncCause::call(source))
            .await
            .map_err(ApiError::upstream)?;
    }
    let key = subject.key();
    let stored = state
        .db
        .run(move |conn| db::state::load(conn, &key))
        .await?;
    stored
        .subscriptions
        .into_iter()
        .find(|s| STANDING.contains(&s.status.as_str()))
        .ok_or_else(|| ApiError::not_found("no_subscription", "you have no subscription to manage"))
}

async fn resync(state: &AppState, sub: &SubscriptionRow, source: &str) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    sync_customer(
        state,
        stripe,
        &sub.stripe_customer_id,
        SyncCause::call(source),
    )
    .await
    .map_err(ApiError::upstream)?;
    Ok(())
}

/// Cancels at the end of the paid period: access stays until then. Idempotent.
pub async fn cancel(state: &AppState, caller: &Caller) -> Result<Subject, ApiError> {
    let stripe = stripe(state)?;
    let subject = Subject::user(&caller.subject);
    const SOURCE: &str = "api:subscription.cancel";
    let sub = standing_subscription(state, &subject, SOURCE).await?;
    if !sub.cancel_at_period_end {
        stripe
            .set_cancel_at_period_end(&sub.stripe_subscription_id, true)
            .await
            .map_err(gateway_error)?;
        tracing::info!(%subject, subscription = %sub.stripe_subscription_id, "cancel at period end");
        resync(state, &sub, SOURCE).await?;
    }
    Ok(subject)
}

/// Withdraws a scheduled cancellation (at period end or on a date), or resumes a paused
/// subscription. Idempotent.
pub async fn resume(state: &AppState, caller: &Caller) -> Result<Subject, ApiError> {
    let stripe = stripe(state)?;
    let subject = Subject::user(&caller.subject);
    const SOURCE: &str = "api:subscription.resume";
    let sub = standing_subscription(state, &subject, SOURCE).await?;
    if sub.status == "paused" {
        stripe
            .resume_paused(&sub.stripe_subscription_id)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    } else if sub.cancel_at_period_end {
        // Stripe also unsets the `cancel_at` it derived from the period end.
        stripe
            .set_cancel_at_period_end(&sub.stripe_subscription_id, false)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    } else if sub.cancel_at.is_some() {
        // A cancellation scheduled for a date (the portal or the API set `cancel_at`).
        stripe
            .clear_cancel_at(&sub.stripe_subscription_id)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    }
    Ok(subject)
}

/// Moves the subscription to another plan or interval, prorated as Stripe computes it.
pub async fn change(
    state: &AppState,
    caller: &Caller,
    plan: &str,
    interval: Interval,
) -> Result<Subject, ApiError> {
    let stripe = stripe(state)?;
    let (plan, price_id) = priced_plan(state, plan, interval)?;
    if plan.kind != PlanKind::Subscription {
        return Err(ApiError::unprocessable(
            "not_a_subscription_plan",
            format!("plan `{}` is bought once: use POST /v1/checkout", plan.id),
        ));
    }
    let subject = Subject::user(&caller.subject);
    const SOURCE: &str = "api:subscription.change";
    let sub = standing_subscription(state, &subject, SOURCE).await?;
    if sub.price_id.as_deref() != Some(price_id.as_str()) {
        stripe
            .change_price(&sub.stripe_subscription_id, &price_id, None)
            .await
            .map_err(gateway_error)?;
        tracing::info!(%subject, subscription = %sub.stripe_subscription_id, plan = %plan.id, "plan changed");
        resync(state, &sub, SOURCE).await?;
    }
    Ok(subject)
}
