//! Starting a Checkout, verifying its return, and opening the customer portal.

use std::collections::HashMap;

use crate::billing::catalog::{Interval, Plan, PlanKind};
use crate::billing::checkout::{self, CheckoutRefusal};
use crate::billing::ids::TenantId;
use crate::billing::mirror::{CheckoutMode, StripeCheckout};
use crate::billing::redirect;
use crate::billing::scope::Actor;
use crate::billing::subject::Subject;
use crate::db::{self, customers};
use crate::identity::Caller;
use crate::state::AppState;
use crate::stripe::{metadata, CheckoutSessionId, CustomerId, NewCheckout, StripeGateway};

use super::actors::{actor_for, billing_subject, require_manager};
use super::error::ServiceError;
use super::gateway::{gateway_error, stripe};
use super::plans::{catalog_price, check_quantity, stripe_price_id};
use super::sync::SyncCause;

/// A checkout as the frontend asks for it.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub plan: String,
    pub interval: Interval,
    pub promo_code: Option<String>,
    pub success_url: Option<String>,
    pub cancel_url: Option<String>,
    pub quantity: u64,
    /// The tenant the caller acts in (checked against the token's tenant claim).
    pub tenant_id: Option<TenantId>,
}

fn checked_redirect(
    state: &AppState,
    given: Option<String>,
    default: &str,
    field: &str,
) -> Result<String, ServiceError> {
    match given {
        None => Ok(default.to_owned()),
        Some(url) if redirect::is_allowed(&url, &state.checkout.allowed_redirect_origins) => {
            Ok(url)
        }
        Some(url) => Err(ServiceError::unprocessable(
            "redirect_not_allowed",
            format!(
                "{field} `{url}` is not on an allowed origin (checkout.allowed_redirect_origins)"
            ),
        )),
    }
}

pub async fn start_checkout(
    state: &AppState,
    caller: &Caller,
    req: CheckoutRequest,
) -> Result<StripeCheckout, ServiceError> {
    // What the caller got wrong is answered before what Tollgate lacks (Stripe's keys).
    let (plan, price) = catalog_price(state, &req.plan, req.interval)?;
    check_quantity(plan.kind, req.quantity)?;
    let stripe = stripe(state)?;
    let price_id = stripe_price_id(state, plan, price, req.interval)?;
    let checkout = &state.checkout;
    let success_url = checked_redirect(
        state,
        req.success_url,
        &checkout.default_success_url,
        "success_url",
    )?;
    let cancel_url = checked_redirect(
        state,
        req.cancel_url,
        &checkout.default_cancel_url,
        "cancel_url",
    )?;

    let actor = actor_for(caller, req.tenant_id)?;
    let subject = plan.scope.subject(&actor).ok_or_else(|| {
        ServiceError::invalid(
            "tenant_required",
            format!(
                "plan `{}` is bought for a {}: name the tenant (tenant_id, or the token's tenant claim)",
                plan.id,
                plan.scope.as_str()
            ),
        )
    })?;
    // Limited per person, whoever they buy for.
    if state
        .checkout_limiter
        .check_key(&Subject::user(&caller.subject).key())
        .is_err()
    {
        // The limiter frees one checkout every 60 / limit seconds.
        let per_minute = u64::from(checkout.rate_limit_per_minute.max(1));
        return Err(ServiceError::too_many(
            "rate_limited",
            format!(
                "at most {} checkouts a minute; try again shortly",
                checkout.rate_limit_per_minute
            ),
            60_u64.div_ceil(per_minute),
        ));
    }

    let s = subject.clone();
    let (stored, customer) = state
        .db
        .run(move |conn| Ok((db::state::load(conn, &s.key())?, customers::find(conn, &s)?)))
        .await?;
    let removed = customer.as_ref().is_some_and(|c| c.removed_at.is_some());
    if let Some(refused) = checkout::refusal(plan, &subject, removed, &stored.facts()) {
        return Err(refusal(caller, &subject, plan, refused));
    }

    let promotion_code_id = match req.promo_code.as_deref() {
        None => None,
        Some(code) => Some(
            stripe
                .promotion_code_id(code)
                .await
                .map_err(gateway_error)?
                .ok_or_else(|| {
                    ServiceError::unprocessable(
                        "unknown_promotion_code",
                        format!("promotion code `{code}` is not active"),
                    )
                })?,
        ),
    };
    // Only now, with every refusal behind us, does the subject get a Stripe customer.
    let customer_id = ensure_customer(state, stripe, &subject, caller.email.as_deref()).await?;
    if removed {
        // A removed member who was added back may be billed again.
        let (s, now) = (subject.clone(), state.now());
        state
            .db
            .run(move |conn| customers::clear_removed(conn, &s, now))
            .await?;
    }
    let meta = HashMap::from([
        (metadata::SUBJECT.to_owned(), subject.key()),
        (metadata::PLAN.to_owned(), plan.id.clone()),
        (metadata::MANAGER.to_owned(), caller.subject.to_string()),
        (metadata::KIND.to_owned(), plan.kind.as_str().to_owned()),
        (
            metadata::INTERVAL.to_owned(),
            req.interval.as_str().to_owned(),
        ),
    ]);
    let mode = if plan.kind == PlanKind::Subscription {
        CheckoutMode::Subscription
    } else {
        CheckoutMode::Payment
    };
    let customer = CustomerId::parse(&customer_id).map_err(ServiceError::upstream)?;
    let new = NewCheckout {
        customer_id,
        price_id,
        mode,
        quantity: req.quantity,
        trial_days: plan.trial_days,
        trial_without_card: !plan.trial_requires_card,
        promotion_code_id,
        success_url,
        cancel_url,
        client_reference_id: subject.key(),
        metadata: meta,
        idempotency_key: format!("tollgate-checkout-{}", uuid::Uuid::new_v4()),
    };
    // One open Checkout Session per subject and kind: two tabs, or two members of a tenant,
    // checking out at once would otherwise both pay. Under the subject's lock (across
    // replicas on PostgreSQL), the older open sessions are expired before a new one is made.
    let lock = format!("checkout:{}", subject.key());
    let for_whom = &subject;
    let session = state
        .db
        .with_customer_lock(&lock, |_lease| async move {
            expire_open_sessions(stripe, &customer, for_whom, mode).await?;
            Ok(stripe
                .create_checkout_session(new)
                .await
                .map_err(gateway_error)?)
        })
        .await
        .map_err(|e| match e.downcast::<ServiceError>() {
            Ok(refused) => refused,
            Err(other) => ServiceError::Internal(other),
        })?;
    tracing::info!(%subject, plan = %plan.id, session = %session.id, "checkout started");
    Ok(session)
}

