//! One PostgreSQL connection that LISTENs, driven without blocking: the snapshot cache's
//! listener waits on its socket for notifications instead of polling for them.
//!
//! It is a libpq connection like diesel's own (the same `DATABASE_URL`, the same TLS and
//! `sslmode` behaviour), used through libpq's asynchronous calls: `PQconsumeInput` after the
//! socket is readable, `PQnotifies` for what arrived. After `LISTEN` it sends nothing: a peer
//! that died without closing the connection is found by TCP keepalives (probes after
//! [`KEEPALIVE_IDLE_SECONDS`] of silence, the connection failed after
//! [`KEEPALIVE_FAIL_SECONDS`]), which make the socket report the failure. diesel does not
//! expose its connection's socket, so this module holds the only `unsafe` code of the crate;
//! every call below is one of libpq's documented entry points on a connection this value
//! owns.

use std::ffi::{c_char, c_void, CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;

use pq_sys::{ConnStatusType, ExecStatusType, PGconn};

/// Reads of one readiness, at most (a flood of notifications is read in the next round).
const MAX_READS: usize = 1024;
/// Silence after which the kernel probes the peer.
pub const KEEPALIVE_IDLE_SECONDS: u32 = 5;
/// How long unanswered probes and unacknowledged writes take to fail the connection.
pub const KEEPALIVE_FAIL_SECONDS: u32 = 9;

/// A LISTENing libpq connection. Closed when dropped.
pub struct PgListener {
    conn: NonNull<PGconn>,
}

// SAFETY: a libpq connection may be used from any thread, one thread at a time; `PgListener`
// is used only through `&mut self` (and `as_raw_fd`, which reads a field libpq keeps).
unsafe impl Send for PgListener {}

/// Notices (warnings from the server) are not printed on stderr.
unsafe extern "C" fn quiet(_: *mut c_void, _: *const c_char) {}

impl PgListener {
    /// Connects (blocking: call it off the async threads), names the session and LISTENs on
    /// each channel.
    pub fn connect(url: &str, application_name: &str, channels: &[&str]) -> anyhow::Result<Self> {
        // The URL is expanded in place (`expand_dbname`); the keywords after it override what
        // it says of the same.
        let idle = KEEPALIVE_IDLE_SECONDS.to_string();
        let interval = "2".to_owned();
        let count = ((KEEPALIVE_FAIL_SECONDS - KEEPALIVE_IDLE_SECONDS) / 2)
            .max(1)
            .to_string();
        let user_timeout = (KEEPALIVE_FAIL_SECONDS * 1000).to_string();
        let params: [(&str, &str); 7] = [
            ("dbname", url),
            ("application_name", application_name),
            ("keepalives", "1"),
            ("keepalives_idle", &idle),
            ("keepalives_interval", &interval),
            ("keepalives_count", &count),
            ("tcp_user_timeout", &user_timeout),
        ];
        let keys: Vec<CString> = params
            .iter()
            .map(|(k, _)| CString::new(*k))
            .collect::<Result<_, _>>()?;
        let values: Vec<CString> = params
            .iter()
            .map(|(_, v)| CString::new(*v))
            .collect::<Result<_, _>>()?;
        let mut key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
        key_ptrs.push(std::ptr::null());
        value_ptrs.push(std::ptr::null());
        // SAFETY: both arrays are NULL-terminated and point to NUL-terminated strings that
        // outlive the call.
        let raw = unsafe { pq_sys::PQconnectdbParams(key_ptrs.as_ptr(), value_ptrs.as_ptr(), 1) };
        let conn = NonNull::new(raw)
            .ok_or_else(|| anyhow::anyhow!("libpq could not allocate a connection"))?;
        let mut listener = PgListener { conn };
        // SAFETY: `conn` is a live connection owned by `listener`.
        if unsafe { pq_sys::PQstatus(listener.conn.as_ptr()) } != ConnStatusType::CONNECTION_OK {
            anyhow::bail!("could not connect: {}", listener.error());
        }
        // SAFETY: as above; `quiet` is a valid notice processor that ignores its arguments.
        unsafe {
            pq_sys::PQsetNoticeProcessor(listener.conn.as_ptr(), Some(quiet), std::ptr::null_mut());
        }
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

    /// Reads everything the socket holds without waiting (libpq reads one chunk per call, and
    /// the socket's readiness is only announced again for new data, so this reads until the
    /// socket is empty), and returns the payloads of the notifications, in order. An error
    /// means the connection is gone.
    pub fn receive(&mut self) -> anyhow::Result<Vec<String>> {
        let mut payloads = self.receive_once()?;
        for _ in 0..MAX_READS {
            if !self.socket_has_data()? {
                break;
            }
            payloads.extend(self.receive_once()?);
        }
        Ok(payloads)
    }

    /// Whether bytes are waiting on the socket (libpq's socket never blocks).
    fn socket_has_data(&self) -> anyhow::Result<bool> {
        // The descriptor stays libpq's: borrowed for the peek, never closed here.
        // SAFETY: the descriptor is this connection's open socket (see `as_raw_fd`).
        let socket = std::mem::ManuallyDrop::new(unsafe {
            std::net::TcpStream::from_raw_fd(self.as_raw_fd())
        });
        match socket.peek(&mut [0_u8; 1]) {
            Ok(0) => Ok(true), // closed: the next read reports it
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    fn receive_once(&mut self) -> anyhow::Result<Vec<String>> {
        let conn = self.conn.as_ptr();
        let mut payloads = Vec::new();
        // SAFETY: `conn` is live and owned; every notification is freed exactly once, after its
        // `extra` (a NUL-terminated string libpq owns until then) was copied.
        unsafe {
            if pq_sys::PQconsumeInput(conn) == 0 {
                anyhow::bail!("connection lost: {}", self.error());
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
                payloads.push(payload);
            }
        }
        Ok(payloads)
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
