//! [`RedisConfig`]: where Redis is, and how the client behaves when Redis is slow or gone.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectError, ReconnectPolicy, ServerConfig,
    TcpConfig, TlsConfig, TlsConnector, TlsHostMapping, UnresponsiveConfig,
};
use serde::Deserialize;
use session_core::backend::HEADER_LEN;
use session_core::{Error, KeyPrefix, Result, DEFAULT_KEY_PREFIX, DEFAULT_MAX_SESSION_BYTES};

/// Default `redis.url`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default `redis.pool_size`: one multiplexed connection (per node), which pipelines every
/// concurrent call; more help only when one client task is CPU-bound (many cores).
pub const DEFAULT_POOL_SIZE: usize = 1;
/// Default `redis.timeout_ms`: every command answers within 250 ms or fails with `Error::Timeout`.
pub const DEFAULT_TIMEOUT_MS: u64 = 250;
/// Default `redis.connect_timeout_ms`: TCP connect, TLS handshake and `AUTH`/`SELECT`/`CLUSTER SLOTS`.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default `redis.unresponsive_timeout_ms`: a connection with a command unanswered this long is dropped
/// and reconnected (a hung server or a desynced stream never heals by itself).
pub const DEFAULT_UNRESPONSIVE_TIMEOUT_MS: u64 = 2_000;
/// Default `redis.max_pending_commands`: commands queued in the client beyond this fail at once.
pub const DEFAULT_MAX_PENDING_COMMANDS: usize = 16_384;
/// Default `redis.reconnect.min_delay_ms`.
pub const DEFAULT_RECONNECT_MIN_DELAY_MS: u64 = 100;
/// Default `redis.reconnect.max_delay_ms`.
pub const DEFAULT_RECONNECT_MAX_DELAY_MS: u64 = 2_000;
/// Default `redis.tombstone_ttl_ms`: `0`, tombstones off (`delete` is a plain `DEL`).
pub const DEFAULT_TOMBSTONE_TTL_MS: u64 = 0;
/// Longest `redis.tombstone_ttl_ms`: 100 years (deadlines stay exact in Lua's doubles, and a
/// tombstone may have to outlive a session lifetime cap of many months).
pub const MAX_TOMBSTONE_TTL_MS: u64 = 100 * 365 * 24 * 3_600_000;

const MAX_TIMEOUT_MS: u64 = 600_000;
/// Writes of one command to a socket: the first, and re-sends after cluster redirections.
pub(crate) const COMMAND_ATTEMPTS: u32 = 3;
const MAX_POOL_SIZE: usize = 64;

/// Configuration of a [`RedisStore`](crate::RedisStore). Field names are the configuration keys
/// under `redis.` (for example `redis.timeout_ms`); every field has a default, so an empty table
/// is a valid configuration for a Redis on `127.0.0.1:6379`.
///
/// `Debug` redacts the password (in `password`, in `sentinel.password` and inside `url`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is. Default `redis://127.0.0.1:6379`. Accepted forms:
    /// * `host:port` or `host` (the seed's `localhost:6379`), optionally followed by
    ///   StackExchange.Redis options: `localhost:6379,password=…,user=…,ssl=true,defaultDatabase=1`;
    /// * `redis://[user:password@]host[:port][/db]`, and `rediss://…` for TLS;
    /// * `redis-cluster://host:port?node=host:port&node=…` (`rediss-cluster://` for TLS);
    /// * `redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port&…` (the hosts are
    ///   sentinels; `rediss-sentinel://` for TLS; `sentinelUsername`/`sentinelPassword` are the
    ///   sentinels' own credentials).
    pub url: String,
    /// Database index to `SELECT` (standalone and sentinel only). Default: the URL's `/db`, else 0.
    pub database: Option<u8>,
    /// Number of multiplexed connections (per node). Default 1; 1 to 64.
    pub pool_size: usize,
    /// Per-command timeout in milliseconds. Default 250.
    pub timeout_ms: u64,
    /// Connect timeout in milliseconds: TCP connect, TLS handshake and the setup commands
    /// (`AUTH`, `SELECT`, `CLUSTER SLOTS`, sentinel queries). Default 2000.
    pub connect_timeout_ms: u64,
    /// A connection that has a command unanswered for this long is closed and reconnected.
    /// Default 2000; at least `timeout_ms`.
    pub unresponsive_timeout_ms: u64,
    /// Commands queued inside the client beyond this number fail at once with
    /// `Error::Unavailable`. Default 16384.
    pub max_pending_commands: usize,
    /// `TCP_NODELAY` on every connection (Nagle's algorithm off). Default `false`, the
    /// operating system's default, as fred's: under concurrent load small commands written
    /// while others are in flight then share packets, which measured ~25% more writes/s at 64
    /// tasks (docs/benchmarks.md). Turn it on where a network's delayed acknowledgements stall
    /// lone multi-packet writes.
    pub tcp_nodelay: bool,
    /// ACL user name. Default: the URL's, else none (the `default` user).
    pub username: Option<String>,
    /// Password. Default: the URL's, else none.
    pub password: Option<String>,
    /// TLS settings, used with `rediss://` URLs.
    pub tls: RedisTlsConfig,
    /// Reconnect backoff.
    pub reconnect: ReconnectConfig,
    /// Sentinel settings, used with `redis-sentinel://` URLs.
    pub sentinel: SentinelConfig,
    /// Prefix of every key. Default `session:`.
    pub key_prefix: String,
    /// Largest encoded session in bytes. Default 1 MiB.
    pub max_session_bytes: usize,
    /// Tombstones: `0` (the default) = off; otherwise `delete` leaves a tombstone (a 52-byte
    /// header flagged as deleted) instead of removing the key, so that another instance's
    /// replayed outage journal cannot bring a logged-out session back, and `update` treats a
    /// tombstone as absent. A tombstone keeps the deleted session's own deadline; a delete of a
    /// key that holds nothing leaves one lasting this many milliseconds (by the Redis server's
    /// clock). At most 100 years. Every instance sharing one Redis must use the same mode.
    pub tombstone_ttl_ms: u64,
}

