//! Parsing what callers name in queries, paths and bodies into the ids the inside works with
//! (see `billing::ids` and `stripe::ids`): each refusal is a 400 with the id's own code, before
//! anything is read, stored or sent to Stripe.

use crate::billing::ids::{IdError, TenantId, UserId};
use crate::billing::scope::Actor;
use crate::billing::subject::Subject;
use crate::db::listing::Holder;
use crate::error::ApiError;
use crate::stripe::CheckoutSessionId;

const ID_RULES: &str = "ids are 1 to 255 characters, not blank, without control characters";

fn id_error(code: &'static str, field: &str, e: IdError) -> ApiError {
    ApiError::bad_request(code, format!("`{field}` {e}: {ID_RULES}"))
}

/// A user id as services pass it.
pub fn user_id(value: &str) -> Result<UserId, ApiError> {
    UserId::parse(value).map_err(|e| id_error("invalid_user_id", "user_id", e))
}

/// A tenant id as callers pass it.
pub fn tenant_id(value: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(value).map_err(|e| id_error("invalid_tenant_id", "tenant_id", e))
}

pub fn optional_tenant_id(value: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    value.map(tenant_id).transpose()
}

/// The user (and tenant) a service asks about.
pub fn service_actor(user: &str, tenant: Option<&str>) -> Result<Actor, ApiError> {
    Ok(Actor::new(user_id(user)?, optional_tenant_id(tenant)?))
}

/// The subject a listing names with `user_id` and `tenant_id`: a user, a tenant, or both (the
/// user in that tenant); `None` when it names neither.
pub fn subject(user: Option<&str>, tenant: Option<&str>) -> Result<Option<Subject>, ApiError> {
    Ok(match (user, tenant) {
        (None, None) => None,
        (Some(user), None) => Some(Subject::user(user_id(user)?)),
        (None, Some(tenant)) => Some(Subject::Tenant {
            tenant_id: tenant_id(tenant)?.into(),
        }),
        (Some(user), Some(tenant)) => Some(Subject::Membership {
            tenant_id: tenant_id(tenant)?.into(),
            user_id: user_id(user)?.into(),
        }),
    })
}

/// Whose records a listing covers by `user_id` and `tenant_id`: a user's own and their
/// memberships', a tenant's own and its members', both (that member's), or everyone's.
pub fn holder(user: Option<&str>, tenant: Option<&str>) -> Result<Holder, ApiError> {
    Ok(match subject(user, tenant)? {
        None => Holder::Any,
        Some(Subject::User { user_id }) => Holder::User(user_id),
        Some(Subject::Tenant { tenant_id }) => Holder::Tenant(tenant_id),
        Some(membership) => Holder::Subject(membership.key()),
    })
}

/// The `{CHECKOUT_SESSION_ID}` Stripe put in the success URL.
pub fn session_id(value: &str) -> Result<CheckoutSessionId, ApiError> {
    CheckoutSessionId::parse(value).map_err(|e| {
        ApiError::bad_request(
            "invalid_session_id",
            format!("session_id must be a Checkout Session id: {e}"),
        )
    })
}

/// A sync job's id, as `POST /v1/admin/sync` answered it: a hyphenated UUID.
pub fn job_id(value: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(value)
        .ok()
        .filter(|_| value.len() == 36)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_job_id",
                "a job id is a UUID such as 0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3b, as POST /v1/admin/sync answered it",
            )
        })
}

/// A listing's page: `limit` (1 to 100, default 20; else `400 invalid_limit`) and `cursor`
/// parsed by `parse` (a `next_cursor` the same endpoint gave; else `400 invalid_cursor`).
pub fn page<C>(
    limit: Option<i64>,
    cursor: Option<&str>,
    parse: impl FnOnce(&str) -> Option<C>,
) -> Result<(i64, Option<C>), ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            "limit must be 1 to 100",
        ));
    }
    let cursor = match cursor {
        None => None,
        Some(c) => Some(parse(c).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "cursor must be a next_cursor this endpoint returned",
            )
        })?),
    };
    Ok((limit, cursor))
}

/// A whole number as JSON Schema's `integer` admits it (`108`, also `108.0`); `None` for a
/// negative, fractional or too large one, which the caller then refuses with its own code.
pub fn whole_number(n: &serde_json::Number) -> Option<u64> {
    // Beyond 2^53 a float no longer holds every whole number exactly.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=EXACT).contains(f))
            .map(|f| f as u64)
    })
}

/// Seats as sent: a whole number, or 0 (refused as `invalid_quantity`) when it is not one.
pub fn quantity(n: &serde_json::Number) -> u64 {
    whole_number(n).unwrap_or(0)
}

/// A promotion code as customers type it: Stripe's codes are letters, digits and dashes (`_`
/// is let through too; Stripe then finds no such code).
pub fn promo_code(value: &str) -> Result<String, ApiError> {
    let code = value.trim();
    let valid = !code.is_empty()
        && code.len() <= 500
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(code.to_owned())
    } else {
        Err(ApiError::unprocessable(
            "unknown_promotion_code",
            "promotion codes are letters, digits, `-` and `_` (at most 500)",
        ))
    }
}

/// A JSON request body that must be an object, parsed into `T`. serde reads a struct from an
/// array too (`[null, null]` would be a `PortalIn`), which no caller means: an array, a string
/// or a number is refused as `400 invalid_body`. Size, content type and syntax are checked as
/// for `web::Json` (`error::json_error_handler`).
pub struct JsonObject<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        let json = actix_web::web::Json::<serde_json::Value>::from_request(req, payload);
        Box::pin(async move {
            let value = json.await?.into_inner();
            Ok(JsonObject(object(value)?))
        })
    }
}

/// `value` as `T` when it is a JSON object.
pub fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object ({...})",
        ));
    }
    serde_json::from_value(value).map_err(ApiError::body_does_not_fit)
}

impl<T> JsonObject<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}
