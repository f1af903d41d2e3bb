//! `POST /v1/admin/sync`: re-read one user or every customer from Stripe (scope `billing:admin`).

use actix_web::{post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::billing::subject::Subject;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::checkout::stripe;
use crate::service::reconcile::{self, ReconcileReport};
use crate::startup::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncIn {
    /// Re-read this user's customer and answer the report.
    pub user_id: Option<String>,
    /// Re-read every customer in the background (answers 202 at once).
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Serialize, ToSchema)]
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
        (status = 200, description = "one user re-read", body = ReconcileReport),
        (status = 202, description = "full reconciliation started", body = SyncStartedOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "the token lacks the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "the user has no Stripe customer", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/v1/admin/sync")]
#[tracing::instrument(skip_all)]
pub async fn admin_sync(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    body: web::Json<SyncIn>,
) -> Result<HttpResponse, ApiError> {
    // What to do is checked before whether it can be done.
    let target = match (body.user_id.as_deref(), body.all) {
        (Some(user_id), false) => Some(super::params::user_id(user_id)?),
        (None, true) => None,
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
            Ok(HttpResponse::Ok().json(report))
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
                        tracing::warn!(error = ?e, "requested reconciliation failed");
                    }
                }
            });
            Ok(HttpResponse::Accepted().json(SyncStartedOut { started: true }))
        }
    }
}
