//! One PostgreSQL connection that LISTENs, driven without blocking: the snapshot cache's
//! listener waits on its socket for notifications instead of polling for them.
//!
//! It is a libpq connection like diesel's own (the same `DATABASE_URL`, the same TLS and
//! `sslmode` behaviour), used through libpq's asynchronous calls: `PQconsumeInput` after the
//! socket is readable, `PQnotifies` for what arrived, `PQsendQuery` for the heartbeat. diesel
//! does not expose its connection's socket, so this module holds the only `unsafe` code of the
//! crate; every call below is one of libpq's documented entry points on a connection this
//! value owns.

use std::ffi::{c_char, c_void, CStr, CString};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;

use pq_sys::{ConnStatusType, ExecStatusType, PGconn};

/// A LISTENing libpq connection. Closed when dropped.
pub struct PgListener {
    conn: NonNull<PGconn>,
}

// SAFETY: a libpq connection may be used from any thread, one thread at a time; `PgListener`
// is used only through `&mut self` (and `as_raw_fd`, which reads a field libpq keeps).
unsafe impl Send for PgListener {}

/// What arrived on the connection.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Arrived {
    /// The payloads of the notifications, in order.
    pub payloads: Vec<String>,
    /// The heartbeat query was answered.
    pub heartbeat: bool,
}

/// Notices (warnings from the server) are not printed on stderr.
unsafe extern "C" fn quiet(_: *mut c_void, _: *const c_char) {}

impl PgListener {
    /// Connects (blocking: call it off the async threads), names the session and LISTENs on
    /// each channel.
    pub fn connect(url: &str, application_name: &str, channels: &[&str]) -> anyhow::Result<Self> {
        let url = CString::new(url)?;
        // SAFETY: `url` is a NUL-terminated string that outlives the call.
        let raw = unsafe { pq_sys::PQconnectdb(url.as_ptr()) };
        let conn = NonNull::new(raw)
            .ok_or_else(|| anyhow::anyhow!("libpq could not allocate a connection"))?;
        let listener = PgListener { conn };
        // SAFETY: `conn` is a live connection owned by `listener`.
        if unsafe { pq_sys::PQstatus(listener.conn.as_ptr()) } != ConnStatusType::CONNECTION_OK {
            anyhow::bail!("could not connect: {}", listener.error());
        }
        // SAFETY: as above; `quiet` is a valid notice processor that ignores its arguments.
        unsafe {
            pq_sys::PQsetNoticeProcessor(listener.conn.as_ptr(), Some(quiet), std::ptr::null_mut());
        }
        let mut listener = listener;
        listener.exec(&format!("SET application_name = '{application_name}'"))?;
        for channel in channels {
            listener.exec(&format!("LISTEN {channel}"))?;
        }
        Ok(listener)
    }

    /// Runs `sql` and waits for it (blocking).
    fn exec(&mut self, sql: &str) -> anyhow::Result<()> {
        let sql = CString::new(sql)?;
        // SAFETY: `conn` is live and owned; `sql` outlives the call; the result is cleared once.
        unsafe {
            let result = pq_sys::PQexec(self.conn.as_ptr(), sql.as_ptr());
            let status = pq_sys::PQresultStatus(result);
            pq_sys::PQclear(result);
            match status {
                ExecStatusType::PGRES_COMMAND_OK | ExecStatusType::PGRES_TUPLES_OK => Ok(()),
                _ => Err(anyhow::anyhow!("{}", self.error())),
            }
        }
    }

    /// Sends the heartbeat query without waiting for its answer (see [`Arrived::heartbeat`]).
    pub fn send_heartbeat(&mut self) -> anyhow::Result<()> {
        // SAFETY: `conn` is live and owned; the query is a static NUL-terminated string.
        let sent = unsafe { pq_sys::PQsendQuery(self.conn.as_ptr(), c"SELECT 1".as_ptr()) };
        if sent == 1 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("heartbeat not sent: {}", self.error()))
        }
    }

    /// Reads what the socket holds without waiting, and returns the notifications and whether
    /// the heartbeat was answered. An error means the connection is gone.
    pub fn receive(&mut self) -> anyhow::Result<Arrived> {
        let conn = self.conn.as_ptr();
        let mut arrived = Arrived::default();
        // SAFETY: `conn` is live and owned; every result is cleared and every notification
        // freed exactly once; `extra` is a NUL-terminated string libpq owns until then.
        unsafe {
            if pq_sys::PQconsumeInput(conn) == 0 {
                anyhow::bail!("connection lost: {}", self.error());
            }
            while pq_sys::PQisBusy(conn) == 0 {
                let result = pq_sys::PQgetResult(conn);
                if result.is_null() {
                    break;
                }
                let status = pq_sys::PQresultStatus(result);
                pq_sys::PQclear(result);
                match status {
                    ExecStatusType::PGRES_TUPLES_OK | ExecStatusType::PGRES_COMMAND_OK => {
                        arrived.heartbeat = true
                    }
                    _ => anyhow::bail!("heartbeat failed: {}", self.error()),
                }
            }
            loop {
                let notify = pq_sys::PQnotifies(conn);
                if notify.is_null() {
                    break;
                }
                let payload = CStr::from_ptr((*notify).extra)
                    .to_string_lossy()
                    .into_owned();
                pq_sys::PQfreemem(notify.cast());
                arrived.payloads.push(payload);
            }
        }
        Ok(arrived)
    }

    fn error(&self) -> String {
        // SAFETY: `conn` is live; libpq returns a NUL-terminated string it owns.
        unsafe { CStr::from_ptr(pq_sys::PQerrorMessage(self.conn.as_ptr())) }
            .to_string_lossy()
            .trim()
            .to_owned()
    }
}

/// The connection's socket, to wait on: the same descriptor for the connection's whole life
/// (it is never reset), open until the listener is dropped.
impl AsRawFd for PgListener {
    fn as_raw_fd(&self) -> RawFd {
        // SAFETY: `conn` is a live connection owned by `self`.
        unsafe { pq_sys::PQsocket(self.conn.as_ptr()) }
    }
}

impl Drop for PgListener {
    fn drop(&mut self) {
        // SAFETY: `conn` was returned by PQconnectdb and is finished only here.
        unsafe { pq_sys::PQfinish(self.conn.as_ptr()) }
    }
}
