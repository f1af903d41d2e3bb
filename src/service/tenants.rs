//! Tenants: which tenant a caller acts in, who manages a tenant's subscription, and what
//! removing a tenant or a member cancels on Stripe.

use chrono::{DateTime, Utc};

use crate::billing::events::{Event, TenantRemovedData};
use crate::billing::ids::{TenantId, UserId};
use crate::billing::scope::Scope;
use crate::billing::subject::Subject;
use crate::db::audit::{self, Entry};
use crate::db::state::SubscriptionRow;
use crate::db::{self, customers, from_db_time};
use crate::state::AppState;
use crate::stripe::{CustomerId, SubscriptionId};

use super::error::ServiceError;
use super::events::{AppendedEvents, Emitter};
use super::gateway::{fresh_state, subscription_id};
use super::gateway::{gateway_error, stripe};
use super::sync::{sync_customer, SyncCause};

/// What a removal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub tenant_id: String,
    /// Set when a member was removed.
    pub user_id: Option<String>,
    /// When the removal was first recorded (a retry keeps it).
    pub removed_at: DateTime<Utc>,
    /// Subscriptions this call canceled on Stripe (empty on a retry that finds nothing left).
    pub canceled_subscriptions: Vec<String>,
}

const REMOVAL_COMMENT: &str = "removed from the product (Tollgate)";

/// Removes a tenant: records it, then cancels on Stripe every standing subscription of the
/// tenant and of its memberships. Safe to repeat: a call after a Stripe failure finishes what
/// the first one started.
pub async fn remove_tenant(
    state: &AppState,
    tenant_id: &TenantId,
) -> Result<Removal, ServiceError> {
    const SOURCE: &str = "api:tenants.delete";
    let tenant_id = tenant_id.as_str();
    let tenant = Subject::Tenant {
        tenant_id: tenant_id.to_owned(),
    };
    let (t, tid, now) = (tenant.clone(), tenant_id.to_owned(), state.now());
    let emitter = Emitter::of(state, &tenant);
    let removal = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                // A tenant Tollgate holds nothing for (no customer, no membership) has nothing
                // to cancel: recording its removal would refuse its first checkout for ever.
                let rows = customers::of_tenant(conn, &tid)?;
                if rows.is_empty() {
                    return Ok(None);
                }
                // The tenant's row first (it may not exist yet), then its memberships.
                let mut appended = AppendedEvents::default();
                let removed_at = mark(conn, &t, SOURCE, now, &emitter, &mut appended)?;
                for row in &rows {
                    if let Some(member) = Subject::parse_key(&row.subject).filter(|s| *s != t) {
                        mark(conn, &member, SOURCE, now, &emitter, &mut appended)?;
                    }
                }
                Ok(Some((removed_at, rows, appended)))
            })
        })
        .await?;
    let removal = removal.map(|(at, rows, appended)| {
        appended.committed(state);
        (at, rows)
    });
    let (removed_at, rows) = removal.ok_or_else(|| {
        ServiceError::not_found(
            "tenant_not_found",
            format!("Tollgate holds no billing record of tenant `{tenant_id}`: nothing to cancel, nothing recorded"),
        )
    })?;
    let mut canceled = Vec::new();
    for row in rows {
        let Some(customer_id) = row.stripe_customer_id else {
            continue;
        };
        let Some(subject) = Subject::parse_key(&row.subject) else {
            continue;
        };
        canceled.extend(cancel_standing(state, &subject, &customer_id, SOURCE, |_| true).await?);
    }
    Ok(Removal {
        tenant_id: tenant_id.to_owned(),
        user_id: None,
        removed_at,
        canceled_subscriptions: canceled,
    })
}

/// Removes a member from a tenant: cancels the membership's subscription and, when the member
/// is the billing manager of the tenant's subscription, that one too (no one else may manage
/// it). Safe to repeat.
pub async fn remove_member(
    state: &AppState,
    tenant_id: &TenantId,
    user_id: &UserId,
) -> Result<Removal, ServiceError> {
    const SOURCE: &str = "api:tenants.members.delete";
    let (tenant_id, user_id) = (tenant_id.as_str(), user_id.as_str());
    let membership = Subject::Membership {
        tenant_id: tenant_id.to_owned(),
        user_id: user_id.to_owned(),
    };
    let tenant = Subject::Tenant {
        tenant_id: tenant_id.to_owned(),
    };
    let (m, t, now) = (membership.clone(), tenant.clone(), state.now());
    let emitter = Emitter::of(state, &membership);
    let (removed_at, rows, appended) = state
        .db
        .run(move |conn| {
            db::write_transaction(conn, |conn| {
                let mut appended = AppendedEvents::default();
                let at = mark(conn, &m, SOURCE, now, &emitter, &mut appended)?;
                let rows = [customers::find(conn, &m)?, customers::find(conn, &t)?];
                Ok((at, rows, appended))
            })
        })
        .await?;
    appended.committed(state);
    let mut canceled = Vec::new();
    for row in rows.into_iter().flatten() {
        let (Some(customer_id), Some(subject)) =
            (row.stripe_customer_id, Subject::parse_key(&row.subject))
        else {
            continue;
        };
        // The membership's subscriptions all end; the tenant's only if the member manages it.
        let is_tenant = subject == tenant;
        let which =
            |s: &SubscriptionRow| !is_tenant || s.manager_user_id.as_deref() == Some(user_id);
        canceled.extend(cancel_standing(state, &subject, &customer_id, SOURCE, which).await?);
    }
    Ok(Removal {
        tenant_id: tenant_id.to_owned(),
        user_id: Some(user_id.to_owned()),
        removed_at,
        canceled_subscriptions: canceled,
    })
}

