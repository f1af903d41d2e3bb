//! `GET /v1/status`: the caller's own billing status.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::billing::access::Reason;
use crate::billing::catalog::{QuotaLimit, QuotaPeriod};
use crate::billing::facts::ScheduledChange;
use crate::billing::ids::TenantId;
use crate::billing::quota::{self, QuotaStanding};
use crate::billing::scope::Scope;
use crate::error::{ApiError, Problem};
use crate::identity::EndUser;
use crate::service::actors::actor_for;
use crate::service::status::{status_of, Exemption, ServedFrom, StatusView};
use crate::state::AppState;

/// A subject's billing status.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "granted_by": "user",
    "tenant_id": null,
    "plan": "pro",
    "plan_name": "Pro",
    "access": true,
    "reason": "active",
    "features": ["pro"],
    "status": "active",
    "subscription_id": "sub_1NvFq2",
    "interval": "month",
    "quantity": 1,
    "seats": {"allowed": 1, "used": null, "available": null},
    "manager_user_id": null,
    "current_period_end": "2026-12-21T12:00:00Z",
    "trial_end": null,
    "cancel_at_period_end": false,
    "cancel_at": null,
    "scheduled_change": {"plan": "maker", "interval": "month", "quantity": 1, "at": "2026-12-21T12:00:00Z"},
    "grace_until": null,
    "lifetime": false,
    "grant_id": null,
    "grant_until": null,
    "quotas": [{
        "key": "generations", "limit": 250, "period": "billing_period", "used": 12,
        "balance": 0, "remaining": 238, "resets_at": "2026-12-21T12:00:00Z"
    }],
    "as_of": "2026-11-21T12:00:03Z",
    "served_from": "database"
})))]
pub struct StatusOut {
    /// Whose grant this is: `user` (the user's own), `membership` (the user in this tenant) or
    /// `tenant` (shared by the tenant's members).
    pub granted_by: Scope,
    /// The tenant the answer is for, if any.
    pub tenant_id: Option<String>,
    /// The plan in force (the free plan without access).
    pub plan: String,
    pub plan_name: String,
    /// Whether paid access is granted.
    pub access: bool,
    pub reason: Reason,
    pub features: Vec<String>,
    /// Stripe status of the subscription behind the verdict, if any.
    pub status: Option<String>,
    pub subscription_id: Option<String>,
    /// `month` or `year`.
    pub interval: Option<String>,
    /// Seats bought (the subscription's quantity).
    pub quantity: Option<i64>,
    /// Seats allowed and used, when the plan or subscription speaks of seats.
    pub seats: Option<Seats>,
    /// For a tenant's subscription: the member who manages it (only they may check out, open
    /// the portal, cancel, resume or change it).
    pub manager_user_id: Option<String>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    /// A change Stripe makes when the period ends (a downgrade kept to the period's end, made
    /// through `POST /v1/subscription/change`, the portal or the Dashboard); until then the
    /// plan above stays. `null`: none.
    pub scheduled_change: Option<ScheduledChangeOut>,
    /// While past due: when access ends unless payment succeeds.
    pub grace_until: Option<DateTime<Utc>>,
    /// Access comes from a one-time lifetime purchase.
    pub lifetime: bool,
    /// The grant behind the verdict (`reason: granted`), if one decided it.
    pub grant_id: Option<String>,
    /// When that grant ends (`null`: it does not).
    pub grant_until: Option<DateTime<Utc>>,
    /// The quotas in force: the plan's allowances and purchased credits, with what is used,
    /// what is left and when the allowance resets.
    pub quotas: Vec<QuotaView>,
    /// When the facts behind this answer were last read from Stripe (a webhook, a verify, a
    /// reconciliation; the oldest of the user's, membership's and tenant's); `null` when they
    /// never were (nothing bought, or grants only).
    pub as_of: Option<DateTime<Utc>>,
    /// `cache`: the facts came from this replica's memory (kept fresh by database
    /// notifications); `database`: read for this answer.
    pub served_from: ServedFromOut,
}

/// What the subscription becomes when its period ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(examples(json!({"plan": "maker", "interval": "month", "quantity": 1, "at": "2026-12-21T12:00:00Z"})))]
pub struct ScheduledChangeOut {
    /// The plan it moves to (`null` when that price is not in the catalog: it then grants
    /// nothing).
    pub plan: Option<String>,
    /// `month` or `year`.
    pub interval: Option<String>,
    /// Seats from then.
    pub quantity: i64,
    /// When Stripe makes the change (the current period's end).
    pub at: DateTime<Utc>,
}

impl From<&ScheduledChange> for ScheduledChangeOut {
    fn from(c: &ScheduledChange) -> Self {
        ScheduledChangeOut {
            plan: c.plan_id.clone(),
            interval: c.price_interval.map(|i| i.as_str().to_owned()),
            quantity: c.quantity,
            at: c.at,
        }
    }
}

/// Where an answer's facts were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServedFromOut {
    Cache,
    Database,
}