/// TLS settings (`redis.tls.*`). TLS itself is switched on by a `rediss` URL scheme.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisTlsConfig {
    /// PEM file of the CA(s) that signed the server certificate. Default: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain for client authentication (mTLS). Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for client authentication (mTLS). Needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against, when it differs from the host in the
    /// URL (for example a certificate for `redis.internal` reached by IP address).
    pub server_name: Option<String>,
}

/// Reconnect backoff (`redis.reconnect.*`): exponential from `min_delay_ms`, doubling up to
/// `max_delay_ms`, plus up to `min_delay_ms` of random jitter; it retries forever.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// First delay in milliseconds. Default 100.
    pub min_delay_ms: u64,
    /// Longest delay in milliseconds. Default 2000.
    pub max_delay_ms: u64,
}

/// Sentinel settings (`redis.sentinel.*`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SentinelConfig {
    /// The monitored master's name. Default: the URL's `sentinelServiceName`.
    pub service_name: Option<String>,
    /// User name for the sentinels themselves. Default: the URL's `sentinelUsername`, else none.
    pub username: Option<String>,
    /// Password for the sentinels themselves. Default: the URL's `sentinelPassword`, else none.
    pub password: Option<String>,
}

/// The kind of deployment a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Topology {
    /// One server (`redis://`, `rediss://`, `host:port`).
    Standalone,
    /// A Redis Cluster (`redis-cluster://`).
    Cluster,
    /// A master found through sentinels (`redis-sentinel://`).
    Sentinel,
}

impl Topology {
    /// `"standalone"`, `"cluster"` or `"sentinel"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: DEFAULT_URL.to_owned(),
            database: None,
            pool_size: DEFAULT_POOL_SIZE,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            unresponsive_timeout_ms: DEFAULT_UNRESPONSIVE_TIMEOUT_MS,
            max_pending_commands: DEFAULT_MAX_PENDING_COMMANDS,
            tcp_nodelay: false,
            username: None,
            password: None,
            tls: RedisTlsConfig::default(),
            reconnect: ReconnectConfig::default(),
            sentinel: SentinelConfig::default(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
        }
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            min_delay_ms: DEFAULT_RECONNECT_MIN_DELAY_MS,
            max_delay_ms: DEFAULT_RECONNECT_MAX_DELAY_MS,
        }
    }
}

const REDACTED: &str = "<redacted>";

fn redact_opt(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("pool_size", &self.pool_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("unresponsive_timeout_ms", &self.unresponsive_timeout_ms)
            .field("max_pending_commands", &self.max_pending_commands)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("username", &self.username)
            .field("password", &redact_opt(&self.password))
            .field("tls", &self.tls)
            .field("reconnect", &self.reconnect)
            .field("sentinel", &self.sentinel)
            .field("key_prefix", &self.key_prefix)
            .field("max_session_bytes", &self.max_session_bytes)
            .field("tombstone_ttl_ms", &self.tombstone_ttl_ms)
            .finish()
    }
}

