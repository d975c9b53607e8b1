//! The translation of a [`RedisConfig`] (or an application's own fred client) into the
//! fred configuration types the store's connections are made with.

use std::sync::Arc;
use std::time::Duration;

use fred::types::config::{
    Config as FredConfig, ConnectionConfig, PerformanceConfig, ReconnectError, ReconnectPolicy, ServerConfig,
    TcpConfig, UnresponsiveConfig,
};
use session_core::{KeyPrefix, Result, StoreOptions};

use super::url::ParsedUrl;
use super::{config_err, RedisConfig, RedisTlsConfig, SentinelConfig, Topology, COMMAND_ATTEMPTS};
use crate::near::Near;

/// Redis strings hold at most 512 MiB.
const REDIS_MAX_STRING: usize = 512 * 1024 * 1024;

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
    /// The near cache, when `redis.near_cache.enabled` (shared by every node of the store).
    pub(crate) near: Option<Arc<Near>>,
}

impl RedisConfig {
    /// Builds fred's configuration from `redis.url` and the connection keys. `verify` = fail
    /// the first connection at once (used by `connect`); otherwise the first connection
    /// retries with the reconnect policy.
    pub(crate) fn build(&self, options: &StoreOptions, verify: bool) -> Result<Built> {
        self.check_numbers()?;
        self.check_tls_files_pairing()?;
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
            #[cfg(feature = "tls")]
            {
                fred.tls = Some(self.tls_config()?);
            }
            #[cfg(not(feature = "tls"))]
            return Err(config_err(
                "redis.url",
                "asks for TLS (rediss://, ssl=true), but this build has no TLS: enable the `tls` cargo \
                 feature (of session-store, or of session-redis)",
            ));
        } else if self.tls != RedisTlsConfig::default() {
            return Err(config_err(
                "redis.tls",
                "TLS settings are set but the URL does not use TLS; use rediss:// (or ssl=true)",
            ));
        }
        self.finish(fred, topology, tls, options, verify)
    }

    /// Builds fred's configuration from an application's fred client configuration: its servers, topology,
    /// credentials, database and TLS settings; everything else from `self`, whose connection
    /// keys (`url`, `username`, `password`, `database`, `tls`, `sentinel`) must be left at
    /// their defaults.
    pub(crate) fn build_from_fred(
        &self,
        fred: FredConfig,
        options: &StoreOptions,
        verify: bool,
    ) -> Result<Built> {
        self.check_numbers()?;
        let defaults = RedisConfig::default();
        let set = [
            ("redis.url", self.url != defaults.url),
            ("redis.username", self.username.is_some()),
            ("redis.password", self.password.is_some()),
            ("redis.database", self.database.is_some()),
            ("redis.tls", self.tls != RedisTlsConfig::default()),
            ("redis.sentinel", self.sentinel != SentinelConfig::default()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, is_set)| *is_set) {
            return Err(config_err(
                key,
                "is taken from the fred client the store is built from; leave it unset",
            ));
        }
        let topology = match &fred.server {
            ServerConfig::Centralized { .. } => Topology::Standalone,
            ServerConfig::Clustered { .. } => Topology::Cluster,
            ServerConfig::Sentinel { .. } => Topology::Sentinel,
            #[allow(unreachable_patterns, reason = "fred's features may add server kinds")]
            _ => {
                return Err(config_err(
                    "redis",
                    "the fred client's server configuration is neither standalone, cluster nor sentinel",
                ))
            }
        };
        if topology == Topology::Cluster && fred.database.unwrap_or(0) != 0 {
            return Err(config_err(
                "redis.database",
                "the fred client selects a database other than 0, which a Redis Cluster does not have",
            ));
        }
        #[cfg(feature = "tls")]
        let tls = fred.tls.is_some();
        #[cfg(not(feature = "tls"))]
        let tls = false;
        self.finish(fred, topology, tls, options, verify)
    }

    /// The store's own behaviour (timeouts, pool, reconnection, tombstones) around a fred
    /// server configuration.
    fn finish(
        &self,
        mut fred: FredConfig,
        topology: Topology,
        tls: bool,
        options: &StoreOptions,
        verify: bool,
    ) -> Result<Built> {
        if options.max_session_bytes() > REDIS_MAX_STRING {
            return Err(config_err(
                "max_session_bytes",
                format!(
                    "must be at most {REDIS_MAX_STRING} (512 MiB, the largest Redis string), not {}",
                    options.max_session_bytes()
                ),
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

        let near = self.near_cache.enabled.then(|| {
            Arc::new(Near::new(
                &self.near_cache,
                &fred,
                &connection,
                self.pool_size,
                timeout,
            ))
        });
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
            key_prefix: options.key_prefix().clone(),
            max_session_bytes: options.max_session_bytes(),
            max_pending_commands: self.max_pending_commands,
            tombstone_ttl_ms: self.tombstone_ttl_ms,
            near,
        })
    }
}
