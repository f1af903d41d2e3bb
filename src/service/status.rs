//! A subject's status: stored state through the access function, with its quotas.

use chrono::{DateTime, Utc};

use crate::billing::access::{self, Access, AccessPolicy};
use crate::billing::quota::{self, Applied, BillingPeriod, BALANCE_BUCKET};
use crate::billing::subject::Subject;
use crate::db::state::{SubjectState, SubscriptionRow};
use crate::db::{self, from_db_time, DbConnection};
use crate::startup::AppState;

use super::quotas::QuotaView;

/// The verdict plus the facts of the subscription behind it, and the quotas now in force.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub access: Access,
    pub plan_name: String,
    pub subscription: Option<SubscriptionRow>,
    pub quotas: Vec<QuotaView>,
}

impl StatusView {
    pub fn current_period_end(&self) -> Option<DateTime<Utc>> {
        self.subscription
            .as_ref()
            .and_then(|s| s.current_period_end)
            .map(from_db_time)
    }
    pub fn trial_end(&self) -> Option<DateTime<Utc>> {
        self.subscription
            .as_ref()
            .and_then(|s| s.trial_end)
            .map(from_db_time)
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
            listed: state
                .settings
                .exemptions
                .subjects
                .iter()
                .any(|s| s == user_id),
        }
    }

    /// Whether the subject is exempt, given what its snapshot remembers; a user's token that
    /// says otherwise than the snapshot is remembered for services (a write only on change).
    pub(crate) fn resolve(
        self,
        conn: &mut DbConnection,
        subject: &Subject,
        remembered: bool,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        match self {
            Exemption::Token(exempt) => {
                let is_user = matches!(subject, Subject::User { .. });
                if is_user && exempt != remembered {
                    db::snapshots::set_role_exempt(conn, &subject.key(), exempt, now)?;
                }
                Ok(exempt)
            }
            Exemption::Remembered { listed } => Ok(listed || remembered),
        }
    }
}

pub fn policy(state: &AppState) -> AccessPolicy {
    AccessPolicy {
        saas_enabled: state.settings.saas,
        grace_period: chrono::Duration::hours(i64::from(state.settings.billing.grace_period_hours)),
    }
}

/// The verdict on stored state, and the quotas it brings (decided on the blocking thread, with
/// the connection the reads used).
pub(crate) struct Evaluated {
    pub stored: SubjectState,
    pub access: Access,
    pub applied: Vec<Applied>,
}

impl Evaluated {
    pub fn subscription(&self) -> Option<&SubscriptionRow> {
        let id = self.access.subscription_id.as_ref()?;
        self.stored
            .subscriptions
            .iter()
            .find(|s| &s.stripe_subscription_id == id)
    }
}

pub(crate) fn evaluate(
    conn: &mut DbConnection,
    catalog: &crate::billing::catalog::Catalog,
    policy: AccessPolicy,
    subject: &Subject,
    exemption: Exemption,
    now: DateTime<Utc>,
) -> anyhow::Result<Evaluated> {
    let snapshot = db::snapshots::read(conn, &subject.key())?;
    let exempt = exemption.resolve(conn, subject, snapshot.role_exempt, now)?;
    let stored = snapshot.state;
    let purchases = stored.purchase_facts();
    let verdict = access::evaluate(
        catalog,
        policy,
        &stored.subscription_facts(),
        &purchases,
        exempt,
        now,
    );
    let mut evaluated = Evaluated {
        stored,
        access: verdict,
        applied: Vec::new(),
    };
    // A billing-period quota follows the period of the subscription that grants access.
    let billing = evaluated
        .subscription()
        .filter(|_| evaluated.access.access)
        .and_then(|s| {
            Some(BillingPeriod {
                start: from_db_time(s.current_period_start?),
                end: s.current_period_end.map(from_db_time),
            })
        });
    evaluated.applied = quota::applied(catalog, &evaluated.access, &purchases, billing, now);
    Ok(evaluated)
}

pub async fn status_of(
    state: &AppState,
    subject: &Subject,
    exemption: Exemption,
) -> anyhow::Result<StatusView> {
    view(state, subject, exemption, true).await
}

/// The verdict alone, without reading quota counters (`quotas` stays empty): what a feature
/// check needs.
pub async fn access_of(
    state: &AppState,
    subject: &Subject,
    exemption: Exemption,
) -> anyhow::Result<StatusView> {
    view(state, subject, exemption, false).await
}

async fn view(
    state: &AppState,
    subject: &Subject,
    exemption: Exemption,
    with_quotas: bool,
) -> anyhow::Result<StatusView> {
    let key = subject.key();
    let subject = subject.clone();
    let catalog = state.catalog.clone();
    let (policy, now) = (policy(state), state.now());
    state
        .db
        .run(move |conn| {
            let evaluated = evaluate(conn, &catalog, policy, &subject, exemption, now)?;
            let applied = if with_quotas {
                evaluated.applied.as_slice()
            } else {
                &[]
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
                    QuotaView::new(a, get(&a.window.bucket), get(BALANCE_BUCKET))
                })
                .collect();
            let plan_name = catalog
                .plan(&evaluated.access.plan_id)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            let subscription = evaluated.subscription().cloned();
            Ok(StatusView {
                access: evaluated.access,
                plan_name,
                subscription,
                quotas,
            })
        })
        .await
}
