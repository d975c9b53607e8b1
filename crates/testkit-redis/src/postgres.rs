//! One PostgreSQL server (`initdb`, then `postgres`) and its guard.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::env::{non_empty_var, PG_BINDIR_ENV};
use crate::port::find_free_port;
use crate::process::{self, Signal};
use crate::scratch::Scratch;
use crate::server::{file_len, read_from, tail};

/// The superuser `initdb` creates; it logs in without a password (`--auth=trust`).
const SUPERUSER: &str = "session";
/// The database every cluster has.
const DATABASE: &str = "postgres";
/// Where Debian installs each major version: `/usr/lib/postgresql/<N>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// What the postmaster logs once it accepts connections (after crash recovery, too).
const READY_LINE: &str = "database system is ready to accept connections";
/// `-c` settings of every start. `synchronous_commit` stays on: WAL is written before a
/// commit is acknowledged, so a SIGKILLed server loses no acknowledged commit (only an OS
/// crash could, with `fsync` off).
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "unix_socket_directories=",
    "fsync=off",
    "full_page_writes=off",
    "max_connections=200",
    "lc_messages=C",
];
/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a start (or a restart, crash recovery included) may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown (SIGINT) may take before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the processes of a killed postmaster may take to notice and exit.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// How many fresh ports [`Postgres::start`] tries when a port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Timeout of one [`Postgres::psql`] call.
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two readiness probes.
const POLL: Duration = Duration::from_millis(20);

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

