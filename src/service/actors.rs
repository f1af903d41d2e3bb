//! Who acts and who manages: the tenant an end user acts in, the subject whose billing they
//! manage, and whether they may manage a tenant's subscription.

use crate::billing::ids::TenantId;
use crate::billing::scope::Actor;
use crate::billing::subject::Subject;
use crate::db;
use crate::db::state::{SubjectState, SubscriptionRow};
use crate::identity::Caller;
use crate::state::AppState;

use super::error::ServiceError;

/// The end user, in the tenant they act in: the `tenant_id` they name, which their token's
/// tenant claim must list, or else the one tenant the claim names. A token naming several
/// tenants and no `tenant_id` acts as the user alone.
pub fn actor_for(caller: &Caller, requested: Option<TenantId>) -> Result<Actor, ServiceError> {
    let tenant_id = match requested {
        Some(t) => {
            if !caller.tenant_ids.contains(&t) {
                return Err(ServiceError::forbidden(
                    "tenant_not_allowed",
                    format!("your token does not make you a member of tenant `{t}`"),
                ));
            }
            Some(t)
        }
        None => match caller.tenant_ids.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
    };
    Ok(Actor::new(caller.subject.clone(), tenant_id))
}

/// Refuses an end user who is not the manager (`manager`) of the tenant's subscription.
pub fn require_manager(
    caller: &Caller,
    subject: &Subject,
    manager: Option<&str>,
) -> Result<(), ServiceError> {
    let Subject::Tenant { tenant_id } = subject else {
        return Ok(());
    };
    if manager == Some(caller.subject.as_str()) {
        return Ok(());
    }
    Err(ServiceError::forbidden(
        "not_billing_manager",
        match manager {
            Some(_) => format!(
                "only the member who subscribed manages tenant `{tenant_id}`'s subscription; \
                 other members read its status only"
            ),
            None => format!(
                "tenant `{tenant_id}`'s subscription has no billing manager on record; a \
                 service can name one (PUT /v1/tenants/{{tenant_id}}/manager)"
            ),
        },
    ))
}

/// The subject whose billing the actor manages: in a tenant, the tenant's, then the
/// membership's, then the user's own, whichever first has a subscription that stands and that
/// the actor may manage (a tenant's only as its billing manager); else the first with one
/// that stands (managing it is then refused); else the first with any billing record; else
/// the user's own.
pub(crate) async fn billing_subject(
    state: &AppState,
    actor: &Actor,
) -> Result<(Subject, SubjectState), ServiceError> {
    let mut candidates: Vec<Subject> = actor.subjects().into_iter().map(|(_, s)| s).collect();
    candidates.reverse();
    let mut loaded = state
        .db
        .run(move |conn| {
            candidates
                .into_iter()
                .map(|s| {
                    let stored = db::state::load(conn, &s.key())?;
                    Ok((s, stored))
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .await?;
    fn standing(st: &SubjectState) -> Option<&SubscriptionRow> {
        st.subscriptions
            .iter()
            .find(|s| s.subscription_status().stands())
    }
    let manageable = |subject: &Subject, st: &SubjectState| match subject {
        Subject::Tenant { .. } => standing(st)
            .is_some_and(|s| s.manager_user_id.as_deref() == Some(actor.user_id.as_str())),
        _ => standing(st).is_some(),
    };
    let any = |st: &SubjectState| !st.subscriptions.is_empty() || !st.purchases.is_empty();
    let pick = loaded
        .iter()
        .position(|(s, st)| manageable(s, st))
        .or_else(|| loaded.iter().position(|(_, st)| standing(st).is_some()))
        .or_else(|| loaded.iter().position(|(_, st)| any(st)));
    Ok(match pick {
        Some(i) => loaded.swap_remove(i),
        None => (Subject::user(&actor.user_id), SubjectState::default()),
    })
}