/// Expires the subject's open Checkout Sessions of `mode` (a subscription's, or a one-time
/// purchase's). A session Stripe will no longer expire was paid or expired meanwhile: if it was
/// paid, the new checkout is refused (the buyer should verify that one instead).
async fn expire_open_sessions(
    stripe: &StripeGateway,
    customer: &CustomerId,
    subject: &Subject,
    mode: CheckoutMode,
) -> Result<(), ServiceError> {
    let key = subject.key();
    let open = stripe
        .open_checkout_sessions(customer)
        .await
        .map_err(gateway_error)?;
    for older in open
        .iter()
        .filter(|s| s.mode == mode && s.subject.as_deref() == Some(key.as_str()))
    {
        let id = CheckoutSessionId::parse(&older.id).map_err(ServiceError::upstream)?;
        match stripe.expire_checkout_session(&id).await {
            Ok(()) => {
                metrics::counter!("tollgate_checkout_sessions_expired_total").increment(1);
                tracing::info!(%subject, session = %older.id, "older open checkout expired");
            }
            Err(crate::stripe::GatewayError::Refused { .. }) => {
                let now = stripe.checkout_session(&id).await.map_err(gateway_error)?;
                if now.is_some_and(|s| s.paid) {
                    return Err(ServiceError::conflict(
                        "checkout_just_completed",
                        format!(
                            "checkout {} of {subject} was just paid: verify it \
                             (GET /v1/checkout/verify) instead of starting another",
                            older.id
                        ),
                    ));
                }
            }
            Err(e) => return Err(gateway_error(e)),
        }
    }
    Ok(())
}

/// What a checkout refused by the billing rules answers. A tenant's existing subscription is
/// named only to its billing manager.
fn refusal(
    caller: &Caller,
    subject: &Subject,
    plan: &Plan,
    refused: CheckoutRefusal,
) -> ServiceError {
    match refused {
        CheckoutRefusal::TenantRemoved => ServiceError::conflict(
            "tenant_removed",
            format!("{subject} was removed (DELETE /v1/tenants/...): it is not billed again"),
        ),
        CheckoutRefusal::SubscriptionExists {
            subscription_id,
            status,
            manager,
        } => match require_manager(caller, subject, manager.as_deref()) {
            Err(not_manager) => not_manager,
            Ok(()) => ServiceError::conflict(
                "subscription_exists",
                format!(
                    "subscription {subscription_id} is {}: change plans through the customer portal (POST /v1/portal)",
                    status.as_str()
                ),
            ),
        },
        CheckoutRefusal::AlreadyPurchased => ServiceError::conflict(
            "already_purchased",
            format!("plan `{}` is already yours for life", plan.id),
        ),
    }
}

