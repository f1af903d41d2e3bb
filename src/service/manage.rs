//! Managing a subscription without the portal (the caller's own, their membership's, or, for
//! its billing manager, the tenant's): cancel at period end, resume,
//! change plan. Each asks Stripe to make the change, then re-reads the customer from Stripe
//! (the same sync as webhooks), so what is stored is what Stripe holds.

use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::facts::SubscriptionStatus;
use crate::billing::scope::Actor;
use crate::billing::subject::Subject;
use crate::db::state::{SubjectState, SubscriptionRow};
use crate::db::{self, customers};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::startup::AppState;
use crate::stripe::{CustomerId, SubscriptionId};

use super::checkout::priced_plan;
use super::gateway::{gateway_error, stripe};
use super::sync::{sync_customer, SyncCause};
use super::tenants;

/// The subject whose billing the actor manages: in a tenant, the tenant's, then the
/// membership's, then the user's own, whichever first has a subscription that stands and that
/// the actor may manage (a tenant's only as its billing manager); else the first with one
/// that stands (managing it is then refused); else the first with any billing record; else
/// the user's own.
pub(crate) async fn billing_subject(
    state: &AppState,
    actor: &Actor,
) -> Result<(Subject, SubjectState), ApiError> {
    let mut candidates: Vec<Subject> = actor.subjects().into_iter().map(|(_, s)| s).collect();
    candidates.reverse();
    let mut loaded = state
        .db
        .run(move |conn| {
            candidates
                .into_iter()
                .map(|s| {
                    let stored = db::state::load(conn, &s.key())?;
                    Ok((s, stored))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await?;
    fn standing(st: &SubjectState) -> Option<&SubscriptionRow> {
        st.subscriptions
            .iter()
            .find(|s| s.subscription_status().stands())
    }
    let manageable = |subject: &Subject, st: &SubjectState| match subject {
        Subject::Tenant { .. } => standing(st)
            .is_some_and(|s| s.manager_user_id.as_deref() == Some(actor.user_id.as_str())),
        _ => standing(st).is_some(),
    };
    let any = |st: &SubjectState| !st.subscriptions.is_empty() || !st.purchases.is_empty();
    let pick = loaded
        .iter()
        .position(|(s, st)| manageable(s, st))
        .or_else(|| loaded.iter().position(|(_, st)| standing(st).is_some()))
        .or_else(|| loaded.iter().position(|(_, st)| any(st)));
    Ok(match pick {
        Some(i) => loaded.swap_remove(i),
        None => (Subject::user(&actor.user_id), SubjectState::default()),
    })
}

/// The subject's Stripe customer, if it has one, and its state as stored after re-reading that
/// customer from Stripe: what a decision to change something on Stripe must rest on.
pub(crate) async fn fresh_state(
    state: &AppState,
    subject: &Subject,
    source: &str,
) -> Result<(Option<CustomerId>, SubjectState), ApiError> {
    let s = subject.clone();
    let customer = state.db.run(move |conn| customers::find(conn, &s)).await?;
    let customer_id = customer
        .and_then(|c| c.stripe_customer_id)
        .map(|id| CustomerId::parse(&id))
        .transpose()
        .map_err(ApiError::upstream)?;
    if let Some(customer_id) = &customer_id {
        sync_customer(state, stripe(state)?, customer_id, SyncCause::call(source))
            .await
            .map_err(ApiError::upstream)?;
    }
    let key = subject.key();
    let stored = state
        .db
        .run(move |conn| db::state::load(conn, &key))
        .await?;
    Ok((customer_id, stored))
}

/// The subscription the caller manages: the newest one that still stands, of the subject
/// [`billing_subject`] picks; a tenant's only for its billing manager.
/// Re-read from Stripe first: the decision (is it already canceling? which price? who manages
/// it?) must not rest on a stale copy.
async fn standing_subscription(
    state: &AppState,
    caller: &Caller,
    actor: &Actor,
    source: &str,
) -> Result<SubscriptionRow, ApiError> {
    let (subject, _) = billing_subject(state, actor).await?;
    let (_, stored) = fresh_state(state, &subject, source).await?;
    let sub = stored
        .subscriptions
        .into_iter()
        .find(|s| s.subscription_status().stands())
        .ok_or_else(|| {
            ApiError::not_found("no_subscription", "you have no subscription to manage")
        })?;
    tenants::require_manager(caller, &subject, Some(&sub))?;
    Ok(sub)
}

async fn resync(state: &AppState, sub: &SubscriptionRow, source: &str) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    let customer_id = CustomerId::parse(&sub.stripe_customer_id).map_err(ApiError::upstream)?;
    sync_customer(state, stripe, &customer_id, SyncCause::call(source))
        .await
        .map_err(ApiError::upstream)?;
    Ok(())
}

/// Cancels at the end of the paid period: access stays until then. Idempotent.
pub async fn cancel(state: &AppState, caller: &Caller, actor: &Actor) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    const SOURCE: &str = "api:subscription.cancel";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    if !sub.cancel_at_period_end {
        stripe
            .set_cancel_at_period_end(&subscription_id(&sub)?, true)
            .await
            .map_err(gateway_error)?;
        tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, "cancel at period end");
        resync(state, &sub, SOURCE).await?;
    }
    Ok(())
}

/// Withdraws a scheduled cancellation (at period end or on a date), or resumes a paused
/// subscription. Idempotent.
pub async fn resume(state: &AppState, caller: &Caller, actor: &Actor) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    const SOURCE: &str = "api:subscription.resume";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    if sub.subscription_status() == SubscriptionStatus::Paused {
        stripe
            .resume_paused(&subscription_id(&sub)?)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    } else if sub.cancel_at_period_end {
        // Stripe also unsets the `cancel_at` it derived from the period end.
        stripe
            .set_cancel_at_period_end(&subscription_id(&sub)?, false)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    } else if sub.cancel_at.is_some() {
        // A cancellation scheduled for a date (the portal or the API set `cancel_at`).
        stripe
            .clear_cancel_at(&subscription_id(&sub)?)
            .await
            .map_err(gateway_error)?;
        resync(state, &sub, SOURCE).await?;
    }
    Ok(())
}

