//! One PostgreSQL server (`initdb`, then `postgres`) and its guard.

mod bindir;
mod cleanup;
mod launch;
mod server;
mod signals;
#[cfg(test)]
mod tests;
mod user;

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use crate::scratch::Scratch;
use user::RunAs;

pub use bindir::find_postgres_bindir;
pub(crate) use cleanup::remove_stale_segment;

/// The superuser `initdb` creates; it logs in without a password (`--auth=trust`).
const SUPERUSER: &str = "session";
/// What the postmaster logs once it accepts connections (after crash recovery, too).
const READY_LINE: &str = "database system is ready to accept connections";

/// A running PostgreSQL server on 127.0.0.1, in a scratch directory of its own, stopped on
/// drop.
///
/// [`Postgres::start`] runs `initdb` (superuser `session`, trust authentication, UTF-8, locale
/// `C`) and then `postgres` on a free port, TCP only (no Unix socket), with `fsync` and
/// `full_page_writes` off (no acknowledged commit is lost when the server is killed, only
/// when the machine crashes) and `max_connections = 200`. Its log is
/// [`Postgres::log_path`].
///
/// initdb and postgres refuse to run as root: when this process is root they run as the
/// `postgres` user (which Debian's package creates), else as `nobody`, and the scratch
/// directory belongs to that user.
///
/// Like a [`crate::RedisServer`], the postmaster is registered for
/// [`crate::kill_registered`] and guarded by a watchdog that kills it if this process dies
/// without stopping it. Drop stops it with a fast shutdown (SIGINT; SIGKILL after a few
/// seconds), waits until its processes are gone and removes the directory.
///
/// ```no_run
/// use testkit_redis::{can_start_postgres, Postgres};
///
/// # fn main() -> std::io::Result<()> {
/// if !can_start_postgres() {
///     return Ok(());
/// }
/// let mut server = Postgres::start()?;
/// let url = server.url(); // postgres://session@127.0.0.1:P/postgres
/// server.kill9()?;        // the postmaster is SIGKILLed, its backends exit
/// server.restart()?;      // crash recovery: every acknowledged commit is back
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Postgres {
    bindir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    dir: Scratch,
    child: Option<Child>,
    watchdog: Option<Child>,
    ready_after: Duration,
    /// Where the log ended before the last launch.
    log_mark: u64,
}
