//! Grants: plans given without a payment (comps, partner deals, support credits, a test user's
//! plan). Which plans may be given, for how long, and whether a grant is in force.

use chrono::{DateTime, Datelike, Utc};

use super::catalog::{Catalog, PlanKind};
use super::ids::{TenantId, UserId};
use super::scope::Scope;
use super::subject::Subject;

/// The longest note kept with a grant.
pub const MAX_NOTE_CHARS: usize = 500;

/// A grant's id: `grant_` and 32 lowercase hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantId(String);

impl GrantId {
    const PREFIX: &'static str = "grant_";

    /// The id of a new grant, from 128 random bits.
    pub fn from_bits(bits: u128) -> GrantId {
        GrantId(format!("{}{bits:032x}", Self::PREFIX))
    }

    pub fn parse(s: &str) -> Option<GrantId> {
        let hex = s.strip_prefix(Self::PREFIX)?;
        let valid = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        valid.then(|| GrantId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GrantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a grant may not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRefusal {
    /// No plan of that name.
    UnknownPlan,
    /// The free plan (everyone has it) or a credit pack (it adds quota, not a plan).
    NotGrantable { kind: &'static str },
    /// The plan is held by another kind of subject than the ids name: a user plan needs
    /// `user_id` alone, a tenant plan `tenant_id` alone, a membership plan both.
    WrongHolder { scope: Scope },
    /// `until` is not after now: the grant would never be in force.
    EndsInThePast,
    /// `until` is after the year 9999, which not every database stores: leave it out instead.
    EndsTooLate,
    /// The note is empty or longer than [`MAX_NOTE_CHARS`]: a grant says why it was made.
    BadNote,
}

/// What a grant asks for, as the caller named it.
#[derive(Debug, Clone, Copy)]
pub struct GrantAsk<'a> {
    pub user_id: Option<&'a UserId>,
    pub tenant_id: Option<&'a TenantId>,
    pub plan_id: &'a str,
    pub until: Option<DateTime<Utc>>,
    pub note: &'a str,
}

/// The subject that holds the grant `ask` describes at `now` (as the plan's scope says: a
/// user, a tenant or a membership), or why it may not be made.
pub fn holder(
    catalog: &Catalog,
    ask: GrantAsk<'_>,
    now: DateTime<Utc>,
) -> Result<Subject, GrantRefusal> {
    let Some(plan) = catalog.plan(ask.plan_id) else {
        return Err(GrantRefusal::UnknownPlan);
    };
    if plan.id == catalog.free_plan().id {
        return Err(GrantRefusal::NotGrantable { kind: "free" });
    }
    if plan.kind == PlanKind::CreditPack {
        return Err(GrantRefusal::NotGrantable {
            kind: "credit_pack",
        });
    }
    let subject = match (plan.scope, ask.user_id, ask.tenant_id) {
        (Scope::User, Some(user), None) => Subject::user(user),
        (Scope::Tenant, None, Some(tenant)) => Subject::Tenant {
            tenant_id: tenant.into(),
        },
        (Scope::Membership, Some(user), Some(tenant)) => Subject::Membership {
            tenant_id: tenant.into(),
            user_id: user.into(),
        },
        (scope, _, _) => return Err(GrantRefusal::WrongHolder { scope }),
    };
    if ask.until.is_some_and(|until| until <= now) {
        return Err(GrantRefusal::EndsInThePast);
    }
    if ask.until.is_some_and(|until| until.year() > 9999) {
        return Err(GrantRefusal::EndsTooLate);
    }
    let note = ask.note.trim();
    if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        return Err(GrantRefusal::BadNote);
    }
    Ok(subject)
}

/// Where a grant stands at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantStatus {
    Active,
    Ended,
    Revoked,
}

impl GrantStatus {
    pub const ALL: [GrantStatus; 3] = [
        GrantStatus::Active,
        GrantStatus::Ended,
        GrantStatus::Revoked,
    ];

