//! Quotas for sibling services: how much is left, and consuming it atomically and
//! idempotently (`POST /v1/usage`).

use crate::billing::access::Reason;
use crate::billing::catalog::{QuotaLimit, QuotaPeriod};
use crate::billing::quota::{self, Applied, QuotaRefusal, QuotaStanding};
use crate::billing::scope::Actor;
use crate::db::from_db_time;
use crate::db::quotas::{Consumed, Consumption, LedgerRow};
use crate::state::AppState;

use super::error::ServiceError;
use super::status::{Exemption, Terms};

/// A consumption a service asks for.
#[derive(Debug, Clone)]
pub struct UsageRequest {
    pub quota: String,
    pub amount: u64,
    pub idempotency_key: String,
    /// The service's token subject (for the ledger).
    pub caller: String,
}

/// A consumption's decision, as first taken (and replayed for the same key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageOutcome {
    /// The idempotency key was seen before: this is its first decision, nothing more consumed.
    pub replayed: bool,
    pub quota: String,
    pub amount: u64,
    /// Taken from the periodic allowance.
    pub from_allowance: u64,
    /// Taken from purchased credits.
    pub from_balance: u64,
    /// The quota after the decision.
    pub after: QuotaStanding,
    /// Why nothing was consumed; `None` when granted.
    pub refusal: Option<QuotaRefusal>,
    /// The subject's access reason when it was decided.
    pub reason: Reason,
}

impl UsageOutcome {
    /// The decision a ledger row recorded.
    fn of(row: &LedgerRow, replayed: bool) -> anyhow::Result<UsageOutcome> {
        let after = QuotaStanding::of(
            &row.quota,
            row.limit()?,
            row.quota_period()?,
            row.resets_at.map(from_db_time),
            u64::try_from(row.used_after).unwrap_or(0),
            u64::try_from(row.balance_after).unwrap_or(0),
        );
        let refusal = if row.granted {
            None
        } else {
            let code = row
                .problem
                .as_deref()
                .unwrap_or(QuotaRefusal::Exhausted.code());
            Some(
                QuotaRefusal::parse(code)
                    .ok_or_else(|| anyhow::anyhow!("ledger problem code {code:?}"))?,
            )
        };
        Ok(UsageOutcome {
            replayed,
            quota: row.quota.clone(),
            amount: u64::try_from(row.amount).unwrap_or(0),
            from_allowance: u64::try_from(row.from_allowance).unwrap_or(0),
            from_balance: u64::try_from(row.from_balance).unwrap_or(0),
            after,
            refusal,
            reason: row.access_reason()?.unwrap_or(Reason::Free),
        })
    }
}

const MAX_AMOUNT: u64 = 1_000_000_000;

/// Consumes `amount` of `quota` for the actor, from the grant that stands for them: all of it
/// or nothing, never beyond the allowance plus purchased credits, once per idempotency key of
/// the requester (service, user, tenant): a retry answers the first decision even when another
/// subject's grant would pay now.
pub async fn consume(
    state: &AppState,
    actor: &Actor,
    exemption: Exemption,
    req: UsageRequest,
) -> Result<UsageOutcome, ServiceError> {
    if req.amount == 0 || req.amount > MAX_AMOUNT {
        return Err(ServiceError::invalid(
            "invalid_amount",
            format!("amount must be 1 to {MAX_AMOUNT}"),
        ));
    }
    // The key is stored and compared exactly as sent; a blank one is refused.
    let key = &req.idempotency_key;
    if crate::billing::ids::check_external_id(key).is_err() {
        return Err(ServiceError::invalid(
            "invalid_idempotency_key",
            "idempotency_key must be 1 to 255 characters, not blank, without control characters",
        ));
    }
    if !state.catalog.declares_quota(&req.quota) {
        return Err(ServiceError::unprocessable(
            "unknown_quota",
            format!("no plan declares the quota `{}`", req.quota),
        ));
    }
    let requester = quota::requester(&req.caller, actor);
    let thresholds = state.events.quota_thresholds.clone();
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
                requester: &requester,
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
                refusal: QuotaRefusal::of(&applied, evaluated.access.access),
                now,
                thresholds: thresholds.get(&request.quota).map_or(&[], Vec::as_slice),
            };
            crate::db::quotas::consume(conn, &consumption)
        })
        .await?;
    let (row, replayed) = match consumed {
        Consumed::Fresh(row) => (row, false),
        Consumed::Replay(row) => (row, true),
    };
    if replayed && (row.quota != req.quota || u64::try_from(row.amount).ok() != Some(req.amount)) {
        return Err(ServiceError::conflict(
            "idempotency_key_reused",
            "this idempotency_key was used for another quota or amount; use a new key",
        ));
    }
    let outcome = UsageOutcome::of(&row, replayed)?;
    if !replayed && crossed_any(&row, thresholds_of(state, &req.quota)) {
        // The crossing was recorded with the consumption; tell it now rather than at the next
        // poll.
        state.events.wake.notify_one();
    }
    let label = match (replayed, outcome.refusal) {
        (true, _) => "replayed",
        (false, None) => "granted",
        (false, Some(QuotaRefusal::Exhausted)) => "exhausted",
        (false, Some(_)) => "forbidden",
    };
    metrics::counter!("tollgate_usage_total", "outcome" => label).increment(1);
    Ok(outcome)
}

fn thresholds_of<'a>(state: &'a AppState, quota: &str) -> &'a [i32] {
    state
        .events
        .quota_thresholds
        .get(quota)
        .map_or(&[], Vec::as_slice)
}

/// Whether the consumption of `row` crossed one of `thresholds` (as the database decided).
fn crossed_any(row: &LedgerRow, thresholds: &[i32]) -> bool {
    let (Ok(Some(QuotaLimit::Limited(limit))), Ok(used_after), Ok(taken)) = (
        row.limit(),
        u64::try_from(row.used_after),
        u64::try_from(row.from_allowance),
    ) else {
        return false;
    };
    !quota::crossed(used_after.saturating_sub(taken), taken, limit, thresholds).is_empty()
}
