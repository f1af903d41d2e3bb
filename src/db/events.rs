//! Stripe webhook events, stored by id before they are processed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::schema::stripe_events;
use super::{on_backend, to_db_time, DbConnection};

/// A received event as it is stored: its ids were parsed at the edge (`stripe::webhook`).
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub customer_id: Option<&'a str>,
    pub livemode: bool,
    pub created: DateTime<Utc>,
    /// The body exactly as Stripe signed it.
    pub payload: &'a str,
}

/// Stores the event if it is new (its id is unique): pending, due at `due`, when it asks for
/// work; processed at once when it does not (`due` `None`: a type Tollgate only records).
/// Answers `false` when it was stored before (a redelivery, or a copy another replica took).
pub fn record(
    conn: &mut DbConnection,
    event: NewEvent<'_>,
    due: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let now_db = to_db_time(now);
    let insert = diesel::insert_into(stripe_events::table).values((
        stripe_events::event_id.eq(event.id),
        stripe_events::event_type.eq(event.event_type),
        stripe_events::stripe_customer_id.eq(event.customer_id),
        stripe_events::livemode.eq(event.livemode),
        stripe_events::payload.eq(event.payload),
        stripe_events::stripe_created_at.eq(to_db_time(event.created)),
        stripe_events::received_at.eq(now_db),
        stripe_events::attempts.eq(0),
        stripe_events::due_at.eq(due.map(to_db_time)),
        stripe_events::processed_at.eq(due.is_none().then_some(now_db)),
    ));
    let inserted = on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
    Ok(inserted == 1)
}

/// An event to store, owned (it waits in [`Recorder`]'s queue).
#[derive(Debug, Clone)]
pub struct OwnedEvent {
    pub id: String,
    pub event_type: String,
    pub customer_id: Option<String>,
    pub livemode: bool,
    pub created: DateTime<Utc>,
    pub payload: String,
    /// When a worker should apply it; `None`: a type Tollgate only records (processed now).
    pub due: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl OwnedEvent {
    fn row(&self) -> NewEvent<'_> {
        NewEvent {
            id: &self.id,
            event_type: &self.event_type,
            customer_id: self.customer_id.as_deref(),
            livemode: self.livemode,
            created: self.created,
            payload: &self.payload,
        }
    }
}

/// Stores events in one transaction: answers, for each, whether it was new (the first of its
/// id, here and in the table). On PostgreSQL one multi-row insert; on SQLite one insert each.
pub fn record_all(conn: &mut DbConnection, batch: &[OwnedEvent]) -> anyhow::Result<Vec<bool>> {
    super::write_transaction(conn, |conn| {
        let inserted: std::collections::HashSet<String> = match conn {
            DbConnection::Pg(pg) => {
                // In id order: two replicas writing overlapping batches (one delivery to each)
                // then wait on each other's rows in the same order, never in a cycle (which
                // PostgreSQL would end by failing one of them).
                let mut sorted: Vec<&OwnedEvent> = batch.iter().collect();
                sorted.sort_by(|a, b| a.id.cmp(&b.id));
                let rows: Vec<_> = sorted
                    .into_iter()
                    .map(|e| {
                        let now = to_db_time(e.now);
                        (
                            stripe_events::event_id.eq(&e.id),
                            stripe_events::event_type.eq(&e.event_type),
                            stripe_events::stripe_customer_id.eq(e.customer_id.as_deref()),
                            stripe_events::livemode.eq(e.livemode),
                            stripe_events::payload.eq(&e.payload),
                            stripe_events::stripe_created_at.eq(to_db_time(e.created)),
                            stripe_events::received_at.eq(now),
                            stripe_events::attempts.eq(0),
                            stripe_events::due_at.eq(e.due.map(to_db_time)),
                            stripe_events::processed_at.eq(e.due.is_none().then_some(now)),
                        )
                    })
                    .collect();
                diesel::insert_into(stripe_events::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .returning(stripe_events::event_id)
                    .get_results::<String>(pg)?
                    .into_iter()
                    .collect()
            }
            DbConnection::Sqlite(_) => {
                let mut inserted = std::collections::HashSet::new();
                for e in batch {
                    if record(conn, e.row(), e.due, e.now)? {
                        inserted.insert(e.id.clone());
                    }
                }
                inserted
            }
        };
        // Of two copies of one id in the batch, the first is the one stored.
        let mut seen = std::collections::HashSet::new();
        Ok(batch
            .iter()
            .map(|e| inserted.contains(&e.id) && seen.insert(e.id.as_str()))
            .collect())
    })
}

/// Stores webhook events as they arrive, several in one transaction: each caller queues its
/// event and waits for its commit. Up to [`Recorder::WRITERS`] writer tasks run; each takes
/// what is queued (at most [`Recorder::BATCH`] events), stores it in one transaction, answers
/// those callers, and goes on while events wait. A burst of deliveries thus costs one commit
/// per write rather than one per event. The writers are tasks of their own, so a caller that
/// hangs up cancels nothing.
#[derive(Default)]
pub struct Recorder {
    queue: std::sync::Mutex<Queue>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Recorder")
            .field("waiting", &queue.waiting.len())
            .field("writers", &queue.writers)
            .finish()
    }
}

