//! Stripe's webhooks through a durable inbox. A verified event is stored by id and answered at
//! once ([`receive`]): no Stripe call and no customer lock on the request path, so a burst is
//! acknowledged as fast as the database commits. Workers in every replica ([`run_worker`])
//! lease the pending events that are due, group them by customer and re-read each customer
//! from Stripe once for all of its events (the same sync as everywhere: the state converges to
//! Stripe's); the sync marks them processed in its own transaction. Events that arrive while a
//! customer is being synced are pending when it ends and make one more sync. A failed attempt
//! is retried with backoff, by any replica; a crash at any point loses nothing (the lease runs
//! out and the events are taken again).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::db::{self, events};
use crate::state::{AppState, InboxTerms};
use crate::stripe::budget::Priority;
use crate::stripe::webhook::{parse_stored, VerifiedEvent, EVENTS};
use crate::stripe::{ChargeId, CustomerId, PaymentIntentId, StripeGateway};

use super::sync::{sync_customer, SyncCause, SyncOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Stored, pending for the workers.
    Stored,
    /// Stored and processed at once: a type Tollgate only records, or billing is off.
    Recorded,
    /// Stored before (a redelivery): nothing more is done.
    Duplicate,
}

/// Stores a verified event and wakes the workers. The customer is read from the event, or for
/// a dispute (which names only its charge) from the payment Tollgate recorded; when neither
/// says, the worker asks Stripe. A type Tollgate does not act on is stored processed.
pub async fn receive(
    state: &AppState,
    event: &VerifiedEvent,
    payload: &str,
) -> anyhow::Result<EventOutcome> {
    let needs_work = EVENTS.contains(&event.event_type.as_str());
    let customer = match &event.customer {
        Some(customer) => Some(customer.as_str().to_owned()),
        None if needs_work => {
            let stored = event.clone();
            state
                .db
                .run(move |conn| recorded_customer(conn, &stored))
                .await?
        }
        None => None,
    };
    let new = store(state, event, payload, customer, needs_work).await?;
    if !new {
        return Ok(EventOutcome::Duplicate);
    }
    if !needs_work {
        return Ok(EventOutcome::Recorded);
    }
    // Due at once: this replica's worker takes it now. Otherwise it finds it when it is due,
    // at its next look (`webhooks.poll_interval_ms`), or as soon as a sync of its ends.
    if state.inbox.coalesce.is_zero() {
        state.inbox.wake.notify_one();
    }
    Ok(EventOutcome::Stored)
}

/// Stores the event (with the events arriving at the same time, in one transaction); `false`
/// when it was stored before.
async fn store(
    state: &AppState,
    event: &VerifiedEvent,
    payload: &str,
    customer: Option<String>,
    needs_work: bool,
) -> anyhow::Result<bool> {
    let now = state.now();
    let coalesce = chrono::Duration::from_std(state.inbox.coalesce).unwrap_or_default();
    let row = events::OwnedEvent {
        id: event.id.as_str().to_owned(),
        event_type: event.event_type.clone(),
        customer_id: customer,
        livemode: event.livemode,
        created: event.created,
        payload: payload.to_owned(),
        due: needs_work.then(|| now + coalesce),
        now,
    };
    state.inbox.recorder.record(&state.db, row).await
}

/// The customer of the payment a dispute names, as Tollgate recorded it.
fn recorded_customer(
    conn: &mut db::DbConnection,
    event: &VerifiedEvent,
) -> anyhow::Result<Option<String>> {
    if event.charge.is_none() && event.payment_intent.is_none() {
        return Ok(None);
    }
    db::state::customer_of_payment(
        conn,
        event.charge.as_ref().map(ChargeId::as_str),
        event.payment_intent.as_ref().map(PaymentIntentId::as_str),
    )
}

/// With billing off (`SAAS=false`) nothing asks Stripe: a signed event is stored processed and
/// acknowledged (so Stripe keeps the endpoint), and `tollgate sync --all` catches up once
/// billing is switched on.
pub async fn record_only(
    state: &AppState,
    event: &VerifiedEvent,
    payload: &str,
) -> anyhow::Result<EventOutcome> {
    let customer = event.customer.as_ref().map(|c| c.as_str().to_owned());
    Ok(if store(state, event, payload, customer, false).await? {
        EventOutcome::Recorded
    } else {
        EventOutcome::Duplicate
    })
}

