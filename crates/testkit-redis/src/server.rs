//! One `redis-server` process and its guard.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::options::ServerOptions;
use crate::port::{find_free_cluster_port, find_free_port};
use crate::process::{self, Signal};
use crate::resp::{Connection, Reply};
use crate::scratch::Scratch;

/// How many fresh ports [`RedisServer::start_with`] tries when a port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// Timeout of one [`RedisServer::cli`] call.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness probes.
const POLL: Duration = Duration::from_millis(10);

/// A running `redis-server` (or sentinel) on 127.0.0.1, stopped on drop.
///
/// Drop sends SIGTERM (plus SIGCONT, in case it was stopped), SIGKILL after
/// a short wait, reaps the process and removes the scratch directory — unless
/// the server was [detached](Self::detach).
#[derive(Debug)]
pub struct RedisServer {
    options: ServerOptions,
    port: u16,
    dir: Scratch,
    process: Option<Process>,
    watchdog: Option<Child>,
    config_written: bool,
    detached: bool,
}

#[derive(Debug)]
enum Process {
    /// A child of this process (not daemonized).
    Child(Child),
    /// A daemonized server; its pid comes from its pidfile.
    Daemon(u32),
}

impl Process {
    fn pid(&self) -> u32 {
        match self {
            Process::Child(child) => child.id(),
            Process::Daemon(pid) => *pid,
        }
    }
}

impl RedisServer {
    /// Starts a standalone server with the default [`ServerOptions`].
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be spawned or does not answer PING in time;
    /// the message includes the tail of its log.
    pub fn start() -> io::Result<Self> {
        Self::start_with(ServerOptions::new())
    }

    /// Starts a server and waits until it answers PING (`+PONG`, or `-NOAUTH`
    /// when the default user is disabled) over a raw socket — or, for TLS,
    /// through `redis-cli`. When no port was given and the chosen one was
    /// taken in the meantime, retries with another.
    ///
    /// # Errors
    ///
    /// As [`Self::start`].
    pub fn start_with(options: ServerOptions) -> io::Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match options.port {
                Some(port) => port,
                None if options.cluster => find_free_cluster_port()?,
                None => find_free_port()?,
            };
            let dir = Scratch::new(options.dir.as_deref(), &port.to_string())?;
            let mut server = RedisServer {
                options: options.clone(),
                port,
                dir,
                process: None,
                watchdog: None,
                config_written: false,
                detached: false,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let port_taken = e.to_string().contains("Address already in use");
                    drop(server);
                    if options.port.is_some() || !port_taken || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The port clients connect to (the TLS port for a TLS server).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the running process, `None` after [`Self::kill9`] or [`Self::stop`].
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// `redis://127.0.0.1:P`, or `rediss://` for TLS, with `user:password@`
    /// when [`ServerOptions::auth`] was given.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let credentials = self
            .options
            .auth
            .as_ref()
            .map(|(user, password)| format!("{user}:{password}@"))
            .unwrap_or_default();
        format!("{scheme}://{credentials}127.0.0.1:{}", self.port)
    }

