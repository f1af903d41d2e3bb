//! A subject's status: stored state through the access function, with its quotas.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::billing::access::{self, Access, AccessPolicy};
use crate::billing::catalog::Catalog;
use crate::billing::facts::SubscriptionFacts;
use crate::billing::quota::{self, Applied, BillingPeriod, QuotaStanding, BALANCE_BUCKET};
use crate::billing::scope::{self, Actor, Scope};
use crate::billing::subject::Subject;
use crate::db::snapshot_cache::SnapshotCache;
use crate::db::snapshots::Snapshot;
use crate::db::{self, DbConnection};
use crate::state::AppState;

/// The verdict plus the facts of the subscription behind it, and the quotas now in force.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// Whose grant this is: the user's own, the membership's or the tenant's.
    pub subject: Subject,
    pub scope: Scope,
    pub access: Access,
    pub plan_name: String,
    pub subscription: Option<SubscriptionFacts>,
    pub quotas: Vec<QuotaStanding>,
    /// When the facts behind the answer were last read from Stripe: the oldest sync of the
    /// subjects considered that were ever synced; `None`: none was (grants only, or nothing).
    pub as_of: Option<DateTime<Utc>>,
    /// Whether the facts came from this replica's cache (no database read) or the database.
    pub served_from: ServedFrom,
}

/// Where an answer's facts were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServedFrom {
    Cache,
    Database,
}

impl ServedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            ServedFrom::Cache => "cache",
            ServedFrom::Database => "database",
        }
    }
}

impl StatusView {
    fn of(catalog: &Catalog, evaluated: Evaluated, quotas: Vec<QuotaStanding>) -> StatusView {
        let plan_name = catalog
            .plan(&evaluated.access.plan_id)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let subscription = evaluated.subscription().cloned();
        StatusView {
            subject: evaluated.subject,
            scope: evaluated.scope,
            access: evaluated.access,
            plan_name,
            subscription,
            quotas,
            as_of: evaluated.as_of,
            served_from: evaluated.served_from,
        }
    }

    pub fn current_period_end(&self) -> Option<DateTime<Utc>> {
        self.subscription
            .as_ref()
            .and_then(|s| s.current_period_end)
    }
    /// Seats (see [`quota::seats`]), used as `members` reports them.
    pub fn seats(&self, members: Option<u64>) -> Option<quota::Seats> {
        let granting = self.subscription.as_ref().filter(|_| self.access.access);
        quota::seats(&self.quotas, granting.map(|s| s.quantity), members)
    }

    pub fn trial_end(&self) -> Option<DateTime<Utc>> {
        self.subscription.as_ref().and_then(|s| s.trial_end)
    }
}

/// Where an exemption comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exemption {
    /// The user's own token (end-user calls): what it says is also remembered, so that
    /// services, which do not hold the user's claims, apply the same exemption.
    Token(bool),
    /// A service asks about a user: a listed subject, or what the user's own token showed
    /// when last seen.
    Remembered { listed: bool },
}

impl Exemption {
    /// A service asking about `user_id`.
    pub fn for_service(state: &AppState, user_id: &str) -> Exemption {
        Exemption::Remembered {
            listed: state.exempt_subjects.contains(user_id),
        }
    }

    /// Whether the subject is exempt, given what its snapshot remembers; a user's token that
    /// says otherwise than the snapshot is remembered for services (a write only on change).
    pub(crate) fn resolve(
        self,
        conn: &mut DbConnection,
        cache: Option<&SnapshotCache>,
        subject: &Subject,
        remembered: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        if let Some(exempt) = self.without_write(subject, remembered) {
            return Ok(exempt);
        }
        let Exemption::Token(exempt) = self else {
            unreachable!("only a user's token has something to remember")
        };
        let key = subject.key();
        db::snapshots::set_role_exempt(conn, &key, exempt, now)?;
        // The write committed on its own (no transaction is open here).
        if let Some(cache) = cache {
            cache.invalidate(&key);
        }
        Ok(exempt)
    }

    /// Whether the subject is exempt, when that needs nothing remembered anew.
    fn without_write(self, subject: &Subject, remembered: bool) -> Option<bool> {
        match self {
            Exemption::Token(exempt) => {
                let is_user = matches!(subject, Subject::User { .. });
                (!is_user || exempt == remembered).then_some(exempt)
            }
            Exemption::Remembered { listed } => Some(listed || remembered),
        }
    }
}

