//! Quotas for sibling services: how much is left, and consuming it atomically and
//! idempotently (`POST /v1/usage`).

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::billing::access::Reason;
use crate::billing::catalog::{QuotaLimit, QuotaPeriod};
use crate::billing::quota::{self, Applied};
use crate::billing::scope::Actor;
use crate::db::from_db_time;
use crate::db::quotas::{Consumed, Consumption, LedgerRow};
use crate::error::{ApiError, Problem};
use crate::startup::AppState;

use super::status::{Exemption, Terms};

/// One quota as the subject has it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
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

impl QuotaView {
    pub fn new(a: &Applied, used: u64, balance_spent: u64) -> QuotaView {
        let balance = a.purchased.saturating_sub(balance_spent);
        QuotaView::of(&a.key, a.limit, a.period, a.window.resets_at, used, balance)
    }

    /// The quota as a ledger row recorded it after its decision.
    pub fn after(row: &LedgerRow) -> anyhow::Result<QuotaView> {
        Ok(QuotaView::of(
            &row.quota,
            row.limit()?,
            row.quota_period()?,
            row.resets_at.map(from_db_time),
            u64::try_from(row.used_after).unwrap_or(0),
            u64::try_from(row.balance_after).unwrap_or(0),
        ))
    }

    fn of(
        key: &str,
        limit: Option<QuotaLimit>,
        period: Option<QuotaPeriod>,
        resets_at: Option<DateTime<Utc>>,
        used: u64,
        balance: u64,
    ) -> QuotaView {
        QuotaView {
            key: key.to_owned(),
            limit,
            period: period.filter(|_| limit.is_some()),
            used,
            balance,
            remaining: quota::remaining(limit, used, balance),
            resets_at: resets_at.filter(|_| limit.is_some()),
        }
    }
}

/// A consumption a service asks for.
#[derive(Debug, Clone)]
pub struct UsageRequest {
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// The service's token subject (for the ledger).
    pub caller: String,
}

/// The answer to a consumption, as first given (and replayed for the same key).
#[derive(Debug, Clone)]
pub struct UsageAnswer {
    pub status: u16,
    /// JSON (`UsageOut`, or a `UsageRefusal` problem document).
    pub body: String,
    pub replayed: bool,
}

/// A granted consumption.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageOut {
    pub granted: bool,
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// Taken from the periodic allowance.
    pub from_allowance: u64,
    /// Taken from purchased credits.
    pub from_balance: u64,
    #[serde(flatten)]
    pub after: QuotaView,
}

/// A refused consumption: a problem document (`quota_exhausted`, `no_access`,
/// `quota_not_in_plan`) that also says what is left. Nothing was consumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRefusal {
    #[serde(flatten)]
    pub problem: Problem,
    pub granted: bool,
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// The access reason of the subject (e.g. `free`, `canceled`).
    pub reason: Reason,
    #[serde(flatten)]
    pub after: QuotaView,
}

const MAX_AMOUNT: u64 = 1_000_000_000;