impl fmt::Debug for RedisTlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTlsConfig")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl fmt::Debug for ReconnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectConfig")
            .field("min_delay_ms", &self.min_delay_ms)
            .field("max_delay_ms", &self.max_delay_ms)
            .finish()
    }
}

impl fmt::Debug for SentinelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelConfig")
            .field("service_name", &self.service_name)
            .field("username", &self.username)
            .field("password", &redact_opt(&self.password))
            .finish()
    }
}

/// A URL with the password of its user info and any `sentinelPassword` / `password=` value
/// replaced by `<redacted>`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // user:password@ in the authority.
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            let userinfo = &out[start..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u).to_owned();
            if userinfo.contains(':') {
                out.replace_range(start..at, &format!("{user}:{REDACTED}"));
            }
        }
    }
    // Query parameters and StackExchange-style options that carry a password.
    for marker in ["sentinelPassword=", "password="] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(marker).map(|i| from + i + marker.len()) {
            let end = out[pos..].find(['&', ',', '#']).map_or(out.len(), |i| pos + i);
            out.replace_range(pos..end, REDACTED);
            from = pos + REDACTED.len();
        }
    }
    out
}

fn config_err(key: &str, message: impl Into<String>) -> Error {
    Error::config(key, message)
}

fn config_err_src(key: &str, message: impl Into<String>, source: fred::error::Error) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
        source: Some(Box::new(source)),
    }
}

/// Everything a store needs, checked and converted to fred's types.
#[derive(Clone)]
pub(crate) struct Built {
    pub(crate) fred: FredConfig,
    pub(crate) perf: PerformanceConfig,
    pub(crate) connection: ConnectionConfig,
    pub(crate) policy: ReconnectPolicy,
    pub(crate) pool_size: usize,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) topology: Topology,
    pub(crate) tls: bool,
    pub(crate) key_prefix: KeyPrefix,
    pub(crate) max_session_bytes: usize,
    pub(crate) max_pending_commands: usize,
    /// `0`: tombstones off.
    pub(crate) tombstone_ttl_ms: u64,
}

impl RedisConfig {
    /// The defaults with another URL.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// Checks every value without touching the network or the file system, naming the key of the
    /// first bad one.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key (`redis.url`, `redis.timeout_ms`, ...).
    pub fn validate(&self) -> Result<()> {
        self.check_numbers()?;
        self.parse_url()?;
        self.key_prefix()?;
        self.check_tls_files_pairing()?;
        Ok(())
    }

    /// The validated key prefix.
    ///
    /// # Errors
    /// [`Error::Config`] for `redis.key_prefix`.
    pub fn key_prefix(&self) -> Result<KeyPrefix> {
        KeyPrefix::new(&self.key_prefix).map_err(|e| config_err("redis.key_prefix", e.to_string()))
    }

    /// The topology the URL points at.
    ///
    /// # Errors
    /// [`Error::Config`] for `redis.url`.
    pub fn topology(&self) -> Result<Topology> {
        Ok(self.parse_url()?.topology)
    }

