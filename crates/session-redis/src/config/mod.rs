//! [`RedisConfig`]: where Redis is, and how the client behaves when Redis is slow or gone.
//!
//! This module holds the settings and their checks; `url` parses the three URL dialects,
//! `to_fred` translates the settings into fred's types, `tls` loads certificates and `redact`
//! keeps passwords out of anything printed.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use session_core::{Error, Result};

mod near;
mod redact;
#[cfg(feature = "tls")]
mod tls;
mod to_fred;
mod url;

pub use self::near::{
    NearCacheConfig, DEFAULT_NEAR_HEARTBEAT_MS, DEFAULT_NEAR_MAX_BYTES, DEFAULT_NEAR_MAX_ENTRIES,
    DEFAULT_NEAR_MAX_STALE_MS,
};
use self::redact::redact_opt;
pub use self::redact::redact_url;
pub(crate) use self::to_fred::Built;

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
    /// * `host:port` or `host` (e.g. `localhost:6379`), optionally followed by
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
    /// Tombstones: `0` (the default) = off; otherwise `delete` leaves a tombstone (a 52-byte
    /// header flagged as deleted) instead of removing the key, so that another instance's
    /// replayed outage journal cannot bring a logged-out session back, and `update` treats a
    /// tombstone as absent. A tombstone keeps the deleted session's own deadline; a delete of a
    /// key that holds nothing leaves one lasting this many milliseconds (by the Redis server's
    /// clock). At most 100 years. Every instance sharing one Redis must use the same mode.
    pub tombstone_ttl_ms: u64,
    /// The near cache (`redis.near_cache.*`): off by default; see [`NearCacheConfig`].
    pub near_cache: NearCacheConfig,
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
            tombstone_ttl_ms: DEFAULT_TOMBSTONE_TTL_MS,
            near_cache: NearCacheConfig::default(),
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
            .field("tombstone_ttl_ms", &self.tombstone_ttl_ms)
            .field("near_cache", &self.near_cache)
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

pub(crate) fn config_err(key: &str, message: impl Into<String>) -> Error {
    Error::config(key, message)
}

pub(crate) fn config_err_src(key: &str, message: impl Into<String>, source: fred::error::Error) -> Error {
    Error::Config {
        key: key.to_owned(),
        message: message.into(),
        source: Some(Box::new(source)),
    }
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
        self.check_tls_files_pairing()?;
        Ok(())
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
        self.near_cache.check()?;
        if self.max_pending_commands == 0 {
            return Err(config_err("redis.max_pending_commands", "must be at least 1"));
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
}

#[cfg(test)]
mod tests;
