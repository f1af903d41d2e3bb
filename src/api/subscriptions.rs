//! `GET /v1/subscriptions`: every stored subscription and one-time purchase, for services and
//! support (scope `billing:read`): what seed 001's operators check a purchase by.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params;
use super::status::ScheduledChangeOut;
use crate::billing::events::EnvelopeSubject;
use crate::billing::ids::{TenantId, UserId};
use crate::db::from_db_time;
use crate::db::listing::{Filter, Listed};
use crate::error::{ApiError, Problem};
use crate::identity::{ReadScope, Service};
use crate::service::listing;
use crate::state::AppState;

/// The statuses a record can have: Stripe's subscription statuses and a purchase's.
const STATUSES: [&str; 11] = [
    "active",
    "trialing",
    "past_due",
    "unpaid",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "paused",
    "paid",
    "refunded",
    "disputed",
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionsQuery {
    /// Only records of this status: a subscription's (`active`, `trialing`, `past_due`,
    /// `unpaid`, `canceled`, `incomplete`, `incomplete_expired`, `paused`) or a purchase's
    /// (`paid`, `refunded`, `disputed`).
    #[param(
        pattern = "^(active|trialing|past_due|unpaid|canceled|incomplete|incomplete_expired|paused|paid|refunded|disputed)$",
        example = "active"
    )]
    pub status: Option<String>,
    /// Only records of this plan (also one the catalog no longer has).
    #[param(value_type = Option<String>, min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$", example = "pro")]
    pub plan: Option<String>,
    /// Only the user's records: their own and their memberships' (with `tenant_id`: the user's
    /// in that tenant).
    #[param(value_type = Option<UserId>)]
    pub user_id: Option<String>,
    /// Only the tenant's records: its own and its members' (with `user_id`: that member's).
    #[param(value_type = Option<TenantId>)]
    pub tenant_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 20)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,17}:(sub|cs)_[A-Za-z0-9_]{1,250}$",
        example = "1795262400000000:sub_1NvFq2"
    )]
    pub cursor: Option<String>,
}

/// A subscription or one-time purchase as Tollgate stores it from Stripe.
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "provider": "stripe",
    "kind": "subscription",
    "id": "sub_1NvFq2",
    "stripe_subscription_id": "sub_1NvFq2",
    "stripe_checkout_session_id": null,
    "stripe_customer_id": "cus_P5f0T3",
    "stripe_payment_intent_id": null,
    "subject": {"key": "user:alice", "kind": "user", "user_id": "alice", "tenant_id": null},
    "plan": "pro",
    "status": "active",
    "interval": "month",
    "quantity": 1,
    "current_period_start": "2026-11-21T12:00:00Z",
    "current_period_end": "2026-12-21T12:00:00Z",
    "trial_end": null,
    "cancel_at_period_end": false,
    "cancel_at": null,
    "canceled_at": null,
    "ended_at": null,
    "scheduled_change": null,
    "amount": null,
    "currency": null,
    "created_at": "2026-11-21T12:00:00Z",
    "synced_at": "2026-11-21T12:00:03Z"
})))]
pub struct RecordOut {
    /// Always `stripe`.
    #[schema(example = "stripe")]
    pub provider: &'static str,
    /// `subscription`, or `purchase` (a lifetime plan or credit pack paid once).
    #[schema(example = "subscription")]
    pub kind: &'static str,
    /// The Stripe id: the subscription's, or the purchase's Checkout Session's.
    pub id: String,
    pub stripe_subscription_id: Option<String>,
    pub stripe_checkout_session_id: Option<String>,
    pub stripe_customer_id: Option<String>,
    pub stripe_payment_intent_id: Option<String>,
    pub subject: EnvelopeSubject,
    pub plan: Option<String>,
    /// Stripe's subscription status, or the purchase's (`paid`, `refunded`, `disputed`).
    pub status: String,
    /// `month` or `year` (`once` for a purchase).
    pub interval: Option<String>,
    pub quantity: i64,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// What the subscription becomes when its period ends (a downgrade kept to the period's
    /// end); `null`: nothing, or a purchase.
    pub scheduled_change: Option<ScheduledChangeOut>,
    /// A purchase's amount, in the currency's minor unit.
    pub amount: Option<i64>,
    pub currency: Option<String>,
    /// When Stripe created it (the listing's order).
    pub created_at: DateTime<Utc>,
    /// When Tollgate last wrote it from Stripe.
    pub synced_at: DateTime<Utc>,
}