/// Moves the subscription to another plan, interval or number of seats, prorated as Stripe
/// computes it.
pub async fn change(
    state: &AppState,
    caller: &Caller,
    actor: &Actor,
    plan: &str,
    interval: Interval,
    quantity: Option<u64>,
) -> Result<(), ApiError> {
    let stripe = stripe(state)?;
    let (plan, price_id) = priced_plan(state, plan, interval)?;
    if plan.kind != PlanKind::Subscription {
        return Err(ApiError::unprocessable(
            "not_a_subscription_plan",
            format!("plan `{}` is bought once: use POST /v1/checkout", plan.id),
        ));
    }
    if let Some(q) = quantity {
        check_quantity(q)?;
    }
    const SOURCE: &str = "api:subscription.change";
    let sub = standing_subscription(state, caller, actor, SOURCE).await?;
    let same_seats = quantity.is_none_or(|q| i64::try_from(q).ok() == Some(sub.quantity));
    if sub.price_id.as_deref() != Some(price_id.as_str()) || !same_seats {
        stripe
            .change_price(&subscription_id(&sub)?, &price_id, quantity)
            .await
            .map_err(gateway_error)?;
        tracing::info!(subject = %sub.subject, subscription = %sub.stripe_subscription_id, plan = %plan.id, ?quantity, "plan changed");
        resync(state, &sub, SOURCE).await?;
    }
    Ok(())
}

/// A stored subscription's Stripe id, checked before it goes into a request to Stripe.
pub(crate) fn subscription_id(sub: &SubscriptionRow) -> Result<SubscriptionId, ApiError> {
    SubscriptionId::parse(&sub.stripe_subscription_id).map_err(ApiError::upstream)
}

/// Seats on a subscription: 1 to 10,000.
pub(crate) fn check_quantity(quantity: u64) -> Result<(), ApiError> {
    if quantity == 0 || quantity > 10_000 {
        return Err(ApiError::unprocessable(
            "invalid_quantity",
            "quantity must be 1 to 10000 (one-time plans: 1)",
        ));
    }
    Ok(())
}
