//! Liveness and readiness.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Liveness or readiness.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({"status": "ok"})))]
pub struct HealthOut {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(tag = "operations", operation_id = "healthz", responses((status = 200, description = "the process answers", body = HealthOut)))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthOut { status: "ok" })
}

/// Readiness: the database is reachable.
#[utoipa::path(
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "the database answers a query", body = HealthOut),
        (status = 503, description = "`database_unavailable`: the database is not reachable", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "seconds before asking again"))),
    )
)]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = format_args!("{e:#}"), "readiness check failed");
        ApiError::new(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is not reachable",
        )
        .retry_after(5)
    })?;
    Ok(HttpResponse::Ok().json(HealthOut { status: "ready" }))
}

/// Prometheus metrics: requests by route, method and status, Stripe calls by operation and
/// outcome, webhook events and rejections, reconciliation runs and the drift they found
/// (docs/OPERATIONS.md lists every family).
#[utoipa::path(
    tag = "operations",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
