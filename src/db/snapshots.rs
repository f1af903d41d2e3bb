//! One row per subject with everything the access function reads, so that an entitlement check
//! or a consumption needs one primary-key read. Every change to a subject's subscriptions or
//! purchases rewrites its row in the same transaction (see `service::sync`); the tables stay the
//! record, the snapshot is derived from them.
//!
//! The row's `state` holds the subject's [`SubjectFacts`] in a format this module owns and
//! versions ([`FACTS_VERSION`], column `facts_version`): only what access, quotas and the API
//! read, with times as integer microseconds, so that a read parses little. Rows of an older
//! version are still read, and rewritten from the tables at start-up ([`backfill`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use serde::{Deserialize, Serialize};

use super::schema::{purchases, subject_snapshots, subscriptions};
use super::snapshot_cache::SnapshotCache;
use super::state::{self, PurchaseRow, SubjectState, SubscriptionRow};
use super::{on_backend, to_db_time, DbConnection};
use crate::billing::catalog::{Interval, PlanKind};
use crate::billing::facts::{
    CollectionPause, GrantFacts, PurchaseFacts, PurchaseStatus, ScheduledChange, SubjectFacts,
    SubscriptionFacts, SubscriptionStatus,
};

/// The format [`write`] stores. Version 0 (before the column existed) held the table rows.
pub const FACTS_VERSION: i32 = 1;

/// What the hot path knows of a subject.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub facts: SubjectFacts,
    /// The user's own token last showed an exempt role.
    pub role_exempt: bool,
    /// When a sync last read the subject from Stripe; `None`: never.
    pub synced_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// Nothing on record: no facts and no exemption (what a subject without a row reads as).
    pub fn is_empty(&self) -> bool {
        !self.role_exempt
            && self.facts.subscriptions.is_empty()
            && self.facts.purchases.is_empty()
            && self.facts.grants.is_empty()
    }
}

