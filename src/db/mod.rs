//! The database boundary: one diesel `MultiConnection` over PostgreSQL and SQLite, pooled with
//! r2d2, the backend picked from the URL scheme. The few statements that differ per backend
//! (upserts, locks) live here and nowhere else.

pub mod audit;
pub mod customers;
pub mod events;
pub mod grants;
pub mod leases;
pub mod licenses;
pub mod listing;
pub mod outbox;
mod pg_listen;
pub mod quotas;
pub mod remedies;
pub mod schema;
pub mod snapshot_cache;
pub mod snapshots;
pub mod state;
pub mod sync_jobs;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::expression::{AppearsOnTable, BoxableExpression};
use diesel::pg::PgConnection;
use diesel::query_builder::QueryFragment;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::{BoolExpressionMethods, Column, Connection, ExpressionMethods, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs the same diesel expression on whichever backend `conn` is (for statements the combined
/// connection cannot express, such as `ON CONFLICT`).
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::db::DbConnection::Pg($c) => $body,
            $crate::db::DbConnection::Sqlite($c) => $body,
        }
    };
}
pub(crate) use on_backend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

/// `column = $1 OR column = $2 ...`: what `column.eq_any(values)` means, written so that
/// PostgreSQL keeps the statement prepared. Through the combined connection diesel writes
/// `eq_any` as `IN ($1, $2)` and marks it never to be cached, so every call was parsed and
/// planned anew; this form is cached by its text, one statement per count of values.
/// `values` must not be empty.
pub(crate) fn any_of<'a, T, C>(
    column: C,
    values: &[&'a str],
) -> Box<dyn BoxableExpression<T, MultiBackend, SqlType = diesel::sql_types::Bool> + 'a>
where
    T: 'a,
    C: Column<Table = T, SqlType = diesel::sql_types::Text>
        + ExpressionMethods
        + Copy
        + AppearsOnTable<T>
        + QueryFragment<MultiBackend>
        + diesel::expression::ValidGrouping<(), IsAggregate = diesel::expression::is_aggregate::No>
        + 'a,
    diesel::dsl::Eq<C, &'a str>:
        BoxableExpression<T, MultiBackend, SqlType = diesel::sql_types::Bool>,
{
    assert!(!values.is_empty(), "any_of needs at least one value");
    let mut any: Box<dyn BoxableExpression<T, MultiBackend, SqlType = diesel::sql_types::Bool>> =
        Box::new(column.eq(values[0]));
    for value in &values[1..] {
        any = Box::new(any.or(column.eq(*value)));
    }
    any
}

/// Opens connections of the backend named by the URL scheme; never by trial and error.
pub struct ConnectionManager {
    backend: Backend,
    url: String,
}

impl ConnectionManager {
    fn new(url: &str) -> anyhow::Result<Self> {
        let backend = Backend::from_url(url)
            .context("database URL must start with sqlite:// or postgres://")?;
        let url = match backend {
            Backend::Postgres => url.to_owned(),
            Backend::Sqlite => sqlite_path(url).to_owned(),
        };
        Ok(ConnectionManager { backend, url })
    }
}

fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url)
}

/// A pooled connection, and when it was last given back to the pool after work that
/// succeeded (see [`ConnectionManager::is_valid`]). Dereferences to the connection.
pub struct Pooled {
    conn: DbConnection,
    /// `None` until it is given back after work that succeeded: it is pinged at its next
    /// check-out.
    returned_ok_at: Option<std::time::Instant>,
    /// The work it was checked out for failed (perhaps because the connection did).
    failed: bool,
}

impl std::ops::Deref for Pooled {
    type Target = DbConnection;
    fn deref(&self) -> &DbConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut DbConnection {
        &mut self.conn
    }
}

/// A connection given back this recently is taken again without a ping (HikariCP's "alive
/// bypass window"): a burst's many short check-outs each cost a round trip otherwise.
const PING_AFTER_IDLE: Duration = Duration::from_millis(500);

impl ManageConnection for ConnectionManager {
    type Connection = Pooled;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Pooled, r2d2::Error> {
        self.open().map(|conn| Pooled {
            conn,
            returned_ok_at: Some(std::time::Instant::now()),
            failed: false,
        })
    }

