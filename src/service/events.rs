//! Outbound events (docs/EVENTS.md): what a change tells the product, appended to the outbox in
//! the change's own transaction ([`Emitter`]), and the dispatcher every replica runs, which
//! places committed events in `GET /v1/events` order and delivers due deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::billing::access::AccessPolicy;
use crate::billing::catalog::Catalog;
use crate::billing::events::{self, Entitlements, Event, EventType, Route};
use crate::billing::facts::SubjectFacts;
use crate::billing::mirror::Changes;
use crate::billing::subject::Subject;
use crate::db::{self, outbox, DbConnection};
use crate::outbound::Outcome;
use crate::state::AppState;

/// Appends the events of a change inside its transaction: owned, so that it moves to the
/// blocking thread that runs the transaction.
#[derive(Clone)]
pub(crate) struct Emitter {
    routes: Arc<Vec<Route>>,
    catalog: Arc<Catalog>,
    policy: AccessPolicy,
    /// The subject is a user listed in `exemptions.subjects`.
    listed_exempt: bool,
}

/// What a transaction appended, to count once it committed.
#[derive(Debug, Default)]
#[must_use = "count the events once the transaction committed (AppendedEvents::committed)"]
pub(crate) struct AppendedEvents(Vec<EventType>);

impl AppendedEvents {
    /// After the commit: counts the events and wakes this replica's dispatcher.
    pub fn committed(self, state: &AppState) {
        if self.0.is_empty() {
            return;
        }
        for kind in &self.0 {
            metrics::counter!("tollgate_events_created_total", "type" => kind.as_str())
                .increment(1);
        }
        state.events.wake.notify_one();
    }
}

impl Emitter {
    pub fn of(state: &AppState, subject: &Subject) -> Emitter {
        Emitter::unlisted(state).listed_in(subject, &state.exempt_subjects)
    }

    /// For appends alone (no entitlement document: no exemption to know).
    pub fn unlisted(state: &AppState) -> Emitter {
        Emitter {
            routes: state.events.routes.clone(),
            catalog: state.catalog.clone(),
            policy: state.policy,
            listed_exempt: false,
        }
    }

    /// For `subject`, a user exempt when `exempt_subjects` lists them.
    fn listed_in(&self, subject: &Subject, exempt_subjects: &HashSet<String>) -> Emitter {
        let listed_exempt =
            matches!(subject, Subject::User { user_id } if exempt_subjects.contains(user_id));
        Emitter {
            listed_exempt,
            ..self.clone()
        }
    }

