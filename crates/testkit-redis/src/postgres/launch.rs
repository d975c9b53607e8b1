//! Launching: `initdb` into the scratch directory, then the postmaster, until it accepts
//! connections.

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::user::check_reachable;
use super::{Postgres, READY_LINE, SUPERUSER};
use crate::process;
use crate::server::{file_len, read_from, tail};

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
/// Pause between two readiness probes.
const POLL: Duration = Duration::from_millis(20);

impl Postgres {
    /// Hands the scratch directory to the user the server runs as, and runs `initdb` there.
    pub(super) fn init(&mut self) -> io::Result<()> {
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
    pub(super) fn launch(&mut self) -> io::Result<()> {
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

    pub(super) fn wait_ready_since(&self, deadline: Instant, log_start: u64) -> io::Result<()> {
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
}