    /// The check-out test: diesel's ping, a `SELECT 1` prepared once per connection (a simple
    /// query would make PostgreSQL parse and plan it on every check-out), unless the connection
    /// was given back within [`PING_AFTER_IDLE`] after work that succeeded: it was working
    /// then. One whose work failed is always pinged (a connection the server dropped fails
    /// one caller, then is replaced).
    fn is_valid(&self, conn: &mut Pooled) -> Result<(), r2d2::Error> {
        if conn
            .returned_ok_at
            .is_some_and(|at| at.elapsed() < PING_AFTER_IDLE)
        {
            return Ok(());
        }
        diesel::r2d2::R2D2Connection::ping(&mut conn.conn).map_err(r2d2::Error::QueryError)
    }

    /// A connection given back inside a transaction it could not end is not reused.
    fn has_broken(&self, conn: &mut Pooled) -> bool {
        conn.returned_ok_at = (!conn.failed).then(std::time::Instant::now);
        conn.failed = false;
        diesel::r2d2::R2D2Connection::is_broken(&mut conn.conn)
    }
}

impl ConnectionManager {
    fn open(&self) -> Result<DbConnection, r2d2::Error> {
        match self.backend {
            Backend::Postgres => PgConnection::establish(&self.url)
                .map(DbConnection::Pg)
                .map_err(r2d2::Error::ConnectionError),
            Backend::Sqlite => {
                let mut conn =
                    SqliteConnection::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
                // Writers wait instead of failing. (WAL, which lets readers run beside the single
                // writer, is set once for the file in `Database::connect`: switching the journal
                // mode from several new connections at once fails with "database is locked".)
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; \
                     PRAGMA synchronous = NORMAL;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }
}

pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// The pool's handler of failed connection attempts. While the pool first fills, r2d2 tries
/// each of its connections again and again until `connect_timeout`, and its default handler
/// logs every attempt: dozens of lines for one unreachable database. Those are silent here;
/// `Database::connect` reports the last one, once. Once connected, a failed attempt (the
/// database went away) is logged, on one line.
#[derive(Debug, Default)]
struct QuietUntilConnected {
    connected: Arc<std::sync::atomic::AtomicBool>,
}

impl r2d2::HandleError<r2d2::Error> for QuietUntilConnected {
    fn handle_error(&self, error: r2d2::Error) {
        if self.connected.load(std::sync::atomic::Ordering::Relaxed) {
            let error = error.to_string();
            let error = error.split_whitespace().collect::<Vec<_>>().join(" ");
            tracing::error!(%error, "a database connection could not be opened");
        }
    }
}

/// The pool, plus the in-process half of the per-customer lock.
#[derive(Clone)]
pub struct Database {
    pool: r2d2::Pool<ConnectionManager>,
    backend: Backend,
    local_locks: KeyedLocks,
    /// Parsed snapshots of this replica (PostgreSQL only; see [`snapshot_cache`]).
    snapshot_cache: Option<Arc<snapshot_cache::SnapshotCache>>,
}

/// How long a lease runs unless renewed: a crashed holder's customers wait this long at most.
const LEASE_TERM: Duration = Duration::from_secs(10);
/// A holder renews its lease this often while its work runs.
const LEASE_RENEWAL: Duration = Duration::from_secs(3);
/// A waiter for a lease held by another replica asks again after this, doubling up to
/// [`LEASE_POLL_MAX`].
const LEASE_POLL_MIN: Duration = Duration::from_millis(10);
const LEASE_POLL_MAX: Duration = Duration::from_millis(200);

impl Database {
    pub fn connect(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
    ) -> anyhow::Result<Database> {
        let manager = ConnectionManager::new(url)?;
        let backend = manager.backend;
        if backend == Backend::Sqlite {
            if let Some(dir) = std::path::Path::new(sqlite_path(url)).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
            }
            // The journal mode is the file's, kept across connections: set it once, before the
            // pool opens its connections side by side.
            SqliteConnection::establish(&manager.url)
                .and_then(|mut conn| {
                    conn.batch_execute("PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;")
                        .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
                })
                .context("could not open the SQLite database (check DATABASE_URL)")?;
        }
        let quiet = QuietUntilConnected::default();
        let connected = quiet.connected.clone();
        let pool = r2d2::Pool::builder()
            .max_size(max_connections)
            .connection_timeout(connect_timeout)
            .error_handler(Box::new(quiet))
            .build(manager)
            .map_err(|e| {
                // r2d2's last error, on one line (libpq's messages span several).
                let error = e.to_string();
                let cause = error
                    .strip_prefix("timed out waiting for connection")
                    .unwrap_or(&error)
                    .trim_start_matches(':')
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let cause = if cause.is_empty() {
                    cause
                } else {
                    format!(": {cause}")
                };
                anyhow::anyhow!(
                    "could not connect within {} s{cause}; check that the database server runs \
                     and accepts connections from this host, and that database.url \
                     (DATABASE_URL) names it with the right user, password and database",
                    connect_timeout.as_secs()
                )
            })?;
        connected.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(Database {
            pool,
            backend,
            local_locks: KeyedLocks::default(),
            snapshot_cache: None,
        })
    }

    /// Caches up to `entries` parsed snapshots on PostgreSQL (nothing on SQLite, or with 0).
    /// The cache stays dark, read by no one, until [`snapshot_cache::listen`] runs for it.
    pub fn with_snapshot_cache(mut self, entries: usize) -> Database {
        if self.backend == Backend::Postgres && entries > 0 {
            self.snapshot_cache = Some(Arc::new(snapshot_cache::SnapshotCache::new(entries)));
        }
        self
    }

    pub fn snapshot_cache(&self) -> Option<&Arc<snapshot_cache::SnapshotCache>> {
        self.snapshot_cache.as_ref()
    }

    /// Call after the transaction that rewrote `subject`'s snapshot committed: this replica
    /// then reads the new snapshot at once (others learn of it from the notification).
    pub fn snapshot_written(&self, subject: &str) {
        if let Some(cache) = &self.snapshot_cache {
            cache.invalidate(subject);
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations of this backend.
    pub fn migrate(&self) -> anyhow::Result<Vec<String>> {
        let mut conn = self.pool.get().context("database connection")?;
        let applied = match &mut **conn {
            DbConnection::Pg(c) => {
                // Replicas starting together migrate one at a time.
                diesel::sql_query("SELECT pg_advisory_lock(7406921473)").execute(c)?;
                let result = c
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect());
                diesel::sql_query("SELECT pg_advisory_unlock(7406921473)").execute(c)?;
                result
            }
            DbConnection::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.to_string()).collect()),
        };
        let applied = applied.map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
        let filled = snapshots::backfill(&mut conn, chrono::Utc::now())?;
        if filled > 0 {
            tracing::info!(subjects = filled, "wrote missing subject snapshots");
        }
        Ok(applied)
    }