    pub fn of(
        until: Option<DateTime<Utc>>,
        revoked_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> GrantStatus {
        if revoked_at.is_some() {
            GrantStatus::Revoked
        } else if until.is_some_and(|until| now >= until) {
            GrantStatus::Ended
        } else {
            GrantStatus::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Ended => "ended",
            GrantStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<GrantStatus> {
        GrantStatus::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::test_support::catalog;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
    }

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn ask<'a>(
        user: Option<&'a UserId>,
        plan: &'a str,
        until: Option<DateTime<Utc>>,
        note: &'a str,
    ) -> GrantAsk<'a> {
        GrantAsk {
            user_id: user,
            tenant_id: None,
            plan_id: plan,
            until,
            note,
        }
    }

    fn refusal(
        cat: &Catalog,
        plan: &str,
        until: Option<DateTime<Utc>>,
        note: &str,
        now: DateTime<Utc>,
    ) -> Option<GrantRefusal> {
        let user = alice();
        holder(cat, ask(Some(&user), plan, until, note), now).err()
    }

    #[test]
    fn paid_plans_may_be_given_for_ever_or_until_a_later_time() {
        let cat = catalog();
        for plan in ["basic", "pro", "lifetime"] {
            assert_eq!(refusal(&cat, plan, None, "partner deal", now()), None);
            let later = Some(now() + Duration::seconds(1));
            assert_eq!(refusal(&cat, plan, later, "comp", now()), None);
        }
        let user = alice();
        assert_eq!(
            holder(&cat, ask(Some(&user), "pro", None, "comp"), now()),
            Ok(Subject::user("alice"))
        );
    }

    #[test]
    fn the_plans_scope_says_who_holds_the_grant() {
        let mut cat = catalog();
        let (user, tenant) = (alice(), TenantId::parse("acme").unwrap());
        let both = |plan| GrantAsk {
            user_id: Some(&user),
            tenant_id: Some(&tenant),
            plan_id: plan,
            until: None,
            note: "deal",
        };
        // A user plan: the user alone.
        assert_eq!(
            holder(&cat, both("pro"), now()),
            Err(GrantRefusal::WrongHolder { scope: Scope::User })
        );
        let tenant_only = GrantAsk {
            user_id: None,
            ..both("pro")
        };
        assert_eq!(
            holder(&cat, tenant_only, now()),
            Err(GrantRefusal::WrongHolder { scope: Scope::User })
        );
        cat.set_scope_for_tests("pro", Scope::Tenant);
        assert_eq!(
            holder(&cat, tenant_only, now()),
            Ok(Subject::Tenant {
                tenant_id: "acme".into()
            })
        );
        assert_eq!(
            holder(&cat, both("pro"), now()),
            Err(GrantRefusal::WrongHolder {
                scope: Scope::Tenant
            })
        );
        cat.set_scope_for_tests("pro", Scope::Membership);
        assert_eq!(
            holder(&cat, both("pro"), now()),
            Ok(Subject::Membership {
                tenant_id: "acme".into(),
                user_id: "alice".into()
            })
        );
        assert_eq!(
            holder(&cat, tenant_only, now()),
            Err(GrantRefusal::WrongHolder {
                scope: Scope::Membership
            })
        );
        let nobody = GrantAsk {
            user_id: None,
            tenant_id: None,
            ..both("basic")
        };
        assert_eq!(
            holder(&cat, nobody, now()),
            Err(GrantRefusal::WrongHolder { scope: Scope::User })
        );
    }

    #[test]
    fn what_cannot_be_given_says_why() {
        let cat = catalog();
        assert_eq!(
            refusal(&cat, "platinum", None, "x", now()),
            Some(GrantRefusal::UnknownPlan)
        );
        assert_eq!(
            refusal(&cat, "free", None, "x", now()),
            Some(GrantRefusal::NotGrantable { kind: "free" })
        );
        assert_eq!(
            refusal(&cat, "credits", None, "x", now()),
            Some(GrantRefusal::NotGrantable {
                kind: "credit_pack"
            })
        );
        for until in [now(), now() - Duration::days(1)] {
            assert_eq!(
                refusal(&cat, "pro", Some(until), "x", now()),
                Some(GrantRefusal::EndsInThePast)
            );
        }
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            refusal(&cat, "pro", Some(far), "x", now()),
            Some(GrantRefusal::EndsTooLate)
        );
        for note in ["", "   ", &"n".repeat(MAX_NOTE_CHARS + 1)] {
            assert_eq!(
                refusal(&cat, "pro", None, note, now()),
                Some(GrantRefusal::BadNote)
            );
        }
        assert_eq!(
            refusal(&cat, "pro", None, &"é".repeat(MAX_NOTE_CHARS), now()),
            None
        );
    }

    #[test]
    fn grant_ids_are_prefixed_lowercase_hex() {
        let id = GrantId::from_bits(0xabc);
        assert_eq!(id.as_str(), "grant_00000000000000000000000000000abc");
        assert_eq!(GrantId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "grant_",
            "grant_00000000000000000000000000000ABC",
            "grant_0000000000000000000000000000abc",
            "grant_00000000000000000000000000000abcd",
            "gran_00000000000000000000000000000abc",
            "grant_0000000000000000000000000000 abc",
        ] {
            assert_eq!(GrantId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_grant_is_active_until_it_ends_or_is_revoked() {
        let later = Some(now() + Duration::hours(1));
        assert_eq!(GrantStatus::of(None, None, now()), GrantStatus::Active);
        assert_eq!(GrantStatus::of(later, None, now()), GrantStatus::Active);
        assert_eq!(
            GrantStatus::of(Some(now()), None, now()),
            GrantStatus::Ended
        );
        assert_eq!(
            GrantStatus::of(later, Some(now()), now()),
            GrantStatus::Revoked
        );
        for status in GrantStatus::ALL {
            assert_eq!(GrantStatus::parse(status.as_str()), Some(status));
        }
    }
}