/// Version 1 of a snapshot's `state`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FactsV1 {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    subscriptions: Vec<SubscriptionV1>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    purchases: Vec<PurchaseV1>,
    /// Added within version 1 (rows written before grants existed hold none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    grants: Vec<GrantV1>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SubscriptionV1 {
    id: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    period_end: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trial_end: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cancel_at_period_end: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancel_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace_from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manager: Option<String>,
    /// Added within version 1: payment collection paused on Stripe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paused: Option<PauseV1>,
    /// Added within version 1: the change a subscription schedule makes at the period end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduled: Option<ScheduledV1>,
    created: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScheduledV1 {
    price: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    quantity: i64,
    at: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PauseV1 {
    behavior: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resumes: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct GrantV1 {
    id: String,
    plan: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<i64>,
    created: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct PurchaseV1 {
    plan: String,
    kind: String,
    status: String,
    purchased: i64,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| anyhow::anyhow!("time {us} out of range"))
}

fn from_micros_opt(us: Option<i64>) -> anyhow::Result<Option<DateTime<Utc>>> {
    us.map(from_micros).transpose()
}

impl FactsV1 {
    fn of(facts: &SubjectFacts) -> FactsV1 {
        FactsV1 {
            subscriptions: facts
                .subscriptions
                .iter()
                .map(|s| SubscriptionV1 {
                    id: s.id.clone(),
                    status: s.status.as_str().to_owned(),
                    plan: s.plan_id.clone(),
                    interval: s.price_interval.map(|i| i.as_str().to_owned()),
                    quantity: s.quantity,
                    period_start: s.current_period_start.map(micros),
                    period_end: s.current_period_end.map(micros),
                    trial_end: s.trial_end.map(micros),
                    cancel_at_period_end: s.cancel_at_period_end,
                    cancel_at: s.cancel_at.map(micros),
                    grace_from: s.payment_failed_at.map(micros),
                    revoked: s.period_payment_revoked.map(|p| p.as_str().to_owned()),
                    manager: s.manager_user_id.clone(),
                    paused: s.pause_collection.as_ref().map(|p| PauseV1 {
                        behavior: p.behavior.clone(),
                        resumes: p.resumes_at.map(micros),
                    }),
                    scheduled: s.scheduled_change.as_ref().map(|c| ScheduledV1 {
                        price: c.price_id.clone(),
                        plan: c.plan_id.clone(),
                        interval: c.price_interval.map(|i| i.as_str().to_owned()),
                        quantity: c.quantity,
                        at: micros(c.at),
                    }),
                    created: micros(s.created_at),
                })
                .collect(),
            purchases: facts
                .purchases
                .iter()
                .map(|p| PurchaseV1 {
                    plan: p.plan_id.clone(),
                    kind: p.kind.as_str().to_owned(),
                    status: p.status.as_str().to_owned(),
                    purchased: micros(p.purchased_at),
                })
                .collect(),
            grants: facts
                .grants
                .iter()
                .map(|g| GrantV1 {
                    id: g.id.clone(),
                    plan: g.plan_id.clone(),
                    until: g.until.map(micros),
                    created: micros(g.created_at),
                })
                .collect(),
        }
    }

    /// The facts; a purchase of a kind or status this version does not know is left out, as
    /// the tables' readers leave it out.
    fn into_facts(self) -> anyhow::Result<SubjectFacts> {
        let mut subscriptions = Vec::with_capacity(self.subscriptions.len());
        for s in self.subscriptions {
            subscriptions.push(SubscriptionFacts {
                status: SubscriptionStatus::parse(&s.status),
                id: s.id,
                plan_id: s.plan,
                price_interval: s.interval.as_deref().and_then(Interval::parse),
                quantity: s.quantity,
                current_period_start: from_micros_opt(s.period_start)?,
                current_period_end: from_micros_opt(s.period_end)?,
                trial_end: from_micros_opt(s.trial_end)?,
                cancel_at_period_end: s.cancel_at_period_end,
                cancel_at: from_micros_opt(s.cancel_at)?,
                payment_failed_at: from_micros_opt(s.grace_from)?,
                period_payment_revoked: s.revoked.as_deref().and_then(PurchaseStatus::parse),
                manager_user_id: s.manager,
                pause_collection: match s.paused {
                    Some(p) => Some(CollectionPause {
                        behavior: p.behavior,
                        resumes_at: from_micros_opt(p.resumes)?,
                    }),
                    None => None,
                },
                scheduled_change: match s.scheduled {
                    Some(c) => Some(ScheduledChange {
                        price_id: c.price,
                        plan_id: c.plan,
                        price_interval: c.interval.as_deref().and_then(Interval::parse),
                        quantity: c.quantity,
                        at: from_micros(c.at)?,
                    }),
                    None => None,
                },
                created_at: from_micros(s.created)?,
            });
        }
        let mut purchases = Vec::with_capacity(self.purchases.len());
        for p in self.purchases {
            let (Some(kind), Some(status)) =
                (PlanKind::parse(&p.kind), PurchaseStatus::parse(&p.status))
            else {
                continue;
            };
            purchases.push(PurchaseFacts {
                plan_id: p.plan,
                kind,
                status,
                purchased_at: from_micros(p.purchased)?,
            });
        }
        let mut grants = Vec::with_capacity(self.grants.len());
        for g in self.grants {
            grants.push(GrantFacts {
                id: g.id,
                plan_id: g.plan,
                until: from_micros_opt(g.until)?,
                created_at: from_micros(g.created)?,
            });
        }
        Ok(SubjectFacts {
            subscriptions,
            purchases,
            grants,
        })
    }
}

/// A snapshot's `state` as stored in `version`.
fn decode(json: &str, version: i32) -> anyhow::Result<SubjectFacts> {
    match version {
        FACTS_VERSION => serde_json::from_str::<FactsV1>(json)?.into_facts(),
        // Copies of the table rows.
        0 => Ok(serde_json::from_str::<SubjectState>(json)?.facts()),
        other => anyhow::bail!(
            "snapshot format {other} is newer than this version reads ({FACTS_VERSION}): upgrade"
        ),
    }
}

fn encode(facts: &SubjectFacts) -> anyhow::Result<String> {
    Ok(serde_json::to_string(&FactsV1::of(facts))?)
}

/// The snapshots of several subjects, in the order of `subjects`; a subject without a row has
/// nothing on record. Served from `cache` where it holds them; what is read from the database
/// is stored in it (see [`SnapshotCache::fill`] for why that is safe under concurrent writes).
pub fn read_many(
    conn: &mut DbConnection,
    cache: Option<&SnapshotCache>,
    subjects: &[String],
) -> anyhow::Result<Vec<Arc<Snapshot>>> {
    Ok(read_many_from(conn, cache, subjects)?.0)
}

/// [`read_many`], and whether the cache held every one of them (nothing was read).
pub fn read_many_from(
    conn: &mut DbConnection,
    cache: Option<&SnapshotCache>,
    subjects: &[String],
) -> anyhow::Result<(Vec<Arc<Snapshot>>, bool)> {
    // The ticket is taken before anything is read, so that a write committed meanwhile shows.
    let ticket = cache.and_then(SnapshotCache::ticket);
    let mut found: Vec<Option<Arc<Snapshot>>> = subjects
        .iter()
        .map(|s| cache.and_then(|c| c.get(s)))
        .collect();
    let missing: Vec<&str> = subjects
        .iter()
        .zip(&found)
        .filter(|(_, hit)| hit.is_none())
        .map(|(s, _)| s.as_str())
        .collect();
    if missing.is_empty() {
        return Ok((found.into_iter().flatten().collect(), true));
    }
    let columns = (
        subject_snapshots::subject,
        subject_snapshots::state,
        subject_snapshots::role_exempt,
        subject_snapshots::facts_version,
        subject_snapshots::synced_at,
    );
    type Row = (String, String, bool, i32, Option<chrono::NaiveDateTime>);
    let rows: Vec<Row> = if let [one] = missing[..] {
        // The common case keeps the primary-key lookup.
        subject_snapshots::table
            .find(one)
            .select(columns)
            .load(conn)?
    } else {
        subject_snapshots::table
            .filter(super::any_of(subject_snapshots::subject, &missing))
            .select(columns)
            .load(conn)?
    };
    for (subject, slot) in subjects.iter().zip(found.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let snapshot = match rows.iter().find(|(s, ..)| s == subject) {
            Some((_, json, role_exempt, version, synced_at)) => Snapshot {
                facts: decode(json, *version)?,
                role_exempt: *role_exempt,
                synced_at: synced_at.map(super::from_db_time),
            },
            None => Snapshot::default(),
        };
        let snapshot = Arc::new(snapshot);
        if let (Some(cache), Some(ticket)) = (cache, ticket) {
            cache.fill(ticket, subject, snapshot.clone());
        }
        *slot = Some(snapshot);
    }
    Ok((found.into_iter().flatten().collect(), false))
}

/// The snapshots of all `subjects` if the cache holds every one of them (no database needed).
pub fn cached(cache: Option<&SnapshotCache>, subjects: &[String]) -> Option<Vec<Arc<Snapshot>>> {
    let cache = cache?;
    subjects.iter().map(|s| cache.get(s)).collect()
}

/// Rewrites the subject's snapshot from its tables (inside the transaction that changed them).
/// Rewrites the subject's snapshot from its tables; answers the facts it wrote.
pub fn refresh(
    conn: &mut DbConnection,
    subject: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<SubjectFacts> {
    let facts = state::load(conn, subject)?.facts();
    write(conn, subject, &facts, now)?;
    Ok(facts)
}

fn write(
    conn: &mut DbConnection,
    subject: &str,
    facts: &SubjectFacts,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let json = encode(facts)?;
    let insert = diesel::insert_into(subject_snapshots::table).values((
        subject_snapshots::subject.eq(subject),
        subject_snapshots::state.eq(&json),
        subject_snapshots::role_exempt.eq(false),
        subject_snapshots::updated_at.eq(to_db_time(now)),
        subject_snapshots::facts_version.eq(FACTS_VERSION),
    ));
    on_backend!(conn, |c| insert
        .on_conflict(subject_snapshots::subject)
        .do_update()
        .set((
            subject_snapshots::state.eq(excluded(subject_snapshots::state)),
            subject_snapshots::updated_at.eq(excluded(subject_snapshots::updated_at)),
            subject_snapshots::facts_version.eq(excluded(subject_snapshots::facts_version)),
        ))
        .execute(c))?;
    Ok(())
}

/// Records that a sync read the subject from Stripe at `now` (inside the sync's transaction):
/// the `as_of` of its answers. A subject without a snapshot gets one.
pub fn mark_synced(
    conn: &mut DbConnection,
    subject: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let mark = |conn: &mut DbConnection| {
        diesel::update(subject_snapshots::table.find(subject))
            .set(subject_snapshots::synced_at.eq(Some(to_db_time(now))))
            .execute(conn)
    };
    if mark(conn)? == 0 {
        refresh(conn, subject, now)?;
        mark(conn)?;
    }
    Ok(())
}

/// Records what the user's own token said of an exempt role.
pub fn set_role_exempt(
    conn: &mut DbConnection,
    subject: &str,
    exempt: bool,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let insert = diesel::insert_into(subject_snapshots::table).values((
        subject_snapshots::subject.eq(subject),
        subject_snapshots::state.eq(encode(&SubjectFacts::default())?),
        subject_snapshots::role_exempt.eq(exempt),
        subject_snapshots::updated_at.eq(to_db_time(now)),
        subject_snapshots::facts_version.eq(FACTS_VERSION),
    ));
    on_backend!(conn, |c| insert
        .on_conflict(subject_snapshots::subject)
        .do_update()
        .set((
            subject_snapshots::role_exempt.eq(excluded(subject_snapshots::role_exempt)),
            subject_snapshots::updated_at.eq(excluded(subject_snapshots::updated_at)),
        ))
        .execute(c))?;
    Ok(())
}

/// Writes the snapshots of subjects that have subscriptions or purchases but no snapshot (data
/// from before snapshots, or written by other tools), and rewrites those stored in an older
/// format, a batch at a time. Tells how many.
pub fn backfill(conn: &mut DbConnection, now: DateTime<Utc>) -> anyhow::Result<usize> {
    const BATCH: i64 = 500;
    let mut written = 0;
    loop {
        let mut missing: Vec<String> = subscriptions::table
            .filter(diesel::dsl::not(diesel::dsl::exists(
                subject_snapshots::table
                    .filter(subject_snapshots::subject.eq(subscriptions::subject)),
            )))
            .select(subscriptions::subject)
            .distinct()
            .limit(BATCH)
            .load(conn)?;
        if missing.is_empty() {
            missing = purchases::table
                .filter(diesel::dsl::not(diesel::dsl::exists(
                    subject_snapshots::table
                        .filter(subject_snapshots::subject.eq(purchases::subject)),
                )))
                .select(purchases::subject)
                .distinct()
                .limit(BATCH)
                .load(conn)?;
        }
        if missing.is_empty() {
            break;
        }
        let mut rows = Vec::with_capacity(missing.len());
        for (subject, facts) in facts_of(conn, &missing)? {
            rows.push((
                subject_snapshots::subject.eq(subject),
                subject_snapshots::state.eq(encode(&facts)?),
                subject_snapshots::role_exempt.eq(false),
                subject_snapshots::updated_at.eq(to_db_time(now)),
                subject_snapshots::facts_version.eq(FACTS_VERSION),
            ));
        }
        // A snapshot written meanwhile (by a sync) was written from the same tables or newer.
        let insert = diesel::insert_into(subject_snapshots::table).values(&rows);
        on_backend!(conn, |c| insert.on_conflict_do_nothing().execute(c))?;
        written += missing.len();
    }
    loop {
        let outdated: Vec<String> = subject_snapshots::table
            .filter(subject_snapshots::facts_version.lt(FACTS_VERSION))
            .select(subject_snapshots::subject)
            .limit(BATCH)
            .load(conn)?;
        if outdated.is_empty() {
            return Ok(written);
        }
        for (subject, facts) in facts_of(conn, &outdated)? {
            // Only while still outdated: a sync that rewrote it meanwhile read newer tables.
            diesel::update(
                subject_snapshots::table
                    .find(&subject)
                    .filter(subject_snapshots::facts_version.lt(FACTS_VERSION)),
            )
            .set((
                subject_snapshots::state.eq(encode(&facts)?),
                subject_snapshots::updated_at.eq(to_db_time(now)),
                subject_snapshots::facts_version.eq(FACTS_VERSION),
            ))
            .execute(conn)?;
        }
        written += outdated.len();
    }
}

/// The facts of several subjects, read from the tables in two queries.
fn facts_of(
    conn: &mut DbConnection,
    subjects: &[String],
) -> anyhow::Result<Vec<(String, SubjectFacts)>> {
    let subs: Vec<SubscriptionRow> = subscriptions::table
        .filter(subscriptions::subject.eq_any(subjects))
        .order(subscriptions::stripe_created_at.desc())
        .select(SubscriptionRow::as_select())
        .load(conn)?;
    let buys: Vec<PurchaseRow> = purchases::table
        .filter(purchases::subject.eq_any(subjects))
        .order(purchases::purchased_at.desc())
        .select(PurchaseRow::as_select())
        .load(conn)?;
    let mut states: std::collections::HashMap<&str, SubjectState> = subjects
        .iter()
        .map(|m| (m.as_str(), SubjectState::default()))
        .collect();
    for sub in subs {
        if let Some(state) = states.get_mut(sub.subject.as_str()) {
            state.subscriptions.push(sub);
        }
    }
    for buy in buys {
        if let Some(state) = states.get_mut(buy.subject.as_str()) {
            state.purchases.push(buy);
        }
    }
    for grant in super::grants::standing_of(conn, subjects)? {
        if let Some(state) = states.get_mut(grant.subject.as_str()) {
            state.grants.push(grant);
        }
    }
    Ok(states
        .into_iter()
        .map(|(subject, state)| (subject.to_owned(), state.facts()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, day, 12, 0, 0).unwrap()
    }

    fn facts() -> SubjectFacts {
        SubjectFacts {
            subscriptions: vec![SubscriptionFacts {
                id: "sub_1".into(),
                plan_id: Some("pro".into()),
                status: SubscriptionStatus::PastDue,
                current_period_start: Some(t(1)),
                current_period_end: Some(t(28)),
                trial_end: Some(t(2)),
                cancel_at_period_end: true,
                cancel_at: Some(t(27)),
                payment_failed_at: Some(t(3) + chrono::Duration::microseconds(123_456)),
                period_payment_revoked: Some(PurchaseStatus::Disputed),
                created_at: t(1),
                price_interval: Some(Interval::Year),
                quantity: 7,
                manager_user_id: Some("alice".into()),
                pause_collection: Some(CollectionPause {
                    behavior: "void".into(),
                    resumes_at: Some(t(20)),
                }),
                scheduled_change: Some(ScheduledChange {
                    price_id: "price_maker_monthly".into(),
                    plan_id: Some("maker".into()),
                    price_interval: Some(Interval::Month),
                    quantity: 2,
                    at: t(28),
                }),
            }],
            purchases: vec![PurchaseFacts {
                plan_id: "lifetime".into(),
                kind: PlanKind::Lifetime,
                status: PurchaseStatus::Refunded,
                purchased_at: t(4),
            }],
            grants: vec![GrantFacts {
                id: "grant_1".into(),
                plan_id: "pro".into(),
                until: Some(t(30)),
                created_at: t(2) + chrono::Duration::microseconds(7),
            }],
        }
    }

    #[test]
    fn facts_read_back_as_written() {
        let json = encode(&facts()).unwrap();
        assert_eq!(decode(&json, FACTS_VERSION).unwrap(), facts());
        let empty = encode(&SubjectFacts::default()).unwrap();
        assert_eq!(empty, "{}");
        assert_eq!(
            decode(&empty, FACTS_VERSION).unwrap(),
            SubjectFacts::default()
        );
    }

    #[test]
    fn the_stored_format_holds_only_what_evaluation_reads() {
        let json: serde_json::Value = serde_json::from_str(&encode(&facts()).unwrap()).unwrap();
        let sub = json["subscriptions"][0].as_object().unwrap();
        for absent in [
            "stripe_customer_id",
            "price_id",
            "latest_invoice_id",
            "synced_at",
            "subject",
        ] {
            assert!(!sub.contains_key(absent), "{absent}");
        }
        assert_eq!(json["subscriptions"][0]["created"], t(1).timestamp_micros());
    }

    #[test]
    fn version_0_snapshots_held_table_rows_and_still_read() {
        let legacy = r#"{"subscriptions":[{"stripe_subscription_id":"sub_1","subject":"user:u","stripe_customer_id":"cus_1","status":"active","plan_id":"pro","price_id":"price_pro_m","price_interval":"month","quantity":1,"current_period_start":"2026-03-01T12:00:00","current_period_end":"2026-03-28T12:00:00","trial_start":null,"trial_end":null,"cancel_at_period_end":false,"cancel_at":null,"canceled_at":null,"ended_at":null,"latest_invoice_id":null,"payment_failed_at":null,"stripe_created_at":"2026-03-01T12:00:00","synced_at":"2026-03-01T12:00:00","period_payment_revoked":null}],"purchases":[{"checkout_session_id":"cs_1","subject":"user:u","stripe_customer_id":null,"plan_id":"lifetime","kind":"lifetime","payment_intent_id":null,"amount":100,"currency":"usd","status":"paid","purchased_at":"2026-03-04T12:00:00","updated_at":"2026-03-04T12:00:00"}]}"#;
        let facts = decode(legacy, 0).unwrap();
        assert_eq!(facts.subscriptions[0].status, SubscriptionStatus::Active);
        assert_eq!(facts.subscriptions[0].current_period_end, Some(t(28)));
        assert_eq!(facts.subscriptions[0].price_interval, Some(Interval::Month));
        assert_eq!(facts.purchases[0].purchased_at, t(4));
    }

    #[test]
    fn a_newer_format_is_refused_rather_than_misread() {
        assert!(decode("{}", FACTS_VERSION + 1).is_err());
    }
}