type Answer = tokio::sync::oneshot::Sender<Result<bool, String>>;

#[derive(Default)]
struct Queue {
    waiting: Vec<(OwnedEvent, Answer)>,
    writers: usize,
}

impl Recorder {
    /// Writes running at once (on PostgreSQL they commit side by side).
    const WRITERS: usize = 2;
    /// Events in one write at most.
    const BATCH: usize = 200;

    /// Stores `event`, answering once it is committed: `true` when it is new, `false` when it
    /// was stored before.
    pub async fn record(
        self: &std::sync::Arc<Self>,
        db: &super::Database,
        event: OwnedEvent,
    ) -> anyhow::Result<bool> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start_writer = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.waiting.push((event, answer));
            let start = queue.writers < Self::WRITERS;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start_writer {
            let (recorder, db) = (self.clone(), db.clone());
            tokio::spawn(async move { recorder.write_while_waiting(&db).await });
        }
        match answered.await {
            Ok(Ok(new)) => Ok(new),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => Err(anyhow::anyhow!("the event's write was abandoned")),
        }
    }

    /// A writer: writes batches until nothing waits. Whether anything waits and the end of the
    /// writer are decided under one lock, so an event queued meanwhile always has a writer.
    async fn write_while_waiting(&self, db: &super::Database) {
        loop {
            let batch: Vec<_> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.waiting.is_empty() {
                    queue.writers -= 1;
                    return;
                }
                let n = queue.waiting.len().min(Self::BATCH);
                queue.waiting.drain(..n).collect()
            };
            let (events, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            match db.run(move |conn| record_all(conn, &events)).await {
                Ok(new) => {
                    for (answer, new) in answers.into_iter().zip(new) {
                        let _ = answer.send(Ok(new));
                    }
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    for answer in answers {
                        let _ = answer.send(Err(message.clone()));
                    }
                }
            }
        }
    }
}

/// A pending event, as a worker takes it.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = stripe_events)]
pub struct PendingEvent {
    pub event_id: String,
    pub event_type: String,
    pub stripe_customer_id: Option<String>,
    pub payload: String,
    pub received_at: chrono::NaiveDateTime,
    pub attempts: i32,
}