    fn check_numbers(&self) -> Result<()> {
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return Err(config_err(
                "redis.pool_size",
                format!("must be 1 to {MAX_POOL_SIZE}, not {}", self.pool_size),
            ));
        }
        for (key, v) in [
            ("redis.timeout_ms", self.timeout_ms),
            ("redis.connect_timeout_ms", self.connect_timeout_ms),
            ("redis.unresponsive_timeout_ms", self.unresponsive_timeout_ms),
            ("redis.reconnect.min_delay_ms", self.reconnect.min_delay_ms),
            ("redis.reconnect.max_delay_ms", self.reconnect.max_delay_ms),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                return Err(config_err(
                    key,
                    format!("must be 1 to {MAX_TIMEOUT_MS} milliseconds, not {v}; a zero timeout would wait forever"),
                ));
            }
        }
        if self.unresponsive_timeout_ms < self.timeout_ms {
            return Err(config_err(
                "redis.unresponsive_timeout_ms",
                format!(
                    "must be at least redis.timeout_ms ({} ms), not {}",
                    self.timeout_ms, self.unresponsive_timeout_ms
                ),
            ));
        }
        if self.reconnect.max_delay_ms < self.reconnect.min_delay_ms {
            return Err(config_err(
                "redis.reconnect.max_delay_ms",
                format!(
                    "must be at least redis.reconnect.min_delay_ms ({} ms), not {}",
                    self.reconnect.min_delay_ms, self.reconnect.max_delay_ms
                ),
            ));
        }
        if self.max_pending_commands == 0 {
            return Err(config_err("redis.max_pending_commands", "must be at least 1"));
        }
        if self.max_session_bytes <= HEADER_LEN {
            return Err(config_err(
                "redis.max_session_bytes",
                format!("must be more than the {HEADER_LEN}-byte envelope header"),
            ));
        }
        if u32::try_from(self.max_session_bytes).is_err() {
            return Err(config_err("redis.max_session_bytes", "must be below 4 GiB"));
        }
        if self.tombstone_ttl_ms > MAX_TOMBSTONE_TTL_MS {
            return Err(config_err(
                "redis.tombstone_ttl_ms",
                format!(
                    "must be 0 (tombstones off) or 1 to {MAX_TOMBSTONE_TTL_MS} milliseconds (100 years), not {}",
                    self.tombstone_ttl_ms
                ),
            ));
        }
        Ok(())
    }

    fn check_tls_files_pairing(&self) -> Result<()> {
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => Err(config_err(
                "redis.tls.key_file",
                "is required with redis.tls.cert_file (client certificate authentication)",
            )),
            (None, Some(_)) => Err(config_err(
                "redis.tls.cert_file",
                "is required with redis.tls.key_file (client certificate authentication)",
            )),
            _ => Ok(()),
        }
    }

    /// Parses the URL into fred's configuration (server, credentials, database).
    fn parse_url(&self) -> Result<ParsedUrl> {
        let raw = self.url.trim();
        if raw.is_empty() {
            return Err(config_err(
                "redis.url",
                format!("is empty; use host:port or a URL such as {DEFAULT_URL}"),
            ));
        }
        if raw.contains("://") {
            self.parse_scheme_url(raw)
        } else {
            self.parse_bare(raw)
        }
    }

    fn parse_scheme_url(&self, raw: &str) -> Result<ParsedUrl> {
        let (scheme, rest) = raw.split_once("://").unwrap_or(("redis", raw));
        let (tls, topology) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, Topology::Standalone),
            "rediss" => (true, Topology::Standalone),
            "redis-cluster" => (false, Topology::Cluster),
            "rediss-cluster" => (true, Topology::Cluster),
            "redis-sentinel" => (false, Topology::Sentinel),
            "rediss-sentinel" => (true, Topology::Sentinel),
            other => {
                return Err(config_err(
                    "redis.url",
                    format!(
                        "unsupported scheme {:?}; use redis://, rediss://, redis-cluster://, \
                         rediss-cluster://, redis-sentinel:// or rediss-sentinel:// (or plain host:port)",
                        session_core_clip(other)
                    ),
                ))
            }
        };
        // fred would build its own TLS connector from the `s` in the scheme; this crate builds
        // it from redis.tls.*, so fred gets the plain scheme.
        let plain = match topology {
            Topology::Standalone => "redis",
            Topology::Cluster => "redis-cluster",
            Topology::Sentinel => "redis-sentinel",
        };
        let mut url = format!("{plain}://{rest}");
        if topology == Topology::Sentinel && !rest.contains("sentinelServiceName=") {
            match &self.sentinel.service_name {
                Some(name) => {
                    url.push(if rest.contains('?') { '&' } else { '?' });
                    url.push_str("sentinelServiceName=");
                    url.push_str(name);
                }
                None => {
                    return Err(config_err(
                        "redis.url",
                        "a redis-sentinel:// URL needs ?sentinelServiceName=NAME (or set redis.sentinel.service_name)",
                    ))
                }
            }
        }
        if topology == Topology::Standalone && rest.contains("node=") {
            return Err(config_err(
                "redis.url",
                "node= parameters are only read from redis-cluster:// and redis-sentinel:// URLs; \
                 use one of those schemes for a cluster or sentinels",
            ));
        }
        let fred = FredConfig::from_url(&url).map_err(|e| {
            let msg = format!(
                "cannot parse {}: {}; accepted: host:port, redis://[user:password@]host[:port][/db], \
                 rediss://..., redis-cluster://host:port?node=host:port, \
                 redis-sentinel://host:port?sentinelServiceName=NAME&node=host:port",
                redact_url(raw),
                e.details()
            );
            config_err_src("redis.url", msg, e)
        })?;
        Ok(ParsedUrl { fred, topology, tls })
    }

    /// `host[:port][,option=value...]`, the StackExchange.Redis form the seed used.
    fn parse_bare(&self, raw: &str) -> Result<ParsedUrl> {
        let mut parts = raw.split(',').map(str::trim);
        let endpoint = parts.next().unwrap_or_default();
        let mut tls = false;
        let mut username = None;
        let mut password = None;
        let mut database = None;
        for opt in parts.filter(|p| !p.is_empty()) {
            let Some((k, v)) = opt.split_once('=') else {
                return Err(config_err(
                    "redis.url",
                    format!(
                        "{:?} is a second endpoint or an option without a value; for several nodes \
                         use redis-cluster://host:port?node=host:port or a redis-sentinel:// URL",
                        session_core_clip(opt)
                    ),
                ));
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "password" => password = Some(v.to_owned()),
                "user" | "username" => username = Some(v.to_owned()),
                "ssl" | "tls" => {
                    tls = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => return Err(config_err("redis.url", "ssl= must be true or false")),
                    }
                }
                "defaultdatabase" => {
                    database = Some(v.trim().parse::<u8>().map_err(|_| {
                        config_err("redis.url", "defaultDatabase= must be a database index 0 to 255")
                    })?)
                }
                // Client-side knobs of StackExchange.Redis that have their own keys here.
                "abortconnect" | "connecttimeout" | "synctimeout" | "asynctimeout" | "connectretry" => {}
                other => {
                    return Err(config_err(
                        "redis.url",
                        format!(
                            "unknown option {:?}; known: password, user, ssl, defaultDatabase",
                            session_core_clip(other)
                        ),
                    ))
                }
            }
        }
        if endpoint.is_empty() || endpoint.contains(['/', '@', '?']) {
            return Err(config_err(
                "redis.url",
                format!(
                    "{} is neither host:port nor a redis:// URL",
                    session_core_clip(&redact_url(endpoint))
                ),
            ));
        }
        let mut fred = FredConfig::from_url_centralized(&format!("redis://{endpoint}")).map_err(|e| {
            let msg = format!(
                "cannot parse {:?} as host:port: {}",
                session_core_clip(endpoint),
                e.details()
            );
            config_err_src("redis.url", msg, e)
        })?;
        fred.username = username;
        fred.password = password;
        fred.database = database;
        Ok(ParsedUrl {
            fred,
            topology: Topology::Standalone,
            tls,
        })
    }

    /// Builds fred's configuration. `verify` = fail the first connection at once (used by
    /// `connect`); otherwise the first connection retries with the reconnect policy.
    pub(crate) fn build(&self, verify: bool) -> Result<Built> {
        self.check_numbers()?;
        self.check_tls_files_pairing()?;
        let key_prefix = self.key_prefix()?;
        let ParsedUrl {
            mut fred,
            topology,
            tls,
        } = self.parse_url()?;

        if let Some(user) = &self.username {
            fred.username = Some(user.clone());
        }
        if let Some(pw) = &self.password {
            fred.password = Some(pw.clone());
        }
        if fred.username.is_some() && fred.password.is_none() {
            return Err(config_err(
                "redis.password",
                "a user name is set but no password; set redis.password (or put it in the URL)",
            ));
        }
        if let Some(db) = self.database {
            fred.database = Some(db);
        }
        if topology == Topology::Cluster && fred.database.unwrap_or(0) != 0 {
            return Err(config_err(
                "redis.database",
                "a Redis Cluster has only database 0; remove redis.database (or the /db in the URL)",
            ));
        }
        if let ServerConfig::Sentinel {
            service_name,
            username,
            password,
            ..
        } = &mut fred.server
        {
            if let Some(name) = &self.sentinel.service_name {
                *service_name = name.clone();
            }
            if let Some(u) = &self.sentinel.username {
                *username = Some(u.clone());
            }
            if let Some(p) = &self.sentinel.password {
                *password = Some(p.clone());
            }
        } else if self.sentinel != SentinelConfig::default() {
            return Err(config_err(
                "redis.sentinel",
                "sentinel settings need a redis-sentinel:// URL",
            ));
        }

        if tls {
            fred.tls = Some(self.tls_config()?);
        } else if self.tls != RedisTlsConfig::default() {
            return Err(config_err(
                "redis.tls",
                "TLS settings are set but the URL does not use TLS; use rediss:// (or ssl=true)",
            ));
        }
        fred.fail_fast = verify;

        let timeout = Duration::from_millis(self.timeout_ms);
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        let unresponsive = Duration::from_millis(self.unresponsive_timeout_ms);

        let perf = PerformanceConfig {
            default_command_timeout: timeout,
            ..PerformanceConfig::default()
        };
        let connection = ConnectionConfig {
            connection_timeout: connect_timeout,
            internal_command_timeout: connect_timeout,
            // Attempts count writes of a command to a socket. Every command of the store is
            // sent with `fail_fast`, so one that was written when its connection broke is
            // answered with an error and never replayed (a replay after the caller gave up would
            // be a write nobody sees); the other attempts only follow cluster redirections
            // (MOVED/ASK after a failover) and re-route commands that were never written.
            max_command_attempts: COMMAND_ATTEMPTS,
            max_command_buffer_len: self.max_pending_commands,
            unresponsive: UnresponsiveConfig {
                max_timeout: Some(unresponsive),
                interval: (unresponsive / 4).max(Duration::from_millis(20)),
            },
            reconnect_errors: vec![
                ReconnectError::ClusterDown,
                ReconnectError::Loading,
                ReconnectError::ReadOnly,
                ReconnectError::MasterDown,
            ],
            tcp: TcpConfig {
                // `None` leaves the socket as the OS made it (Nagle on).
                nodelay: self.tcp_nodelay.then_some(true),
                ..TcpConfig::default()
            },
            ..ConnectionConfig::default()
        };
        let min = u32::try_from(self.reconnect.min_delay_ms).unwrap_or(u32::MAX);
        let max = u32::try_from(self.reconnect.max_delay_ms).unwrap_or(u32::MAX);
        let mut policy = ReconnectPolicy::new_exponential(0, min, max, 2);
        policy.set_jitter(min);

        Ok(Built {
            fred,
            perf,
            connection,
            policy,
            pool_size: self.pool_size,
            timeout,
            connect_timeout,
            topology,
            tls,
            key_prefix,
            max_session_bytes: self.max_session_bytes,
            max_pending_commands: self.max_pending_commands,
            tombstone_ttl_ms: self.tombstone_ttl_ms,
        })
    }

    fn tls_config(&self) -> Result<TlsConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config {
                key: "redis.tls".into(),
                message: format!("cannot set up TLS: {e}"),
                source: Some(Box::new(e)),
            })?;

        let mut roots = rustls::RootCertStore::empty();
        match &self.tls.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        config_err(
                            "redis.tls.ca_file",
                            format!("cannot read PEM certificates from {}: {e}", path.display()),
                        )
                    })?;
                let (added, _ignored) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(config_err(
                        "redis.tls.ca_file",
                        format!("{} holds no usable CA certificate", path.display()),
                    ));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(config_err(
                        "redis.tls.ca_file",
                        "no system root certificates were found; set redis.tls.ca_file to the server's CA",
                    ));
                }
            }
        }
        let builder = builder.with_root_certificates(roots);
        let client = match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        config_err(
                            "redis.tls.cert_file",
                            format!("cannot read PEM certificates from {}: {e}", cert.display()),
                        )
                    })?;
                if chain.is_empty() {
                    return Err(config_err(
                        "redis.tls.cert_file",
                        format!("{} holds no certificate", cert.display()),
                    ));
                }
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    config_err(
                        "redis.tls.key_file",
                        format!("cannot read a PEM private key from {}: {e}", key.display()),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::Config {
                        key: "redis.tls.key_file".into(),
                        message: format!("the client certificate and key do not fit together: {e}"),
                        source: Some(Box::new(e)),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        let hostnames = match &self.tls.server_name {
            Some(name) => TlsHostMapping::Custom(Arc::new(FixedServerName(name.clone()))),
            None => TlsHostMapping::None,
        };
        Ok(TlsConfig {
            connector: TlsConnector::from(client),
            hostnames,
        })
    }
}