/// Records the removal once (with an audit row); returns when it was first recorded.
fn mark(
    conn: &mut db::DbConnection,
    subject: &Subject,
    source: &str,
    now: DateTime<Utc>,
    emitter: &Emitter,
    appended: &mut AppendedEvents,
) -> anyhow::Result<DateTime<Utc>> {
    if customers::mark_removed(conn, subject, now)? {
        let event = Event::tenant_removed(&TenantRemovedData {
            tenant_id: subject.tenant_id().map(str::to_owned),
            // The member removed; none when the tenant itself was.
            user_id: subject.user_id().map(str::to_owned),
            removed_at: now,
        });
        emitter.append(conn, &subject.key(), &event, now, appended)?;
        audit::record(
            conn,
            Entry {
                subject: &subject.key(),
                entity: Scope::of(subject).as_str(),
                entity_id: &subject.key(),
                action: "removed",
                changes: serde_json::json!({ "removed_at": now }),
                source,
            },
            now,
        )?;
    }
    let row = customers::find(conn, subject)?
        .ok_or_else(|| anyhow::anyhow!("customer row for {subject} vanished"))?;
    Ok(row.removed_at.map(from_db_time).unwrap_or(now))
}

/// Re-reads the customer from Stripe, cancels its standing subscriptions that `which` selects,
/// and re-reads again so that what is stored is what Stripe holds.
async fn cancel_standing(
    state: &AppState,
    subject: &Subject,
    customer_id: &str,
    source: &str,
    which: impl Fn(&SubscriptionRow) -> bool,
) -> Result<Vec<String>, ServiceError> {
    let stripe = stripe(state)?;
    let (_, stored) = fresh_state(state, subject, source).await?;
    let standing: Vec<String> = stored
        .subscriptions
        .iter()
        .filter(|s| s.subscription_status().stands() && which(s))
        .map(|s| s.stripe_subscription_id.clone())
        .collect();
    if standing.is_empty() {
        return Ok(standing);
    }
    for id in &standing {
        stripe
            .cancel_now(
                &SubscriptionId::parse(id).map_err(ServiceError::upstream)?,
                REMOVAL_COMMENT,
            )
            .await
            .map_err(gateway_error)?;
        tracing::info!(%subject, subscription = %id, "canceled: removed");
    }
    let customer_id = CustomerId::parse(customer_id).map_err(ServiceError::upstream)?;
    sync_customer(state, stripe, &customer_id, SyncCause::call(source))
        .await
        .map_err(ServiceError::upstream)?;
    Ok(standing)
}

/// Who manages a tenant's subscription after a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub tenant_id: String,
    pub manager_user_id: String,
    pub subscription_id: String,
}

/// Hands the tenant's standing subscription over to another member: only they may manage it
/// from now on. Recorded on Stripe (metadata `tollgate_manager`), then synced and audited.
pub async fn hand_over(
    state: &AppState,
    tenant_id: &TenantId,
    user_id: &UserId,
) -> Result<Handover, ServiceError> {
    const SOURCE: &str = "api:tenants.manager";
    let (tenant_id, user_id) = (tenant_id.as_str(), user_id.as_str());
    let tenant = Subject::Tenant {
        tenant_id: tenant_id.to_owned(),
    };
    let no_subscription = || {
        ServiceError::not_found(
            "no_subscription",
            format!("tenant `{tenant_id}` has no subscription to hand over"),
        )
    };
    let (customer_id, stored) = fresh_state(state, &tenant, SOURCE).await?;
    let customer_id = customer_id.ok_or_else(no_subscription)?;
    let sub = stored
        .subscriptions
        .into_iter()
        .find(|s| s.subscription_status().stands())
        .ok_or_else(no_subscription)?;
    let stripe = stripe(state)?;
    if sub.manager_user_id.as_deref() != Some(user_id) {
        stripe
            .set_manager(&subscription_id(&sub)?, user_id)
            .await
            .map_err(gateway_error)?;
        tracing::info!(subject = %tenant, subscription = %sub.stripe_subscription_id, "billing manager handed over");
        sync_customer(state, stripe, &customer_id, SyncCause::call(SOURCE))
            .await
            .map_err(ServiceError::upstream)?;
    }
    Ok(Handover {
        tenant_id: tenant_id.to_owned(),
        manager_user_id: user_id.to_owned(),
        subscription_id: sub.stripe_subscription_id,
    })
}
