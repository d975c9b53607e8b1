//! [`Settings`]: the whole configuration — the shared settings ([`CoreConfig`]), which
//! backend to build, each backend's own section and metrics — read with figment
//! (`load`: a TOML file and `SESSION_*` environment variables; `from_figment`: an
//! application's own figment).

use std::fmt;

use serde::{Deserialize, Serialize};
use session_core::{CoreConfig, Error, Result};

mod load;
mod messages;

pub use load::{Loader, ENV_PREFIX};

/// Which store [`crate::build`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// `MemoryStore`: one process, no persistence.
    #[default]
    Memory,
    /// `RedisStore`: shared by every instance of the service.
    Redis,
    /// `FallbackStore` of Redis over memory: Redis, and memory during an outage.
    Fallback,
    /// `SqlStore` on PostgreSQL or SQLite (the `[sql]` section): shared by every instance
    /// using the same database (cargo feature `postgres` or `sqlite`).
    Sql,
}

impl Backend {
    /// `"memory"`, `"redis"`, `"fallback"` or `"sql"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Fallback => "fallback",
            Backend::Sql => "sql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metrics settings (used when the `instrument` feature is on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsSettings {
    /// Wrap the store in `Instrumented` (metrics and tracing). Default true.
    pub enabled: bool,
    /// How often gauges (entries, bytes, sessions per namespace, health) are
    /// refreshed in the background, in seconds. Default 15; 0 turns it off.
    pub refresh_secs: u64,
    /// Namespaces whose live session count is published (SCAN on Redis), in
    /// addition to those under `namespaces`. Default none.
    pub namespaces: Vec<String>,
    /// The `store` label of every series this store exports, for a process with several
    /// stores. Default: the backend's name (`memory`, `redis`, `fallback`, `sql`).
    pub name: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            refresh_secs: 15,
            namespaces: Vec::new(),
            name: None,
        }
    }
}

/// The whole configuration; see `docs/configuration.md` for every key with its default.
///
/// The shared settings (`ttl_secs`, `expiry`, `max_lifetime_secs`, `key_prefix`, `codec`,
/// `max_session_bytes`, `namespaces`) are top-level keys, read into [`core`](Self::core): their
/// one home. Backend sections hold only what is their own; the backends get the shared
/// settings at construction ([`CoreConfig::store_options`]).
///
/// Read it with [`Settings::load`] (a TOML file and `SESSION_*` environment variables),
/// [`Settings::loader`] (another environment prefix, application defaults) or
/// [`Settings::from_figment`] (an application's own figment), or build it in code from
/// `Settings::default()`. `Debug` and `Display` never show a password.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Settings {
    /// `memory` (default), `redis`, `fallback` or `sql`.
    pub backend: Backend,
    /// The settings every backend shares: TTLs, expiry, key prefix, codec, size limit,
    /// per-namespace overrides.
    pub core: CoreConfig,
    /// The memory store (also the secondary of `fallback`).
    #[cfg(feature = "memory")]
    pub memory: session_memory::MemoryConfig,
    /// The Redis store (also the primary of `fallback`).
    #[cfg(feature = "redis")]
    pub redis: session_redis::RedisConfig,
    /// The fallback store's circuit and journal.
    #[cfg(feature = "fallback")]
    pub fallback: session_fallback::FallbackConfig,
    /// The SQL store (`backend = "sql"`), also the backup's database when `backup.enabled`.
    /// Its `Debug` hides the URL's password.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub sql: session_sql::SqlConfig,
    /// The write-behind backup of the configured backend into the `[sql]` store, made when
    /// `backup.enabled` is true.
    #[cfg(feature = "backup")]
    pub backup: session_backup::BackupConfig,
    /// Secrets at rest: ids hashed, payloads sealed (`[security.hashed_ids]`,
    /// `[security.encryption]`); both off unless enabled. Its `Debug` hides every secret.
    #[cfg(feature = "secure")]
    pub security: session_secure::SecureConfig,
    /// Metrics and tracing.
    pub metrics: MetricsSettings,
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Settings {
    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        self.core.validate()?;
        if self.metrics.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::config("metrics.name", "must not be empty when set"));
        }
        match self.backend {
            Backend::Memory if !cfg!(feature = "memory") => return Err(not_built("memory")),
            Backend::Redis if !cfg!(feature = "redis") => return Err(not_built("redis")),
            Backend::Fallback if !cfg!(feature = "fallback") => return Err(not_built("fallback")),
            Backend::Sql if !cfg!(any(feature = "postgres", feature = "sqlite")) => {
                return Err(not_built("sql"))
            }
            _ => {}
        }
        #[cfg(feature = "memory")]
        self.memory.validate(&self.core.store_options()?)?;
        #[cfg(feature = "redis")]
        if self.backend != Backend::Memory {
            self.redis.validate()?;
        }
        #[cfg(feature = "fallback")]
        self.fallback.validate()?;
        #[cfg(feature = "fallback")]
        if self.backend == Backend::Fallback {
            self.check_fallback_deadline()?;
        }
        #[cfg(feature = "backup")]
        self.check_backup()?;
        #[cfg(feature = "secure")]
        self.security.validate().map_err(|e| match e {
            Error::Config { key, message, source } => Error::Config {
                key: format!("security.{key}"),
                message,
                source,
            },
            other => other,
        })?;
        #[cfg(any(feature = "postgres", feature = "sqlite"))]
        if self.backend == Backend::Sql || self.backup_enabled() {
            self.sql.validate()?;
        }
        Ok(())
    }

    /// Whether `build` wraps the store in a backup: `backup.enabled`.
    #[cfg(feature = "backup")]
    pub(crate) fn backup_enabled(&self) -> bool {
        self.backup.enabled
    }

    /// Whether `build` wraps the store in a backup: never without the `backup` feature.
    #[cfg(not(feature = "backup"))]
    pub(crate) fn backup_enabled(&self) -> bool {
        false
    }

    /// Whether the backup reads misses back from the database (`backup.read_through`).
    #[cfg(feature = "backup")]
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the Redis store reads it")
    )]
    pub(crate) fn backup_reads_through(&self) -> bool {
        self.backup.enabled && self.backup.read_through
    }

    /// Whether the backup reads misses back: never without the `backup` feature.
    #[cfg(not(feature = "backup"))]
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "only the Redis store reads it")
    )]
    pub(crate) fn backup_reads_through(&self) -> bool {
        false
    }

    /// The backup's own settings, and what it needs: a backend other than `sql` (whose store
    /// it would back up into itself) and an SQL driver for the `[sql]` store it writes to.
    #[cfg(feature = "backup")]
    fn check_backup(&self) -> Result<()> {
        self.backup.validate()?;
        if !self.backup.enabled {
            return Ok(());
        }
        backup_requirements(self.backend, cfg!(any(feature = "postgres", feature = "sqlite")))
    }

    /// The fallback's deadline on a primary call must leave Redis's own timeout room to
    /// fire first: otherwise every slow call is abandoned by the fallback before the Redis
    /// store can tell a timeout from an answer, and each one fails over (and fences its
    /// connection) while Redis is healthy.
    #[cfg(feature = "fallback")]
    fn check_fallback_deadline(&self) -> Result<()> {
        let fallback = self.fallback.primary_timeout_ms;
        let redis = self.redis.timeout_ms;
        if fallback <= redis {
            return Err(Error::config(
                "fallback.primary_timeout_ms",
                format!(
                    "must be above redis.timeout_ms ({redis} ms), not {fallback}: the fallback would give up on \
                     calls that Redis still answers in time; e.g. {} ms",
                    redis.saturating_add(FALLBACK_MARGIN_MS)
                ),
            ));
        }
        Ok(())
    }
}

