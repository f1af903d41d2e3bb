//! A replica's cache of parsed subject snapshots, so that an entitlement check whose subjects
//! are cached needs no database round trip at all, and a consumption needs only its one call.
//!
//! Only the stored facts are cached, never a verdict: access is evaluated at every request with
//! the request's time, so periods, trials and grace end on time on cached snapshots too.
//!
//! Most subjects asked about have nothing on record (a tenant check asks for the user, the
//! membership and the tenant; most memberships and many tenants were never billed). Those are
//! remembered apart, as a key alone ([`SnapshotCache::absent`], twice as many as entries), so
//! they neither cost a database read every time nor evict the subjects that have facts.
//!
//! Staying fresh (PostgreSQL only; on SQLite the cache is off, because `tollgate sync` in another
//! process writes the same file and could not tell the server):
//! - A trigger on `subject_snapshots` (migration 000007) sends `NOTIFY tollgate_snapshots` with
//!   the subject's key for every row written, by any replica or tool, delivered at commit.
//!   [`listen`] holds one connection per replica that LISTENs and drops each named entry.
//! - The replica that wrote a snapshot also drops the entry itself once its transaction has
//!   committed ([`crate::db::Database::snapshot_written`]), so a replica reads its own writes at
//!   once; other replicas follow as soon as the notification reaches their listener, which
//!   waits on its connection's socket ([`super::pg_listen`]) and costs nothing while idle.
//! - While the listener is not connected the cache is dark: emptied, never read, never filled.
//!   Notifications missed in that time cannot leave a stale entry behind.
//! - A read that raced with an invalidation never leaves its older copy behind: a reader takes
//!   the epoch before it reads the database and, after storing what it read, drops it again if
//!   an invalidation (or a change of the listener's state) happened in between.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::pg_listen::PgListener;
use super::snapshots::Snapshot;

/// The channel the snapshot trigger notifies on (migration 000007).
pub const CHANNEL: &str = "tollgate_snapshots";
/// The payload that drops every entry (sent by hand after bulk repairs: `NOTIFY
/// tollgate_snapshots, '*'`).
pub const EVERYTHING: &str = "*";
/// How often the listener reads its connection even without a readiness event: data libpq's
/// TLS layer decrypted but did not hand over yet shows on no socket (a safety net; each read
/// is one non-blocking call).
const DRAIN: Duration = Duration::from_millis(500);
/// The wait before connecting again after the listener lost its connection.
const RECONNECT: Duration = Duration::from_secs(1);
/// How the listener's session shows in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "tollgate_snapshot_listener";

pub struct SnapshotCache {
    entries: quick_cache::sync::Cache<String, Arc<Snapshot>>,
    /// Subjects with nothing on record (no row, or a row holding no facts and no exemption).
    absent: quick_cache::sync::Cache<String, ()>,
    /// What an absent subject reads as.
    empty: Arc<Snapshot>,
    /// Bumped by every invalidation and every change of `live`.
    epoch: AtomicU64,
    /// The listener is connected and listening: entries are kept fresh.
    live: AtomicBool,
}

