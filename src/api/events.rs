//! `GET /v1/events`: the outbound events in order (docs/EVENTS.md), for receivers that were
//! down and for services that prefer pulling (scope `billing:read`); and for operators
//! (scope `billing:admin`) the deliveries that failed, and delivering again.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::billing::events::EventType;
use crate::billing::ids::{TenantId, UserId};
use crate::db::from_db_time;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, ReadScope, Service};
use crate::service::events::{self as events, Listing, Redelivery};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `next_cursor` of the previous page; leave it out to start from the first event.
    #[param(pattern = "^[0-9]{1,18}$", example = "1042")]
    pub after: Option<String>,
    /// Only the events of this user (`subject.user_id`; with `tenant_id`: of this user in that
    /// tenant, a membership).
    #[param(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// Only the events of this tenant (`subject.tenant_id`; with `user_id`: of that member).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// Only these types, comma-separated (`entitlements.changed,purchase.completed`).
    #[param(
        pattern = r"^(entitlements\.changed|subscription\.(created|updated|canceled|duplicate)|purchase\.(completed|refunded|disputed)|payment\.(succeeded|failed)|trial\.will_end|quota\.threshold_reached|tenant\.removed)(,(entitlements\.changed|subscription\.(created|updated|canceled|duplicate)|purchase\.(completed|refunded|disputed)|payment\.(succeeded|failed)|trial\.will_end|quota\.threshold_reached|tenant\.removed))*$",
        example = "entitlements.changed,purchase.completed"
    )]
    pub types: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
}

/// One page of events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "data": [{
        "id": "evt_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b",
        "type": "entitlements.changed",
        "timestamp": "2026-12-01T09:30:00Z",
        "subject": {"key": "user:alice", "kind": "user", "user_id": "alice", "tenant_id": null},
        "revision": 3,
        "data": {
            "access": true, "reason": "active", "plan": "pro", "features": ["export"],
            "quotas": [{"key": "generations", "limit": 250, "period": "billing_period", "purchased": 0}],
            "lifetime": false, "grace_until": null, "subscription_id": "sub_1NvFq2", "grant_id": null,
            "previous": {"access": false, "reason": "free", "plan": "free"}
        }
    }],
    "next_cursor": "1042",
    "has_more": false
})))]
pub struct EventsOut {
    /// Each event exactly as its deliveries carry it (see docs/EVENTS.md for each type's `data`).
    #[schema(value_type = Vec<crate::billing::events::Envelope>)]
    pub data: Vec<serde_json::Value>,
    /// Pass as `after` to continue: the place of the last event of this page (the `after` that
    /// was asked when the page is empty), so that polling with it sees only newer events.
    pub next_cursor: String,
    /// More events follow this page now.
    pub has_more: bool,
}

/// The events in the order they were committed, each subject's in revision order: to catch up
/// after downtime (from the last cursor seen) or to pull instead of receiving deliveries. An
/// event is listed a moment after its change commits (within `events.poll_interval_ms`).
#[utoipa::path(
    tag = "services",
    operation_id = "v1.events.list",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, description = "one page of events, oldest first", body = EventsOut),
        (status = 400, description = "`invalid_query`, `invalid_cursor` (not a `next_cursor`), `invalid_user_id`, `invalid_tenant_id`, `invalid_types` (a name that is no event type) or `invalid_limit` (not 1 to 100)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingReadScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/events")]
pub async fn list_events(
    state: web::Data<AppState>,
    _service: Service<ReadScope>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let (limit, after) = super::params::page(query.limit, query.after.as_deref(), parse_cursor)?;
    let subject = super::params::subject(query.user_id.as_deref(), query.tenant_id.as_deref())?;
    let types = match query.types.as_deref() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|t| {
                EventType::parse(t.trim()).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_types",
                        format!(
                            "`{}` is no event type; types are {}",
                            t.trim().chars().take(64).collect::<String>(),
                            EventType::ALL.map(EventType::as_str).join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let after = after.unwrap_or(0);
    let page = events::list(
        &state,
        Listing {
            after,
            subject,
            types,
            limit,
        },
    )
    .await?;
    let next_cursor = page.last_position.unwrap_or(after).to_string();
    Ok(HttpResponse::Ok().json(EventsOut {
        data: page.events,
        next_cursor,
        has_more: page.more,
    }))
}

fn parse_cursor(cursor: &str) -> Option<i64> {
    if cursor.is_empty() || cursor.len() > 18 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    cursor.parse().ok()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailedQuery {
    /// Only deliveries to this endpoint (its `name` in `events.endpoints`).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "product")]
    pub endpoint: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$", example = "5120")]
    pub cursor: Option<String>,
}

/// A delivery that failed for its whole retry window.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "delivery_id": 5121,
    "event_id": "evt_5c1f0e6a3b9d4e0f8a7b6c5d4e3f2a1b",
    "type": "entitlements.changed",
    "endpoint": "product",
    "subject": "user:alice",
    "revision": 3,
    "attempts": 19,
    "last_status": 503,
    "last_error": "answered 503 Service Unavailable",
    "queued_at": "2026-11-28T09:30:00Z",
    "failed_at": "2026-12-01T09:30:00Z"
})))]
pub struct FailedDeliveryOut {
    /// Pass to `POST /v1/admin/events/redeliver` to send it again.
    pub delivery_id: i64,
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub endpoint: String,
    /// The subject's key (`user:...`, `tenant:...`, `membership:...`).
    pub subject: String,
    pub revision: i64,
    pub attempts: i32,
    /// The endpoint's last HTTP status (`null`: no answer).
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// When it was queued (its retry window started).
    pub queued_at: DateTime<Utc>,
    pub failed_at: Option<DateTime<Utc>>,
}