    /// Runs blocking database work on actix's blocking pool with a pooled connection.
    pub async fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(&mut DbConnection) -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        actix_web::web::block(move || {
            let mut conn = pool.get().context("database connection")?;
            let result = f(&mut conn);
            // Pinged at its next check-out: the failure may have been the connection's.
            let pooled: &mut Pooled = &mut conn;
            pooled.failed = result.is_err();
            result
        })
        .await
        .map_err(|e| anyhow::anyhow!("blocking task failed: {e}"))?
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(Into::into))
            .await
    }

    /// Holds the per-customer lock named `key` while `work` runs: callers re-read Stripe and
    /// write the result under it, so that an older read never overwrites a newer one. In-process
    /// it is a mutex per key; on PostgreSQL it is also a lease row ([`leases`]), which holds
    /// across replicas. Neither keeps a database connection or a database lock while `work`
    /// waits on Stripe: the lease is taken, renewed and released by short statements, and
    /// `work`'s write confirms it in its transaction ([`Lease::confirm`]), so a holder whose
    /// lease lapsed (a stall longer than the term) writes nothing. SQLite has one writer and one
    /// process, so the mutex suffices there.
    pub async fn with_customer_lock<T, Fut>(
        &self,
        key: &str,
        work: impl FnOnce(Lease) -> Fut,
    ) -> anyhow::Result<T>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let _local = self.local_locks.lock(key).await;
        if self.backend == Backend::Sqlite {
            return work(Lease { held: None }).await;
        }
        let mut wait = LEASE_POLL_MIN;
        let mut guard = loop {
            if let Some(guard) = self.try_lease(key).await? {
                break guard;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LEASE_POLL_MAX);
        };
        let lease = guard.lease();
        let result = guard.hold(work(lease)).await;
        guard.release().await;
        result
    }

    /// Runs `work` unless another replica holds the lease named `name` (tried once, without
    /// waiting); `None` when it was held elsewhere. On SQLite, a single instance, it always
    /// runs.
    pub async fn exclusively<T, Fut>(
        &self,
        name: &str,
        work: impl FnOnce() -> Fut,
    ) -> anyhow::Result<Option<T>>
    where
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        if self.backend == Backend::Sqlite {
            return work().await.map(Some);
        }
        let Some(mut guard) = self.try_lease(name).await? else {
            return Ok(None);
        };
        let result = guard.hold(work()).await;
        guard.release().await;
        result.map(Some)
    }

    /// Takes the lease `name` if no one holds it, and keeps it renewed until the guard goes.
    async fn try_lease(&self, name: &str) -> anyhow::Result<Option<LeaseGuard>> {
        let holder = uuid::Uuid::new_v4().to_string();
        let (lease_name, lease_holder) = (name.to_owned(), holder.clone());
        let taken = self
            .run(move |conn| leases::take(conn, &lease_name, &lease_holder, LEASE_TERM))
            .await?;
        if !taken {
            return Ok(None);
        }
        let db = self.clone();
        let (lease_name, lease_holder) = (name.to_owned(), holder.clone());
        let (lost, lapsed) = tokio::sync::oneshot::channel();
        let heartbeat = tokio::spawn(async move {
            let mut renewed = std::time::Instant::now();
            loop {
                tokio::time::sleep(LEASE_RENEWAL).await;
                let (n, h) = (lease_name.clone(), lease_holder.clone());
                match db
                    .run(move |conn| leases::renew(conn, &n, &h, LEASE_TERM))
                    .await
                {
                    Ok(true) => renewed = std::time::Instant::now(),
                    Ok(false) => {
                        tracing::warn!(lease = %lease_name, "a lease lapsed while its work ran; the work is stopped");
                        let _ = lost.send(());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(
                            lease = %lease_name,
                            error = format_args!("{e:#}"),
                            "could not renew a lease"
                        );
                        // Another renewal would come too late: the lease may lapse before it.
                        if renewed.elapsed() + LEASE_RENEWAL >= LEASE_TERM {
                            let _ = lost.send(());
                            return;
                        }
                    }
                }
            }
        });
        Ok(Some(LeaseGuard {
            db: self.clone(),
            name: name.to_owned(),
            holder,
            heartbeat,
            lapsed: Some(lapsed),
            released: false,
        }))
    }
}

