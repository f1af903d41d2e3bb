//! `GET /v1/entitlements`: sibling services ask what a user may do.

use actix_web::{get, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::service_actor;
use super::status::{ServedFromOut, StatusOut};
use crate::billing::access::FeatureReason;
use crate::billing::ids::{TenantId, UserId};
use crate::billing::scope::Scope;
use crate::error::{ApiError, Problem};
use crate::identity::{ReadScope, Service};
use crate::service::status::{access_of, status_of, Exemption};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntitlementsQuery {
    /// The identity provider's user id.
    #[param(value_type = UserId, inline)]
    pub user_id: String,
    /// The tenant the user acts in: the answer combines what the user holds personally,
    /// through the membership and through the tenant.
    #[param(value_type = TenantId, inline, required = false)]
    pub tenant_id: Option<String>,
    /// Answer `{allowed, reason}` for this one feature.
    #[param(example = "pro")]
    pub feature: Option<String>,
    /// The tenant's member count, as the asking service knows it: reported as seats used.
    #[param(value_type = u64, minimum = 0, maximum = 4_294_967_295_u64, required = false)]
    pub members: Option<u32>,
}

/// What `GET /v1/entitlements` answers: the whole status, or one feature's verdict.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(examples(json!({
    "feature": "pro", "allowed": true, "reason": "active", "plan": "pro", "granted_by": "user",
    "as_of": "2026-11-21T12:00:03Z", "served_from": "cache"
})))]
pub enum EntitlementsOut {
    Status(Box<StatusOut>),
    Feature(FeatureOut),
}

/// Whether one feature is allowed, and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "feature": "pro", "allowed": true, "reason": "active", "plan": "pro", "granted_by": "user",
    "as_of": "2026-11-21T12:00:03Z", "served_from": "cache"
})))]
pub struct FeatureOut {
    pub feature: String,
    pub allowed: bool,
    /// The access reason (`active`, `trialing`, `free`, `canceled` ...); `not_in_plan` when
    /// access stands but the plan in force lacks the feature; `unknown_feature` when no plan
    /// declares the feature (check its spelling against `GET /v1/config`).
    #[schema(example = "active")]
    pub reason: String,
    pub plan: String,
    /// Whose grant decided: `user`, `membership` or `tenant`.
    pub granted_by: Scope,
    /// When the facts behind the answer were last read from Stripe; `null`: never.
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// `cache` (this replica's memory) or `database`.
    pub served_from: ServedFromOut,
}

/// The user's access and features, as `GET /v1/status` shows them to the user; or whether one
/// feature is allowed. With `tenant_id`, the strongest of what the user holds personally,
/// through the membership and through the tenant (`granted_by` says which): the caller need not
/// know the billing scope. Needs the read scope (`billing:read`).
#[utoipa::path(
    tag = "services",
    operation_id = "v1.entitlements.get",
    security(("bearer" = [])),
    params(EntitlementsQuery),
    responses(
        (status = 200, description = "`StatusOut` without `feature`; `FeatureOut` with it", body = EntitlementsOut),
        (status = 400, description = "`invalid_query`, `invalid_user_id`, or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingReadScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/entitlements")]
pub async fn get_entitlements(
    state: web::Data<AppState>,
    _service: Service<ReadScope>,
    query: web::Query<EntitlementsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let actor = service_actor(&query.user_id, query.tenant_id.as_deref())?;
    let exemption = Exemption::for_service(&state, actor.user_id.as_str());
    match query.feature {
        None => {
            let view = status_of(&state, &actor, exemption).await?;
            let out = StatusOut::of(view, query.members.map(u64::from));
            Ok(HttpResponse::Ok().json(EntitlementsOut::Status(Box::new(out))))
        }
        Some(feature) => {
            // A feature check needs the verdict only: no quota counters are read.
            let view = access_of(&state, &actor, exemption).await?;
            let verdict = view.access.allows(&state.catalog, &feature);
            if verdict.reason == FeatureReason::UnknownFeature {
                log_unknown_once(&feature);
            }
            Ok(
                HttpResponse::Ok().json(EntitlementsOut::Feature(FeatureOut {
                    feature,
                    allowed: verdict.allowed,
                    reason: verdict.reason.as_str().to_owned(),
                    plan: view.access.plan_id,
                    granted_by: view.scope,
                    as_of: view.as_of,
                    served_from: view.served_from.into(),
                })),
            )
        }
    }
}

/// Logs a feature name that no plan declares, once per name (as long as this replica remembers
/// it: up to a thousand names), so that a misspelt check shows in the logs without flooding them.
fn log_unknown_once(feature: &str) {
    static LOGGED: std::sync::OnceLock<quick_cache::sync::Cache<String, ()>> =
        std::sync::OnceLock::new();
    let logged = LOGGED.get_or_init(|| quick_cache::sync::Cache::new(1000));
    if logged.get(feature).is_none() {
        logged.insert(feature.to_owned(), ());
        tracing::warn!(
            feature,
            "a service asked about a feature that no plan declares (answered unknown_feature)"
        );
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExplainQuery {
    /// The identity provider's user id.
    #[param(value_type = UserId, inline)]
    pub user_id: String,
    /// The tenant the user acts in: its membership and the tenant are considered too.
    #[param(value_type = TenantId, inline, required = false)]
    pub tenant_id: Option<String>,
    /// Also say whether this feature is allowed, and why.
    #[param(example = "export")]
    pub feature: Option<String>,
}

/// Why a user has (or lacks) access, for support ("why can't this user export?") without the
/// database: every subject considered (the user; in a tenant, the membership and the tenant),
/// every subscription, purchase and grant each holds with the verdict that source alone gives,
/// the user's exemptions and the `saas` switch, each subject's verdict and the source that
/// decided it, which subject stands and why, the answer (for `feature` if given), and what ends
/// by itself next (grace, trial, canceled period, grant, quota window). Read from the database,
/// never the cache. Needs the read scope.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.entitlements.explain",
    security(("bearer" = [])),
    params(ExplainQuery),
    responses(
        (status = 200, description = "the explanation", body = crate::billing::explain::Explanation),
        (status = 400, description = "`invalid_query`, `invalid_user_id`, or `invalid_tenant_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingReadScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/entitlements/explain")]
pub async fn explain_entitlements(
    state: web::Data<AppState>,
    _service: Service<ReadScope>,
    query: web::Query<ExplainQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let actor = service_actor(&query.user_id, query.tenant_id.as_deref())?;
    let explanation = crate::service::status::explain(&state, &actor, query.feature).await?;
    Ok(HttpResponse::Ok().json(explanation))
}
