//! How servers and topologies are started.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::scratch::Scratch;

/// Default time a server or topology may take to become ready.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for one [`crate::RedisServer`]; a builder.
///
/// The defaults: a free port on 127.0.0.1, a fresh scratch directory removed
/// on drop, no persistence (`--save '' --appendonly no`), not daemonized.
/// Data nodes always get `--repl-diskless-sync-delay 0`, so a replica syncs
/// at once instead of after Redis's default 5 s wait.
#[derive(Clone)]
pub struct ServerOptions {
    pub(crate) port: Option<u16>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) aof: bool,
    pub(crate) debug_command: bool,
    pub(crate) cluster: bool,
    pub(crate) replica_of: Option<u16>,
    pub(crate) sentinel: bool,
    pub(crate) config_lines: Vec<String>,
    pub(crate) args: Vec<String>,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) auth: Option<(String, String)>,
    pub(crate) daemonize: bool,
    pub(crate) ready_timeout: Duration,
    /// A directory the watchdog removes if this process dies without cleaning up.
    pub(crate) cleanup: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            port: None,
            dir: None,
            aof: false,
            debug_command: false,
            cluster: false,
            replica_of: None,
            sentinel: false,
            config_lines: Vec::new(),
            args: Vec::new(),
            tls: None,
            auth: None,
            daemonize: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            cleanup: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("aof", &self.aof)
            .field("debug_command", &self.debug_command)
            .field("cluster", &self.cluster)
            .field("replica_of", &self.replica_of)
            .field("sentinel", &self.sentinel)
            .field("config_lines", &self.config_lines.len())
            .field("args", &self.args)
            .field("tls", &self.tls)
            .field("auth_user", &self.auth.as_ref().map(|(user, _)| user))
            .field("daemonize", &self.daemonize)
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

impl ServerOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens on `port` instead of a free one (no retry if it is taken).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Uses `dir` (created if missing, never removed) instead of a scratch directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// `true`: `--appendonly yes --appendfsync always`, so acknowledged writes survive `kill -9`.
    pub fn aof(mut self, aof: bool) -> Self {
        self.aof = aof;
        self
    }

    /// `true`: `--enable-debug-command local`, for `DEBUG SLEEP` and friends.
    pub fn debug_command(mut self, enabled: bool) -> Self {
        self.debug_command = enabled;
        self
    }

    /// `true`: a cluster node (`--cluster-enabled yes`, node timeout 1000 ms).
    pub fn cluster(mut self, enabled: bool) -> Self {
        self.cluster = enabled;
        self
    }

    /// Starts as a replica of the server on `127.0.0.1:port`.
    pub fn replica_of(mut self, port: u16) -> Self {
        self.replica_of = Some(port);
        self
    }

    /// `true`: runs `redis-server … --sentinel`; give the monitor lines with [`Self::config_line`].
    pub fn sentinel(mut self, enabled: bool) -> Self {
        self.sentinel = enabled;
        self
    }

    /// Adds a line to the server's config file (kept off the command line, so
    /// secrets such as ACL passwords do not show in `ps`).
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }

    /// Adds one command-line argument, e.g. `"--maxmemory"` then `"10mb"`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Serves TLS only (`--port 0 --tls-port P`) with these files.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Credentials that readiness probes and [`crate::RedisServer::cli`] use.
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// `true`: `--daemonize yes` with a pidfile, so the server outlives this
    /// process once detached ([`crate::RedisServer::detach`]).
    pub fn daemonize(mut self, daemonize: bool) -> Self {
        self.daemonize = daemonize;
        self
    }

    /// How long start-up may take before it is an error (default 20 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Places the server in `root`'s subdirectory `name`; if this process
    /// dies without dropping the topology, the watchdog removes `root`.
    pub(crate) fn in_topology(mut self, root: &Scratch, name: &str) -> Self {
        self.dir = Some(root.path().join(name));
        self.cleanup = root.removes().then(|| root.path().to_path_buf());
        self
    }
}

/// The certificate files of a TLS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (PEM) that signed the server's certificate and client certificates.
    pub ca_cert: PathBuf,
    /// The server's certificate (PEM).
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
    /// A client certificate and key (PEM) that probes present; needed when `auth_clients`.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `true`: clients must present a certificate (`--tls-auth-clients yes`).
    pub auth_clients: bool,
}

/// Options for a topology; a builder.
///
/// The data nodes (not the sentinels) get `aof`, `debug_command` and the
/// extra arguments.
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    pub(crate) aof: bool,
    pub(crate) debug_command: bool,
    pub(crate) args: Vec<String>,
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) daemonize: bool,
    pub(crate) mutual_tls: bool,
    pub(crate) ready_timeout: Duration,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        Self {
            aof: false,
            debug_command: false,
            args: Vec::new(),
            base_dir: None,
            daemonize: false,
            mutual_tls: false,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl TopologyOptions {
    /// The defaults: no persistence, fresh scratch directories, child processes.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`ServerOptions::aof`].
    pub fn aof(mut self, aof: bool) -> Self {
        self.aof = aof;
        self
    }

    /// See [`ServerOptions::debug_command`].
    pub fn debug_command(mut self, enabled: bool) -> Self {
        self.debug_command = enabled;
        self
    }

    /// Adds a command-line argument for every data node.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Puts the topology's files under `dir` (created if missing, never
    /// removed) instead of a scratch directory removed on drop.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// See [`ServerOptions::daemonize`]; pair with [`Self::base_dir`] and
    /// [`crate::RedisTopology::detach`].
    pub fn daemonize(mut self, daemonize: bool) -> Self {
        self.daemonize = daemonize;
        self
    }

    /// `true`: the TLS server requires client certificates (`--tls-auth-clients yes`).
    pub fn mutual_tls(mut self, enabled: bool) -> Self {
        self.mutual_tls = enabled;
        self
    }

    /// How long the whole topology may take to become ready (default 20 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The options of a data node in `root`'s subdirectory `name`, as these options say.
    pub(crate) fn node(&self, root: &Scratch, name: &str) -> ServerOptions {
        ServerOptions::new()
            .in_topology(root, name)
            .aof(self.aof)
            .debug_command(self.debug_command)
            .args(self.args.iter().cloned())
            .daemonize(self.daemonize)
            .ready_timeout(self.ready_timeout)
    }
}
