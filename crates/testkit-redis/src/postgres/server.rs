//! Starting a server, what it exposes (URL, port, pid, directories, log), and `psql`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::user::{current_uid, unprivileged_user};
use super::{find_postgres_bindir, Postgres, SUPERUSER};
use crate::port::find_free_port;
use crate::process;
use crate::scratch::Scratch;
use crate::server::{read_from, tail};

/// The database every cluster has.
const DATABASE: &str = "postgres";
/// How many fresh ports [`Postgres::start`] tries when a port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Timeout of one [`Postgres::psql`] call.
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);

impl Postgres {
    /// Creates a cluster in a fresh scratch directory and starts a server on a free port of
    /// 127.0.0.1; returns once it accepts connections. When the port was taken in the
    /// meantime, retries with another.
    ///
    /// The programs come from [`find_postgres_bindir`].
    ///
    /// # Errors
    ///
    /// When no PostgreSQL is installed, when `initdb` fails, or when the server exits or is
    /// not ready within a minute; the message includes the tail of the log.
    pub fn start() -> io::Result<Self> {
        let began = Instant::now();
        let bindir = find_postgres_bindir()?;
        let run_as = if current_uid()? == 0 {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = Scratch::new(None, "postgres")?;
        let mut server = Postgres {
            bindir,
            run_as,
            port: 0,
            dir,
            child: None,
            watchdog: None,
            ready_after: Duration::ZERO,
            log_mark: 0,
        };
        server.init()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = find_free_port()?;
            match server.launch() {
                Ok(()) => break,
                Err(e) if attempt < PORT_ATTEMPTS && e.to_string().contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
        server.ready_after = began.elapsed();
        Ok(server)
    }

    /// `postgres://session@127.0.0.1:P/postgres`: the superuser, no password.
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's pid, `None` after [`Self::kill9`] or [`Self::stop`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How long [`Self::start`] took, `initdb` included.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The directory of `initdb` and `postgres` this server runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The scratch directory: the data directory, the log and `initdb`'s output.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The server's log file (its stderr, across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("postgres.log")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&read_from(&self.log_path(), 0), lines)
    }

    /// Whether the postmaster exists and has not exited (it may be stopped).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process::is_alive)
    }

    /// Whether the postmaster is stopped by [`Self::sigstop`].
    pub fn is_paused(&self) -> bool {
        self.pid().is_some_and(process::is_stopped)
    }

    /// Polls until the server accepts connections (it logged that it is ready since the
    /// last start, and its port takes a TCP connection) or `timeout` passes.
    ///
    /// # Errors
    ///
    /// When the postmaster exits or `timeout` passes; with the log's tail.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<()> {
        self.wait_ready_since(Instant::now() + timeout, self.log_mark)
    }

    /// Runs `sql` with `psql` (from [`Self::bindir`], else `PATH`) as the superuser, unaligned
    /// and without headers (`-XAtq`, stopping at the first error); returns its stdout.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] when `psql` is not installed; an error when it exits
    /// non-zero (with its stderr) or runs longer than 30 s.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let psql = Some(self.bindir.join("psql"))
            .filter(|path| process::is_executable(path))
            .or_else(|| process::find_program("psql"))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "psql not found (Debian: apt-get install -y postgresql-client)",
                )
            })?;
        let mut command = Command::new(psql);
        command
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5");
        let output = process::output_with_timeout(&mut command, PSQL_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(io::Error::other(format!(
                "psql -c {sql:?} failed ({}): {}{}",
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
