//! Listings for services and support: every stored subscription and one-time purchase
//! (`GET /v1/subscriptions`), payments (`GET /v1/payments`) and the audit trail
//! (`GET /v1/audit`).

use crate::billing::ids::{TenantId, UserId};
use crate::billing::subject::Subject;
use crate::db;
use crate::db::audit::TrailRow;
use crate::db::listing::{self, Filter, Holder, Listed};
use crate::db::state::PaymentRow;
use crate::identity::Caller;
use crate::state::AppState;

use super::actors::{actor_for, require_manager};
use super::error::ServiceError;

/// A page of records, newest first, and whether more follow.
pub async fn subscriptions(
    state: &AppState,
    filter: Filter,
) -> anyhow::Result<(Vec<Listed>, bool)> {
    let limit = filter.limit.max(1);
    let asked = Filter {
        // One more than asked: whether another page follows.
        limit: limit + 1,
        ..filter
    };
    let mut rows = state
        .db
        .run(move |conn| listing::list(conn, &asked))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

/// A page of the audit trail of the subjects `holder` covers, newest first, and whether more
/// follow (`GET /v1/audit`).
pub async fn audit_trail(
    state: &AppState,
    holder: Holder,
    before: Option<(chrono::NaiveDateTime, String)>,
    limit: i64,
) -> anyhow::Result<(Vec<TrailRow>, bool)> {
    let limit = limit.max(1);
    let mut rows = state
        .db
        .run(move |conn| crate::db::audit::trail(conn, &holder, before.as_ref(), limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

/// Who asks for payments, and whose.
#[derive(Debug, Clone)]
pub struct PaymentsAsk {
    /// The caller holds the read scope (a sibling service, or support).
    pub reads_all: bool,
    /// A user named in the query (services only).
    pub user_id: Option<UserId>,
    /// A tenant named in the query: a service reads any; an end user only as the tenant's
    /// billing manager (and a member, by the token's tenant claim).
    pub tenant_id: Option<TenantId>,
    pub limit: i64,
    pub before: Option<(chrono::NaiveDateTime, String)>,
}

/// A page of payments, newest first, and whether more follow (`GET /v1/payments`): the
/// caller's own; a tenant's for its billing manager; any user's, tenant's or member's for a
/// caller with the read scope.
pub async fn payments(
    state: &AppState,
    caller: &Caller,
    ask: PaymentsAsk,
) -> Result<(Vec<PaymentRow>, bool), ServiceError> {
    let subject = match (&ask.user_id, &ask.tenant_id) {
        (None, None) => Subject::user(&caller.subject),
        (Some(_), _) if !ask.reads_all => {
            return Err(ServiceError::forbidden(
                "missing_scope",
                "naming a user_id needs a service token with the read scope",
            ))
        }
        (Some(user), None) => Subject::user(user),
        (Some(user), Some(tenant)) => Subject::Membership {
            tenant_id: tenant.to_string(),
            user_id: user.to_string(),
        },
        (None, Some(tenant)) if ask.reads_all => Subject::Tenant {
            tenant_id: tenant.to_string(),
        },
        (None, Some(tenant)) => {
            // An end user: a member of the tenant (its token says so) who manages its billing.
            let actor = actor_for(caller, Some(tenant.clone()))?;
            let tenant = Subject::Tenant {
                tenant_id: actor
                    .tenant_id
                    .clone()
                    .map(String::from)
                    .unwrap_or_default(),
            };
            let key = tenant.key();
            let stored = state
                .db
                .run(move |conn| db::state::load(conn, &key))
                .await?;
            let manager = stored
                .subscriptions
                .iter()
                .find(|s| s.subscription_status().stands())
                .or(stored.subscriptions.first())
                .and_then(|s| s.manager_user_id.clone());
            require_manager(caller, &tenant, manager.as_deref())?;
            tenant
        }
    };
    let (key, limit, before) = (subject.key(), ask.limit.max(1), ask.before);
    let mut rows = state
        .db
        .run(move |conn| db::state::list_payments(conn, &key, limit + 1, before))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}