/// The lease a piece of work runs under, for its write to confirm ([`Lease::confirm`]).
#[derive(Debug, Clone)]
pub struct Lease {
    /// `(name, holder)` on PostgreSQL; nothing to confirm on SQLite.
    held: Option<(String, String)>,
}

impl Lease {
    /// In the work's write transaction: fails, so that nothing is written, unless the lease is
    /// still held, and keeps it until the transaction ends.
    pub fn confirm(&self, conn: &mut DbConnection) -> anyhow::Result<()> {
        match &self.held {
            Some((name, holder)) => leases::confirm(conn, name, holder),
            None => Ok(()),
        }
    }
}

/// A taken lease: renewed by its heartbeat task, released when the work ends, also when it
/// panicked or was cancelled (a client hanging up drops the handler's future mid-way).
struct LeaseGuard {
    db: Database,
    name: String,
    holder: String,
    heartbeat: tokio::task::JoinHandle<()>,
    /// Answers when the heartbeat finds the lease lost (or about to lapse unrenewed).
    lapsed: Option<tokio::sync::oneshot::Receiver<()>>,
    released: bool,
}

impl LeaseGuard {
    /// Runs `work` under the lease, stopping it (an error) if the lease is lost meanwhile: then
    /// another holder may run, and two must never act at once (the checkout lock's Stripe
    /// calls, reconciliation). A sync's write is fenced besides ([`Lease::confirm`]).
    async fn hold<T>(
        &mut self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let lapsed = self.lapsed.take();
        let lost = async {
            let said = match lapsed {
                Some(lapsed) => lapsed.await.is_ok(),
                None => false,
            };
            if !said {
                // The heartbeat ended without a word (released): never.
                std::future::pending::<()>().await;
            }
        };
        // On the heap: a sync's future is large, and a debug build's request thread has little
        // stack for two copies of it.
        let work = Box::pin(work);
        tokio::select! {
            result = work => result,
            () = lost => Err(anyhow::anyhow!(
                "the lease `{}` was lost while its work ran (its renewals failed); the work was stopped",
                self.name
            )),
        }
    }

    fn lease(&self) -> Lease {
        Lease {
            held: Some((self.name.clone(), self.holder.clone())),
        }
    }

