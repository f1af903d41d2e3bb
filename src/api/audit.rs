//! `GET /v1/audit`: what changed in a user's or tenant's billing state, when, and from which
//! Stripe event or call (scope `billing:admin`): support reads it instead of the database.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use crate::billing::events::EnvelopeSubject;
use crate::billing::ids::{TenantId, UserId};
use crate::db::audit::TrailRow;
use crate::db::from_db_time;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::listing;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The user's trail: their own records and their memberships' (with `tenant_id`: the
    /// user's in that tenant only).
    #[param(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// The tenant's trail: its own records and its members' (with `user_id`: that member's).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,19}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        example = "1795262400000000000:0f8e5c2a-6a4b-4f7e-9d43-1b2c3d4e5f60"
    )]
    pub cursor: Option<String>,
}

/// One change of stored billing state.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "0f8e5c2a-6a4b-4f7e-9d43-1b2c3d4e5f60",
    "subject": {"key": "user:alice", "kind": "user", "user_id": "alice", "tenant_id": null},
    "entity": "subscription",
    "entity_id": "sub_1NvFq2",
    "action": "updated",
    "changes": {"status": ["active", "past_due"]},
    "source": "event:evt_1NvG3x invoice.payment_failed",
    "recorded_at": "2026-12-01T09:30:00Z"
})))]
pub struct AuditOut {
    pub id: String,
    pub subject: EnvelopeSubject,
    /// What changed: `subscription`, `purchase`, `payment`, `grant`, `customer`, `user`,
    /// `tenant`, `membership`, ...
    pub entity: String,
    /// Its id (`sub_...`, `cs_...`, `ch_...`, `grant_...`, a subject key).
    pub entity_id: String,
    /// `created`, `updated`, `deleted`, `removed`, `second_subscription`, ...
    pub action: String,
    /// `{field: [before, after]}` for each field that changed (or what the action recorded).
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    /// The Stripe event (`event:evt_... type`) or call (`verify`, `api:grants.create`,
    /// `reconcile`) behind it.
    pub source: String,
    pub recorded_at: DateTime<Utc>,
}

/// One page of the trail, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTrailOut {
    pub data: Vec<AuditOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<TrailRow> for AuditOut {
    fn from(row: TrailRow) -> AuditOut {
        AuditOut {
            id: row.audit_id,
            subject: EnvelopeSubject::of_key(&row.subject),
            entity: row.entity,
            entity_id: row.entity_id,
            action: row.action,
            changes: serde_json::from_str(&row.changes).unwrap_or(serde_json::Value::Null),
            source: row.source,
            recorded_at: from_db_time(row.recorded_at),
        }
    }
}

/// `<nanoseconds since 1970>:<audit id>`, as `next_cursor` gives it (rows keep the time of
/// their transaction to the nanosecond on SQLite).
fn parse_cursor(cursor: &str) -> Option<(chrono::NaiveDateTime, String)> {
    let (ns, id) = cursor.split_once(':')?;
    if ns.is_empty() || ns.len() > 19 || !ns.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id = uuid::Uuid::parse_str(id).ok()?.hyphenated().to_string();
    let at = DateTime::from_timestamp_nanos(ns.parse().ok()?).naive_utc();
    Some((at, id))
}

/// The audit trail, newest first: every change of stored billing state (subscriptions,
/// purchases, payments, grants, customers, removals), what changed (`{field: [before,
/// after]}`), when, and from which Stripe event or call. With `user_id` and/or `tenant_id`, of
/// those subjects only (a user's includes their memberships; a tenant's, its members').
#[utoipa::path(
    tag = "services",
    operation_id = "v1.audit.list",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "one page of the trail, newest first", body = AuditTrailOut),
        (status = 400, description = "`invalid_query`, `invalid_user_id`, `invalid_tenant_id`, `invalid_limit` (not 1 to 100) or `invalid_cursor` (not a `next_cursor` this endpoint gave)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/audit")]
pub async fn list_audit(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let holder = params::holder(query.user_id.as_deref(), query.tenant_id.as_deref())?;
    let (limit, before) = params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    let (rows, more) = listing::audit_trail(&state, holder, before, limit).await?;
    let next_cursor = more
        .then(|| {
            rows.last().map(|r| {
                format!(
                    "{}:{}",
                    r.recorded_at
                        .and_utc()
                        .timestamp_nanos_opt()
                        .unwrap_or(i64::MAX),
                    r.audit_id
                )
            })
        })
        .flatten();
    let data = rows.into_iter().map(AuditOut::from).collect();
    Ok(HttpResponse::Ok().json(AuditTrailOut { data, next_cursor }))
}
