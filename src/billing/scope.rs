//! Subscription scopes: who a plan is bought for (a user, a whole tenant, or one membership),
//! and which of a user's grants gives access when several could.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{Access, Reason};
use super::catalog::Catalog;
use super::ids::{TenantId, UserId};
use super::subject::Subject;

/// Who a subscription is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One user, in every tenant.
    #[default]
    User,
    /// Every member of a tenant shares it; only the member who subscribed manages it.
    Tenant,
    /// One user in one tenant.
    Membership,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Tenant => "tenant",
            Scope::Membership => "membership",
        }
    }

    pub fn of(subject: &Subject) -> Scope {
        match subject {
            Subject::User { .. } => Scope::User,
            Subject::Tenant { .. } => Scope::Tenant,
            Subject::Membership { .. } => Scope::Membership,
        }
    }

    /// The subject that holds a plan of this scope for `actor`; `None` when the scope needs a
    /// tenant and the actor is not in one.
    pub fn subject(self, actor: &Actor) -> Option<Subject> {
        match (self, &actor.tenant_id) {
            (Scope::User, _) => Some(Subject::user(&actor.user_id)),
            (Scope::Tenant, Some(t)) => Some(Subject::Tenant {
                tenant_id: t.into(),
            }),
            (Scope::Membership, Some(t)) => Some(Subject::Membership {
                tenant_id: t.into(),
                user_id: (&actor.user_id).into(),
            }),
            (_, None) => None,
        }
    }
}

/// A user, possibly acting in a tenant: whom access is asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    pub tenant_id: Option<TenantId>,
}

impl Actor {
    pub fn new(user_id: UserId, tenant_id: Option<TenantId>) -> Actor {
        Actor { user_id, tenant_id }
    }

    /// Every subject that may grant this actor access, in order of preference on a tie: the
    /// user's own, then the membership, then the tenant.
    pub fn subjects(&self) -> Vec<(Scope, Subject)> {
        [Scope::User, Scope::Membership, Scope::Tenant]
            .into_iter()
            .filter_map(|scope| Some((scope, scope.subject(self)?)))
            .collect()
    }
}

/// Which of several verdicts (one per subject, in [`Actor::subjects`] order) stands for the
/// actor: one with access and the highest-ranked plan; without access anywhere, the first that
/// explains a refusal (a lapsed or unpaid subscription says more than `free`). `None` when
/// every verdict is plain `free`: then the free plan's own scope decides (see
/// [`free_subject`]).
pub fn strongest(catalog: &Catalog, verdicts: &[&Access]) -> Option<usize> {
    let rank = |a: &Access| catalog.plan(&a.plan_id).map_or(i32::MIN, |p| p.rank);
    let granting = verdicts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.access)
        // max_by_key keeps the last maximum; reversing keeps the first.
        .rev()
        .max_by_key(|(_, a)| rank(a))
        .map(|(i, _)| i);
    granting.or_else(|| verdicts.iter().position(|a| a.reason != Reason::Free))
}

/// Where the free plan is held when nothing else stands: the subject of the free plan's scope
/// (every workspace starts on Free, with the workspace's own free quotas), or the user's own
/// outside a tenant. An index into [`Actor::subjects`].
pub fn free_subject(catalog: &Catalog, subjects: &[(Scope, Subject)]) -> usize {
    let scope = catalog.free_plan().scope;
    subjects.iter().position(|(s, _)| *s == scope).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::test_support::{catalog, verdict};

    fn actor(user: &str, tenant: Option<&str>) -> Actor {
        Actor::new(
            UserId::parse(user).unwrap(),
            tenant.map(|t| TenantId::parse(t).unwrap()),
        )
    }

    #[test]
    fn subjects_follow_the_tenant() {
        let alone = actor("u1", None);
        assert_eq!(alone.subjects(), [(Scope::User, Subject::user("u1"))]);
        let in_tenant = actor("u1", Some("t1"));
        assert_eq!(
            in_tenant.subjects(),
            [
                (Scope::User, Subject::user("u1")),
                (
                    Scope::Membership,
                    Subject::Membership {
                        tenant_id: "t1".into(),
                        user_id: "u1".into()
                    }
                ),
                (
                    Scope::Tenant,
                    Subject::Tenant {
                        tenant_id: "t1".into()
                    }
                ),
            ]
        );
        assert_eq!(Scope::Tenant.subject(&alone), None);
        assert_eq!(Scope::Membership.subject(&alone), None);
        for (scope, subject) in in_tenant.subjects() {
            assert_eq!(Scope::of(&subject), scope);
        }
    }

    #[test]
    fn the_free_plan_is_held_where_its_scope_says() {
        let mut c = catalog();
        let in_tenant = actor("u1", Some("t1")).subjects();
        let alone = actor("u1", None).subjects();
        assert_eq!(free_subject(&c, &in_tenant), 0);
        c.set_free_plan_scope(Scope::Tenant);
        assert_eq!(free_subject(&c, &in_tenant), 2);
        assert_eq!(free_subject(&c, &alone), 0, "no tenant: the user's own");
        c.set_free_plan_scope(Scope::Membership);
        assert_eq!(free_subject(&c, &in_tenant), 1);
    }

    #[test]
    fn the_highest_ranked_grant_wins_and_ties_keep_the_first() {
        let c = catalog();
        let free = verdict(false, Reason::Free, "free");
        let pro = verdict(true, Reason::Active, "pro");
        let lifetime = verdict(true, Reason::Lifetime, "lifetime");
        let canceled = verdict(false, Reason::Canceled, "free");
        assert_eq!(strongest(&c, &[&free, &pro, &free]), Some(1));
        assert_eq!(strongest(&c, &[&pro, &free, &lifetime]), Some(2));
        assert_eq!(strongest(&c, &[&lifetime, &pro]), Some(0));
        let pro_trial = verdict(true, Reason::Trialing, "pro");
        assert_eq!(strongest(&c, &[&free, &pro_trial, &pro]), Some(1));
        // No access anywhere: the refusal with a cause explains, not `free`.
        assert_eq!(strongest(&c, &[&free, &free, &canceled]), Some(2));
        assert_eq!(strongest(&c, &[&free, &free]), None);
        assert_eq!(strongest(&c, &[]), None);
        // Access beats any refusal, whatever its plan.
        assert_eq!(strongest(&c, &[&canceled, &pro]), Some(1));
    }
}