    /// The subject's document before a change (read inside its transaction, before its
    /// writes): the one last told, else the one its stored facts give now; and whether its
    /// user's token showed an exempt role. Locks the subject's stream first
    /// ([`outbox::lock_head`]), so that what this transaction tells follows what a concurrent
    /// one told.
    pub fn stored(
        &self,
        conn: &mut DbConnection,
        key: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(serde_json::Value, bool)> {
        let told = outbox::lock_head(conn, key)?
            .map(|json| serde_json::from_str(&json))
            .transpose()?;
        let snapshot = db::snapshots::read_many(conn, None, &[key.to_owned()])?;
        let role_exempt = snapshot[0].role_exempt;
        let before = match told {
            Some(told) => told,
            None => self
                .document(&snapshot[0].facts, role_exempt, now)
                .to_json(),
        };
        Ok((before, role_exempt))
    }

    pub fn document(
        &self,
        facts: &SubjectFacts,
        role_exempt: bool,
        now: DateTime<Utc>,
    ) -> Entitlements {
        events::entitlements(
            &self.catalog,
            self.policy,
            facts,
            self.listed_exempt || role_exempt,
            now,
        )
    }

    /// Appends one event.
    pub fn append(
        &self,
        conn: &mut DbConnection,
        subject: &str,
        event: &Event,
        now: DateTime<Utc>,
        appended: &mut AppendedEvents,
    ) -> anyhow::Result<()> {
        outbox::append(conn, &self.routes, subject, event, now)?;
        appended.0.push(event.kind);
        Ok(())
    }

    /// Tells `entitlements.changed` when the subject's document, on `facts` at `now`, differs
    /// from `before`, and remembers it with the time it next changes by itself.
    fn settle(
        &self,
        conn: &mut DbConnection,
        key: &str,
        before: &serde_json::Value,
        (facts, role_exempt): (&SubjectFacts, bool),
        now: DateTime<Utc>,
        appended: &mut AppendedEvents,
    ) -> anyhow::Result<()> {
        let after = self.document(facts, role_exempt, now);
        if let Some(event) = events::entitlements_changed(before, &after) {
            self.append(conn, key, &event, now, appended)?;
        }
        let next = events::next_change(facts, &after, now);
        outbox::remember(conn, key, &after.to_json().to_string(), next)
    }

    /// Runs `write`, which changes what the subject `key` holds and rewrites its snapshot, and
    /// appends `entitlements.changed` when that moved the subject's document (grants, tenant
    /// removals: changes that are no sync).
    pub fn around<T>(
        &self,
        conn: &mut DbConnection,
        key: &str,
        now: DateTime<Utc>,
        write: impl FnOnce(&mut DbConnection) -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, AppendedEvents)> {
        let (before, role_exempt) = self.stored(conn, key, now)?;
        let out = write(conn)?;
        let facts = db::snapshots::read_many(conn, None, &[key.to_owned()])?[0]
            .facts
            .clone();
        let mut appended = AppendedEvents::default();
        self.settle(
            conn,
            key,
            &before,
            (&facts, role_exempt),
            now,
            &mut appended,
        )?;
        Ok((out, appended))
    }

    /// Tells `trial.will_end` for the subject's trials still to end.
    pub fn trials_ending(
        &self,
        conn: &mut DbConnection,
        key: &str,
        now: DateTime<Utc>,
        appended: &mut AppendedEvents,
    ) -> anyhow::Result<()> {
        let snapshot = db::snapshots::read_many(conn, None, &[key.to_owned()])?;
        for event in events::trials_ending(&snapshot[0].facts, now) {
            self.append(conn, key, &event, now, appended)?;
        }
        Ok(())
    }

    /// Appends what a sync's `changes` tell, then `entitlements.changed` when the subject's
    /// document moved from `before` to the one of `after` (its facts as just written).
    pub fn after_sync(
        &self,
        conn: &mut DbConnection,
        subject: &str,
        changes: &Changes,
        before: Option<(serde_json::Value, bool)>,
        after: Option<&SubjectFacts>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<AppendedEvents> {
        let mut appended = AppendedEvents::default();
        for (key, event) in events::of_changes(changes) {
            self.append(conn, &key, &event, now, &mut appended)?;
        }
        if let (Some((before, role_exempt)), Some(after)) = (before, after) {
            self.settle(
                conn,
                subject,
                &before,
                (after, role_exempt),
                now,
                &mut appended,
            )?;
        }
        Ok(appended)
    }
}

/// Crossings one relay pass tells.
const CROSSING_BATCH: i64 = 100;

/// Tells each quota threshold a consumption crossed (`quota.threshold_reached`): the usage
/// path records the crossing in its own transaction (`quota_crossings`, once per window); this
/// turns it into the subject's next event.
async fn tell_crossings(state: &Arc<AppState>) -> anyhow::Result<()> {
    let now = state.now();
    let emitter = Emitter::unlisted(state);
    let appended = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let mut appended = AppendedEvents::default();
                for c in outbox::untold_crossings(conn, CROSSING_BATCH)? {
                    let event = Event::quota_threshold_reached(&events::QuotaThresholdData {
                        quota: c.quota,
                        threshold: c.threshold,
                        used: c.used,
                        limit: c.quota_limit,
                        period: c.period,
                        resets_at: c.resets_at.map(db::from_db_time),
                        reached_at: db::from_db_time(c.created_at),
                    });
                    emitter.append(conn, &c.subject, &event, now, &mut appended)?;
                    outbox::crossing_told(conn, c.crossing_id, now)?;
                }
                Ok(appended)
            })
        })
        .await?;
    appended.committed(state);
    Ok(())
}