    async fn release(mut self) {
        self.heartbeat.abort();
        let (name, holder) = (self.name.clone(), self.holder.clone());
        // Cancelled before this ends, the guard's drop releases it instead.
        let released = self
            .db
            .run(move |conn| leases::release(conn, &name, &holder))
            .await;
        self.released = true;
        if let Err(e) = released {
            // It lapses at the end of its term.
            tracing::warn!(lease = %self.name, error = format_args!("{e:#}"), "could not release a lease");
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if !self.released {
            let (db, name, holder) = (self.db.clone(), self.name.clone(), self.holder.clone());
            tokio::spawn(async move {
                let _ = db
                    .run(move |conn| leases::release(conn, &name, &holder))
                    .await;
            });
        }
    }
}

/// One async mutex per key, made when first asked for and dropped when no one holds or waits
/// for it: unrelated keys never wait on each other.
#[derive(Clone, Default)]
struct KeyedLocks {
    locks: Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

struct KeyedGuard {
    locks: KeyedLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> KeyedGuard {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.to_owned()).or_default().clone()
        };
        KeyedGuard {
            locks: self.clone(),
            key: key.to_owned(),
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for KeyedGuard {
    fn drop(&mut self) {
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Holders and waiters each hold a clone of the entry: alone in the map, it is unused.
        if locks
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

/// The id a leasing `UPDATE ... RETURNING ... AS id` answers.
#[derive(diesel::QueryableByName)]
struct Leased {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// Bind placeholders of raw SQL for `conn`'s backend: `$1`, `$2`… on PostgreSQL, `?` on
/// SQLite (which binds in order of appearance).
pub(crate) fn placeholders(conn: &DbConnection) -> impl Fn(usize) -> String {
    let pg = matches!(conn, DbConnection::Pg(_));
    move |i| if pg { format!("${i}") } else { "?".to_owned() }
}

/// Leases up to `limit` due rows of a work queue (`table`, keyed by the text column `id`) until
/// `lease_until`: rows where `pending` holds, whose `due` time has come and that no live worker
/// holds; answers their ids. On PostgreSQL the candidates are locked with `SKIP LOCKED`, so
/// workers of several replicas lease different rows, and each row has one worker at a time.
/// The table has a nullable `leased_until` timestamp. (`table`, `id`, `pending` and `due` are
/// the caller's constants, never input.)
pub(crate) fn lease_due(
    conn: &mut DbConnection,
    (table, id, pending, due): (&'static str, &'static str, &'static str, &'static str),
    now: chrono::DateTime<chrono::Utc>,
    lease_until: chrono::DateTime<chrono::Utc>,
    limit: i64,
) -> anyhow::Result<Vec<String>> {
    use diesel::sql_types::Timestamp;
    let pg = matches!(conn, DbConnection::Pg(_));
    let p = placeholders(conn);
    let sql = format!(
        "UPDATE {table} SET leased_until = {lease} WHERE {id} IN ( \
           SELECT {id} FROM {table} \
           WHERE {pending} AND {due} <= {now} \
             AND (leased_until IS NULL OR leased_until <= {now2}) \
           ORDER BY {due} LIMIT {limit}{lock}) \
         RETURNING {id} AS id",
        lease = p(1),
        now = p(2),
        now2 = p(3),
        limit = limit.max(1),
        lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" },
    );
    let leased: Vec<Leased> = on_backend!(conn, |c| {
        use diesel::RunQueryDsl;
        diesel::sql_query(sql.as_str())
            .bind::<Timestamp, _>(to_db_time(lease_until))
            .bind::<Timestamp, _>(to_db_time(now))
            .bind::<Timestamp, _>(to_db_time(now))
            .load::<Leased>(c)
    })?;
    Ok(leased.into_iter().map(|l| l.id).collect())
}

/// A write transaction: on SQLite `BEGIN IMMEDIATE` takes the single write lock up front, so a
/// transaction that reads and then writes can never deadlock against another writer.
pub fn write_transaction<T, F>(conn: &mut DbConnection, f: F) -> anyhow::Result<T>
where
    F: FnOnce(&mut DbConnection) -> anyhow::Result<T>,
{
    match conn {
        DbConnection::Pg(_) => conn.transaction(|conn| f(conn)),
        DbConnection::Sqlite(_) => {
            conn.batch_execute("BEGIN IMMEDIATE")?;
            match f(conn) {
                Ok(value) => {
                    conn.batch_execute("COMMIT")?;
                    Ok(value)
                }
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        }
    }
}

/// Stored times are UTC without a zone (the combined connection has no `Timestamptz`).
pub fn to_db_time(t: chrono::DateTime<chrono::Utc>) -> chrono::NaiveDateTime {
    t.naive_utc()
}

pub fn from_db_time(t: chrono::NaiveDateTime) -> chrono::DateTime<chrono::Utc> {
    t.and_utc()
}