/// A sync a caller waits for (verify after checkout): it also applies the customer's pending
/// webhook events, taken from the inbox for it, so that a backlog neither delays what the user
/// sees nor makes the workers re-read the customer again for them. Taken events the sync could
/// not apply go back to the workers at once.
pub async fn sync_with_pending(
    state: &AppState,
    stripe: &StripeGateway,
    customer: &CustomerId,
    mut cause: SyncCause,
) -> anyhow::Result<SyncOutcome> {
    let now = state.now();
    let lease_until = now + chrono::Duration::from_std(state.inbox.lease).unwrap_or_default();
    let id = customer.as_str().to_owned();
    let taken = state
        .db
        .run(move |conn| events::claim_customer(conn, &id, now, lease_until))
        .await?;
    if taken.is_empty() {
        return sync_customer(state, stripe, customer, cause).await;
    }
    let ids: Vec<String> = taken.iter().map(|r| r.event_id.clone()).collect();
    let parsed: Vec<(events::PendingEvent, VerifiedEvent)> = taken
        .into_iter()
        .filter_map(|row| parse_stored(&row.payload).ok().map(|e| (row, e)))
        .collect();
    let result = async {
        if !parsed.is_empty() {
            cause.absorb(cause_of(stripe, &parsed).await?);
        }
        sync_customer(state, stripe, customer, cause).await
    }
    .await;
    if result.is_err() {
        let released = state
            .db
            .run(move |conn| {
                let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                events::release(conn, &ids)
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %format!("{e:#}"), "giving webhook events back to the workers failed; their lease runs out");
        }
        state.inbox.wake.notify_one();
    }
    result
}

/// The inbox as an operator reads it.
#[derive(Debug)]
pub struct Backlog {
    /// Events stored and not yet applied.
    pub pending: i64,
    /// When the oldest of them was received.
    pub oldest_received_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Pending events that failed at least once, oldest first, with their last error.
    pub stuck: Vec<events::StuckEvent>,
}

/// How the inbox stands: its backlog, and up to `limit` events that keep failing.
pub async fn backlog(state: &AppState, limit: i64) -> anyhow::Result<Backlog> {
    state
        .db
        .run(move |conn| {
            let (pending, oldest) = events::backlog(conn)?;
            Ok(Backlog {
                pending,
                oldest_received_at: oldest.map(crate::db::from_db_time),
                stuck: events::stuck(conn, limit)?,
            })
        })
        .await
}

/// The worker: runs for the life of the process, in every replica, when Stripe is configured.
/// Its Stripe requests are background work (`stripe.background_share` of the budget).
pub async fn run_worker(state: Arc<AppState>) {
    Priority::Webhooks.scope(work(state)).await
}

async fn work(state: Arc<AppState>) {
    let Some(stripe) = state.stripe.clone() else {
        return;
    };
    let terms = state.inbox.clone();
    let mut measured: Option<std::time::Instant> = None;
    // The customers being synced: at most `concurrency`, each in a task of its own (so that a
    // slow claim or gauge read here never stalls them). A customer is claimed only when a slot
    // is free, with every event it has pending then, so that the events which arrive while the
    // replica is busy are applied together by one re-read.
    let mut running = futures_util::stream::FuturesUnordered::new();
    loop {
        if measured.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
            measured = Some(std::time::Instant::now());
            measure_backlog(&state).await;
        }
        // While Stripe's 429s pause background work, claim nothing: a claimed customer would
        // be locked through the pause, and a user's verify of it would wait behind it.
        let paused = stripe.background_paused_until();
        let free = terms.concurrency.saturating_sub(running.len());
        let mut claimed_any = false;
        if free > 0 && paused.is_none() {
            for group in claim(&state, &terms, free).await {
                claimed_any = true;
                let (state, stripe) = (state.clone(), stripe.clone());
                // The priority is the task's: set again in the new task.
                running
                    .push(tokio::spawn(Priority::Webhooks.scope(async move {
                        apply_group(&state, &stripe, group).await
                    })));
            }
        }
        if running.is_empty() {
            match paused {
                Some(until) => tokio::time::sleep_until(until.into()).await,
                None => {
                    let look = next_look(&state, &terms).await;
                    let _ = tokio::time::timeout_at(look, terms.wake.notified()).await;
                }
            }
        } else if running.len() < terms.concurrency && !claimed_any {
            // A slot is free and nothing was due (or Stripe asked to pause): wait for a sync
            // to end, for a new event, or for the next look at what is due.
            let look = next_look(&state, &terms).await;
            tokio::select! {
                _ = running.next() => {}
                _ = terms.wake.notified() => {}
                _ = tokio::time::sleep_until(look) => {}
            }
        } else if running.len() >= terms.concurrency {
            running.next().await;
        }
    }
}