/// Subjects whose document is due to change by time that one scheduler pass handles.
const DUE_BATCH: i64 = 100;

/// Tells the changes that happen by time alone (a grace period or trial ending, a canceled
/// period or a grant reaching its end, a quota window resetting): for each subject whose
/// `next_change_at` passed, its document is evaluated again and told if it moved. Locked per
/// subject (PostgreSQL: `SKIP LOCKED`), so one replica tells each change.
async fn tell_due_changes(
    state: &Arc<AppState>,
    exempt: &Arc<HashSet<String>>,
) -> anyhow::Result<()> {
    let now = state.now();
    let (base, exempt) = (Emitter::unlisted(state), exempt.clone());
    let appended = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let mut appended = AppendedEvents::default();
                for (key, told) in outbox::due_changes(conn, now, DUE_BATCH)? {
                    let emitter = match Subject::parse_key(&key) {
                        Some(subject) => base.listed_in(&subject, &exempt),
                        None => base.clone(),
                    };
                    let snapshot =
                        db::snapshots::read_many(conn, None, std::slice::from_ref(&key))?;
                    let before = match told {
                        Some(json) => serde_json::from_str(&json)?,
                        None => serde_json::Value::Null,
                    };
                    let (facts, role_exempt) = (&snapshot[0].facts, snapshot[0].role_exempt);
                    emitter.settle(
                        conn,
                        &key,
                        &before,
                        (facts, role_exempt),
                        now,
                        &mut appended,
                    )?;
                }
                Ok(appended)
            })
        })
        .await?;
    appended.committed(state);
    Ok(())
}