    /// The server's working directory (config, log, pidfile, AOF, cluster node file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("redis.log")
    }

    /// The last `lines` lines of the server's log (and of its stdout/stderr).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = read_from(&self.dir().join("stdout.log"), 0);
        text.push_str(&read_from(&self.log_path(), 0));
        tail(&text, lines)
    }

    /// Whether the process exists and has not exited (it may be stopped).
    pub fn is_running(&self) -> bool {
        self.pid().is_some_and(process::is_alive)
    }

    /// Whether the process is stopped by [`Self::sigstop`].
    pub fn is_paused(&self) -> bool {
        self.pid().is_some_and(process::is_stopped)
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing answers.
    /// Returns once the kernel reports the process stopped (signal delivery
    /// is asynchronous), or after one second.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn sigstop(&self) -> io::Result<()> {
        let pid = self.running_pid()?;
        process::signal(pid, Signal::Stop)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while !process::is_stopped(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// Resumes a server frozen by [`Self::sigstop`].
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn sigcont(&self) -> io::Result<()> {
        process::signal(self.running_pid()?, Signal::Cont)
    }

    /// Kills the server with SIGKILL and waits until it is gone. Without AOF
    /// its data is lost; [`Self::restart`] brings it back on the same port.
    ///
    /// # Errors
    ///
    /// When the server is not running or the signal cannot be sent.
    pub fn kill9(&mut self) -> io::Result<()> {
        let pid = self.running_pid()?;
        match self.process.as_mut() {
            Some(Process::Child(child)) => child.kill()?,
            _ => process::signal(pid, Signal::Kill)?,
        }
        process::wait_gone(pid, Duration::from_secs(5));
        self.reap();
        Ok(())
    }

    /// Stops the server gracefully (SIGTERM, SIGKILL after a grace period).
    /// Does nothing when it is not running.
    pub fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            process::terminate_all(&[pid]);
        }
        self.reap();
    }

    /// Starts the server again on the same port, in the same directory, with
    /// the same arguments (so an AOF file or a cluster node file is reused),
    /// stopping it first if it runs. Waits until it is ready.
    ///
    /// # Errors
    ///
    /// As [`Self::start`]; e.g. when another process took the port meanwhile.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.launch()
    }

    /// Polls until the server answers (see [`Self::start_with`]) or `timeout` passes.
    ///
    /// # Errors
    ///
    /// When the process exits or `timeout` passes; with the log's tail.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<()> {
        self.wait_ready_since(Instant::now() + timeout, LogMark::default())
    }

    /// Sends one command over a raw socket (authenticating first when
    /// [`ServerOptions::auth`] was given). An error reply is `Ok(Reply::Error)`.
    ///
    /// # Errors
    ///
    /// For a TLS server (use [`Self::cli`]), on I/O errors and timeouts.
    pub fn cmd(&self, args: &[&str]) -> io::Result<Reply> {
        if self.options.tls.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "RedisServer::cmd speaks no TLS; use RedisServer::cli",
            ));
        }
        let mut connection = Connection::connect(self.port)?;
        if let Some((user, password)) = &self.options.auth {
            connection
                .command(&["AUTH", user.as_str(), password.as_str()])?
                .into_result()?;
        }
        connection.command(args)
    }

    /// Runs `redis-cli` with [`Self::cli_args`] and `args`; returns its stdout.
    ///
    /// The password, if any, goes through `REDISCLI_AUTH`, not the command line.
    ///
    /// # Errors
    ///
    /// When `redis-cli` fails, exits non-zero (an error reply counts, `-e`),
    /// or runs longer than 10 s.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let mut command = Command::new("redis-cli");
        command.args(self.cli_args()).arg("-e").args(args);
        if let Some((_, password)) = &self.options.auth {
            command.env("REDISCLI_AUTH", password);
        }
        let output = process::output_with_timeout(&mut command, CLI_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(io::Error::other(format!(
                "redis-cli {} failed ({}): {}{}",
                args.join(" "),
                output.status,
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// `redis-cli` arguments that reach this server: host, port, TLS files
    /// and user (the password is not included; set `REDISCLI_AUTH`).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        if let Some(tls) = &self.options.tls {
            args.push("--tls".to_owned());
            args.push("--cacert".to_owned());
            args.push(path_arg(&tls.ca_cert));
            if let Some((cert, key)) = &tls.client {
                args.extend(["--cert".to_owned(), path_arg(cert)]);
                args.extend(["--key".to_owned(), path_arg(key)]);
            }
        }
        if let Some((user, _)) = &self.options.auth {
            args.extend(["--user".to_owned(), user.clone()]);
        }
        args
    }

    /// Lets the server outlive this guard: drop neither stops it nor removes
    /// its directory, and [`crate::kill_registered`] forgets it. Pair with
    /// [`ServerOptions::daemonize`]; stop it later with [`crate::stop_pidfiles`].
    pub fn detach(&mut self) {
        self.detached = true;
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        self.dir.keep();
        if let Some(pid) = self.pid() {
            process::unregister(pid);
        }
    }

    /// The path of the pidfile the server writes.
    pub fn pidfile(&self) -> PathBuf {
        self.dir().join("redis.pid")
    }

    /// Spawns the process in `self.dir` on `self.port` and waits until it is ready.
    fn launch(&mut self) -> io::Result<()> {
        let dir = self.dir().to_path_buf();
        let config = dir.join("redis.conf");
        if !self.config_written {
            let mut text = self.options.config_lines.join("\n");
            text.push('\n');
            fs::write(&config, text)?;
            self.config_written = true;
        }
        let pidfile = self.pidfile();
        let _ = fs::remove_file(&pidfile);
        let stdout_log = dir.join("stdout.log");
        let log_start = LogMark {
            stdout: file_len(&stdout_log),
            log: file_len(&self.log_path()),
        };
        let output = File::options().create(true).append(true).open(&stdout_log)?;

        let mut command = Command::new("redis-server");
        command
            .arg(&config)
            .args(self.arguments(&dir))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone()?))
            .stderr(Stdio::from(output));
        let deadline = Instant::now() + self.options.ready_timeout;
        let mut child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run redis-server ({e}); install it with `apt-get install -y redis-server redis-tools`"),
            )
        })?;
        let process = if self.options.daemonize {
            let status = child.wait()?;
            if !status.success() {
                return Err(self.startup_error(&format!("exited with {status}"), log_start));
            }
            Process::Daemon(self.read_pidfile(&pidfile, deadline, log_start)?)
        } else {
            Process::Child(child)
        };
        process::register(process.pid());
        let child_pid = matches!(process, Process::Child(_)).then(|| process.pid());
        self.process = Some(process);
        let ready = self
            .guard_with_watchdog(child_pid)
            .and_then(|()| self.wait_ready_since(deadline, log_start));
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    /// Starts the watchdog of a child server (daemons are meant to outlive us).
    fn guard_with_watchdog(&mut self, child_pid: Option<u32>) -> io::Result<()> {
        let Some(pid) = child_pid else {
            return Ok(());
        };
        let dir = match &self.options.cleanup {
            Some(root) => Some(root.as_path()),
            None => self.dir.removes().then(|| self.dir.path()),
        };
        self.watchdog = Some(process::spawn_watchdog(pid, dir)?);
        Ok(())
    }

    fn arguments(&self, dir: &Path) -> Vec<String> {
        let o = &self.options;
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        if o.sentinel {
            push(&["--sentinel"]);
        }
        push(&["--bind", "127.0.0.1"]);
        let port = self.port.to_string();
        match &o.tls {
            None => push(&["--port", &port]),
            Some(tls) => push(&[
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &path_arg(&tls.server_cert),
                "--tls-key-file",
                &path_arg(&tls.server_key),
                "--tls-ca-cert-file",
                &path_arg(&tls.ca_cert),
                "--tls-auth-clients",
                &yes_no(tls.auth_clients),
            ]),
        }
        push(&[
            "--dir",
            &path_arg(dir),
            "--logfile",
            &path_arg(&self.log_path()),
            "--pidfile",
            &path_arg(&self.pidfile()),
            "--daemonize",
            &yes_no(o.daemonize),
        ]);
        if !o.sentinel {
            push(&["--save", "", "--appendonly", &yes_no(o.aof)]);
            // Replicas sync at once instead of after the default 5 s wait for more replicas.
            push(&["--repl-diskless-sync-delay", "0"]);
            if o.aof {
                push(&["--appendfsync", "always"]);
            }
            if o.debug_command {
                push(&["--enable-debug-command", "local"]);
            }
            if o.cluster {
                push(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                ]);
            }
            if let Some(master) = o.replica_of {
                push(&["--replicaof", "127.0.0.1", &master.to_string()]);
            }
        }
        args.extend(o.args.iter().cloned());
        args
    }

    fn read_pidfile(&self, pidfile: &Path, deadline: Instant, log_start: LogMark) -> io::Result<u32> {
        loop {
            if let Some(pid) = fs::read_to_string(pidfile)
                .ok()
                .and_then(|text| text.trim().parse().ok())
            {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(self.startup_error("wrote no pidfile", log_start));
            }
            thread::sleep(POLL);
        }
    }

    fn wait_ready_since(&self, deadline: Instant, log_start: LogMark) -> io::Result<()> {
        loop {
            if !self.is_running() {
                return Err(self.startup_error("exited during start-up", log_start));
            }
            if self.probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.startup_error("did not answer PING in time", log_start));
            }
            thread::sleep(POLL);
        }
    }

    /// One readiness probe.
    fn probe(&self) -> bool {
        if self.options.tls.is_some() {
            return self.cli(&["PING"]).is_ok_and(|out| out.trim() == "PONG");
        }
        let reply =
            Connection::connect_with(self.port, Duration::from_millis(100), Duration::from_millis(500))
                .and_then(|mut c| c.command(&["PING"]));
        match reply {
            Ok(Reply::Status(s)) => s == "PONG",
            Ok(Reply::Error(e)) => e.starts_with("NOAUTH"),
            _ => false,
        }
    }

    fn running_pid(&self) -> io::Result<u32> {
        self.pid().filter(|&pid| process::is_alive(pid)).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotConnected,
                format!("redis-server on port {} is not running", self.port),
            )
        })
    }

    /// Forgets the process after it exited (reaping a child so no zombie stays).
    fn reap(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        if let Some(process) = self.process.take() {
            let pid = process.pid();
            if let Process::Child(mut child) = process {
                if process::is_alive(pid) {
                    let _ = child.kill();
                }
                let _ = child.wait();
            }
            process::unregister(pid);
        }
    }

    fn startup_error(&self, what: &str, since: LogMark) -> io::Error {
        let mut recent = read_from(&self.dir().join("stdout.log"), since.stdout);
        recent.push_str(&read_from(&self.log_path(), since.log));
        io::Error::other(format!(
            "redis-server on 127.0.0.1:{} {what}; log ({}):\n{}",
            self.port,
            self.log_path().display(),
            tail(&recent, 30)
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// Where the server's two log files ended before a launch.
#[derive(Clone, Copy, Debug, Default)]
struct LogMark {
    stdout: u64,
    log: u64,
}

/// Stops many servers at once: SIGTERM to all, then one shared grace period.
pub(crate) fn stop_all<'a>(servers: impl IntoIterator<Item = &'a mut RedisServer>) {
    let mut servers: Vec<&mut RedisServer> = servers.into_iter().filter(|s| !s.detached).collect();
    let pids: Vec<u32> = servers.iter().filter_map(|s| s.pid()).collect();
    process::terminate_all(&pids);
    for server in &mut servers {
        server.reap();
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

pub(crate) fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
