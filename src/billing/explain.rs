//! Why a user has (or lacks) access: every subject considered for them (user, membership,
//! tenant), every source each holds (subscriptions, purchases, grants) with the verdict that
//! source alone gives, each subject's verdict, which one stands and why, and when the answer
//! next changes by itself. The same rules as [`access::evaluate`] and [`scope::strongest`],
//! applied source by source: support's answer to "why can't this user export?".

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::access::{self, Access, AccessPolicy, Reason};
use super::catalog::{Catalog, PlanKind};
use super::facts::{SubjectFacts, SubscriptionStatus};
use super::quota::{self, BillingPeriod};
use super::scope::{self, Scope};
use super::subject::Subject;

/// One subject to consider, with what is stored of it.
pub struct Considered<'a> {
    pub scope: Scope,
    pub subject: &'a Subject,
    pub facts: &'a SubjectFacts,
    /// The Checkout Session of each of `facts.purchases`, in the same order.
    pub purchase_ids: &'a [String],
    /// The user's exemption (the first subject only): listed in `exemptions.subjects`, or an
    /// exempt role their own token last showed.
    pub listed_exempt: bool,
    pub role_exempt: bool,
}

/// The whole explanation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Explanation {
    /// The time every verdict was taken at.
    pub evaluated_at: DateTime<Utc>,
    /// `false`: billing is off (`saas = false`) and everything is allowed.
    pub saas: bool,
    pub subjects: Vec<SubjectExplained>,
    /// The subject whose verdict stands (its `key`).
    #[schema(example = "membership:acme:alice")]
    pub standing: String,
    /// Why that one stands.
    #[schema(
        example = "the highest-ranked plan with access among the subjects: `pro` (rank 10), held by the membership"
    )]
    pub why: String,
    pub answer: Answer,
    /// What ends by itself, soonest first (a grace period, a trial, a canceled period, a grant,
    /// a quota window): each may change the answer.
    pub upcoming: Vec<Upcoming>,
    /// The first of `upcoming`: when the answer may next change without any call or webhook.
    pub next_change_at: Option<DateTime<Utc>>,
}

/// The answer as `GET /v1/entitlements` gives it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Answer {
    pub access: bool,
    pub reason: Reason,
    pub plan: String,
    pub features: Vec<String>,
    /// Whose grant decided: `user`, `membership` or `tenant`.
    pub granted_by: Scope,
    /// The feature asked about, if one was.
    pub feature: Option<String>,
    pub allowed: Option<bool>,
    /// As `GET /v1/entitlements?feature=` says it (`not_in_plan`, `unknown_feature`, or the
    /// access reason).
    #[schema(example = "not_in_plan")]
    pub feature_reason: Option<String>,
}

/// One subject considered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubjectExplained {
    /// `user:<id>`, `membership:<tenant>:<user>` or `tenant:<id>`.
    #[schema(example = "user:alice")]
    pub key: String,
    pub scope: Scope,
    /// The user's exemption (`null` for a tenant or membership).
    pub exemption: Option<ExemptionExplained>,
    pub sources: Vec<SourceExplained>,
    /// The subject's verdict, all its sources together: the highest-ranked plan with access
    /// (a paid one before a grant of the same rank); without one, the latest refusal explains.
    pub verdict: VerdictExplained,
    /// The source that decided the verdict (its `id`), if one did.
    pub decided_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExemptionExplained {
    /// Listed in `exemptions.subjects`.
    pub listed: bool,
    /// The user's own token last showed an exempt role (`exemptions.roles`).
    pub role: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerdictExplained {
    pub access: bool,
    pub reason: Reason,
    pub plan: String,
    pub grace_until: Option<DateTime<Utc>>,
    pub lifetime: bool,
}

impl VerdictExplained {
    fn of(a: &Access) -> VerdictExplained {
        VerdictExplained {
            access: a.access,
            reason: a.reason,
            plan: a.plan_id.clone(),
            grace_until: a.grace_until,
            lifetime: a.lifetime,
        }
    }
}

/// One subscription, purchase or grant of a subject.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceExplained {
    /// `subscription`, `purchase` or `grant`.
    #[schema(example = "subscription")]
    pub kind: String,
    /// The subscription's, Checkout Session's or grant's id.
    #[schema(example = "sub_1NvFq2")]
    pub id: String,
    /// The plan it is for (`null`: a subscription whose price is not in the catalog).
    pub plan: Option<String>,
    /// Stripe's status of a subscription; `paid`, `refunded` or `disputed` for a purchase;
    /// `active` or `ended` for a grant.
    #[schema(example = "active")]
    pub status: String,
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub cancel_at: Option<DateTime<Utc>>,
    /// A grant's end.
    pub until: Option<DateTime<Utc>>,
    /// Whether this source alone grants paid access now, and why (`null` for a credit pack,
    /// which adds to a quota and grants no plan).
    pub grants_access: bool,
    pub reason: Option<Reason>,
}

