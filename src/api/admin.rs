//! `POST /v1/admin/sync`: re-read one user or every customer from Stripe,
//! `GET /v1/admin/sync/{job_id}`: how a full re-read stands, and
//! `GET /v1/admin/webhooks/stuck`: the webhook inbox's backlog and the events that keep failing
//! (scope `billing:admin`).

use actix_web::http::header::LOCATION;
use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::billing::ids::UserId;
use crate::billing::subject::Subject;
use crate::error::{ApiError, Problem};
use crate::identity::{AdminScope, Service};
use crate::service::gateway::stripe;
use crate::service::{reconcile, webhooks};
use crate::state::AppState;

/// What one reconciliation found.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({"customers": 2, "drifted": 1, "changes": 2, "failed": 0, "duplicates": 1})))]
pub struct ReconcileReport {
    /// Customers re-read from Stripe.
    pub customers: usize,
    /// Customers whose stored state differed from Stripe's (now repaired).
    pub drifted: usize,
    /// Stored records changed.
    pub changes: usize,
    /// Customers that could not be re-read (logged; the next run retries them).
    pub failed: usize,
    /// Stripe customers beyond the first that carry the same subject (a second checkout that
    /// made its own customer, a customer made by hand): re-read too, and counted in `drifted`.
    pub duplicates: usize,
}

impl From<reconcile::ReconcileReport> for ReconcileReport {
    fn from(r: reconcile::ReconcileReport) -> Self {
        ReconcileReport {
            customers: r.customers,
            drifted: r.drifted,
            changes: r.changes,
            failed: r.failed,
            duplicates: r.duplicates,
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

/// Where a full reconciliation job stands.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncJobStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl From<reconcile::JobStatus> for SyncJobStatus {
    fn from(s: reconcile::JobStatus) -> Self {
        match s {
            reconcile::JobStatus::Running => SyncJobStatus::Running,
            reconcile::JobStatus::Succeeded => SyncJobStatus::Succeeded,
            reconcile::JobStatus::Failed => SyncJobStatus::Failed,
            reconcile::JobStatus::Interrupted => SyncJobStatus::Interrupted,
        }
    }
}

/// A full reconciliation job: every customer re-read from Stripe, in the background, on one
/// replica; any replica answers for it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "job_id": "0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3b",
    "status": "running",
    "customers_total": 500,
    "customers_done": 50,
    "drifted": 2,
    "changes": 3,
    "failed": 0,
    "started_at": "2026-12-01T09:00:00Z",
    "updated_at": "2026-12-01T09:00:42Z",
    "finished_at": null,
    "error": null
})))]
pub struct SyncJobOut {
    /// For `GET /v1/admin/sync/{job_id}`.
    pub job_id: String,
    /// `running`; `succeeded` (every customer re-read); `failed` (it stopped on an error, or
    /// some customers could not be re-read: see `error`); `interrupted` (the process running
    /// it stopped: no progress for a minute; start another).
    pub status: SyncJobStatus,
    /// Customers with a Stripe customer when the run started (0 until it starts counting).
    pub customers_total: u64,
    /// Customers re-read so far.
    pub customers_done: u64,
    /// Customers whose stored state differed from Stripe's (now repaired).
    pub drifted: u64,
    /// Stored records changed.
    pub changes: u64,
    /// Customers that could not be re-read (logged with the job id; the next run retries).
    pub failed: u64,
    pub started_at: DateTime<Utc>,
    /// When the replica running it last wrote its progress (every few seconds).
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed or was interrupted.
    pub error: Option<String>,
}

impl From<reconcile::SyncJob> for SyncJobOut {
    fn from(j: reconcile::SyncJob) -> Self {
        SyncJobOut {
            job_id: j.id,
            status: j.status.into(),
            customers_total: j.customers_total,
            customers_done: j.customers_done,
            drifted: j.drifted,
            changes: j.changes,
            failed: j.failed,
            started_at: j.started_at,
            updated_at: j.updated_at,
            finished_at: j.finished_at,
            error: j.error,
        }
    }
}