/// One page of failed deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedDeliveriesOut {
    pub data: Vec<FailedDeliveryOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Deliveries that failed for their whole retry window (`events.retry_window_hours`), newest
/// first: what a receiver missed while it was down or refusing.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.events.failed",
    security(("bearer" = [])),
    params(FailedQuery),
    responses(
        (status = 200, description = "one page of failed deliveries, newest first", body = FailedDeliveriesOut),
        (status = 400, description = "`invalid_query`, `invalid_endpoint`, `invalid_limit` (not 1 to 100) or `invalid_cursor`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/admin/events/failed")]
pub async fn list_failed(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    query: web::Query<FailedQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let (limit, before) = super::params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    let endpoint = query.endpoint.map(endpoint_name).transpose()?;
    let (rows, more) = events::failed(&state, endpoint, before, limit).await?;
    let next_cursor = more
        .then(|| rows.last().map(|r| r.row.delivery_id.to_string()))
        .flatten();
    let data = rows
        .into_iter()
        .map(|f| FailedDeliveryOut {
            delivery_id: f.row.delivery_id,
            event_id: f.row.event_id,
            event_type: f.event_type,
            endpoint: f.row.endpoint,
            subject: f.row.subject,
            revision: f.row.revision,
            attempts: f.row.attempts,
            last_status: f.row.last_status,
            last_error: f.row.last_error,
            queued_at: from_db_time(f.row.queued_at),
            failed_at: f.row.finished_at.map(from_db_time),
        })
        .collect();
    Ok(HttpResponse::Ok().json(FailedDeliveriesOut { data, next_cursor }))
}

fn endpoint_name(name: String) -> Result<String, ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(name)
    } else {
        Err(ApiError::bad_request(
            "invalid_endpoint",
            "endpoint must be an events endpoint's name: 1 to 64 letters, digits, `_` or `-`",
        ))
    }
}

/// What to deliver again: one delivery, or every event since a time to one endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum RedeliverIn {
    One(RedeliverOne),
    Since(RedeliverSince),
}

/// One delivery again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"delivery_id": 5121})))]
pub struct RedeliverOne {
    /// A delivery of `GET /v1/admin/events/failed` (or any other, delivered ones too).
    #[schema(value_type = i64, minimum = 1, example = 5121)]
    pub delivery_id: serde_json::Number,
}

/// Every event since a time, to one endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"endpoint": "product", "since": "2026-11-30T00:00:00Z"})))]
pub struct RedeliverSince {
    /// An endpoint's `name` in `events.endpoints`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "product")]
    pub endpoint: String,
    /// Every event created at or after this time (RFC 3339).
    pub since: DateTime<Utc>,
}

/// How many deliveries were queued again.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"queued": 42})))]
pub struct RedeliverOut {
    pub queued: usize,
}

/// Delivers again: one delivery, or every event since a time to one endpoint (a receiver that
/// lost what it had stored, or an endpoint added later: events it never had a delivery of are
/// queued for it too, if it wants their type). The deliveries are due at once, with a fresh
/// retry window, each subject's still in revision order. Receivers dedupe by `webhook-id`.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.events.redeliver",
    security(("bearer" = [])),
    request_body = RedeliverIn,
    responses(
        (status = 202, description = "the deliveries are queued", body = RedeliverOut),
        (status = 400, description = "`invalid_body` (neither form, or both at once; `since` not RFC 3339), `invalid_delivery_id` or `invalid_endpoint`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        (status = 404, description = "`delivery_not_found` or `endpoint_not_found` (not in events.endpoints)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/events/redeliver")]
pub async fn redeliver(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    body: super::params::JsonObject<RedeliverIn>,
) -> Result<HttpResponse, ApiError> {
    let what = match body.into_inner() {
        RedeliverIn::One(one) => {
            let id = super::params::whole_number(&one.delivery_id)
                .and_then(|n| i64::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_delivery_id",
                        "delivery_id must be a delivery's id (a positive integer)",
                    )
                })?;
            Redelivery::One { delivery_id: id }
        }
        RedeliverIn::Since(since) => Redelivery::Since {
            endpoint: endpoint_name(since.endpoint)?,
            since: since.since,
        },
    };
    let queued = events::redeliver(&state, what).await?;
    Ok(HttpResponse::Accepted().json(RedeliverOut { queued }))
}