/// The subject's Stripe customer, created on first need and reused for ever after.
async fn ensure_customer(
    state: &AppState,
    stripe: &StripeGateway,
    subject: &Subject,
    email: Option<&str>,
) -> Result<String, ServiceError> {
    let (s, e, now) = (subject.clone(), email.map(str::to_owned), state.now());
    let row = state
        .db
        .run(move |conn| customers::ensure(conn, &s, e.as_deref(), now))
        .await?;
    if let Some(id) = row.stripe_customer_id {
        return Ok(id);
    }
    // Deterministic idempotency key: concurrent first checkouts get the same customer. The
    // row's last change tells a new customer apart from one deleted on Stripe.
    let generation = row.updated_at.and_utc().timestamp_micros();
    let created = stripe
        .create_customer(&subject.key(), generation, email)
        .await
        .map_err(gateway_error)?;
    let (s, now) = (subject.clone(), state.now());
    let stored = state
        .db
        .run(move |conn| customers::attach_stripe_customer(conn, &s, &created, now))
        .await?;
    Ok(stored)
}

/// After the redirect back: reads the session from Stripe, checks it is the caller's, and syncs
/// at once, so the subject is active whether or not the webhook has arrived. Answers who the
/// caller is in the tenant the session was for.
pub async fn verify_checkout(
    state: &AppState,
    caller: &Caller,
    session_id: &CheckoutSessionId,
) -> Result<Actor, ServiceError> {
    let stripe = stripe(state)?;
    let session = stripe
        .checkout_session(session_id)
        .await
        .map_err(gateway_error)?
        .ok_or_else(|| {
            ServiceError::not_found(
                "checkout_session_not_found",
                format!("Stripe has no Checkout Session `{session_id}`"),
            )
        })?;
    let subject = session
        .subject
        .as_ref()
        .or(session.client_reference_id.as_ref())
        .and_then(|key| Subject::parse_key(key));
    // The caller started it: the session names them as its manager (sessions from before
    // tenants were billed name only the user's own subject).
    let started_by_caller = match &session.manager {
        Some(manager) => caller.subject == *manager,
        None => subject.as_ref() == Some(&Subject::user(&caller.subject)),
    };
    let Some(subject) = subject.filter(|_| started_by_caller) else {
        return Err(ServiceError::forbidden(
            "not_your_session",
            "this Checkout Session belongs to someone else",
        ));
    };
    // Stored keys hold only valid ids (`Subject::parse_key`).
    let tenant_id = subject
        .tenant_id()
        .map(TenantId::parse)
        .transpose()
        .map_err(|e| ServiceError::Internal(anyhow::anyhow!("session subject {subject}: {e}")))?;
    let actor = Actor::new(caller.subject.clone(), tenant_id);
    let Some(customer_id) = session.customer_id.as_deref() else {
        // Not completed yet: nothing to sync; the status says what is there.
        return Ok(actor);
    };
    let customer_id = CustomerId::parse(customer_id).map_err(ServiceError::upstream)?;
    let mut cause = SyncCause::call("api:checkout.verify");
    cause.checkouts = vec![session];
    // The user is waiting: at once, and with the customer's webhook events still in the inbox.
    super::webhooks::sync_with_pending(state, stripe, &customer_id, cause)
        .await
        .map_err(ServiceError::upstream)?;
    Ok(actor)
}

/// Opens the Stripe customer portal of the subject whose billing the caller manages in their
/// tenant (see `actors::billing_subject`); a tenant's only for its billing manager.
pub async fn open_portal(
    state: &AppState,
    caller: &Caller,
    return_url: Option<String>,
    tenant_id: Option<TenantId>,
) -> Result<String, ServiceError> {
    let stripe = stripe(state)?;
    let return_url = checked_redirect(
        state,
        return_url,
        &state.checkout.default_portal_return_url,
        "return_url",
    )?;
    let actor = actor_for(caller, tenant_id)?;
    let (subject, stored) = billing_subject(state, &actor).await?;
    require_manager(
        caller,
        &subject,
        stored
            .subscriptions
            .first()
            .and_then(|s| s.manager_user_id.as_deref()),
    )?;
    let s = subject.clone();
    let row = state.db.run(move |conn| customers::find(conn, &s)).await?;
    let customer_id = row.and_then(|r| r.stripe_customer_id).ok_or_else(|| {
        ServiceError::not_found(
            "no_billing_account",
            "you have no Stripe customer yet: start a checkout first",
        )
    })?;
    let customer_id = CustomerId::parse(&customer_id).map_err(ServiceError::upstream)?;
    stripe
        .create_portal_session(&customer_id, &return_url)
        .await
        .map_err(gateway_error)
}