/// What a reader holds while it reads a snapshot from the database (see [`SnapshotCache::fill`]).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl SnapshotCache {
    pub fn new(capacity: usize) -> SnapshotCache {
        SnapshotCache {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            absent: quick_cache::sync::Cache::new(capacity.max(1).saturating_mul(2)),
            empty: Arc::new(Snapshot::default()),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(false),
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// The cached snapshot of `subject`, while the cache is live.
    pub fn get(&self, subject: &str) -> Option<Arc<Snapshot>> {
        if !self.is_live() {
            return None;
        }
        self.entries
            .get(subject)
            .or_else(|| self.absent.get(subject).map(|()| self.empty.clone()))
    }

    /// Taken before reading snapshots from the database; `None` while the cache is dark.
    pub fn ticket(&self) -> Option<Ticket> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.is_live().then_some(Ticket(epoch))
    }

    /// Stores what a reader read under `ticket`, unless something was invalidated since the
    /// ticket was taken: the copy may then predate that write, so it is dropped again. (Storing
    /// first and checking after, rather than the other way round, leaves no moment in which an
    /// invalidation could slip between the check and the store.)
    pub fn fill(&self, ticket: Ticket, subject: &str, snapshot: Arc<Snapshot>) {
        if snapshot.is_empty() {
            self.absent.insert(subject.to_owned(), ());
        } else {
            self.entries.insert(subject.to_owned(), snapshot);
        }
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.is_live() {
            self.remove(subject);
        }
    }

    fn remove(&self, subject: &str) {
        self.entries.remove(subject);
        self.absent.remove(subject);
    }

    /// `subject`'s snapshot changed (or is about to be visible as changed).
    pub fn invalidate(&self, subject: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.remove(subject);
    }

    /// Every entry may be stale.
    pub fn invalidate_all(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.absent.clear();
    }

    /// The listener is listening (again): start from empty, since anything cached before may
    /// have missed a notification.
    fn go_live(&self) {
        self.entries.clear();
        self.absent.clear();
        self.live.store(true, Ordering::SeqCst);
        // After `live`: a reader that read the epoch before this and `live` after holds a
        // ticket that no longer fills.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The listener lost its connection: read the database until it is back.
    fn go_dark(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.invalidate_all();
    }

    fn apply(&self, payload: &str) {
        if payload == EVERYTHING {
            self.invalidate_all();
        } else {
            self.invalidate(payload);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.absent.is_empty()
    }

    /// How many subjects with facts, and how many without, are cached.
    pub fn len(&self) -> (usize, usize) {
        (self.entries.len(), self.absent.len())
    }
}

/// Keeps `cache` fresh for as long as the task runs: connects, LISTENs, drops what the
/// notifications name, and reconnects (with the cache dark meanwhile) whenever the connection
/// fails. Runs until the runtime that spawned it stops.
pub async fn listen(cache: Arc<SnapshotCache>, url: String) {
    loop {
        let connect_url = url.clone();
        let connected = tokio::task::spawn_blocking(move || connect(&connect_url)).await;
        match connected {
            Ok(Ok(conn)) => {
                cache.go_live();
                metrics::gauge!("tollgate_snapshot_cache_live").set(1.0);
                tracing::info!("snapshot cache live: listening on {CHANNEL}");
                let failure = follow(&cache, conn).await;
                cache.go_dark();
                metrics::gauge!("tollgate_snapshot_cache_live").set(0.0);
                tracing::warn!(error = %failure, "snapshot cache dark: listener connection lost; reading the database until it is back");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "snapshot cache dark: listener could not connect")
            }
            Err(e) => tracing::warn!(error = %e, "snapshot cache dark: listener task failed"),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// A dead peer is noticed through TCP keepalives (see [`super::pg_listen`]).
fn connect(url: &str) -> anyhow::Result<PgListener> {
    PgListener::connect(url, APPLICATION_NAME, &[CHANNEL])
}

/// Applies notifications as they arrive until the connection fails; returns why it stopped.
async fn follow(cache: &SnapshotCache, conn: PgListener) -> anyhow::Error {
    // SAFETY: the descriptor is the connection's socket, open and the same for as long as the
    // connection lives, and the `AsyncFd` owns the connection (it deregisters before closing).
    let registered = unsafe { AsyncFd::register_with_interest(conn, Interest::READABLE) };
    let mut socket = match registered {
        Ok(socket) => socket,
        Err(e) => return anyhow::anyhow!("could not wait on the listener's socket: {e}"),
    };
    // What libpq read while connecting is in its buffer already: no readiness will announce it.
    match socket.get_mut().receive() {
        Ok(payloads) => payloads.iter().for_each(|p| cache.apply(p)),
        Err(e) => return e,
    }
    loop {
        let payloads = match tokio::time::timeout(DRAIN, socket.readable_mut()).await {
            Ok(Ok(mut ready)) => {
                // `receive` reads until the socket is empty, so the readiness may be cleared.
                let payloads = ready.get_inner_mut().receive();
                ready.clear_ready();
                payloads
            }
            Ok(Err(e)) => return e.into(),
            // No readiness: read anyway (see `DRAIN`).
            Err(_) => socket.get_mut().receive(),
        };
        match payloads {
            Ok(payloads) => payloads.iter().for_each(|p| cache.apply(p)),
            Err(e) => return e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(exempt: bool) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            role_exempt: exempt,
            ..Snapshot::default()
        })
    }

    fn live_cache() -> SnapshotCache {
        let cache = SnapshotCache::new(10);
        cache.go_live();
        cache
    }

    #[test]
    fn a_dark_cache_is_neither_read_nor_filled() {
        let cache = SnapshotCache::new(10);
        assert!(cache.ticket().is_none());
        cache.go_live();
        let ticket = cache.ticket().unwrap();
        cache.fill(ticket, "user:a", snapshot(true));
        assert!(cache.get("user:a").is_some());
        cache.go_dark();
        assert!(cache.get("user:a").is_none());
        assert!(cache.is_empty(), "going dark empties the cache");
        cache.fill(ticket, "user:a", snapshot(true));
        assert!(cache.is_empty(), "a fill while dark is dropped");
    }

    #[test]
    fn a_fill_keeps_what_was_read_when_nothing_changed_meanwhile() {
        let cache = live_cache();
        let ticket = cache.ticket().unwrap();
        cache.fill(ticket, "user:a", snapshot(true));
        assert!(cache.get("user:a").unwrap().role_exempt);
        assert!(cache.get("user:b").is_none());
    }

    #[test]
    fn a_read_that_raced_with_an_invalidation_is_not_kept() {
        let cache = live_cache();
        let ticket = cache.ticket().unwrap();
        // Another request's write committed while this one read the older row.
        cache.invalidate("user:b");
        cache.fill(ticket, "user:a", snapshot(false));
        assert!(cache.get("user:a").is_none());
        // The next reader, with a fresh ticket, may keep its copy.
        let ticket = cache.ticket().unwrap();
        cache.fill(ticket, "user:a", snapshot(false));
        assert!(cache.get("user:a").is_some());
    }

    #[test]
    fn a_reconnect_discards_reads_taken_before_it() {
        let cache = live_cache();
        let ticket = cache.ticket().unwrap();
        cache.go_dark();
        cache.go_live();
        cache.fill(ticket, "user:a", snapshot(false));
        assert!(cache.get("user:a").is_none());
    }

    #[test]
    fn subjects_with_nothing_on_record_are_remembered_apart_and_evict_nobody() {
        let cache = SnapshotCache::new(10);
        cache.go_live();
        for subject in ["user:a", "user:b"] {
            let ticket = cache.ticket().unwrap();
            cache.fill(ticket, subject, snapshot(true));
        }
        // Many absent subjects later, the two with facts are still there.
        for i in 0..1000 {
            let ticket = cache.ticket().unwrap();
            cache.fill(
                ticket,
                &format!("tenant:t{i}"),
                Arc::new(Snapshot::default()),
            );
        }
        assert!(cache.get("user:a").unwrap().role_exempt);
        assert!(cache.get("user:b").unwrap().role_exempt);
        let (with_facts, absent) = cache.len();
        assert_eq!(with_facts, 2);
        assert!(absent > 0 && absent <= 20, "{absent}");
        // An absent subject reads as empty, and a write drops what was remembered of it.
        let remembered = (0..1000)
            .map(|i| format!("tenant:t{i}"))
            .find(|s| cache.get(s).is_some())
            .expect("some absent subjects are remembered");
        assert!(cache.get(&remembered).unwrap().is_empty());
        cache.invalidate(&remembered);
        assert!(cache.get(&remembered).is_none());
        // A read that raced with a write is not remembered as absent either.
        let ticket = cache.ticket().unwrap();
        cache.invalidate("user:z");
        cache.fill(ticket, "tenant:new", Arc::new(Snapshot::default()));
        assert!(cache.get("tenant:new").is_none());
    }

    #[test]
    fn notifications_drop_the_named_subject_or_everything() {
        let cache = live_cache();
        for subject in ["user:a", "user:b", "tenant:t"] {
            let ticket = cache.ticket().unwrap();
            cache.fill(ticket, subject, snapshot(false));
        }
        cache.apply("user:a");
        assert!(cache.get("user:a").is_none());
        assert!(cache.get("user:b").is_some());
        let ticket = cache.ticket().unwrap();
        cache.fill(ticket, "tenant:absent", Arc::new(Snapshot::default()));
        cache.apply("tenant:absent");
        assert!(cache.get("tenant:absent").is_none());
        cache.fill(
            cache.ticket().unwrap(),
            "tenant:absent",
            Arc::new(Snapshot::default()),
        );
        cache.apply(EVERYTHING);
        assert!(cache.is_empty());
    }
}