/// A claim lasts the endpoint's timeout plus this: time enough to record the answer. A
/// replica that dies holding claims delays those deliveries by as much, then another sends them.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// Deliveries one claim takes at most.
const CLAIM_BATCH: i64 = 32;
/// How often the backlog gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// The dispatcher: runs for the life of the process, in every replica.
pub async fn run_dispatcher(state: Arc<AppState>) {
    let terms = &state.events;
    let mut failing: HashMap<String, bool> = HashMap::new();
    let mut gauges_at = std::time::Instant::now() - GAUGE_EVERY;
    let exempt = Arc::new(state.exempt_subjects.clone());
    loop {
        // What is there to do: one statement per pass. (Events the passes below append wake
        // the dispatcher again, and the next pass places them.)
        let now = state.now();
        match state
            .db
            .run(move |conn| outbox::pending_work(conn, now))
            .await
        {
            Ok(work) => {
                if work.due_changes {
                    if let Err(e) = tell_due_changes(&state, &exempt).await {
                        tracing::warn!(error = %format!("{e:#}"), "telling changes by time failed; retrying");
                    }
                }
                if work.untold_crossings {
                    if let Err(e) = tell_crossings(&state).await {
                        tracing::warn!(error = %format!("{e:#}"), "telling quota thresholds failed; retrying");
                    }
                }
                if let Err(e) = tick(&state, work.unplaced, &mut failing).await {
                    tracing::warn!(error = %format!("{e:#}"), "event dispatch failed; retrying");
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "event dispatch failed; retrying"),
        }
        if gauges_at.elapsed() >= GAUGE_EVERY {
            gauges_at = std::time::Instant::now();
            if let Err(e) = refresh_gauges(&state, &failing).await {
                tracing::debug!(error = %format!("{e:#}"), "event gauges not refreshed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(terms.poll) => {}
            _ = terms.wake.notified() => {}
        }
    }
}

/// Places committed events (when `unplaced`), then delivers every due delivery this replica
/// can claim.
async fn tick(
    state: &Arc<AppState>,
    unplaced: bool,
    failing: &mut HashMap<String, bool>,
) -> anyhow::Result<()> {
    if unplaced {
        state.db.run(|conn| outbox::place(conn).map(drop)).await?;
    }
    let Some(sender) = state.events.sender.clone() else {
        return Ok(());
    };
    let endpoints = Arc::new(sender.endpoints());
    loop {
        let now = state.now();
        let lease = now
            + chrono::Duration::from_std(state.events.timeout + CLAIM_MARGIN)
                .unwrap_or_else(|_| chrono::Duration::minutes(1));
        let names = endpoints.clone();
        let due = state
            .db
            .run(move |conn| outbox::claim(conn, &names, now, lease, CLAIM_BATCH))
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let full = due.len() as i64 == CLAIM_BATCH;
        let sends = due.iter().map(|d| {
            let sender = sender.clone();
            async move { sender.send(&d.endpoint, &d.event_id, &d.payload).await }
        });
        let outcomes = futures_util::future::join_all(sends).await;
        let retry = state.events.retry;
        let now = state.now();
        let decided: Vec<(outbox::Due, Outcome, Option<DateTime<Utc>>)> = due
            .into_iter()
            .zip(outcomes)
            .map(|(d, outcome)| {
                let next = match &outcome {
                    Outcome::Delivered { .. } => None,
                    Outcome::Failed { .. } => {
                        retry.next_attempt(d.queued_at, d.attempts, now, jitter())
                    }
                };
                (d, outcome, next)
            })
            .collect();
        for (d, outcome, next) in &decided {
            report(d, outcome, *next, failing);
        }
        state
            .db
            .run(move |conn| {
                for (d, outcome, next) in &decided {
                    match (outcome, next) {
                        (Outcome::Delivered { status }, _) => {
                            outbox::delivered(conn, d.delivery_id, *status, now)?
                        }
                        (Outcome::Failed { status, error }, Some(next)) => {
                            outbox::retry_at(conn, d.delivery_id, *next, *status, error)?
                        }
                        (Outcome::Failed { status, error }, None) => {
                            outbox::failed(conn, d.delivery_id, *status, error, now)?
                        }
                    }
                }
                Ok(())
            })
            .await?;
        if !full {
            return Ok(());
        }
    }
}

/// Metrics and logs of one attempt.
fn report(
    d: &outbox::Due,
    outcome: &Outcome,
    next: Option<DateTime<Utc>>,
    failing: &mut HashMap<String, bool>,
) {
    let endpoint = d.endpoint.clone();
    let counted = |outcome: &'static str| {
        metrics::counter!(
            "tollgate_event_deliveries_total",
            "endpoint" => endpoint.clone(),
            "type" => d.event_type.clone(),
            "outcome" => outcome
        )
        .increment(1);
    };
    match (outcome, next) {
        (Outcome::Delivered { .. }, _) => {
            counted("delivered");
            if failing.insert(d.endpoint.clone(), false) == Some(true) {
                tracing::info!(endpoint = %d.endpoint, "events endpoint accepts deliveries again");
            }
        }
        (Outcome::Failed { error, .. }, Some(next)) => {
            counted("retried");
            tracing::warn!(endpoint = %d.endpoint, event = %d.event_id, attempts = d.attempts, %next, %error, "event delivery failed; retrying");
        }
        (Outcome::Failed { error, .. }, None) => {
            counted("failed");
            failing.insert(d.endpoint.clone(), true);
            tracing::error!(endpoint = %d.endpoint, event = %d.event_id, attempts = d.attempts, %error, "event delivery failed for the whole retry window (events.retry_window_hours): given up; the endpoint is failing (redeliver with POST /v1/admin/events/redeliver)");
        }
    }
}

async fn refresh_gauges(
    state: &Arc<AppState>,
    failing: &HashMap<String, bool>,
) -> anyhow::Result<()> {
    let (pending, oldest) = state.db.run(outbox::backlog).await?;
    metrics::gauge!("tollgate_event_deliveries_pending").set(pending as f64);
    let age = oldest.map_or(0.0, |t| {
        (state.now() - t).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("tollgate_event_oldest_pending_seconds").set(age);
    let failing = failing.values().filter(|f| **f).count();
    metrics::gauge!("tollgate_event_endpoints_failing").set(failing as f64);
    Ok(())
}

/// A number in [0, 1) for the retry jitter.
fn jitter() -> f64 {
    let bits = getrandom::u64().unwrap_or(0);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// What `GET /v1/events` asks for.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The place after which to list (0: from the first event).
    pub after: i64,
    pub subject: Option<Subject>,
    /// Empty: every type.
    pub types: Vec<EventType>,
    pub limit: i64,
}

/// One page of placed events.
#[derive(Debug, Clone)]
pub struct Page {
    /// Each event's envelope.
    pub events: Vec<serde_json::Value>,
    pub last_position: Option<i64>,
    pub more: bool,
}

pub async fn list(state: &AppState, listing: Listing) -> anyhow::Result<Page> {
    let subject = listing.subject.as_ref().map(Subject::key);
    let types: Vec<&'static str> = listing.types.iter().map(|t| t.as_str()).collect();
    let limit = listing.limit;
    let mut rows = state
        .db
        .run(move |conn| outbox::list(conn, listing.after, subject.as_deref(), &types, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let last_position = rows.last().map(|r| r.position);
    let events = rows
        .into_iter()
        .map(|r| serde_json::from_str(&r.payload))
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok(Page {
        events,
        last_position,
        more,
    })
}

/// Failed deliveries, newest first (`GET /v1/admin/events/failed`).
pub async fn failed(
    state: &AppState,
    endpoint: Option<String>,
    before: Option<i64>,
    limit: i64,
) -> anyhow::Result<(Vec<outbox::FailedDelivery>, bool)> {
    let mut rows = state
        .db
        .run(move |conn| outbox::failed_deliveries(conn, endpoint.as_deref(), before, limit + 1))
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok((rows, more))
}

/// What to deliver again.
#[derive(Debug, Clone)]
pub enum Redelivery {
    /// One delivery, whatever became of it.
    One { delivery_id: i64 },
    /// Every event since a time, to one endpoint.
    Since {
        endpoint: String,
        since: DateTime<Utc>,
    },
}

/// Queues deliveries again (`POST /v1/admin/events/redeliver`); answers how many.
pub async fn redeliver(
    state: &AppState,
    what: Redelivery,
) -> Result<usize, super::error::ServiceError> {
    use super::error::ServiceError;
    let now = state.now();
    let queued = match what {
        Redelivery::One { delivery_id } => {
            let found = state
                .db
                .run(move |conn| outbox::requeue(conn, delivery_id, now))
                .await?;
            if !found {
                return Err(ServiceError::not_found(
                    "delivery_not_found",
                    format!("no delivery {delivery_id} (GET /v1/admin/events/failed lists them)"),
                ));
            }
            1
        }
        Redelivery::Since { endpoint, since } => {
            let route = state
                .events
                .routes
                .iter()
                .find(|r| r.endpoint == endpoint)
                .cloned()
                .ok_or_else(|| {
                    ServiceError::not_found(
                        "endpoint_not_found",
                        format!("no endpoint `{endpoint}` in events.endpoints"),
                    )
                })?;
            state
                .db
                .run(move |conn| outbox::requeue_since(conn, &route, since, now))
                .await?
        }
    };
    tracing::info!(queued, "event deliveries queued again by an operator");
    state.events.wake.notify_one();
    Ok(queued)
}