/// The unprivileged user the server runs as when this process is root.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

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

    /// Freezes the whole server with SIGSTOP: the postmaster first (so it starts no more
    /// backends), then each of its processes (backends, checkpointer, WAL writer, …).
    /// Connections stay open and nothing answers; new connections wait in the listen queue.
    /// Returns once the kernel reports them stopped, or after about a second.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent to the postmaster.
    pub fn sigstop(&self) -> io::Result<()> {
        let pid = self.running_pid()?;
        process::signal(pid, Signal::Stop)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while !process::is_stopped(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        let children = process::children_of(pid);
        for &child in &children {
            let _ = process::signal(child, Signal::Stop);
        }
        for &child in &children {
            while process::is_alive(child) && !process::is_stopped(child) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    }

    /// Resumes a server frozen by [`Self::sigstop`]: its processes, then the postmaster.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent to the postmaster.
    pub fn sigcont(&self) -> io::Result<()> {
        let pid = self.running_pid()?;
        for child in process::children_of(pid) {
            let _ = process::signal(child, Signal::Cont);
        }
        process::signal(pid, Signal::Cont)
    }

    /// Kills the postmaster with SIGKILL, as a crash would. Its processes notice and exit by
    /// themselves (resumed first if [stopped](Self::sigstop)); this returns once they are
    /// all gone (any still there after five seconds are SIGKILLed). Every acknowledged commit
    /// survives: [`Self::restart`] brings the server back on the same port, through crash
    /// recovery.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn kill9(&mut self) -> io::Result<()> {
        let pid = self.running_pid()?;
        let children = process::children_of(pid);
        if let Some(child) = self.child.as_mut() {
            child.kill()?;
        }
        process::wait_gone(pid, Duration::from_secs(5));
        self.reap();
        await_orphans(&children);
        Ok(())
    }

    /// Stops the server with a fast shutdown (SIGINT: open transactions are rolled back,
    /// then a shutdown checkpoint), SIGKILL after five seconds, and waits until its processes
    /// are gone. Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            let children = process::children_of(pid);
            // A frozen server shuts down only once its processes run again.
            for &child in &children {
                let _ = process::signal(child, Signal::Cont);
            }
            process::terminate_with(&[pid], Signal::Int, STOP_GRACE);
            await_orphans(&children);
        }
        self.reap();
        self.remove_stale_shared_memory();
    }

    /// Starts the server again on the same port with the same data directory, stopping it
    /// first if it runs (fast shutdown); after [`Self::kill9`] it goes through crash
    /// recovery. Waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// As [`Self::start`]; e.g. when another process took the port meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
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

    /// Hands the scratch directory to the user the server runs as, and runs `initdb` there.
    fn init(&mut self) -> io::Result<()> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(self.dir(), Some(user.uid), Some(user.gid))?;
            check_reachable(self.dir(), user)?;
        }
        let mut command = Command::new(self.bindir.join("initdb"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(self.dir());
        self.as_user(&mut command);
        let output = process::output_with_timeout(&mut command, INITDB_TIMEOUT)?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let log = self.dir().join("initdb.log");
        let _ = fs::write(&log, &text);
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "initdb{} in {} failed ({}); output ({}):\n{}",
                self.as_whom(),
                self.dir().display(),
                output.status,
                log.display(),
                tail(&text, 30)
            )))
        }
    }

    /// Spawns the postmaster on `self.port` and waits until it is ready.
    fn launch(&mut self) -> io::Result<()> {
        let log = self.log_path();
        let log_start = file_len(&log);
        self.log_mark = log_start;
        let output = File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(self.bindir.join("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .args(SETTINGS.iter().flat_map(|setting| ["-c", setting]))
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone()?))
            .stderr(Stdio::from(output));
        self.as_user(&mut command);
        let deadline = Instant::now() + READY_TIMEOUT;
        let child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {} ({e})", self.bindir.join("postgres").display()),
            )
        })?;
        let pid = child.id();
        process::register(pid);
        self.child = Some(child);
        let watchdog = process::spawn_watchdog(pid, self.dir.removes().then(|| self.dir.path()));
        let ready = match watchdog {
            Ok(watchdog) => {
                self.watchdog = Some(watchdog);
                self.wait_ready_since(deadline, log_start)
            }
            Err(e) => Err(e),
        };
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    fn wait_ready_since(&self, deadline: Instant, log_start: u64) -> io::Result<()> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if !self.is_running() {
                return Err(self.startup_error("exited during start-up", log_start));
            }
            if read_from(&self.log_path(), log_start).contains(READY_LINE)
                && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.startup_error("did not accept connections in time", log_start));
            }
            thread::sleep(POLL);
        }
    }

    fn startup_error(&self, what: &str, log_start: u64) -> io::Error {
        io::Error::other(format!(
            "postgres{} on 127.0.0.1:{} {what}; log ({}):\n{}",
            self.as_whom(),
            self.port,
            self.log_path().display(),
            tail(&read_from(&self.log_path(), log_start), 30)
        ))
    }

    /// ` (as user postgres)` when the server runs as another user.
    fn as_whom(&self) -> String {
        self.run_as
            .as_ref()
            .map(|user| format!(" (as user {})", user.name))
            .unwrap_or_default()
    }

    fn as_user(&self, command: &mut Command) {
        if let Some(user) = &self.run_as {
            // std drops the supplementary groups too when root changes the uid.
            command.uid(user.uid).gid(user.gid);
        }
    }

    fn running_pid(&self) -> io::Result<u32> {
        self.pid().filter(|&pid| process::is_alive(pid)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("postgres on port {} is not running", self.port),
            )
        })
    }

    /// Forgets the postmaster after it exited (reaping it so no zombie stays) and stops its
    /// watchdog.
    fn reap(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            if process::is_alive(pid) {
                let _ = child.kill();
            }
            let _ = child.wait();
            process::unregister(pid);
        }
    }

    /// Removes the System V shared memory segment a killed postmaster left (see
    /// [`remove_stale_segment`]).
    fn remove_stale_shared_memory(&self) {
        remove_stale_segment(&self.data_dir());
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the System V shared memory segment that a killed postmaster of `data_dir` left
/// (a clean shutdown removes it; a new postmaster would too, but none may come).
///
/// `postmaster.pid` names the postmaster (line 1) and the segment (the id ending line 7);
/// the segment is removed only when that postmaster is gone and created it (its `cpid` in
/// `/proc/sysvipc/shm`), so a recycled id is left alone.
pub(crate) fn remove_stale_segment(data_dir: &Path) {
    let Ok(lockfile) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return;
    };
    let mut lines = lockfile.lines();
    let Some(owner) = lines.next().and_then(|line| line.trim().parse::<u32>().ok()) else {
        return;
    };
    if process::is_alive(owner) {
        return;
    }
    let Some(shmid) = lines.nth(5).and_then(|line| line.split_whitespace().nth(1)) else {
        return;
    };
    let ours = fs::read_to_string("/proc/sysvipc/shm").is_ok_and(|table| {
        // `key shmid perms size cpid lpid nattch …`
        table.lines().skip(1).any(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.get(1) == Some(&shmid) && fields.get(4).and_then(|p| p.parse().ok()) == Some(owner)
        })
    });
    if !ours {
        return;
    }
    if let Some(ipcrm) = process::find_program("ipcrm") {
        let _ = process::output_with_timeout(Command::new(ipcrm).args(["-m", shmid]), Duration::from_secs(5));
    }
}

