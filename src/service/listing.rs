//! Listings for services and support: every stored subscription and one-time purchase
//! (`GET /v1/subscriptions`), and the audit trail (`GET /v1/audit`).

use crate::db::audit::TrailRow;
use crate::db::listing::{self, Filter, Holder, Listed};
use crate::state::AppState;

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