/// Leases, until `lease_until`, every pending event of up to `groups` customers that have an
/// event due (an event without a customer is a group of its own), the customers whose events
/// are due longest first, skipping customers with an event leased by a live worker (their sync
/// is running: what arrived meanwhile waits for the next claim after it, to be applied
/// together). A chosen customer's events that are not due yet (still in their
/// `webhooks.coalesce_ms`, or waiting to be retried) are taken too: its sync applies them all.
/// The candidates are the `window` earliest due events, and at most `window` events of the
/// chosen customers are leased (a customer with more has the rest applied by its next sync).
pub fn claim(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    groups: i64,
    window: i64,
) -> anyhow::Result<Vec<PendingEvent>> {
    // Short statements, each with one sensible plan whatever PostgreSQL believes: its
    // statistics come from quiet times, when hardly any event is pending, and a burst does not
    // change enough of a large table to refresh them. (One statement with joins over the
    // pending events was planned as nested loops over all of them: seconds per claim.)
    let (now, lease) = (to_db_time(now), to_db_time(lease_until));
    let window = window.max(1);
    let groups = usize::try_from(groups.max(1)).unwrap_or(usize::MAX);
    super::write_transaction(conn, |conn| {
        if let DbConnection::Pg(c) = conn {
            // Believing few rows pending, PostgreSQL reads them all through a bitmap and sorts
            // them; without bitmaps it walks the pending index in due order and stops at
            // `window`. For this transaction only (the OR-of-ids reads elsewhere need bitmaps);
            // the statements below have index conditions or IN lists, which need none.
            diesel::sql_query("SET LOCAL enable_bitmapscan = off").execute(c)?;
        }
        // 1. The earliest due events no live worker holds, of customers no live worker is
        //    syncing (an event of theirs is leased: what arrived meanwhile waits for the next
        //    claim after that sync, to be applied together). The busy customers are read once
        //    (an uncorrelated NOT IN, a hashed set of the few leased events' customers), before
        //    the LIMIT: a busy customer with many due events never hides the others.
        let p = super::placeholders(conn);
        let sql = format!(
            "SELECT c.event_id, c.stripe_customer_id FROM stripe_events c \
             WHERE c.processed_at IS NULL AND c.due_at <= {now1} \
               AND (c.leased_until IS NULL OR c.leased_until <= {now2}) \
               AND (c.stripe_customer_id IS NULL OR c.stripe_customer_id NOT IN ( \
                 SELECT l.stripe_customer_id FROM stripe_events l \
                 WHERE l.processed_at IS NULL AND l.leased_until IS NOT NULL \
                   AND l.leased_until > {now3} AND l.stripe_customer_id IS NOT NULL)) \
             ORDER BY c.due_at LIMIT {window}",
            now1 = p(1),
            now2 = p(2),
            now3 = p(3),
        );
        let candidates: Vec<Candidate> = on_backend!(conn, |c| {
            diesel::sql_query(sql.as_str())
                .bind::<diesel::sql_types::Timestamp, _>(now)
                .bind::<diesel::sql_types::Timestamp, _>(now)
                .bind::<diesel::sql_types::Timestamp, _>(now)
                .load::<Candidate>(c)
        })?;
        // 2. Their customers, the longest due first (an event without one is a group alone).
        let mut chosen: Vec<&str> = Vec::new();
        let mut alone: Vec<&str> = Vec::new();
        for candidate in &candidates {
            if chosen.len() + alone.len() >= groups {
                break;
            }
            match candidate.stripe_customer_id.as_deref() {
                None => alone.push(&candidate.event_id),
                Some(c) if chosen.contains(&c) => {}
                Some(c) => chosen.push(c),
            }
        }
        // 3. Lease all their pending events (due or not), at most `window`.
        let mut leased = lease_where(conn, "stripe_customer_id", &chosen, now, lease, window)?;
        let left = window - i64::try_from(leased.len()).unwrap_or(window);
        if left > 0 {
            leased.extend(lease_where(conn, "event_id", &alone, now, lease, left)?);
        }
        leased.sort_by(|a, b| (a.received_at, &a.event_id).cmp(&(b.received_at, &b.event_id)));
        Ok(leased)
    })
}

/// A due event a claim considers.
#[derive(QueryableByName)]
#[diesel(table_name = stripe_events)]
struct Candidate {
    event_id: String,
    stripe_customer_id: Option<String>,
}

