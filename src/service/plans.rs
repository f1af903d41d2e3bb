//! The plans a caller may buy or change to: the catalog's plan and price, checked against the
//! price allowlist, and the seats asked for.

use crate::billing::catalog::{Interval, Plan, PlanKind, Price};
use crate::billing::checkout;
use crate::state::AppState;

use super::error::ServiceError;

/// The plan named (by id or alias) and its price for `interval`, from the catalog alone: a
/// name or interval the catalog lacks is the caller's mistake (422), whether or not Stripe is
/// configured, so it is checked before anything about Stripe.
pub fn catalog_price<'a>(
    state: &'a AppState,
    name: &str,
    interval: Interval,
) -> Result<(&'a Plan, &'a Price), ServiceError> {
    let plan = state.catalog.plan(name).ok_or_else(|| {
        ServiceError::unprocessable(
            "unknown_plan",
            format!("there is no plan `{name}` (see GET /v1/config)"),
        )
    })?;
    let price = plan.price(interval).ok_or_else(|| {
        ServiceError::unprocessable(
            "unknown_interval",
            format!(
                "plan `{}` has no `{}` price (see GET /v1/config)",
                plan.id,
                interval.as_str()
            ),
        )
    })?;
    Ok((plan, price))
}

/// The Stripe price id of `price` (one of `plan`'s, from [`catalog_price`]), checked against
/// the allowlist: what a checkout or a plan change may ask Stripe for.
pub fn stripe_price_id(
    state: &AppState,
    plan: &Plan,
    price: &Price,
    interval: Interval,
) -> Result<String, ServiceError> {
    let price_id = price.price_id.clone().ok_or_else(|| {
        ServiceError::Internal(anyhow::anyhow!(
            "plan {} has no Stripe price id for {}",
            plan.id,
            interval.as_str()
        ))
    })?;
    let allowlist = &state.checkout.allowed_price_ids;
    if !allowlist.is_empty() && !allowlist.contains(&price_id) {
        return Err(ServiceError::forbidden(
            "price_not_allowed",
            format!(
                "price `{price_id}` of plan `{}` is not in STRIPE_ALLOWED_PRICE_IDS",
                plan.id
            ),
        ));
    }
    Ok(price_id)
}

/// Seats: 1 to 10,000 on a subscription, 1 on a one-time plan.
pub(crate) fn check_quantity(kind: PlanKind, quantity: u64) -> Result<(), ServiceError> {
    if !checkout::quantity_allowed(kind, quantity) {
        return Err(ServiceError::unprocessable(
            "invalid_quantity",
            format!(
                "quantity must be 1 to {} (one-time plans: 1)",
                checkout::MAX_QUANTITY
            ),
        ));
    }
    Ok(())
}