/// What evaluating access needs from the app, owned, so that it moves to a blocking thread.
#[derive(Clone)]
pub(crate) struct Terms {
    pub catalog: Arc<Catalog>,
    pub policy: AccessPolicy,
    pub cache: Option<Arc<SnapshotCache>>,
    /// The request's time: every verdict and quota window is taken at it.
    pub now: DateTime<Utc>,
}

impl Terms {
    pub fn of(state: &AppState) -> Terms {
        Terms {
            catalog: state.catalog.clone(),
            policy: state.policy,
            cache: state.db.snapshot_cache().cloned(),
            now: state.now(),
        }
    }

    /// The actor's access: what the user holds personally and, in a tenant, through the
    /// membership and through the tenant; the strongest grant stands. One read of the subjects'
    /// snapshots, or none when the cache holds them.
    pub fn evaluate(
        &self,
        conn: &mut DbConnection,
        actor: &Actor,
        exemption: Exemption,
    ) -> anyhow::Result<Evaluated> {
        let subjects = actor.subjects();
        let keys: Vec<String> = subjects.iter().map(|(_, s)| s.key()).collect();
        let cache = self.cache.as_deref();
        let (snapshots, cached) = db::snapshots::read_many_from(conn, cache, &keys)?;
        // Exemptions belong to the user (the first subject), never to a tenant.
        let user = &subjects[0].1;
        let exempt = exemption.resolve(conn, cache, user, snapshots[0].role_exempt, self.now)?;
        let from = if cached {
            ServedFrom::Cache
        } else {
            ServedFrom::Database
        };
        Ok(self.judge(subjects, snapshots, exempt, from))
    }

    /// [`Terms::evaluate`] without the database: when the cache holds every subject's snapshot
    /// and the exemption needs nothing written.
    fn evaluate_cached(&self, actor: &Actor, exemption: Exemption) -> Option<Evaluated> {
        let subjects = actor.subjects();
        let keys: Vec<String> = subjects.iter().map(|(_, s)| s.key()).collect();
        let snapshots = db::snapshots::cached(self.cache.as_deref(), &keys)?;
        let exempt = exemption.without_write(&subjects[0].1, snapshots[0].role_exempt)?;
        Some(self.judge(subjects, snapshots, exempt, ServedFrom::Cache))
    }

    /// The verdict on the subjects' snapshots (in [`Actor::subjects`] order).
    fn judge(
        &self,
        mut subjects: Vec<(Scope, Subject)>,
        mut snapshots: Vec<Arc<Snapshot>>,
        exempt: bool,
        served_from: ServedFrom,
    ) -> Evaluated {
        let as_of = snapshots.iter().filter_map(|s| s.synced_at).min();
        debug_assert_eq!(subjects[0].0, Scope::User);
        let catalog = &self.catalog;
        let mut verdicts: Vec<Access> = snapshots
            .iter()
            .enumerate()
            .map(|(i, snapshot)| {
                access::evaluate(
                    catalog,
                    self.policy,
                    &snapshot.facts.subscriptions,
                    &snapshot.facts.purchases,
                    &snapshot.facts.grants,
                    exempt && i == 0,
                    self.now,
                )
            })
            .collect();
        let chosen = scope::strongest(catalog, &verdicts.iter().collect::<Vec<_>>())
            .unwrap_or_else(|| scope::free_subject(catalog, &subjects));
        let (scope, subject) = subjects.swap_remove(chosen);
        Evaluated {
            subject,
            scope,
            stored: snapshots.swap_remove(chosen),
            access: verdicts.swap_remove(chosen),
            as_of,
            served_from,
        }
    }

    /// The quotas the grant that stands brings (with their windows at `now`).
    pub fn applied(&self, evaluated: &Evaluated) -> Vec<Applied> {
        // A billing-period quota follows the period of the subscription that grants access.
        let billing = evaluated
            .subscription()
            .filter(|_| evaluated.access.access)
            .and_then(|s| {
                Some(BillingPeriod {
                    start: s.current_period_start?,
                    end: s.current_period_end,
                })
            });
        quota::applied(
            &self.catalog,
            &evaluated.access,
            &evaluated.stored.facts.purchases,
            billing,
            self.now,
        )
    }
}