/// Leases, until `lease`, the pending events no live worker holds whose `column`
/// (`stripe_customer_id` or `event_id`, the caller's constant) is one of `values`, at most
/// `window`, the earliest due first; on PostgreSQL rows another worker is leasing at the same
/// moment are skipped (`SKIP LOCKED`), so that workers of several replicas lease different
/// events.
fn lease_where(
    conn: &mut DbConnection,
    column: &str,
    values: &[&str],
    now: chrono::NaiveDateTime,
    lease: chrono::NaiveDateTime,
    window: i64,
) -> anyhow::Result<Vec<PendingEvent>> {
    use diesel::sql_types::{Text, Timestamp};
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let pg = matches!(conn, DbConnection::Pg(_));
    let p = super::placeholders(conn);
    let list: Vec<String> = (0..values.len()).map(|i| p(i + 2)).collect();
    let sql = format!(
        "UPDATE stripe_events SET leased_until = {lease} WHERE event_id IN ( \
           SELECT event_id FROM stripe_events \
           WHERE {column} IN ({list}) AND processed_at IS NULL \
             AND (leased_until IS NULL OR leased_until <= {now}) \
           ORDER BY due_at LIMIT {window}{lock}) \
         RETURNING event_id, event_type, stripe_customer_id, payload, received_at, attempts",
        lease = p(1),
        list = list.join(", "),
        now = p(values.len() + 2),
        lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" },
    );
    Ok(on_backend!(conn, |c| {
        let mut query = diesel::sql_query(sql.as_str())
            .into_boxed()
            .bind::<Timestamp, _>(lease);
        for value in values {
            query = query.bind::<Text, _>(*value);
        }
        query.bind::<Timestamp, _>(now).load::<PendingEvent>(c)
    })?)
}

