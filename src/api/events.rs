//! `GET /v1/events`: the outbound events in order (docs/EVENTS.md), for receivers that were
//! down and for services that prefer pulling (scope `billing:read`).

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::billing::events::EventType;
use crate::billing::ids::{TenantId, UserId};
use crate::billing::subject::Subject;
use crate::error::{ApiError, Problem};
use crate::identity::{ReadScope, Service};
use crate::service::events::{self as events, Listing};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `next_cursor` of the previous page; leave it out to start from the first event.
    #[param(pattern = "^[0-9]{1,18}$", example = "1042")]
    pub after: Option<String>,
    /// Only the events of this subject, as `subject.key` shows it: `user:<user id>`,
    /// `tenant:<tenant id>` or `membership:<tenant id>:<user id>`.
    #[param(example = "user:user_2NNEqL2nrIRdJ194ndJqAHwEfxC")]
    pub subject: Option<String>,
    /// Only these types, comma-separated (`entitlements.changed,purchase.completed`).
    #[param(example = "entitlements.changed,purchase.completed")]
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
    #[schema(value_type = Vec<Object>)]
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
        (status = 400, description = "`invalid_query`, `invalid_cursor` (not a `next_cursor`), `invalid_subject` (not `user:<id>`, `tenant:<id>` or `membership:<tenant>:<user>` with valid ids), `invalid_types` (a name that is no event type) or `invalid_limit` (not 1 to 100)", body = Problem, content_type = "application/problem+json"),
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
    let subject = query.subject.as_deref().map(subject).transpose()?;
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

/// A subject key as the envelope's `subject.key` shows it, with valid ids.
fn subject(key: &str) -> Result<Subject, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_subject",
            "subject must be user:<user id>, tenant:<tenant id> or membership:<tenant id>:<user id>, as an event's subject.key shows it",
        )
    };
    let subject = Subject::parse_key(key).ok_or_else(invalid)?;
    if let Some(user) = subject.user_id() {
        UserId::parse(user).map_err(|_| invalid())?;
    }
    if let Some(tenant) = subject.tenant_id() {
        TenantId::parse(tenant).map_err(|_| invalid())?;
    }
    Ok(subject)
}
