//! `GET /v1/subscriptions`: every stored subscription and one-time purchase, newest first, by
//! keyset over both tables (`(created, id)` descending: a page starts after the last record of
//! the previous one, so records added meanwhile neither shift nor repeat it).

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{purchases, subscriptions};
use super::state::{PurchaseRow, SubscriptionRow};
use super::DbConnection;

/// Which subjects a listing covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Every subject.
    Any,
    /// The user's own (`user:<id>`) and their memberships in any tenant.
    User(String),
    /// The tenant's (`tenant:<id>`) and its memberships.
    Tenant(String),
    /// Exactly this subject key (a user in one tenant: `membership:<tenant>:<user>`).
    Subject(String),
}

/// What to list.
#[derive(Debug, Clone)]
pub struct Filter {
    pub holder: Holder,
    pub plan_id: Option<String>,
    /// A subscription status (`active`, ...) or a purchase status (`paid`, ...).
    pub status: Option<String>,
    /// Only records older than this one, in listing order `(created, id)` descending.
    pub before: Option<(NaiveDateTime, String)>,
    pub limit: i64,
}

/// A stored record, newest first.
#[derive(Debug, Clone)]
pub enum Listed {
    // Boxed: the rows differ much in size, and a page holds many.
    Subscription(Box<SubscriptionRow>),
    Purchase(Box<PurchaseRow>),
}

impl Listed {
    /// When Stripe created it: the listing's order, with the id.
    pub fn created(&self) -> NaiveDateTime {
        match self {
            Listed::Subscription(s) => s.stripe_created_at,
            Listed::Purchase(p) => p.purchased_at,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Listed::Subscription(s) => &s.stripe_subscription_id,
            Listed::Purchase(p) => &p.checkout_session_id,
        }
    }
}

/// `LIKE` text matching `value` literally (its `%`, `_` and `\` escaped with `\`).
fn literal(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

impl Holder {
    /// The subject key it covers exactly, and the `LIKE` pattern (escaped with `\`) of the
    /// memberships it covers too; `(None, None)` for every subject.
    pub fn keys(&self) -> (Option<String>, Option<String>) {
        let escape = crate::billing::subject::escape_id;
        match self {
            Holder::Any => (None, None),
            Holder::User(user) => (
                Some(format!("user:{}", escape(user))),
                Some(format!("membership:%:{}", literal(&escape(user)))),
            ),
            Holder::Tenant(tenant) => (
                Some(format!("tenant:{}", escape(tenant))),
                Some(format!("membership:{}:%", literal(&escape(tenant)))),
            ),
            Holder::Subject(key) => (Some(key.clone()), None),
        }
    }
}

/// Up to `filter.limit` records, newest first: the newest of each table's own page, merged.
pub fn list(conn: &mut DbConnection, filter: &Filter) -> anyhow::Result<Vec<Listed>> {
    let (exact, pattern) = filter.holder.keys();

    let mut subs = subscriptions::table
        .select(SubscriptionRow::as_select())
        .into_boxed();
    let mut buys = purchases::table
        .select(PurchaseRow::as_select())
        .into_boxed();
    match (&exact, &pattern) {
        (Some(exact), Some(pattern)) => {
            subs = subs.filter(
                subscriptions::subject
                    .eq(exact.clone())
                    .or(subscriptions::subject.like(pattern.clone()).escape('\\')),
            );
            buys = buys.filter(
                purchases::subject
                    .eq(exact.clone())
                    .or(purchases::subject.like(pattern.clone()).escape('\\')),
            );
        }
        (Some(exact), None) => {
            subs = subs.filter(subscriptions::subject.eq(exact.clone()));
            buys = buys.filter(purchases::subject.eq(exact.clone()));
        }
        _ => {}
    }
    if let Some(plan) = &filter.plan_id {
        subs = subs.filter(subscriptions::plan_id.eq(plan.clone()));
        buys = buys.filter(purchases::plan_id.eq(plan.clone()));
    }
    if let Some(status) = &filter.status {
        subs = subs.filter(subscriptions::status.eq(status.clone()));
        buys = buys.filter(purchases::status.eq(status.clone()));
    }
    if let Some((at, id)) = &filter.before {
        subs = subs.filter(
            subscriptions::stripe_created_at
                .lt(*at)
                .or(subscriptions::stripe_created_at
                    .eq(*at)
                    .and(subscriptions::stripe_subscription_id.lt(id.clone()))),
        );
        buys = buys.filter(
            purchases::purchased_at.lt(*at).or(purchases::purchased_at
                .eq(*at)
                .and(purchases::checkout_session_id.lt(id.clone()))),
        );
    }
    let subs: Vec<SubscriptionRow> = subs
        .order((
            subscriptions::stripe_created_at.desc(),
            subscriptions::stripe_subscription_id.desc(),
        ))
        .limit(filter.limit)
        .load(conn)?;
    let buys: Vec<PurchaseRow> = buys
        .order((
            purchases::purchased_at.desc(),
            purchases::checkout_session_id.desc(),
        ))
        .limit(filter.limit)
        .load(conn)?;
    let mut all: Vec<Listed> = subs
        .into_iter()
        .map(|s| Listed::Subscription(Box::new(s)))
        .chain(buys.into_iter().map(|p| Listed::Purchase(Box::new(p))))
        .collect();
    all.sort_by(|a, b| (b.created(), b.id()).cmp(&(a.created(), a.id())));
    all.truncate(usize::try_from(filter.limit).unwrap_or(0));
    Ok(all)
}