/// What an enabled backup needs: a backend other than `sql` (whose store it would back up into
/// itself) and an SQL driver in this build for the `[sql]` store it writes to.
#[cfg(any(feature = "backup", test))]
fn backup_requirements(backend: Backend, has_sql_driver: bool) -> Result<()> {
    if backend == Backend::Sql {
        return Err(Error::config(
            "backup.enabled",
            "backend = \"sql\" cannot be backed up: the backup is the [sql] store, which is already the \
             backend; set backup.enabled = false, or pick the memory, redis or fallback backend",
        ));
    }
    if !has_sql_driver {
        return Err(Error::config(
            "backup.enabled",
            "the backup is written to the [sql] store, and this binary is built without an SQL driver; \
             enable the cargo feature \"postgres\" or \"sqlite\" of session-store, or set \
             backup.enabled = false",
        ));
    }
    Ok(())
}

/// The margin suggested between `redis.timeout_ms` and `fallback.primary_timeout_ms`.
#[cfg(feature = "fallback")]
const FALLBACK_MARGIN_MS: u64 = 50;

/// A backend this build does not include.
fn not_built(backend: &str) -> Error {
    Error::config(
        "backend",
        format!(
            "{backend} is not built into this binary; enable the cargo feature {} of session-store",
            features_of(backend)
        ),
    )
}

/// The cargo features that build a backend or section, in words: `"redis"`, or
/// `"postgres" or "sqlite"` for `sql`.
fn features_of(name: &str) -> String {
    match name {
        "sql" => "\"postgres\" or \"sqlite\"".to_owned(),
        "security" => "\"secure\"".to_owned(),
        other => format!("\"{other}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_and_text(e: Error) -> (String, String) {
        let text = e.to_string();
        match e {
            Error::Config { key, .. } => (key, text),
            other => panic!("expected a Config error, got {other}"),
        }
    }

    /// Whatever this build has (its tests are built with the sql and backup features, see
    /// Cargo.toml): `backend = "sql"` without a driver names both driver features.
    #[test]
    fn sql_not_built_names_both_drivers() {
        let (key, text) = key_and_text(not_built("sql"));
        assert_eq!(key, "backend");
        assert!(text.contains("\"postgres\" or \"sqlite\""), "{text}");
        let (_, text) = key_and_text(not_built("redis"));
        assert!(text.contains("feature \"redis\""), "{text}");
    }

    #[test]
    fn an_enabled_backup_needs_another_backend_and_a_driver() {
        let (key, text) = key_and_text(backup_requirements(Backend::Sql, true).unwrap_err());
        assert_eq!(key, "backup.enabled");
        assert!(text.contains("already the backend"), "{text}");
        let (key, text) = key_and_text(backup_requirements(Backend::Memory, false).unwrap_err());
        assert_eq!(key, "backup.enabled");
        assert!(text.contains("\"postgres\" or \"sqlite\""), "{text}");
        for backend in [Backend::Memory, Backend::Redis, Backend::Fallback] {
            assert!(backup_requirements(backend, true).is_ok(), "{backend}");
        }
    }
}