struct ParsedUrl {
    fred: FredConfig,
    topology: Topology,
    tls: bool,
}

/// Verifies every node's certificate against one configured name.
#[derive(Debug)]
struct FixedServerName(String);

impl fred::types::config::HostMapping for FixedServerName {
    fn map(&self, _ip: &std::net::IpAddr, _default_host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

/// Cuts user input for an error message.
fn session_core_clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 60 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use super::*;

    fn url(u: &str) -> RedisConfig {
        RedisConfig::new(u)
    }

    fn key_of(e: Error) -> String {
        match e {
            Error::Config { key, .. } => key,
            other => panic!("expected Config, got {other}"),
        }
    }

    #[test]
    fn defaults_validate_and_build() {
        let c = RedisConfig::default();
        c.validate().unwrap();
        let b = c.build(true).unwrap();
        assert_eq!(b.topology, Topology::Standalone);
        assert_eq!(b.timeout, Duration::from_millis(250));
        assert_eq!(b.connection.max_command_attempts, COMMAND_ATTEMPTS);
        assert_eq!(b.connection.max_command_buffer_len, DEFAULT_MAX_PENDING_COMMANDS);
        assert_eq!(
            b.connection.unresponsive.max_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(b.perf.default_command_timeout, Duration::from_millis(250));
        assert!(b.fred.fail_fast);
        assert!(!c.build(false).unwrap().fred.fail_fast);
        assert_eq!(b.tombstone_ttl_ms, 0, "tombstones are off by default");
        assert_eq!(b.connection.tcp.nodelay, None, "the socket keeps the OS default");
        let nodelay = RedisConfig {
            tcp_nodelay: true,
            ..RedisConfig::default()
        };
        assert_eq!(nodelay.build(true).unwrap().connection.tcp.nodelay, Some(true));
    }

    #[test]
    fn accepts_every_url_form() {
        for (u, topo) in [
            ("localhost:6379", Topology::Standalone),
            ("localhost", Topology::Standalone),
            ("10.0.0.5:7000", Topology::Standalone),
            (
                "localhost:6379,password=p@ss,ssl=false,abortConnect=false",
                Topology::Standalone,
            ),
            ("redis://127.0.0.1:6379", Topology::Standalone),
            ("redis://app:secret@127.0.0.1:6379/2", Topology::Standalone),
            ("rediss://app:secret@127.0.0.1:6380", Topology::Standalone),
            (
                "redis-cluster://127.0.0.1:7000?node=127.0.0.1:7001&node=127.0.0.1:7002",
                Topology::Cluster,
            ),
            (
                "redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster&node=127.0.0.1:26380",
                Topology::Sentinel,
            ),
        ] {
            let c = url(u);
            assert_eq!(c.topology().unwrap(), topo, "{u}");
            let b = c.build(true).unwrap();
            assert_eq!(b.topology, topo);
        }
        let b = url("redis://app:secret@127.0.0.1:6379/2").build(true).unwrap();
        assert_eq!(b.fred.username.as_deref(), Some("app"));
        assert_eq!(b.fred.password.as_deref(), Some("secret"));
        assert_eq!(b.fred.database, Some(2));
        let b = url("localhost:6379,password=p@ss,defaultDatabase=3")
            .build(true)
            .unwrap();
        assert_eq!(b.fred.password.as_deref(), Some("p@ss"));
        assert_eq!(b.fred.database, Some(3));
        let b = url("rediss://127.0.0.1:6380").build(true).unwrap();
        assert!(b.tls && b.fred.tls.is_some());
        let b = url("redis-sentinel://127.0.0.1:26379?sentinelServiceName=mymaster")
            .build(true)
            .unwrap();
        match b.fred.server {
            ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "mymaster"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(RedisConfig, &str)> = vec![
            (url(""), "redis.url"),
            (url("http://x:1"), "redis.url"),
            (url("redis://:notaport"), "redis.url"),
            (url("redis://host:99999"), "redis.url"),
            (url("localhost:6379,bogus=1"), "redis.url"),
            (url("a:1,b:2"), "redis.url"),
            (url("redis-sentinel://127.0.0.1:26379"), "redis.url"),
            (url("redis://127.0.0.1:6379?node=127.0.0.1:7000"), "redis.url"),
            (
                RedisConfig {
                    timeout_ms: 0,
                    ..RedisConfig::default()
                },
                "redis.timeout_ms",
            ),
            (
                RedisConfig {
                    pool_size: 0,
                    ..RedisConfig::default()
                },
                "redis.pool_size",
            ),
            (
                RedisConfig {
                    connect_timeout_ms: 0,
                    ..RedisConfig::default()
                },
                "redis.connect_timeout_ms",
            ),
            (
                RedisConfig {
                    unresponsive_timeout_ms: 100,
                    ..RedisConfig::default()
                },
                "redis.unresponsive_timeout_ms",
            ),
            (
                RedisConfig {
                    key_prefix: "a*".into(),
                    ..RedisConfig::default()
                },
                "redis.key_prefix",
            ),
            (
                RedisConfig {
                    max_session_bytes: 10,
                    ..RedisConfig::default()
                },
                "redis.max_session_bytes",
            ),
            (
                RedisConfig {
                    max_pending_commands: 0,
                    ..RedisConfig::default()
                },
                "redis.max_pending_commands",
            ),
            (
                RedisConfig {
                    tombstone_ttl_ms: MAX_TOMBSTONE_TTL_MS + 1,
                    ..RedisConfig::default()
                },
                "redis.tombstone_ttl_ms",
            ),
            (
                RedisConfig {
                    reconnect: ReconnectConfig {
                        min_delay_ms: 500,
                        max_delay_ms: 100,
                    },
                    ..RedisConfig::default()
                },
                "redis.reconnect.max_delay_ms",
            ),
        ];
        for (c, key) in cases {
            let e = c.build(true).err().unwrap_or_else(|| panic!("{c:?} accepted"));
            assert_eq!(key_of(e), key, "{c:?}");
        }
        let mut c = url("redis-cluster://127.0.0.1:7000");
        c.database = Some(1);
        assert_eq!(key_of(c.build(true).err().unwrap()), "redis.database");
        let c = RedisConfig {
            tls: RedisTlsConfig {
                ca_file: Some("/nonexistent".into()),
                ..RedisTlsConfig::default()
            },
            ..RedisConfig::default()
        };
        assert_eq!(key_of(c.build(true).err().unwrap()), "redis.tls");
        let mut c = url("rediss://127.0.0.1:6380");
        c.tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert_eq!(key_of(c.build(true).err().unwrap()), "redis.tls.ca_file");
        let mut c = url("rediss://127.0.0.1:6380");
        c.tls.cert_file = Some("/x.pem".into());
        assert_eq!(key_of(c.build(true).err().unwrap()), "redis.tls.key_file");
        let c = RedisConfig {
            username: Some("app".into()),
            ..RedisConfig::default()
        };
        assert_eq!(key_of(c.build(true).err().unwrap()), "redis.password");
    }

    #[test]
    fn config_overrides_url_credentials() {
        let mut c = url("redis://u:frompath@127.0.0.1:6379");
        c.password = Some("fromconfig".into());
        let b = c.build(true).unwrap();
        assert_eq!(b.fred.password.as_deref(), Some("fromconfig"));
        assert_eq!(b.fred.username.as_deref(), Some("u"));
    }

    #[test]
    fn debug_redacts_passwords() {
        let mut c =
            url("redis-sentinel://app:hunter2@127.0.0.1:26379?sentinelServiceName=m&sentinelPassword=s3cr3t");
        c.password = Some("topsecret".into());
        c.sentinel.password = Some("sentinelpw".into());
        let d = format!("{c:?}");
        for secret in ["hunter2", "s3cr3t", "topsecret", "sentinelpw"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(d.contains("app:<redacted>@"), "{d}");
        assert_eq!(
            redact_url("localhost:6379,password=abc,ssl=true"),
            "localhost:6379,password=<redacted>,ssl=true"
        );
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://:<redacted>@h:1/0");
    }

    #[test]
    fn error_messages_hold_no_password() {
        let e = url("redis://app:hunter2@host:notaport")
            .build(true)
            .err()
            .unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = url("ftp://app:hunter2@host:1").build(true).err().unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        #[derive(Deserialize)]
        struct Wrapper {
            redis: RedisConfig,
        }
        let w: Wrapper = serde_json_like(
            r#"{"redis": {"url": "localhost:6379", "timeout_ms": 100, "tls": {"ca_file": "/ca.pem"}}}"#,
        );
        assert_eq!(w.redis.timeout_ms, 100);
        assert_eq!(w.redis.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(w.redis.tombstone_ttl_ms, 0);
        let on: RedisConfig = serde_json_like(r#"{"tombstone_ttl_ms": 86400000}"#);
        assert_eq!(on.tombstone_ttl_ms, 86_400_000);
        on.validate().unwrap();
        assert_eq!(on.build(true).unwrap().tombstone_ttl_ms, 86_400_000);
        assert_eq!(
            w.redis.tls.ca_file.as_deref(),
            Some(std::path::Path::new("/ca.pem"))
        );
        assert!(serde_json::from_str::<RedisConfig>(r#"{"tiemout_ms": 1}"#).is_err());
        assert!(serde_json::from_str::<RedisConfig>(r#"{"tls": {"insecure": true}}"#).is_err());
    }

    fn serde_json_like<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_json::from_str(s).unwrap()
    }
}