/// Waits until the processes of a dead postmaster have exited (resuming them first, in case
/// they are stopped: a stopped process notices nothing); SIGKILLs those still there after
/// [`ORPHAN_GRACE`].
fn await_orphans(children: &[u32]) {
    for &child in children {
        let _ = process::signal(child, Signal::Cont);
    }
    let deadline = Instant::now() + ORPHAN_GRACE;
    for &child in children {
        let left = deadline.saturating_duration_since(Instant::now());
        if !process::wait_gone(child, left) && process::is_postgres(child) {
            let _ = process::signal(child, Signal::Kill);
            process::wait_gone(child, Duration::from_secs(2));
        }
    }
}

/// The directory of PostgreSQL's `initdb` and `postgres`: [`PG_BINDIR_ENV`] when set, else
/// the newest Debian `/usr/lib/postgresql/<N>/bin` holding both, else the directory of
/// `postgres` on `PATH` when `initdb` is there too.
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`], saying where it looked and how to install PostgreSQL, when
/// none is found or [`PG_BINDIR_ENV`] names a directory without them.
pub fn find_postgres_bindir() -> io::Result<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres"]
            .iter()
            .all(|p| process::is_executable(&dir.join(p)))
    };
    if let Some(dir) = non_empty_var(PG_BINDIR_ENV).map(PathBuf::from) {
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{PG_BINDIR_ENV}={} holds no executable initdb and postgres",
                    dir.display()
                ),
            ))
        };
    }
    if let Ok(entries) = fs::read_dir(DEBIAN_ROOT) {
        let newest = entries
            .flatten()
            .filter_map(|entry| {
                let version = parse_version(entry.file_name().to_str()?)?;
                let bin = entry.path().join("bin");
                complete(&bin).then_some((version, bin))
            })
            .max();
        if let Some((_, bin)) = newest {
            return Ok(bin);
        }
    }
    if let Some(dir) = process::find_program("postgres")
        .as_deref()
        .and_then(Path::parent)
        .filter(|dir| complete(dir))
    {
        return Ok(dir.to_path_buf());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "PostgreSQL's initdb and postgres not found ({PG_BINDIR_ENV} unset, nothing in \
             {DEBIAN_ROOT}/<N>/bin, none on PATH); install as root with \
             `apt-get update && apt-get install -y postgresql` (first write \
             `create_main_cluster = false` to /etc/postgresql-common/createcluster.conf so that \
             Debian starts no cluster of its own)"
        ),
    ))
}

/// `15` → `[15]`, `9.6` → `[9, 6]`; `None` for anything else.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

/// The uid of this process (the owner of `/proc/self`).
fn current_uid() -> io::Result<u32> {
    Ok(fs::metadata("/proc/self")?.uid())
}

/// The user a root process runs the server as: `postgres`, else `nobody`, from `/etc/passwd`.
fn unprivileged_user() -> io::Result<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| passwd_entry(&passwd, name))
        .ok_or_else(|| {
            io::Error::other(
                "running as root, and /etc/passwd has neither a `postgres` nor a `nobody` user to run \
                 PostgreSQL as (initdb and postgres refuse to run as root)",
            )
        })
}

/// The uid and gid of `name` in the text of `/etc/passwd` (`name:x:uid:gid:…`); never root.
fn passwd_entry(passwd: &str, name: &str) -> Option<RunAs> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        (uid != 0).then(|| RunAs {
            name: name.to_owned(),
            uid,
            gid,
        })
    })
}

/// Fails, saying what to do, when `user` cannot enter every directory above `dir` (say a
/// `TMPDIR` under `/root`).
fn check_reachable(dir: &Path, user: &RunAs) -> io::Result<()> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)?;
        let mode = meta.mode();
        let may_enter = if meta.uid() == user.uid {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !may_enter {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "PostgreSQL runs as user {} (this process is root), which cannot enter {}; \
                     set TMPDIR to a directory it can reach, such as /tmp",
                    user.name,
                    ancestor.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{can_start_postgres, REQUIRE_POSTGRES_ENV};

    #[test]
    fn reads_users_and_versions() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            passwd_entry(passwd, "postgres"),
            Some(RunAs {
                name: "postgres".into(),
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(passwd_entry(passwd, "nobody").map(|u| u.uid), Some(65534));
        assert_eq!(passwd_entry(passwd, "root"), None, "never root");
        assert_eq!(passwd_entry(passwd, "post"), None);
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert!(parse_version("9.6") < parse_version("15"));
        assert_eq!(parse_version("15-old"), None);
    }

    /// Whether PostgreSQL can be started here; says why not when it cannot.
    fn postgres_available() -> bool {
        if can_start_postgres() {
            return true;
        }
        eprintln!("skipping: no PostgreSQL here and {REQUIRE_POSTGRES_ENV} is not 1");
        false
    }

    /// Whether `psql` is installed (the SQL checks are skipped without it).
    fn has_psql(server: &Postgres) -> bool {
        match server.psql("select 1") {
            Ok(out) => {
                assert_eq!(out.trim(), "1");
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("psql not found: skipping the SQL checks");
                false
            }
            Err(e) => panic!("select 1: {e}"),
        }
    }

    #[test]
    fn starts_survives_kill9_and_stops_by_pid() {
        if !postgres_available() {
            return;
        }
        let mut server = Postgres::start().unwrap();
        let port = server.port();
        let pid = server.pid().unwrap();
        let dir = server.dir().to_path_buf();
        assert_eq!(
            server.url(),
            format!("postgres://session@127.0.0.1:{port}/postgres")
        );
        assert!(crate::registered_pids().contains(&pid));
        assert!(server.log_tail(50).contains(READY_LINE));
        let psql = has_psql(&server);
        if psql {
            assert_eq!(server.psql("show max_connections").unwrap().trim(), "200");
            assert_eq!(server.psql("show synchronous_commit").unwrap().trim(), "on");
            server
                .psql("create table acked (n int); insert into acked values (1), (2)")
                .unwrap();
        }

        let children = process::children_of(pid);
        assert!(!children.is_empty(), "a running postmaster has processes");
        server.kill9().unwrap();
        assert!(!process::is_alive(pid) && server.pid().is_none());
        assert!(
            children.iter().all(|&c| !process::is_alive(c)),
            "the backends exited with their postmaster"
        );
        assert!(!crate::registered_pids().contains(&pid));
        assert!(server.psql("select 1").is_err() || !psql);

        server.restart().unwrap();
        assert_eq!(server.port(), port);
        assert!(server.log_tail(50).contains("database system was interrupted"));
        let killed = pid;
        let pid = server.pid().unwrap();
        assert_ne!(pid, killed);
        assert!(crate::registered_pids().contains(&pid));
        if psql {
            assert_eq!(
                server.psql("select sum(n) from acked").unwrap().trim(),
                "3",
                "committed rows survive SIGKILL"
            );
        }
        let children = process::children_of(pid);
        drop(server);
        assert!(!process::is_alive(pid), "the postmaster is gone after drop");
        assert!(children.iter().all(|&c| !process::is_alive(c)));
        assert!(!crate::registered_pids().contains(&pid));
        assert!(!dir.exists(), "the scratch directory is removed");
    }

    /// Whether the server answers an SSLRequest (it says `N`: no SSL) within half a second.
    fn answers(port: u16) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let request = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]; // length 8, code 80877103
        let mut reply = [0u8; 1];
        stream.write_all(&request).is_ok() && stream.read_exact(&mut reply).is_ok() && reply == *b"N"
    }

    #[test]
    fn freezes_and_thaws() {
        if !postgres_available() {
            return;
        }
        let server = Postgres::start().unwrap();
        let psql = has_psql(&server);
        server.sigstop().unwrap();
        assert!(server.is_paused());
        let pid = server.pid().unwrap();
        assert!(process::children_of(pid).iter().all(|&c| process::is_stopped(c)));
        assert!(!answers(server.port()), "a frozen server answers nothing");
        server.sigcont().unwrap();
        assert!(!server.is_paused());
        assert!(answers(server.port()));
        if psql {
            assert_eq!(server.psql("select 1").unwrap().trim(), "1");
        }
        server.sigstop().unwrap();
        let children = process::children_of(pid);
        drop(server);
        assert!(!process::is_alive(pid), "a frozen server stops on drop");
        assert!(children.iter().all(|&c| !process::is_alive(c)));
    }
}