/// Consumes `amount` of `quota` for the actor, from the grant that stands for them: all of it
/// or nothing, never beyond the allowance plus purchased credits, once per idempotency key.
pub async fn consume(
    state: &AppState,
    actor: &Actor,
    exemption: Exemption,
    req: UsageRequest,
) -> Result<UsageAnswer, ApiError> {
    if req.amount == 0 || req.amount > MAX_AMOUNT {
        return Err(ApiError::bad_request(
            "invalid_amount",
            format!("amount must be 1 to {MAX_AMOUNT}"),
        ));
    }
    // The key is stored and compared exactly as sent; a blank one is refused.
    let key = &req.idempotency_key;
    if crate::billing::ids::check_external_id(key).is_err() {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "idempotency_key must be 1 to 255 characters, not blank, without control characters",
        ));
    }
    if !state.catalog.declares_quota(&req.quota) {
        return Err(ApiError::unprocessable(
            "unknown_quota",
            format!("no plan declares the quota `{}`", req.quota),
        ));
    }
    let actor = actor.clone();
    let terms = Terms::of(state);
    let now = terms.now;
    let request = req.clone();
    let consumed = state
        .db
        .run(move |conn| {
            // The grant that stands for the actor is the one spent: a tenant's plan is shared by
            // its members.
            let evaluated = terms.evaluate(conn, &actor, exemption)?;
            let subject_key = evaluated.subject.key();
            let applied = terms
                .applied(&evaluated)
                .into_iter()
                .find(|a| a.key == request.quota)
                .unwrap_or_else(|| Applied {
                    key: request.quota.clone(),
                    limit: None,
                    period: None,
                    window: quota::window(QuotaPeriod::None, now, None),
                    purchased: 0,
                });
            let consumption = Consumption {
                subject: &subject_key,
                quota: &request.quota,
                amount: request.amount,
                idempotency_key: &request.idempotency_key,
                caller: &request.caller,
                bucket: &applied.window.bucket,
                limit: applied.limit,
                period: applied.period,
                resets_at: applied.window.resets_at,
                purchased: applied.purchased,
                reason: evaluated.access.reason,
                refusal: refusal(&applied, evaluated.access.access),
                now,
            };
            crate::db::quotas::consume(conn, &consumption)
        })
        .await?;
    let (row, replayed) = match consumed {
        Consumed::Fresh(row) => (row, false),
        Consumed::Replay(row) => (row, true),
    };
    if replayed && (row.quota != req.quota || u64::try_from(row.amount).ok() != Some(req.amount)) {
        return Err(ApiError::conflict(
            "idempotency_key_reused",
            "this idempotency_key was used for another quota or amount; use a new key",
        ));
    }
    let outcome = match (replayed, row.status_code) {
        (true, _) => "replayed",
        (false, 200) => "granted",
        (false, 402) => "exhausted",
        (false, _) => "forbidden",
    };
    metrics::counter!("tollgate_usage_total", "outcome" => outcome).increment(1);
    let (status, body) = render(&row, &req.idempotency_key)?;
    Ok(UsageAnswer {
        status,
        body,
        replayed,
    })
}

const QUOTA_EXHAUSTED: &str = "quota_exhausted";
const QUOTA_NOT_IN_PLAN: &str = "quota_not_in_plan";
const NO_ACCESS: &str = "no_access";

/// How a refusal under these terms answers: 402 when an allowance or credits exist but do not
/// cover the amount, 403 when the subject has neither the quota nor credits for it.
fn refusal(applied: &Applied, has_access: bool) -> (u16, &'static str) {
    let (status, code) = if applied.limit.is_some() || applied.purchased > 0 {
        (StatusCode::PAYMENT_REQUIRED, QUOTA_EXHAUSTED)
    } else if has_access {
        (StatusCode::FORBIDDEN, QUOTA_NOT_IN_PLAN)
    } else {
        (StatusCode::FORBIDDEN, NO_ACCESS)
    };
    (status.as_u16(), code)
}

/// The answer a ledger row gives, the first time and for every replay: `UsageOut`, or a
/// `UsageRefusal` problem document.
fn render(row: &LedgerRow, idempotency_key: &str) -> anyhow::Result<(u16, String)> {
    let after = QuotaView::after(row)?;
    let amount = u64::try_from(row.amount).unwrap_or(0);
    if row.granted {
        let granted = UsageOut {
            granted: true,
            quota: row.quota.clone(),
            amount,
            idempotency_key: idempotency_key.to_owned(),
            from_allowance: u64::try_from(row.from_allowance).unwrap_or(0),
            from_balance: u64::try_from(row.from_balance).unwrap_or(0),
            after,
        };
        return Ok((StatusCode::OK.as_u16(), serde_json::to_string(&granted)?));
    }
    let status = u16::try_from(row.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| anyhow::anyhow!("ledger status {}", row.status_code))?;
    let code = row.problem.as_deref().unwrap_or(QUOTA_EXHAUSTED);
    let detail = match code {
        QUOTA_EXHAUSTED => format!(
            "{amount} of `{}` asked, {} left; nothing was consumed",
            row.quota,
            after.remaining.unwrap_or(0)
        ),
        QUOTA_NOT_IN_PLAN => format!(
            "the plan in force has no `{}` quota and no credits were bought for it",
            row.quota
        ),
        _ => format!("the subject has no access that includes `{}`", row.quota),
    };
    let refusal = UsageRefusal {
        problem: Problem::new(status, code, detail),
        granted: false,
        quota: row.quota.clone(),
        amount,
        idempotency_key: idempotency_key.to_owned(),
        reason: row.access_reason()?.unwrap_or(Reason::Free),
        after,
    };
    Ok((status.as_u16(), serde_json::to_string(&refusal)?))
}
