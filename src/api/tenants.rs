//! `DELETE /v1/tenants/{tenant_id}`, `DELETE /v1/tenants/{tenant_id}/members/{user_id}` and
//! `PUT /v1/tenants/{tenant_id}/manager`: what a product's tenant administration tells
//! Tollgate (scope `billing:admin`).

use actix_web::{delete, put, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use crate::billing::ids::{TenantId, UserId};
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::tenants::{self, Handover, Removal};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The identity provider's tenant id.
    #[param(value_type = TenantId, inline)]
    pub tenant_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The identity provider's tenant id.
    #[param(value_type = TenantId, inline)]
    pub tenant_id: String,
    /// The identity provider's user id.
    #[param(value_type = UserId, inline)]
    pub user_id: String,
}

/// What a removal did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "tenant_id": "org_29w9IfBrPmcpi0IeBVaKtDJR",
    "user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "removed_at": "2026-11-21T12:00:00Z",
    "canceled_subscriptions": ["sub_1NvFq2"]
})))]
pub struct RemovalOut {
    pub tenant_id: String,
    /// Set when a member was removed.
    pub user_id: Option<String>,
    /// When the removal was first recorded (a retry keeps it).
    pub removed_at: DateTime<Utc>,
    /// Subscriptions this call canceled on Stripe (empty on a retry that finds nothing left).
    pub canceled_subscriptions: Vec<String>,
}

impl From<Removal> for RemovalOut {
    fn from(r: Removal) -> Self {
        RemovalOut {
            tenant_id: r.tenant_id,
            user_id: r.user_id,
            removed_at: r.removed_at,
            canceled_subscriptions: r.canceled_subscriptions,
        }
    }
}

/// Who manages a tenant's subscription after a hand-over.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "tenant_id": "org_29w9IfBrPmcpi0IeBVaKtDJR",
    "manager_user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC",
    "subscription_id": "sub_1NvFq2"
})))]
pub struct ManagerOut {
    pub tenant_id: String,
    pub manager_user_id: String,
    pub subscription_id: String,
}

impl From<Handover> for ManagerOut {
    fn from(h: Handover) -> Self {
        ManagerOut {
            tenant_id: h.tenant_id,
            manager_user_id: h.manager_user_id,
            subscription_id: h.subscription_id,
        }
    }
}

/// The tenant was deleted: cancels on Stripe, at once, the tenant's subscription and every
/// membership subscription in it, and records the removal (audited). Idempotent: a retry,
/// also after a Stripe failure (502), finishes what is left and cancels nothing twice. A tenant
/// Tollgate never billed answers 404 and is not recorded (it may still buy later).
#[utoipa::path(
    tag = "services",
    operation_id = "v1.tenants.delete",
    security(("bearer" = [])),
    params(TenantPath),
    responses(
        (status = 200, description = "the removal, and the subscriptions canceled now", body = RemovalOut),
        (status = 400, description = "`invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        (status = 404, description = "`tenant_not_found`: Tollgate holds no billing record of the tenant; nothing is recorded", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        (status = 502, description = "`upstream_error`: Stripe failed; the removal is recorded, retry to finish", body = Problem, content_type = "application/problem+json"),
        super::responses::StripeUnavailable,
    )
)]
#[delete("/v1/tenants/{tenant_id}")]
pub async fn delete_tenant(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    path: web::Path<TenantPath>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = params::tenant_id(&path.tenant_id)?;
    let removal = tenants::remove_tenant(&state, &tenant_id).await?;
    Ok(HttpResponse::Ok().json(RemovalOut::from(removal)))
}

/// The member left the tenant: cancels on Stripe, at once, their membership subscription and,
/// when they are the billing manager of the tenant's subscription, that one too (no other
/// member may manage it). Recorded and audited; idempotent and safe to retry.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.tenants.members.delete",
    security(("bearer" = [])),
    params(MemberPath),
    responses(
        (status = 200, description = "the removal, and the subscriptions canceled now", body = RemovalOut),
        (status = 400, description = "`invalid_tenant_id` or `invalid_user_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::BodyTooLarge,
        (status = 502, description = "`upstream_error`: Stripe failed; the removal is recorded, retry to finish", body = Problem, content_type = "application/problem+json"),
        super::responses::StripeUnavailable,
    )
)]
#[delete("/v1/tenants/{tenant_id}/members/{user_id}")]
pub async fn delete_member(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    path: web::Path<MemberPath>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = params::tenant_id(&path.tenant_id)?;
    let user_id = params::user_id(&path.user_id)?;
    let removal = tenants::remove_member(&state, &tenant_id, &user_id).await?;
    Ok(HttpResponse::Ok().json(RemovalOut::from(removal)))
}

/// The member to hand the tenant's subscription over to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(examples(json!({"user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"})))]
pub struct ManagerIn {
    /// The member who manages the tenant's subscription from now on.
    #[schema(value_type = UserId)]
    pub user_id: String,
}

/// Hands the tenant's subscription over to another member: from now on only they may check
/// out, open the portal, cancel, resume or change it. Recorded on Stripe (subscription metadata
/// `tollgate_manager`) and audited. Idempotent.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.tenants.manager.put",
    security(("bearer" = [])),
    params(TenantPath),
    request_body = ManagerIn,
    responses(
        (status = 200, description = "who manages the tenant's subscription now", body = ManagerOut),
        (status = 400, description = "`invalid_body`, `invalid_tenant_id`, or `invalid_user_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        (status = 404, description = "`no_subscription`: the tenant has no subscription that stands", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[put("/v1/tenants/{tenant_id}/manager")]
pub async fn put_manager(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    path: web::Path<TenantPath>,
    body: super::params::JsonObject<ManagerIn>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = params::tenant_id(&path.tenant_id)?;
    let user_id = params::user_id(&body.user_id)?;
    let out = ManagerOut::from(tenants::hand_over(&state, &tenant_id, &user_id).await?);
    Ok(HttpResponse::Ok().json(out))
}
