//! Listings for services and support: every stored subscription and one-time purchase
//! (`GET /v1/subscriptions`).

use crate::db::listing::{self, Filter, Listed};
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