/// One page of records, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionsOut {
    pub data: Vec<RecordOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<Listed> for RecordOut {
    fn from(listed: Listed) -> RecordOut {
        match listed {
            Listed::Subscription(s) => RecordOut {
                scheduled_change: s
                    .record()
                    .scheduled_change
                    .as_ref()
                    .map(ScheduledChangeOut::from),
                provider: "stripe",
                kind: "subscription",
                id: s.stripe_subscription_id.clone(),
                stripe_subscription_id: Some(s.stripe_subscription_id),
                stripe_checkout_session_id: None,
                stripe_customer_id: Some(s.stripe_customer_id),
                stripe_payment_intent_id: None,
                subject: EnvelopeSubject::of_key(&s.subject),
                plan: s.plan_id,
                status: s.status,
                interval: s.price_interval,
                quantity: s.quantity,
                current_period_start: s.current_period_start.map(from_db_time),
                current_period_end: s.current_period_end.map(from_db_time),
                trial_end: s.trial_end.map(from_db_time),
                cancel_at_period_end: s.cancel_at_period_end,
                cancel_at: s.cancel_at.map(from_db_time),
                canceled_at: s.canceled_at.map(from_db_time),
                ended_at: s.ended_at.map(from_db_time),
                amount: None,
                currency: None,
                created_at: from_db_time(s.stripe_created_at),
                synced_at: from_db_time(s.synced_at),
            },
            Listed::Purchase(p) => RecordOut {
                provider: "stripe",
                kind: "purchase",
                id: p.checkout_session_id.clone(),
                stripe_subscription_id: None,
                stripe_checkout_session_id: Some(p.checkout_session_id),
                stripe_customer_id: p.stripe_customer_id,
                stripe_payment_intent_id: p.payment_intent_id,
                subject: EnvelopeSubject::of_key(&p.subject),
                plan: Some(p.plan_id),
                status: p.status,
                interval: Some("once".to_owned()),
                quantity: 1,
                current_period_start: None,
                current_period_end: None,
                trial_end: None,
                cancel_at_period_end: false,
                cancel_at: None,
                canceled_at: None,
                ended_at: None,
                scheduled_change: None,
                amount: Some(p.amount),
                currency: Some(p.currency),
                created_at: from_db_time(p.purchased_at),
                synced_at: from_db_time(p.updated_at),
            },
        }
    }
}

/// `<microseconds since 1970>:<Stripe id>`, as `next_cursor` gives it.
fn parse_cursor(cursor: &str) -> Option<(chrono::NaiveDateTime, String)> {
    let (us, id) = cursor.split_once(':')?;
    if us.is_empty() || us.len() > 17 || !us.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let valid_id = (id.starts_with("sub_") || id.starts_with("cs_"))
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_id {
        return None;
    }
    let at = DateTime::from_timestamp_micros(us.parse().ok()?)?.naive_utc();
    Some((at, id.to_owned()))
}

/// Every stored subscription and one-time purchase, newest first, each with `provider:
/// "stripe"`, its Stripe ids, subject, plan, status, period, cancellation, quantity and when it
/// was last synced. The filters combine. A page starts after the previous page's last record,
/// so records added meanwhile neither repeat nor shift it.
#[utoipa::path(
    tag = "services",
    operation_id = "v1.subscriptions.list",
    security(("bearer" = [])),
    params(SubscriptionsQuery),
    responses(
        (status = 200, description = "one page of records, newest first", body = SubscriptionsOut),
        (status = 400, description = "`invalid_query`, `invalid_status` (not a subscription's nor a purchase's status), `invalid_plan` (blank, too long, or with a control character), `invalid_user_id`, `invalid_tenant_id`, `invalid_limit` (not 1 to 100), or `invalid_cursor` (not a `next_cursor` this endpoint gave)", body = Problem, content_type = "application/problem+json"),
        super::responses::Unauthorized,
        super::responses::MissingReadScope,
        super::responses::IdentityUnavailable,
    )
)]
#[get("/v1/subscriptions")]
pub async fn list_subscriptions(
    state: web::Data<AppState>,
    _service: Service<ReadScope>,
    query: web::Query<SubscriptionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let holder = params::holder(query.user_id.as_deref(), query.tenant_id.as_deref())?;
    if let Some(status) = query.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("`status` must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    if let Some(plan) = query.plan.as_deref() {
        crate::billing::ids::check_external_id(plan).map_err(|e| {
            ApiError::bad_request(
                "invalid_plan",
                format!("`plan` {e}: a plan id as configured"),
            )
        })?;
    }
    let (limit, before) = params::page(query.limit, query.cursor.as_deref(), parse_cursor)?;
    let filter = Filter {
        holder,
        plan_id: query.plan,
        status: query.status,
        before,
        limit,
    };
    let (rows, more) = listing::subscriptions(&state, filter).await?;
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| format!("{}:{}", r.created().and_utc().timestamp_micros(), r.id()))
        })
        .flatten();
    let data = rows.into_iter().map(RecordOut::from).collect();
    Ok(HttpResponse::Ok().json(SubscriptionsOut { data, next_cursor }))
}
