//! PostgreSQL connections: a small pool whose every connection knows its server process, and
//! the fence that makes a write the store gave up on final.
//!
//! A statement that timed out (or whose connection broke) may still be on its way: held in a
//! socket buffer or a congested network, it would run when it arrives and overwrite a newer
//! value or revive a deleted session. PostgreSQL runs nothing more of a connection whose server
//! process has exited, and `pg_terminate_backend(pid, timeout)` returns `true` only once that
//! process is gone. So a write's connection is never returned to the pool after a timeout or a
//! connection error: its process is terminated from a separate connection first.
//!
//! * **terminated** (or already gone, or the server restarted since: a new postmaster has no
//!   process of the old one): the write ran before or never will;
//! * **not confirmed** (the database unreachable): the process is recorded as pending and every
//!   later *write* of this store waits for it — retrying the termination within its own
//!   deadline, then failing with `Unavailable` — until a background task has settled it. Reads
//!   go on.
//!
//! A caller that drops a write's future midway (its own deadline) gets the same treatment from
//! the lease's drop.

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use session_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::error::{from_sqlx, BACKEND};

/// How long one `pg_terminate_backend` waits for the process to exit, ms.
const TERMINATE_WAIT_MS: i64 = 2_000;
/// Longest pause between two attempts of the background settler.
const MAX_SETTLE_BACKOFF: Duration = Duration::from_secs(1);

/// One connection and the server process behind it.
pub(crate) struct PgConn {
    conn: PgConnection,
    process: Process,
}

/// A server process: its pid, when it started and when its postmaster started (µs since the
/// epoch): a pid reused by a later connection, or by a server started again, is another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    backend_start: i64,
    started: i64,
}

/// The pool.
pub(crate) struct PgPool {
    options: PgConnectOptions,
    connect_timeout: Duration,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
    fence: Arc<Fence>,
}

/// Whether a leased connection carries a write (fenced when abandoned) or only reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Reads only: an abandoned connection is just closed.
    Read,
    /// May write: an abandoned connection's process is terminated before any later write.
    Write,
}

impl PgPool {
    /// A pool for `url` of at most `size` connections; none is opened yet.
    pub(crate) fn new(url: &str, size: u32, connect_timeout: Duration) -> Result<PgPool> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config {
                key: "sql.url".into(),
                message: format!(
                    "is not a PostgreSQL URL this driver accepts: {}",
                    crate::error::clean(&e)
                ),
                source: None,
            })?
            .application_name("session-sql")
            .disable_statement_logging();
        let fence = Arc::new(Fence {
            options: options.clone(),
            connect_timeout,
            pending: Mutex::new(Vec::new()),
            settling: tokio::sync::Mutex::new(()),
            background: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(PgPool {
            options,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(usize::try_from(size).unwrap_or(usize::MAX).max(1)),
            fence,
        })
    }

    /// Leases a connection for one call, by `deadline`. A write first waits for the fence.
    pub(crate) async fn lease(&self, use_: Use, deadline: Instant) -> Result<Lease<'_>> {
        if use_ == Use::Write {
            self.fence.wait_clear(deadline).await?;
        }
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| Error::unavailable(BACKEND, "no pooled connection became free in time"))?
            .map_err(|_| Error::unavailable(BACKEND, "the store is closed"))?;
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let until = deadline.min(Instant::now() + self.connect_timeout);
                tokio::time::timeout_at(until, self.connect())
                    .await
                    .map_err(|_| Error::unavailable(BACKEND, "connecting timed out"))??
            }
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            use_,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<PgConn> {
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .map_err(|e| from_sqlx("connect", e))?;
        let process = process_of(&mut conn).await?;
        Ok(PgConn { conn, process })
    }

    /// Writes wait for a pending termination (health reports it).
    pub(crate) fn writes_fenced_off(&self) -> bool {
        !self.fence.clear()
    }

    /// Tries, until `deadline`, to terminate the processes of abandoned writes now (a write's
    /// error is answered after this).
    pub(crate) async fn settle_fence(&self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, self.fence.settle(deadline)).await;
    }

    /// Closes the idle connections (the store is dropped or closed).
    pub(crate) fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

