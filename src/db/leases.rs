//! Named leases across replicas (PostgreSQL; one SQLite process needs none): a row per held
//! name, taken and renewed by short statements, so that a holder keeps no connection and no
//! database lock while it waits on Stripe. Times are the database server's clock, which every
//! replica shares. See [`super::Database::with_customer_lock`].

use std::time::Duration;

use diesel::sql_types::{Double, Text};
use diesel::RunQueryDsl;

use super::DbConnection;

/// The database's current time, as stored times are: UTC without a zone.
const NOW: &str = "(clock_timestamp() AT TIME ZONE 'UTC')";

#[derive(diesel::QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    name: String,
}

fn pg(conn: &mut DbConnection) -> anyhow::Result<&mut diesel::PgConnection> {
    match conn {
        DbConnection::Pg(pg) => Ok(pg),
        DbConnection::Sqlite(_) => anyhow::bail!("leases are kept on PostgreSQL only"),
    }
}

/// Takes `name` for `holder` for `term` unless another holder's lease is still running;
/// answers whether it was taken.
pub fn take(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
    term: Duration,
) -> anyhow::Result<bool> {
    let sql = format!(
        "INSERT INTO leases (name, holder, leased_until) \
         VALUES ($1, $2, {NOW} + make_interval(secs => $3)) \
         ON CONFLICT (name) DO UPDATE \
           SET holder = EXCLUDED.holder, leased_until = EXCLUDED.leased_until \
           WHERE leases.leased_until <= {NOW} \
         RETURNING name"
    );
    let rows: Vec<Named> = diesel::sql_query(sql)
        .bind::<Text, _>(name)
        .bind::<Text, _>(holder)
        .bind::<Double, _>(term.as_secs_f64())
        .load(pg(conn)?)?;
    Ok(!rows.is_empty())
}

/// Extends `holder`'s lease of `name` to `term` from now; `false` when it no longer holds it.
pub fn renew(
    conn: &mut DbConnection,
    name: &str,
    holder: &str,
    term: Duration,
) -> anyhow::Result<bool> {
    let sql = format!(
        "UPDATE leases SET leased_until = {NOW} + make_interval(secs => $3) \
         WHERE name = $1 AND holder = $2 RETURNING name"
    );
    let rows: Vec<Named> = diesel::sql_query(sql)
        .bind::<Text, _>(name)
        .bind::<Text, _>(holder)
        .bind::<Double, _>(term.as_secs_f64())
        .load(pg(conn)?)?;
    Ok(!rows.is_empty())
}

/// Ends `holder`'s lease of `name` (nothing when it lapsed and another holder took it).
pub fn release(conn: &mut DbConnection, name: &str, holder: &str) -> anyhow::Result<()> {
    diesel::sql_query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind::<Text, _>(name)
        .bind::<Text, _>(holder)
        .execute(pg(conn)?)?;
    Ok(())
}

/// Inside a write transaction: fails unless `holder` still holds `name`, and keeps it held
/// until the transaction ends (the row stays locked, so no one takes the lease meanwhile).
pub fn confirm(conn: &mut DbConnection, name: &str, holder: &str) -> anyhow::Result<()> {
    let sql = format!(
        "UPDATE leases SET leased_until = leased_until \
         WHERE name = $1 AND holder = $2 AND leased_until > {NOW} RETURNING name"
    );
    let rows: Vec<Named> = diesel::sql_query(sql)
        .bind::<Text, _>(name)
        .bind::<Text, _>(holder)
        .load(pg(conn)?)?;
    anyhow::ensure!(
        !rows.is_empty(),
        "the lease `{name}` lapsed before the write (another replica may hold it now); \
         nothing was written"
    );
    Ok(())
}