/// Repairs drift from Stripe for one user, or starts a full reconciliation.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.sync",
    security(("bearer" = [])),
    request_body = SyncIn,
    responses(
        (status = 200, description = "one user re-read: the report", body = ReconcileReport),
        (status = 202, description = "`{\"all\": true}`: the full reconciliation job, started now in the background; or, while one is running on any replica, that job (its `started_at` is earlier). Follow it at `Location`.", body = SyncJobOut,
            headers(("Location" = String, description = "`/v1/admin/sync/{job_id}`, where the job's progress is read"))),
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
            let job = SyncJobOut::from(reconcile::start_full_sync(state.into_inner()).await?);
            Ok(HttpResponse::Accepted()
                .insert_header((LOCATION, format!("/v1/admin/sync/{}", job.job_id)))
                .json(job))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SyncJobPath {
    /// The `job_id` that `POST /v1/admin/sync` answered.
    #[param(
        format = "uuid",
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        example = "0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3b"
    )]
    pub job_id: String,
}

/// How a full reconciliation job stands: its status and counts, from whichever replica runs
/// it. A job whose replica stopped before it finished reads as `interrupted`.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.sync.job",
    security(("bearer" = [])),
    params(SyncJobPath),
    responses(
        (status = 200, description = "the job", body = SyncJobOut),
        (status = 400, description = "`invalid_job_id`: not a job id (a UUID such as `0b7e4f5c-3d2a-4e61-9a8b-2f1c6d5e4a3b`)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        (status = 404, description = "`sync_job_not_found`: no job has this id", body = Problem, content_type = "application/problem+json"),
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/admin/sync/{job_id}")]
pub async fn admin_sync_job(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    path: web::Path<SyncJobPath>,
) -> Result<HttpResponse, ApiError> {
    let job_id = super::params::job_id(&path.job_id)?;
    let job = reconcile::sync_job(&state, &job_id).await?;
    Ok(HttpResponse::Ok().json(SyncJobOut::from(job)))
}

/// A stored webhook event the workers could not apply yet.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "event_id": "evt_1NvFq2",
    "type": "customer.subscription.updated",
    "customer_id": "cus_P5f0T3",
    "received_at": "2026-12-01T12:00:00Z",
    "attempts": 4,
    "last_error": "Stripe: api_error (500): ...",
    "next_attempt_at": "2026-12-01T12:00:15Z"
})))]
pub struct StuckEventOut {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The Stripe customer it concerns (`null`: a dispute whose customer only Stripe can tell).
    pub customer_id: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i32,
    pub last_error: Option<String>,
    /// When a worker tries it again.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The webhook inbox as it stands.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "pending": 12,
    "oldest_pending_received_at": "2026-12-01T12:00:00Z",
    "stuck": [{
        "event_id": "evt_1NvFq2", "type": "customer.subscription.updated",
        "customer_id": "cus_P5f0T3", "received_at": "2026-12-01T12:00:00Z", "attempts": 4,
        "last_error": "Stripe: api_error (500): ...", "next_attempt_at": "2026-12-01T12:00:15Z"
    }]
})))]
pub struct WebhookBacklogOut {
    /// Events stored (acknowledged to Stripe) and not yet applied.
    pub pending: i64,
    /// When the oldest of them was received (`null`: none pending).
    pub oldest_pending_received_at: Option<DateTime<Utc>>,
    /// Pending events that failed at least once, oldest first, with their last error.
    pub stuck: Vec<StuckEventOut>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StuckQuery {
    /// How many stuck events to list, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
}

/// The webhook inbox: how many acknowledged events are not applied yet, since when, and the
/// ones that keep failing with their last error (they are retried with backoff; see
/// docs/LIFECYCLE.md).
#[utoipa::path(
    tag = "services",
    operation_id = "v1.admin.webhooks.stuck",
    security(("bearer" = [])),
    params(StuckQuery),
    responses(
        (status = 200, description = "the backlog and the stuck events", body = WebhookBacklogOut),
        (status = 400, description = "`invalid_query`, or `invalid_limit` (not 1 to 100)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingAdminScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/admin/webhooks/stuck")]
pub async fn admin_webhooks_stuck(
    state: web::Data<AppState>,
    _service: Service<AdminScope>,
    query: web::Query<StuckQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, _) = super::params::page(query.into_inner().limit, None, |_| None::<()>)?;
    let backlog = webhooks::backlog(&state, limit).await?;
    Ok(HttpResponse::Ok().json(WebhookBacklogOut {
        pending: backlog.pending,
        oldest_pending_received_at: backlog.oldest_received_at,
        stuck: backlog
            .stuck
            .into_iter()
            .map(|e| StuckEventOut {
                event_id: e.event_id,
                event_type: e.event_type,
                customer_id: e.stripe_customer_id,
                received_at: crate::db::from_db_time(e.received_at),
                attempts: e.attempts,
                last_error: e.last_error,
                next_attempt_at: e.due_at.map(crate::db::from_db_time),
            })
            .collect(),
    }))
}