/// When the next pending event no worker holds comes due (`None`: none is waiting to be due):
/// an idle worker sleeps until then rather than for its whole poll interval. (Events already
/// due that its claim left are its busy customers'; the end of their sync brings the next look.)
pub fn next_due(
    conn: &mut DbConnection,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<chrono::NaiveDateTime>> {
    let now = to_db_time(now);
    Ok(stripe_events::table
        .filter(stripe_events::processed_at.is_null())
        .filter(stripe_events::due_at.gt(now))
        .filter(
            stripe_events::leased_until
                .is_null()
                .or(stripe_events::leased_until.le(now)),
        )
        .select(diesel::dsl::min(stripe_events::due_at))
        .first(conn)?)
}

/// Leases every pending event of `customer` not leased by a live worker, until `lease_until`,
/// for a sync a caller waits for (verify) that applies them too.
pub fn claim_customer(
    conn: &mut DbConnection,
    customer: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> anyhow::Result<Vec<PendingEvent>> {
    let (now, lease) = (to_db_time(now), to_db_time(lease_until));
    super::write_transaction(conn, |conn| {
        diesel::update(
            stripe_events::table
                .filter(stripe_events::processed_at.is_null())
                .filter(stripe_events::stripe_customer_id.eq(customer))
                .filter(
                    stripe_events::leased_until
                        .is_null()
                        .or(stripe_events::leased_until.le(now)),
                ),
        )
        .set(stripe_events::leased_until.eq(Some(lease)))
        .execute(conn)?;
        Ok(stripe_events::table
            .filter(stripe_events::processed_at.is_null())
            .filter(stripe_events::stripe_customer_id.eq(customer))
            .filter(stripe_events::leased_until.eq(Some(lease)))
            .select(PendingEvent::as_select())
            .order(stripe_events::received_at)
            .load(conn)?)
    })
}

/// Gives leased events back to the workers at once.
pub fn release(conn: &mut DbConnection, event_ids: &[&str]) -> anyhow::Result<()> {
    for ids in event_ids.chunks(IDS_PER_STATEMENT) {
        diesel::update(stripe_events::table.filter(super::any_of(stripe_events::event_id, ids)))
            .set(stripe_events::leased_until.eq(None::<chrono::NaiveDateTime>))
            .execute(conn)?;
    }
    Ok(())
}

/// Events a worker could not apply: retried at `due`, with the error kept for operators.
pub fn retry_at(
    conn: &mut DbConnection,
    event_ids: &[&str],
    due: DateTime<Utc>,
    error: &str,
) -> anyhow::Result<()> {
    for ids in event_ids.chunks(IDS_PER_STATEMENT) {
        diesel::update(
            stripe_events::table
                .filter(super::any_of(stripe_events::event_id, ids))
                .filter(stripe_events::processed_at.is_null()),
        )
        .set((
            stripe_events::attempts.eq(stripe_events::attempts + 1),
            stripe_events::last_error.eq(Some(error)),
            stripe_events::due_at.eq(Some(to_db_time(due))),
            stripe_events::leased_until.eq(None::<chrono::NaiveDateTime>),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// The inbox as operators watch it: how many events are pending, and since when the oldest.
pub fn backlog(conn: &mut DbConnection) -> anyhow::Result<(i64, Option<chrono::NaiveDateTime>)> {
    use diesel::dsl::{count_star, min};
    Ok(stripe_events::table
        .filter(stripe_events::processed_at.is_null())
        .select((count_star(), min(stripe_events::received_at)))
        .first(conn)?)
}

/// A pending event that failed at least once, for `GET /v1/admin/webhooks/stuck`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = stripe_events)]
pub struct StuckEvent {
    pub event_id: String,
    pub event_type: String,
    pub stripe_customer_id: Option<String>,
    pub received_at: chrono::NaiveDateTime,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub due_at: Option<chrono::NaiveDateTime>,
}

/// Pending events that failed at least once, oldest first.
pub fn stuck(conn: &mut DbConnection, limit: i64) -> anyhow::Result<Vec<StuckEvent>> {
    Ok(stripe_events::table
        .filter(stripe_events::processed_at.is_null())
        .filter(stripe_events::attempts.gt(0))
        .order((stripe_events::received_at, stripe_events::event_id))
        .limit(limit)
        .select(StuckEvent::as_select())
        .load(conn)?)
}

/// Marks the event processed; call inside the transaction that applied it. `false` when it
/// already was: the claim is atomic, so of concurrent copies of one event exactly one gets
/// `true` and is counted as processed.
pub fn mark_processed(
    conn: &mut DbConnection,
    event_id: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let claimed = diesel::update(
        stripe_events::table
            .find(event_id)
            .filter(stripe_events::processed_at.is_null()),
    )
    .set((
        stripe_events::processed_at.eq(Some(to_db_time(now))),
        stripe_events::attempts.eq(stripe_events::attempts + 1),
        stripe_events::last_error.eq(None::<String>),
    ))
    .execute(conn)?;
    Ok(claimed == 1)
}

#[derive(Debug, Queryable)]
pub struct EventStatus {
    pub processed_at: Option<chrono::NaiveDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

pub fn status(conn: &mut DbConnection, event_id: &str) -> anyhow::Result<Option<EventStatus>> {
    Ok(stripe_events::table
        .find(event_id)
        .select((
            stripe_events::processed_at,
            stripe_events::attempts,
            stripe_events::last_error,
        ))
        .first(conn)
        .optional()?)
}

/// Which of `event_ids` are not processed yet.
pub fn unprocessed(conn: &mut DbConnection, event_ids: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut pending = Vec::new();
    for ids in event_ids.chunks(IDS_PER_STATEMENT) {
        pending.extend(
            stripe_events::table
                .filter(super::any_of(stripe_events::event_id, ids))
                .filter(stripe_events::processed_at.is_null())
                .select(stripe_events::event_id)
                .load::<String>(conn)?,
        );
    }
    Ok(pending)
}

/// Event ids one statement names at most: a verify takes all of its customer's waiting events
/// (any number), and SQLite refuses an `OR` of ids deeper than 1,000.
const IDS_PER_STATEMENT: usize = 200;