/// Leases the due events of up to `customers` customers (not already being synced anywhere)
/// and groups them by customer.
async fn claim(state: &AppState, terms: &InboxTerms, customers: usize) -> Vec<Group> {
    let now = state.now();
    // A sync still running when its lease ends may be taken again by another worker: the syncs
    // are idempotent and marking an event processed is atomic (nothing is applied twice).
    let lease_until = now + chrono::Duration::from_std(terms.lease).unwrap_or_default();
    let window = terms.claim_batch;
    let groups = i64::try_from(customers).unwrap_or(i64::MAX);
    let claimed = state
        .db
        .run(move |conn| events::claim(conn, now, lease_until, groups, window))
        .await;
    let pending = match claimed {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "claiming webhook events failed; retrying");
            return Vec::new();
        }
    };
    let (groups, unreadable) = group(pending);
    // Not left leased: their customer's other events would wait for the lease to run out.
    // Pending, with the error, for a version that reads them (and for operators to see).
    for (id, error) in unreadable {
        let due = now + chrono::Duration::from_std(terms.retry_max).unwrap_or_default();
        let error = format!("the stored event does not parse: {error}");
        let result = state
            .db
            .run(move |conn| events::retry_at(conn, &[id.as_str()], due, &error))
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %format!("{e:#}"), "recording an unreadable webhook event failed");
        }
    }
    groups
}

/// When a worker with nothing to claim looks again unless woken: after `webhooks.poll_interval_ms`
/// (for what other replicas store), or when the next pending event comes due, if sooner (events
/// wait `webhooks.coalesce_ms` after they are stored, and storing them wakes no worker then).
async fn next_look(state: &AppState, terms: &InboxTerms) -> tokio::time::Instant {
    let poll = tokio::time::Instant::now() + terms.poll;
    if terms.coalesce.is_zero() {
        return poll;
    }
    let now = state.now();
    let due = match state.db.run(move |conn| events::next_due(conn, now)).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "reading when the next webhook event is due failed");
            None
        }
    };
    match due.and_then(|due| (crate::db::from_db_time(due) - now).to_std().ok()) {
        Some(wait) if wait < terms.poll => tokio::time::Instant::now() + wait,
        _ => poll,
    }
}