async fn process_of(conn: &mut PgConnection) -> Result<Process> {
    let row = sqlx::query(
        "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::BIGINT, \
         (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::BIGINT \
         FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| from_sqlx("connect", e))?;
    let pid: i32 = row.try_get(0).map_err(|e| from_sqlx("connect", e))?;
    let backend_start: i64 = row.try_get(1).map_err(|e| from_sqlx("connect", e))?;
    let started: i64 = row.try_get(2).map_err(|e| from_sqlx("connect", e))?;
    Ok(Process {
        pid,
        backend_start,
        started,
    })
}

/// A connection leased for one call. [`finish`](Lease::finish) returns it; dropped unfinished
/// (a timeout, a cancelled call), a write's connection is fenced.
pub(crate) struct Lease<'p> {
    pool: &'p PgPool,
    conn: Option<PgConn>,
    use_: Use,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// The connection.
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection> {
        self.conn
            .as_mut()
            .map(|c| &mut c.conn)
            .ok_or_else(|| Error::unavailable(BACKEND, "connection already released"))
    }

    /// Ends the call: a connection that answered in protocol goes back to the pool; after a
    /// connection error a write's is fenced, a read's closed.
    pub(crate) fn finish(mut self, connection_ok: bool) {
        if let Some(conn) = self.conn.take() {
            if connection_ok {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(conn);
            } else {
                self.abandon(conn);
            }
        }
    }

    fn abandon(&self, conn: PgConn) {
        if self.use_ == Use::Write {
            self.pool.fence.abandon(conn.process);
        }
        // Dropping the connection closes its socket; for a write, the fence makes sure.
        drop(conn);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.abandon(conn);
        }
    }
}

/// The processes of abandoned writes, until each is known to be gone.
struct Fence {
    options: PgConnectOptions,
    connect_timeout: Duration,
    pending: Mutex<Vec<Process>>,
    /// One settling attempt at a time.
    settling: tokio::sync::Mutex<()>,
    /// Whether the background settler runs.
    background: std::sync::atomic::AtomicBool,
}

impl Fence {
    fn clear(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Records an abandoned write's process and starts the background settler.
    fn abandon(self: &Arc<Self>, process: Process) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(process);
        tracing::debug!(pid = process.pid, "sql: fencing an abandoned write's connection");
        if self.background.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run it: the next write settles it itself.
            self.background.store(false, std::sync::atomic::Ordering::Release);
            return;
        };
        let fence = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut backoff = Duration::from_millis(20);
            loop {
                let Some(f) = fence.upgrade() else { return };
                let deadline =
                    Instant::now() + f.connect_timeout + Duration::from_millis(TERMINATE_WAIT_MS as u64);
                let _ = f.settle(deadline).await;
                if f.clear() {
                    f.background.store(false, std::sync::atomic::Ordering::Release);
                    // A process abandoned between the check and the flag would wait for the
                    // next write's own attempt; look once more.
                    if f.clear() || f.background.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        return;
                    }
                }
                drop(f);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_SETTLE_BACKOFF);
            }
        });
    }

    /// Waits until no abandoned write is pending, trying to settle them by `deadline`.
    async fn wait_clear(&self, deadline: Instant) -> Result<()> {
        while !self.clear() {
            if Instant::now() >= deadline {
                return Err(Error::unavailable(
                    BACKEND,
                    "writes are paused: the connection of an earlier write that timed out or \
                     failed is not yet confirmed closed (the database does not answer)",
                ));
            }
            if tokio::time::timeout_at(deadline, self.settle(deadline))
                .await
                .is_err()
            {
                continue;
            }
            if !self.clear() {
                tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(20))).await;
            }
        }
        Ok(())
    }

    /// One attempt: terminates every pending process from a fresh connection.
    async fn settle(&self, deadline: Instant) -> Result<()> {
        let _one = self.settling.lock().await;
        let pending: Vec<Process> = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if pending.is_empty() {
            return Ok(());
        }
        let until = deadline.min(Instant::now() + self.connect_timeout);
        let mut control = tokio::time::timeout_at(until, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| Error::unavailable(BACKEND, "connecting timed out"))?
            .map_err(|e| from_sqlx("connect", e))?;
        let current = process_of(&mut control).await?;
        for process in pending {
            let gone = process.started != current.started || terminate(&mut control, process).await?;
            if gone {
                self.pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|p| *p != process);
                tracing::debug!(
                    pid = process.pid,
                    "sql: an abandoned write's connection is closed"
                );
            }
        }
        let _ = control.close().await;
        Ok(())
    }
}

/// Terminates `process` (that very connection: pid and start time) and waits for it to exit;
/// `true` once it is gone. Needs PostgreSQL 14 or later (`pg_terminate_backend` with a wait).
async fn terminate(control: &mut PgConnection, process: Process) -> Result<bool> {
    let done: Option<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, $3) FROM pg_stat_activity \
         WHERE pid = $1 AND (extract(epoch FROM backend_start) * 1000000)::BIGINT = $2",
    )
    .bind(process.pid)
    .bind(process.backend_start)
    .bind(TERMINATE_WAIT_MS)
    .fetch_optional(&mut *control)
    .await
    .map_err(|e| from_sqlx("fence", e))?;
    match done {
        // No such connection any more: it is gone.
        None => Ok(true),
        Some(true) => Ok(true),
        // Still there after the wait: try again later.
        Some(false) => Ok(false),
    }
}