/// Something that ends by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Upcoming {
    pub at: DateTime<Utc>,
    /// `grace_end`, `trial_end`, `period_end` (a subscription canceled at period end),
    /// `cancel_at`, `collection_resumes`, `plan_change` (a change scheduled for the period end),
    /// `grant_end` or `quota_reset`.
    #[schema(example = "grace_end")]
    pub what: String,
    /// The subject it belongs to.
    pub subject: String,
    /// The subscription or grant (its id), or the quota (its key).
    pub of: String,
}

/// Explains the actor's answer from the subjects considered (in `Actor::subjects` order: the
/// user first), for `feature` if one is asked about.
pub fn explain(
    catalog: &Catalog,
    policy: AccessPolicy,
    considered: &[Considered<'_>],
    feature: Option<&str>,
    now: DateTime<Utc>,
) -> Explanation {
    let verdicts: Vec<Access> = considered
        .iter()
        .enumerate()
        .map(|(i, c)| {
            access::evaluate(
                catalog,
                policy,
                &c.facts.subscriptions,
                &c.facts.purchases,
                &c.facts.grants,
                i == 0 && (c.listed_exempt || c.role_exempt),
                now,
            )
        })
        .collect();
    let found = scope::strongest(catalog, &verdicts.iter().collect::<Vec<_>>());
    let subjects_in_order: Vec<(Scope, Subject)> = considered
        .iter()
        .map(|c| (c.scope, c.subject.clone()))
        .collect();
    let chosen = found.unwrap_or_else(|| scope::free_subject(catalog, &subjects_in_order));
    let standing = &verdicts[chosen];
    let who = |i: usize| considered[i].scope.as_str();
    let rank = |plan: &str| catalog.plan(plan).map_or(0, |p| p.rank);
    let why = match standing.reason {
        Reason::SaasDisabled => "billing is off (saas = false): everything is allowed".to_owned(),
        Reason::Exempt => {
            "the user is exempt (exemptions.subjects, or an exempt role in their token): everything is allowed".to_owned()
        }
        _ if standing.access => format!(
            "the highest-ranked plan with access among the subjects: `{}` (rank {}), held by the {}",
            standing.plan_id,
            rank(&standing.plan_id),
            who(chosen)
        ),
        Reason::Free => format!(
            "no subject holds a paid plan or a refusal to explain: the free plan, held by the {} (the free plan's scope)",
            who(chosen)
        ),
        reason => format!(
            "no subject has access; the {}'s `{}` explains why (the first subject with a refusal)",
            who(chosen),
            reason.as_str()
        ),
    };
    let subjects: Vec<SubjectExplained> = considered
        .iter()
        .zip(&verdicts)
        .enumerate()
        .map(|(i, (c, v))| explain_subject(catalog, policy, c, v, i == 0, now))
        .collect();
    let verdict = standing.allows(catalog, feature.unwrap_or_default());
    let answer = Answer {
        access: standing.access,
        reason: standing.reason,
        plan: standing.plan_id.clone(),
        features: standing.features.clone(),
        granted_by: considered[chosen].scope,
        feature: feature.map(str::to_owned),
        allowed: feature.map(|_| verdict.allowed),
        feature_reason: feature.map(|_| verdict.reason.as_str().to_owned()),
    };
    let mut upcoming: Vec<Upcoming> = considered
        .iter()
        .zip(&verdicts)
        .flat_map(|(c, v)| ends(c, v, now))
        .collect();
    // The quota windows of the grant that stands.
    let billing = standing
        .subscription_id
        .as_deref()
        .and_then(|id| considered[chosen].facts.subscription(id))
        .filter(|_| standing.access)
        .and_then(|s| {
            Some(BillingPeriod {
                start: s.current_period_start?,
                end: s.current_period_end,
            })
        });
    for applied in quota::applied(
        catalog,
        standing,
        &considered[chosen].facts.purchases,
        billing,
        now,
    ) {
        if let Some(at) = applied.window.resets_at.filter(|at| *at > now) {
            upcoming.push(Upcoming {
                at,
                what: "quota_reset".into(),
                subject: considered[chosen].subject.key(),
                of: applied.key,
            });
        }
    }
    upcoming.sort_by(|a, b| a.at.cmp(&b.at).then(a.what.cmp(&b.what)));
    upcoming.dedup();
    Explanation {
        evaluated_at: now,
        saas: policy.saas_enabled,
        next_change_at: upcoming.first().map(|u| u.at),
        subjects,
        standing: considered[chosen].subject.key(),
        why,
        answer,
        upcoming,
    }
}

fn explain_subject(
    catalog: &Catalog,
    policy: AccessPolicy,
    c: &Considered<'_>,
    verdict: &Access,
    is_user: bool,
    now: DateTime<Utc>,
) -> SubjectExplained {
    let alone = |subs: &[_], purchases: &[_], grants: &[_]| {
        access::evaluate(catalog, policy, subs, purchases, grants, false, now)
    };
    let mut sources = Vec::new();
    for s in &c.facts.subscriptions {
        let v = alone(std::slice::from_ref(s), &[], &[]);
        sources.push(SourceExplained {
            kind: "subscription".into(),
            id: s.id.clone(),
            plan: s.plan_id.clone(),
            status: s.status.as_str().to_owned(),
            current_period_start: s.current_period_start,
            current_period_end: s.current_period_end,
            trial_end: s.trial_end,
            cancel_at_period_end: s.cancel_at_period_end,
            cancel_at: s.cancel_at,
            until: None,
            grants_access: v.access,
            reason: Some(v.reason),
        });
    }
    for (i, p) in c.facts.purchases.iter().enumerate() {
        let lifetime = p.kind == PlanKind::Lifetime;
        let v = alone(&[], std::slice::from_ref(p), &[]);
        sources.push(SourceExplained {
            kind: "purchase".into(),
            id: c.purchase_ids.get(i).cloned().unwrap_or_default(),
            plan: Some(p.plan_id.clone()),
            status: p.status.as_str().to_owned(),
            current_period_start: None,
            current_period_end: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            until: None,
            grants_access: lifetime && v.access,
            reason: lifetime.then_some(v.reason),
        });
    }
    for g in &c.facts.grants {
        let v = alone(&[], &[], std::slice::from_ref(g));
        let ended = g.until.is_some_and(|until| until <= now);
        sources.push(SourceExplained {
            kind: "grant".into(),
            id: g.id.clone(),
            plan: Some(g.plan_id.clone()),
            status: if ended { "ended" } else { "active" }.into(),
            current_period_start: None,
            current_period_end: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            until: g.until,
            grants_access: v.access,
            reason: Some(if v.access { v.reason } else { Reason::Free }),
        });
    }
    let decided_by = verdict
        .subscription_id
        .clone()
        .or_else(|| verdict.grant.as_ref().map(|g| g.id.clone()))
        .or_else(|| {
            // A lifetime verdict (or its refund) comes from the newest lifetime purchase of
            // its plan.
            matches!(verdict.reason, Reason::Lifetime | Reason::Refunded)
                .then(|| {
                    c.facts
                        .purchases
                        .iter()
                        .zip(c.purchase_ids)
                        .filter(|(p, _)| p.kind == PlanKind::Lifetime)
                        .filter(|(p, _)| !verdict.access || p.plan_id == verdict.plan_id)
                        .max_by_key(|(p, _)| p.purchased_at)
                        .map(|(_, id)| id.clone())
                })
                .flatten()
        });
    SubjectExplained {
        key: c.subject.key(),
        scope: c.scope,
        exemption: is_user.then_some(ExemptionExplained {
            listed: c.listed_exempt,
            role: c.role_exempt,
        }),
        sources,
        verdict: VerdictExplained::of(verdict),
        decided_by,
    }
}

/// What of a subject ends by itself after `now`.
fn ends(c: &Considered<'_>, verdict: &Access, now: DateTime<Utc>) -> Vec<Upcoming> {
    let key = c.subject.key();
    let mut out = Vec::new();
    let mut push = |at: Option<DateTime<Utc>>, what: &str, of: &str| {
        if let Some(at) = at.filter(|at| *at > now) {
            out.push(Upcoming {
                at,
                what: what.into(),
                subject: key.clone(),
                of: of.into(),
            });
        }
    };
    if let Some(id) = &verdict.subscription_id {
        push(verdict.grace_until, "grace_end", id);
    }
    for s in c.facts.subscriptions.iter().filter(|s| s.status.stands()) {
        if s.status == SubscriptionStatus::Trialing {
            push(s.trial_end, "trial_end", &s.id);
        }
        push(s.cancel_at, "cancel_at", &s.id);
        if s.cancel_at_period_end {
            push(s.current_period_end, "period_end", &s.id);
        }
        push(
            s.pause_collection.as_ref().and_then(|p| p.resumes_at),
            "collection_resumes",
            &s.id,
        );
        if !s.cancel_at_period_end {
            push(
                s.scheduled_change.as_ref().map(|c| c.at),
                "plan_change",
                &s.id,
            );
        }
    }
    for g in &c.facts.grants {
        push(g.until, "grant_end", &g.id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::facts::{GrantFacts, PurchaseFacts, PurchaseStatus, SubscriptionFacts};
    use crate::billing::test_support::{at, catalog, policy};

    fn grant(id: &str, plan: &str, until: Option<DateTime<Utc>>) -> GrantFacts {
        GrantFacts {
            id: id.into(),
            plan_id: plan.into(),
            until,
            created_at: at(1),
        }
    }

    fn subjects() -> Vec<Subject> {
        vec![
            Subject::user("alice"),
            Subject::Membership {
                tenant_id: "acme".into(),
                user_id: "alice".into(),
            },
            Subject::Tenant {
                tenant_id: "acme".into(),
            },
        ]
    }

    fn considered<'a>(subjects: &'a [Subject], facts: &'a [SubjectFacts]) -> Vec<Considered<'a>> {
        static IDS: [String; 0] = [];
        [Scope::User, Scope::Membership, Scope::Tenant]
            .into_iter()
            .zip(subjects)
            .zip(facts)
            .map(|((scope, subject), facts)| Considered {
                scope,
                subject,
                facts,
                purchase_ids: &IDS,
                listed_exempt: false,
                role_exempt: false,
            })
            .collect()
    }

    #[test]
    fn three_grants_the_strongest_stands_and_each_says_what_it_gives() {
        let subjects = subjects();
        let facts = vec![
            SubjectFacts {
                grants: vec![grant("grant_user", "basic", Some(at(20)))],
                ..SubjectFacts::default()
            },
            SubjectFacts {
                grants: vec![grant("grant_member", "pro", Some(at(25)))],
                ..SubjectFacts::default()
            },
            SubjectFacts {
                grants: vec![grant("grant_old", "lifetime", Some(at(5)))],
                ..SubjectFacts::default()
            },
        ];
        let e = explain(
            &catalog(),
            policy(),
            &considered(&subjects, &facts),
            Some("export"),
            at(10),
        );
        assert_eq!(e.standing, "membership:acme:alice");
        assert!(
            e.why.contains("`pro`") && e.why.contains("membership"),
            "{}",
            e.why
        );
        assert_eq!(e.answer.granted_by, Scope::Membership);
        assert_eq!((e.answer.access, e.answer.reason), (true, Reason::Granted));
        assert_eq!(e.answer.allowed, Some(true));
        assert_eq!(e.subjects.len(), 3);
        assert_eq!(e.subjects[0].verdict.plan, "basic");
        assert_eq!(e.subjects[0].decided_by.as_deref(), Some("grant_user"));
        assert!(e.subjects[0].exemption.is_some() && e.subjects[1].exemption.is_none());
        let ended = &e.subjects[2].sources[0];
        assert_eq!(
            (ended.status.as_str(), ended.grants_access),
            ("ended", false)
        );
        assert_eq!(e.subjects[2].verdict.reason, Reason::Free);
        // Grants end on the 20th and 25th; the ended one is past. (The seat's daily credits
        // and period generations reset too.)
        let whats: Vec<(&str, &str)> = e
            .upcoming
            .iter()
            .filter(|u| u.what == "grant_end")
            .map(|u| (u.what.as_str(), u.of.as_str()))
            .collect();
        assert_eq!(
            whats,
            [("grant_end", "grant_user"), ("grant_end", "grant_member")]
        );
        assert_eq!(e.next_change_at, e.upcoming.first().map(|u| u.at));
        assert!(e.upcoming.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn a_missing_feature_and_a_grace_period_say_when_and_why() {
        let subjects = subjects();
        let past_due = SubscriptionFacts {
            id: "sub_1".into(),
            plan_id: Some("basic".into()),
            status: SubscriptionStatus::PastDue,
            payment_failed_at: Some(at(10)),
            current_period_start: Some(at(9)),
            current_period_end: Some(at(30)),
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            period_payment_revoked: None,
            created_at: at(9),
            price_interval: None,
            quantity: 1,
            manager_user_id: None,
            pause_collection: None,
            scheduled_change: Some(crate::billing::facts::ScheduledChange {
                price_id: "price_starter".into(),
                plan_id: Some("starter".into()),
                price_interval: None,
                quantity: 1,
                at: at(30),
            }),
        };
        let facts = vec![
            SubjectFacts {
                subscriptions: vec![past_due],
                purchases: vec![PurchaseFacts {
                    plan_id: "credits".into(),
                    kind: PlanKind::CreditPack,
                    status: PurchaseStatus::Paid,
                    purchased_at: at(2),
                }],
                ..SubjectFacts::default()
            },
            SubjectFacts::default(),
            SubjectFacts::default(),
        ];
        let now = at(10) + chrono::Duration::hours(2);
        let e = explain(
            &catalog(),
            policy(),
            &considered(&subjects, &facts),
            Some("export"),
            now,
        );
        assert_eq!(e.standing, "user:alice");
        assert_eq!(e.answer.reason, Reason::Grace);
        assert_eq!(e.answer.feature_reason.as_deref(), Some("not_in_plan"));
        assert_eq!(e.subjects[0].decided_by.as_deref(), Some("sub_1"));
        let pack = &e.subjects[0].sources[1];
        assert_eq!((pack.kind.as_str(), pack.reason), ("purchase", None));
        assert_eq!(e.upcoming[0].what, "grace_end");
        assert_eq!(e.next_change_at, Some(at(11)));
        // The downgrade waiting for the period's end is what comes after.
        assert!(
            e.upcoming
                .iter()
                .any(|u| (u.what.as_str(), u.at, u.of.as_str()) == ("plan_change", at(30), "sub_1")),
            "{:?}",
            e.upcoming
        );
    }

    #[test]
    fn nothing_held_is_the_free_plan_and_billing_off_allows_everything() {
        let subjects = subjects();
        let facts = vec![SubjectFacts::default(); 3];
        let e = explain(
            &catalog(),
            policy(),
            &considered(&subjects, &facts),
            None,
            at(10),
        );
        assert_eq!(e.answer.reason, Reason::Free);
        assert!(e.why.contains("free plan"), "{}", e.why);
        assert!(
            e.answer.allowed.is_none() && e.next_change_at.is_some(),
            "free quotas reset daily"
        );
        let off = AccessPolicy {
            saas_enabled: false,
            ..policy()
        };
        let e = explain(
            &catalog(),
            off,
            &considered(&subjects, &facts),
            Some("export"),
            at(10),
        );
        assert!(!e.saas);
        assert_eq!(
            (e.answer.reason, e.answer.allowed),
            (Reason::SaasDisabled, Some(true))
        );
    }
}