/// How often a worker reads the backlog for its gauges.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Sets `tollgate_webhook_inbox_pending` and `tollgate_webhook_inbox_oldest_seconds`.
async fn measure_backlog(state: &AppState) {
    match state.db.run(events::backlog).await {
        Ok((pending, oldest)) => {
            let age = oldest.map_or(0.0, |t| {
                (state.now() - crate::db::from_db_time(t))
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            metrics::gauge!("tollgate_webhook_inbox_pending").set(pending as f64);
            metrics::gauge!("tollgate_webhook_inbox_oldest_seconds").set(age);
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading the webhook backlog failed"),
    }
}

/// Pending events that are applied together: all of one customer's, or one event whose
/// customer only Stripe can tell.
struct Group {
    customer: Option<CustomerId>,
    events: Vec<(events::PendingEvent, VerifiedEvent)>,
}

/// Groups the events by customer, oldest first within each. A stored event that no longer
/// parses (written by another version) is grouped alone and fails there, visibly.
fn group(pending: Vec<events::PendingEvent>) -> (Vec<Group>, Vec<(String, String)>) {
    let mut by_customer: BTreeMap<String, Group> = BTreeMap::new();
    let mut alone = Vec::new();
    let mut unreadable = Vec::new();
    for row in pending {
        let parsed = parse_stored(&row.payload);
        let customer = row
            .stripe_customer_id
            .as_deref()
            .and_then(|c| CustomerId::parse(c).ok());
        match (parsed, customer) {
            (Ok(event), Some(customer)) => by_customer
                .entry(customer.as_str().to_owned())
                .or_insert_with(|| Group {
                    customer: Some(customer),
                    events: Vec::new(),
                })
                .events
                .push((row, event)),
            (Ok(event), None) => alone.push(Group {
                customer: None,
                events: vec![(row, event)],
            }),
            (Err(e), _) => {
                tracing::error!(event = %row.event_id, error = %e, "a stored webhook event does not parse; left pending");
                unreadable.push((row.event_id, e.to_string()));
            }
        }
    }
    (by_customer.into_values().chain(alone).collect(), unreadable)
}

/// Applies a group: one sync of its customer for all its events. A failure is recorded on
/// each event, which is retried with backoff.
async fn apply_group(state: &AppState, stripe: &StripeGateway, group: Group) {
    let started = std::time::Instant::now();
    let count = group.events.len();
    let result = async {
        let customer = match group.customer.clone() {
            Some(customer) => Some(customer),
            None => customer_from_stripe(stripe, &group.events[0].1).await?,
        };
        let Some(customer) = customer else {
            // Nothing Tollgate knows: recorded, changes nothing.
            let ids: Vec<String> = group
                .events
                .iter()
                .map(|(r, _)| r.event_id.clone())
                .collect();
            let now = state.now();
            state
                .db
                .run(move |conn| {
                    for id in &ids {
                        events::mark_processed(conn, id, now)?;
                    }
                    Ok(())
                })
                .await?;
            return Ok(SyncOutcome::UnknownCustomer);
        };
        let cause = cause_of(stripe, &group.events).await?;
        sync_customer(state, stripe, &customer, cause).await
    }
    .await;
    let now = state.now();
    let label = match &result {
        Ok(_) => "processed",
        Err(_) => "failed",
    };
    for (_, event) in &group.events {
        metrics::counter!("tollgate_webhook_events_total", "type" => event.event_type.clone(), "outcome" => label)
            .increment(1);
    }
    metrics::counter!("tollgate_webhook_syncs_total", "outcome" => label).increment(1);
    match result {
        Ok(_) => {
            for (row, _) in &group.events {
                let lag = (now - crate::db::from_db_time(row.received_at))
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("tollgate_webhook_lag_seconds").record(lag.as_secs_f64());
            }
            tracing::debug!(
                events = count,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "webhook events applied"
            );
        }
        Err(e) => {
            let attempts = group
                .events
                .iter()
                .map(|(r, _)| r.attempts)
                .max()
                .unwrap_or(0);
            let wait = backoff(state, u32::try_from(attempts).unwrap_or(0) + 1);
            let due = now + chrono::Duration::from_std(wait).unwrap_or_default();
            let error: String = format!("{e:#}").chars().take(500).collect();
            let ids: Vec<String> = group
                .events
                .iter()
                .map(|(r, _)| r.event_id.clone())
                .collect();
            tracing::warn!(events = ?ids, customer = ?group.customer.as_ref().map(CustomerId::as_str), attempts = attempts + 1, retry_in_ms = wait.as_millis() as u64, error = %error, "applying webhook events failed; retrying");
            let recorded = state
                .db
                .run(move |conn| {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    events::retry_at(conn, &ids, due, &error)
                })
                .await;
            if let Err(e) = recorded {
                tracing::error!(error = %format!("{e:#}"), "recording a failed webhook attempt failed; the lease runs out and the events are taken again");
            }
        }
    }
}

/// The wait after failed attempt number `attempts`: `webhooks.retry_initial_ms`, doubling, at
/// most `webhooks.retry_max_seconds`.
fn backoff(state: &AppState, attempts: u32) -> Duration {
    state
        .inbox
        .retry_initial
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(state.inbox.retry_max)
}

/// What the customer's pending events ask of its sync, together: each event's id (marked
/// processed by the sync), the Checkout Sessions they complete (read as they are now: the
/// event's copy may be stale), the charges they name (read even when older than the newest),
/// the earliest payment failure reported, a deletion, a trial ending.
async fn cause_of(
    stripe: &StripeGateway,
    events: &[(events::PendingEvent, VerifiedEvent)],
) -> anyhow::Result<SyncCause> {
    let first = &events[0].1;
    let source = match events.len() {
        1 => format!("event:{} {}", first.id, first.event_type),
        n => format!(
            "events:{} {} and {} more",
            first.id,
            first.event_type,
            n - 1
        ),
    };
    let mut cause = SyncCause::call(&source);
    // Subscription events alone need no charges: a burst of them costs one Stripe read.
    cause.read_charges = events
        .iter()
        .any(|(_, e)| !concerns_subscriptions_alone(&e.event_type));
    for (_, event) in events {
        cause.event_ids.push(event.id.as_str().to_owned());
        if let Some(session_id) = &event.checkout_session {
            if !cause.checkouts.iter().any(|c| c.id == session_id.as_str()) {
                cause
                    .checkouts
                    .extend(stripe.checkout_session(session_id).await?);
            }
        }
        cause.customer_deleted |= event.event_type == "customer.deleted";
        cause.trial_will_end |= event.event_type == "customer.subscription.trial_will_end";
        if let Some(charge) = &event.charge {
            if !cause.charge_ids.contains(charge) {
                cause.charge_ids.push(charge.clone());
            }
        }
        if event.event_type == "invoice.payment_failed" {
            cause.payment_failed_at = Some(
                cause
                    .payment_failed_at
                    .map_or(event.created, |t| t.min(event.created)),
            );
        }
    }
    Ok(cause)
}

/// Event types whose sync needs the customer's subscriptions (and their schedules) only, not
/// its charges.
fn concerns_subscriptions_alone(event_type: &str) -> bool {
    event_type.starts_with("customer.subscription.")
        || event_type.starts_with("subscription_schedule.")
}

/// A dispute of a payment Tollgate never recorded names no customer: Stripe's charge does.
async fn customer_from_stripe(
    stripe: &StripeGateway,
    event: &VerifiedEvent,
) -> anyhow::Result<Option<CustomerId>> {
    let Some(charge) = &event.charge else {
        return Ok(None);
    };
    Ok(stripe
        .charge(charge)
        .await?
        .and_then(|c| c.customer_id)
        .map(|id| CustomerId::parse(&id))
        .transpose()?)
}
