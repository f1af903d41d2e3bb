//! Counts the SQL statements a webhook costs (used by `scripts/bench.sh`, not part of the
//! service): a Tollgate on PostgreSQL with the test suite's fake Stripe and identity provider
//! (`tests/api/helpers`), a subscriber whose Stripe customer has 100 charges, then two
//! deliveries, each counted through diesel's instrumentation on every connection Tollgate
//! opens:
//!
//! - an unchanged re-delivery: `customer.subscription.updated` under a new event id, with
//!   nothing changed on Stripe;
//! - a renewal: `invoice.paid` for the next period (a new period and a new charge).
//!
//! ```sh
//! TOLLGATE_TEST_POSTGRES_URL=postgres://root@127.0.0.1:5432 \
//!   cargo run --example webhook_statements -- report.md
//! ```
//!
//! Writes a markdown table to the file named (standard output without one).

#[allow(dead_code)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::sync::Mutex;

use diesel::connection::{Instrumentation, InstrumentationEvent};

/// Every statement run since the last [`take`], as its first line of SQL.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        // Transactions show as their own statements (`BEGIN`, `COMMIT`) too.
        let InstrumentationEvent::StartQuery { query, .. } = event else {
            return;
        };
        let sql = query.to_string();
        let sql = sql
            .split(" -- binds")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        STATEMENTS.lock().unwrap().push(sql);
    }))
}

fn take() -> Vec<String> {
    std::mem::take(&mut *STATEMENTS.lock().unwrap())
}

/// `INSERT INTO "payments"` → (`INSERT`, `payments`); `SELECT ... FROM "x"` → (`SELECT`, `x`).
fn kind(sql: &str) -> (&'static str, String) {
    let upper = sql.to_ascii_uppercase();
    let table_after = |word: &str| {
        upper
            .find(word)
            .map(|i| &sql[i + word.len()..])
            .and_then(|rest| rest.split_whitespace().next())
            .map(|t| {
                t.trim_matches(|c| c == '"' || c == '(' || c == ',')
                    .to_owned()
            })
            .unwrap_or_default()
    };
    if upper.starts_with("INSERT") {
        ("INSERT", table_after("INTO "))
    } else if upper.starts_with("UPDATE") {
        ("UPDATE", table_after("UPDATE "))
    } else if upper.starts_with("DELETE") {
        ("DELETE", table_after("FROM "))
    } else if upper.starts_with("SELECT") && upper.contains(" FROM ") {
        ("SELECT", table_after(" FROM "))
    } else {
        ("other", sql.chars().take(40).collect())
    }
}

fn row(label: &str, statements: &[String]) -> String {
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    let mut reads = 0;
    let mut other = 0;
    for sql in statements {
        match kind(sql) {
            ("INSERT" | "UPDATE" | "DELETE", table) => {
                *writes.entry(table).or_default() += 1;
            }
            ("SELECT", _) => reads += 1,
            _ => other += 1,
        }
    }
    let total_writes: usize = writes.values().sum();
    let billing_writes: usize = writes
        .iter()
        .filter(|(table, _)| table.as_str() != "stripe_events")
        .map(|(_, n)| n)
        .sum();
    let by_table = if writes.is_empty() {
        "none".to_owned()
    } else {
        writes
            .iter()
            .map(|(t, n)| format!("`{t}` {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "| {label} | {} | {reads} | {total_writes} | {billing_writes} | {by_table} | {other} |",
        statements.len()
    )
}

async fn deliver(app: &helpers::TestApp, event: serde_json::Value) -> Vec<String> {
    take();
    app.webhook_ok(&event).await;
    take()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    anyhow::ensure!(
        std::env::var("TOLLGATE_TEST_POSTGRES_URL").is_ok(),
        "set TOLLGATE_TEST_POSTGRES_URL (a PostgreSQL server URL): the counts are PostgreSQL's"
    );
    diesel::connection::set_default_instrumentation(record)?;
    let app = helpers::spawn_app().await;
    let sub_id = app.subscribed("user-1", "pro", "month").await;
    let sub = app.stripe.subscription(&sub_id);
    let customer = sub["customer"].as_str().unwrap_or_default().to_owned();
    app.stripe.add_charges(&customer, 99, 900);
    // Stored once, so that the deliveries below find the 100 charges on record.
    let first = deliver(
        &app,
        helpers::event("evt_first", "customer.subscription.updated", sub.clone()),
    )
    .await;

    let unchanged = deliver(
        &app,
        helpers::event("evt_unchanged", "customer.subscription.updated", sub),
    )
    .await;
    let renewal_invoice = app.stripe.renew(&sub_id);
    let renewal = deliver(
        &app,
        helpers::event("evt_renewal", "invoice.paid", renewal_invoice),
    )
    .await;

    let report = [
        "| delivery | statements | reads | writes | of which billing rows | writes by table | other (locks, BEGIN/COMMIT, pool checks) |".to_owned(),
        "|---|---:|---:|---:|---:|---|---:|".to_owned(),
        row("first sight of 99 more charges (`customer.subscription.updated`)", &first),
        row("unchanged re-delivery (`customer.subscription.updated`, new event id)", &unchanged),
        row("renewal (`invoice.paid`: a new period and a new charge)", &renewal),
    ]
    .join("\n");
    match std::env::args().nth(1) {
        Some(path) => std::fs::write(path, report + "\n")?,
        None => println!("{report}"),
    }
    if std::env::var("STATEMENTS_VERBOSE").is_ok() {
        for (name, list) in [("unchanged", &unchanged), ("renewal", &renewal)] {
            eprintln!("== {name}");
            for sql in list {
                eprintln!("{sql}");
            }
        }
    }
    Ok(())
}