/// The verdict on stored state.
pub(crate) struct Evaluated {
    /// The subject whose grant stands for the actor (its quotas are the ones spent).
    pub subject: Subject,
    pub scope: Scope,
    pub stored: Arc<Snapshot>,
    pub access: Access,
    pub as_of: Option<DateTime<Utc>>,
    pub served_from: ServedFrom,
}

impl Evaluated {
    pub fn subscription(&self) -> Option<&SubscriptionFacts> {
        let id = self.access.subscription_id.as_deref()?;
        self.stored.facts.subscription(id)
    }
}

pub async fn status_of(
    state: &AppState,
    actor: &Actor,
    exemption: Exemption,
) -> anyhow::Result<StatusView> {
    view(state, actor, exemption, true).await
}

/// The verdict alone, without reading quota counters (`quotas` stays empty): what a feature
/// check needs.
pub async fn access_of(
    state: &AppState,
    actor: &Actor,
    exemption: Exemption,
) -> anyhow::Result<StatusView> {
    view(state, actor, exemption, false).await
}

async fn view(
    state: &AppState,
    actor: &Actor,
    exemption: Exemption,
    with_quotas: bool,
) -> anyhow::Result<StatusView> {
    let terms = Terms::of(state);
    if !with_quotas {
        // The hot path of feature checks: on cached snapshots, no database at all.
        if let Some(evaluated) = terms.evaluate_cached(actor, exemption) {
            return Ok(StatusView::of(&terms.catalog, evaluated, Vec::new()));
        }
    }
    let actor = actor.clone();
    state
        .db
        .run(move |conn| {
            let evaluated = terms.evaluate(conn, &actor, exemption)?;
            let key = evaluated.subject.key();
            let applied = if with_quotas {
                terms.applied(&evaluated)
            } else {
                Vec::new()
            };
            let wanted: Vec<(String, String)> = applied
                .iter()
                .flat_map(|a| {
                    [
                        (a.key.clone(), a.window.bucket.clone()),
                        (a.key.clone(), BALANCE_BUCKET.to_owned()),
                    ]
                })
                .collect();
            let used = db::quotas::used(conn, &key, &wanted)?;
            let quotas = applied
                .iter()
                .map(|a| {
                    let get = |bucket: &str| {
                        used.get(&(a.key.clone(), bucket.to_owned()))
                            .copied()
                            .unwrap_or(0)
                    };
                    QuotaStanding::new(a, get(&a.window.bucket), get(BALANCE_BUCKET))
                })
                .collect();
            Ok(StatusView::of(&terms.catalog, evaluated, quotas))
        })
        .await
}

/// Why the actor has (or lacks) access, for `feature` if one is asked about: every subject
/// considered and every source it holds, read from the database (never the cache: support is
/// asking).
pub async fn explain(
    state: &AppState,
    actor: &Actor,
    feature: Option<String>,
) -> anyhow::Result<crate::billing::explain::Explanation> {
    let (catalog, policy, now) = (state.catalog.clone(), state.policy, state.now());
    let listed = state.exempt_subjects.contains(actor.user_id.as_str());
    let subjects = actor.subjects();
    let keys: Vec<String> = subjects.iter().map(|(_, s)| s.key()).collect();
    // The stored records (the snapshot leaves purchases' ids out), and the remembered role.
    type Read = Vec<(crate::billing::facts::SubjectFacts, Vec<String>, bool)>;
    let read: Read = state
        .db
        .run(move |conn| {
            let snapshots = db::snapshots::read_many(conn, None, &keys)?;
            keys.iter()
                .zip(&snapshots)
                .map(|(key, snapshot)| {
                    let rows = db::state::load(conn, key)?;
                    let ids = rows
                        .purchases
                        .iter()
                        .filter(|p| p.record().is_some())
                        .map(|p| p.checkout_session_id.clone())
                        .collect();
                    Ok((rows.facts(), ids, snapshot.role_exempt))
                })
                .collect()
        })
        .await?;
    let considered: Vec<crate::billing::explain::Considered<'_>> = subjects
        .iter()
        .zip(&read)
        .enumerate()
        .map(
            |(i, ((scope, subject), (facts, ids, role)))| crate::billing::explain::Considered {
                scope: *scope,
                subject,
                facts,
                purchase_ids: ids,
                listed_exempt: i == 0 && listed,
                role_exempt: i == 0 && *role,
            },
        )
        .collect();
    Ok(crate::billing::explain::explain(
        &catalog,
        policy,
        &considered,
        feature.as_deref(),
        now,
    ))
}