impl From<ServedFrom> for ServedFromOut {
    fn from(s: ServedFrom) -> Self {
        match s {
            ServedFrom::Cache => ServedFromOut::Cache,
            ServedFrom::Database => ServedFromOut::Database,
        }
    }
}

/// One quota as the subject has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(examples(json!({
    "key": "generations", "limit": 250, "period": "billing_period", "used": 12,
    "balance": 0, "remaining": 238, "resets_at": "2026-12-21T12:00:00Z"
})))]
pub struct QuotaView {
    pub key: String,
    /// The allowance per period: a number, `"unlimited"`, or `null` when the plan in force has
    /// no such quota (only purchased credits can then be spent).
    pub limit: Option<QuotaLimit>,
    /// `day`, `month`, `billing_period` or `none` (`null` with no allowance).
    pub period: Option<QuotaPeriod>,
    /// Used of the allowance in the current period.
    pub used: u64,
    /// Purchased credits left (credit packs; they never reset and are spent after the
    /// allowance).
    pub balance: u64,
    /// Allowance left plus the balance; `null` when unlimited.
    pub remaining: Option<u64>,
    /// When the allowance starts again from zero (`null` if never).
    pub resets_at: Option<DateTime<Utc>>,
}

impl From<QuotaStanding> for QuotaView {
    fn from(q: QuotaStanding) -> Self {
        QuotaView {
            key: q.key,
            limit: q.limit,
            period: q.period,
            used: q.used,
            balance: q.balance,
            remaining: q.remaining,
            resets_at: q.resets_at,
        }
    }
}

/// Seats in a subscription or plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[schema(examples(json!({"allowed": 5, "used": 3, "available": 2})))]
pub struct Seats {
    /// `null`: unlimited.
    pub allowed: Option<u64>,
    /// `null` when unknown: pass `members` or keep a `seats` quota.
    pub used: Option<u64>,
    pub available: Option<u64>,
}

impl From<quota::Seats> for Seats {
    fn from(s: quota::Seats) -> Self {
        Seats {
            allowed: s.allowed,
            used: s.used,
            available: s.available,
        }
    }
}

impl StatusOut {
    /// The status, with seats used as `members` reports them (else as the `seats` quota counts).
    pub fn of(v: StatusView, members: Option<u64>) -> Self {
        let sub = v.subscription.as_ref();
        StatusOut {
            granted_by: v.scope,
            tenant_id: v.subject.tenant_id().map(str::to_owned),
            seats: v.seats(members).map(Seats::from),
            manager_user_id: sub
                .filter(|_| v.scope == Scope::Tenant)
                .and_then(|s| s.manager_user_id.clone()),
            current_period_end: v.current_period_end(),
            trial_end: v.trial_end(),
            plan: v.access.plan_id,
            plan_name: v.plan_name,
            access: v.access.access,
            reason: v.access.reason,
            features: v.access.features,
            status: sub.map(|s| s.status.as_str().to_owned()),
            subscription_id: sub.map(|s| s.id.clone()),
            interval: sub
                .and_then(|s| s.price_interval)
                .map(|i| i.as_str().to_owned()),
            quantity: sub.map(|s| s.quantity),
            cancel_at_period_end: sub.is_some_and(|s| s.cancel_at_period_end),
            cancel_at: sub.and_then(|s| s.cancel_at),
            scheduled_change: sub
                .and_then(|s| s.scheduled_change.as_ref())
                .map(ScheduledChangeOut::from),
            grace_until: v.access.grace_until,
            lifetime: v.access.lifetime,
            grant_id: v.access.grant.as_ref().map(|g| g.id.clone()),
            grant_until: v.access.grant.as_ref().and_then(|g| g.until),
            quotas: v.quotas.into_iter().map(QuotaView::from).collect(),
            as_of: v.as_of,
            served_from: v.served_from.into(),
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant to act in; the token's tenant claim must list it. Without it: the one tenant
    /// the claim names, if it names one.
    #[param(value_type = TenantId, inline, required = false)]
    pub tenant_id: Option<String>,
}

/// The caller's plan, access and reason, period end, trial end, cancellation and quotas: in a
/// tenant, the strongest of what they hold personally, through the membership and through the
/// tenant (`granted_by` says which).
#[utoipa::path(
    tag = "frontend",
    operation_id = "v1.status.get",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "the caller's plan, access, period and quotas", body = StatusOut),
        (status = 400, description = "`invalid_query` or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        (status = 403, description = "`tenant_not_allowed`: the token does not list the tenant", body = Problem, content_type = "application/problem+json"),
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/status")]
pub async fn get_status(
    state: web::Data<AppState>,
    user: EndUser,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let actor = actor_for(
        &user.0,
        super::params::optional_tenant_id(query.tenant_id.as_deref())?,
    )?;
    let view = status_of(&state, &actor, Exemption::Token(user.0.exempt)).await?;
    Ok(HttpResponse::Ok().json(StatusOut::of(view, None)))
}
