//! A subject's status: stored state through the access function.

use chrono::{DateTime, Utc};

use crate::billing::access::{self, Access, AccessPolicy};
use crate::billing::subject::Subject;
use crate::db::state::SubscriptionRow;
use crate::db::{self, from_db_time};
use crate::startup::AppState;

/// The verdict plus the facts of the subscription behind it.
#[derive(Debug, Clone)]
pub struct StatusView {
    pub access: Access,
    pub plan_name: String,
    pub subscription: Option<SubscriptionRow>,
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

pub async fn status_of(
    state: &AppState,
    subject: &Subject,
    exempt: bool,
) -> anyhow::Result<StatusView> {
    let key = subject.key();
    let stored = state
        .db
        .run(move |conn| db::state::load(conn, &key))
        .await?;
    let policy = AccessPolicy {
        saas_enabled: state.settings.saas,
        grace_period: chrono::Duration::hours(i64::from(state.settings.billing.grace_period_hours)),
    };
    let verdict = access::evaluate(
        &state.catalog,
        policy,
        &stored.subscription_facts(),
        &stored.purchase_facts(),
        exempt,
        state.now(),
    );
    let plan_name = state
        .catalog
        .plan(&verdict.plan_id)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let subscription = verdict
        .subscription_id
        .as_ref()
        .and_then(|id| {
            stored
                .subscriptions
                .iter()
                .find(|s| &s.stripe_subscription_id == id)
        })
        .cloned();
    Ok(StatusView {
        access: verdict,
        plan_name,
        subscription,
    })
}
