//! `POST /v1/admin/sync`: re-read one user or every customer from Stripe (scope `billing:admin`).

use actix_web::{post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::ids::UserId;
use crate::billing::subject::Subject;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::gateway::stripe;
use crate::service::reconcile;
use crate::state::AppState;

/// What one reconciliation found.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"customers": 1, "drifted": 1, "changes": 2, "failed": 0})))]
pub struct ReconcileReport {
    /// Customers re-read from Stripe.
    pub customers: usize,
    /// Customers whose stored state differed from Stripe's (now repaired).
    pub drifted: usize,
    /// Stored records changed.
    pub changes: usize,
    /// Customers that could not be re-read (logged; the next run retries them).
    pub failed: usize,
}

impl From<reconcile::ReconcileReport> for ReconcileReport {
    fn from(r: reconcile::ReconcileReport) -> Self {
        ReconcileReport {
            customers: r.customers,
            drifted: r.drifted,
            changes: r.changes,
            failed: r.failed,
        }
    }
}

/// Either `{"user_id": "..."}` (re-read that user's customer and answer the report) or
/// `{"all": true}` (re-read every customer in the background; 202 at once).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncIn {
    pub user_id: Option<String>,
    pub all: Option<bool>,
}

/// Written out, because "exactly one of the two" is what the document must say.
impl utoipa::PartialSchema for SyncIn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let user = ObjectBuilder::new()
            .description(Some("Re-read this user's customer and answer the report."))
            .property("user_id", <UserId as utoipa::PartialSchema>::schema())
            .required("user_id")
            .additional_properties(closed());
        let all = ObjectBuilder::new()
            .description(Some(
                "Re-read every customer in the background (answers 202 at once).",
            ))
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true])),
            )
            .required("all")
            .additional_properties(closed());
        OneOfBuilder::new()
            .item(user)
            .item(all)
            .examples([serde_json::json!({"user_id": "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"})])
            .into()
    }
}

impl ToSchema for SyncIn {}

/// A full reconciliation was started in the background.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"started": true})))]
pub struct SyncStartedOut {
    pub started: bool,
}

/// Repairs drift from Stripe for one user, or starts a full reconciliation.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.sync",
    security(("bearer" = [])),
    request_body = SyncIn,
    responses(
        (status = 200, description = "one user re-read: the report", body = ReconcileReport),
        (status = 202, description = "a full reconciliation started in the background", body = SyncStartedOut),
        (status = 400, description = "`invalid_body` (send either a `user_id` or `all: true`) or `invalid_user_id`", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        (status = 404, description = "`no_billing_account`: the user has no Stripe customer", body = Problem, content_type = "application/problem+json"),
        super::responses::BodyTooLarge,
        super::responses::NotJson,
        super::responses::Upstream,
        super::responses::StripeUnavailable,
    )
)]
#[post("/v1/admin/sync")]
pub async fn admin_sync(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    body: super::params::JsonObject<SyncIn>,
) -> Result<HttpResponse, ApiError> {
    // What to do is checked before whether it can be done.
    let target = match (body.user_id.as_deref(), body.all) {
        (Some(user_id), None) => Some(super::params::user_id(user_id)?),
        (None, Some(true)) => None,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "send either {\"user_id\": \"...\"} or {\"all\": true}",
            ))
        }
    };
    let gateway = stripe(&state)?;
    match target {
        Some(user_id) => {
            let report = reconcile::reconcile_subject(&state, gateway, &Subject::user(&user_id))
                .await
                .map_err(ApiError::upstream)?
                .ok_or_else(|| {
                    ApiError::not_found(
                        "no_billing_account",
                        format!("user `{user_id}` has no Stripe customer"),
                    )
                })?;
            Ok(HttpResponse::Ok().json(ReconcileReport::from(report)))
        }
        None => {
            let state = state.clone();
            actix_web::rt::spawn(async move {
                if let Some(gateway) = state.stripe.as_ref() {
                    let run = state
                        .db
                        .exclusively("tollgate:reconcile", || {
                            reconcile::reconcile_all(&state, gateway, |_, _| {})
                        })
                        .await;
                    if let Err(e) = run {
                        tracing::warn!(
                            error = format_args!("{e:#}"),
                            "requested reconciliation failed"
                        );
                    }
                }
            });
            Ok(HttpResponse::Accepted().json(SyncStartedOut { started: true }))
        }
    }
}
