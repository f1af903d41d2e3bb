//! `GET /v1/payments`: a payment history, newest first: the caller's, a tenant's for its
//! billing manager, or anyone's for a service with the read scope.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::billing::ids::{TenantId, UserId};
use crate::db::from_db_time;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::listing::{self, PaymentsAsk};
use crate::state::AppState;
use crate::stripe::ChargeId;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// A service (read scope): whose payments, a user's (with `tenant_id`: the user's in that
    /// tenant).
    #[param(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// A tenant's payments: for its billing manager (an end user whose token lists the tenant),
    /// or for a service (read scope).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,11}:(ch|py)_[A-Za-z0-9_]{1,252}$",
        example = "1764460800:ch_3MmlLrLkdIwHu7ix0snN0B15"
    )]
    pub cursor: Option<String>,
}

/// One payment: a Stripe charge, updated by its refunds and disputes.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "ch_3NvFq2LkdIwHu7ix0snN0B15", "amount": 900, "amount_refunded": 0,
    "currency": "usd", "status": "paid", "description": "Subscription creation",
    "occurred_at": "2026-11-21T12:00:00Z"
})))]
pub struct PaymentOut {
    /// Stripe charge id.
    pub id: String,
    /// In the currency's minor unit (cents).
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    /// `paid`, `pending`, `failed`, `refunded`, `partially_refunded` or `disputed`.
    pub status: String,
    pub description: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// One page of payments, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "data": [{
        "id": "ch_3NvFq2LkdIwHu7ix0snN0B15", "amount": 900, "amount_refunded": 0,
        "currency": "usd", "status": "paid", "description": "Subscription creation",
        "occurred_at": "2026-11-21T12:00:00Z"
    }],
    "next_cursor": "1795262400:ch_3NvFq2LkdIwHu7ix0snN0B15"
})))]
pub struct PaymentsOut {
    pub data: Vec<PaymentOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `<unix seconds>:<charge id>`, as `next_cursor` gives it (the pattern documented on
/// `cursor`): at most 11 digits, a time both databases can store.
fn parse_cursor(cursor: &str) -> Option<(chrono::NaiveDateTime, String)> {
    let (ts, id) = cursor.split_once(':')?;
    if ts.is_empty() || ts.len() > 11 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let at = DateTime::from_timestamp(ts.parse().ok()?, 0)?.naive_utc();
    let id = ChargeId::parse(id).ok()?;
    Some((at, id.into()))
}

/// Payments (charges, with refunds and disputes), newest first: the caller's own; with
/// `tenant_id`, the tenant's, for its billing manager; with `user_id` and/or `tenant_id` and the
/// read scope (a sibling service, support), that user's, tenant's or member's.
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.payments.list",
    security(("bearer" = [])),
    params(PaymentsQuery),
    responses(
        (status = 200, description = "one page of the caller's payments, newest first", body = PaymentsOut),
        (status = 400, description = "`invalid_query`, `invalid_user_id`, `invalid_tenant_id`, `invalid_limit` (not 1 to 100), or `invalid_cursor` (not a `next_cursor` this endpoint gave)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`missing_scope` (a `user_id` named without the read scope), `tenant_not_allowed` (the token does not list the tenant) or `not_billing_manager` (a member who does not manage the tenant's billing)", body = Problem, content_type = "application/problem+json"),
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/payments")]
pub async fn list_payments(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<PaymentsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, before) = super::params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    let ask = PaymentsAsk {
        reads_all: user.0.has_scope(&state.settings.auth.scopes.read),
        user_id: query
            .user_id
            .as_deref()
            .map(super::params::user_id)
            .transpose()?,
        tenant_id: super::params::optional_tenant_id(query.tenant_id.as_deref())?,
        limit,
        before,
    };
    let (rows, more) = listing::payments(&state, &user.0, ask).await?;
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| format!("{}:{}", r.occurred_at.and_utc().timestamp(), r.payment_id))
        })
        .flatten();
    let data = rows
        .into_iter()
        .map(|r| PaymentOut {
            id: r.payment_id,
            amount: r.amount,
            amount_refunded: r.amount_refunded,
            currency: r.currency,
            status: r.status,
            description: r.description,
            occurred_at: from_db_time(r.occurred_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(PaymentsOut { data, next_cursor }))
}
