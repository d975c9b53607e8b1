//! [`Settings`]: the whole configuration, read with figment from a TOML file
//! and `SESSION_`-prefixed environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use session_core::{CodecKind, CoreConfig, Error, ExpiryMode, NamespaceConfig, Result};

/// The prefix of environment variables read by [`Settings::load`].
pub const ENV_PREFIX: &str = "SESSION_";

/// Top-level keys; environment variables whose first segment is not one of
/// these are not configuration (e.g. `SESSION_TEST_REDIS_URL`) and are ignored.
const TOP_LEVEL_KEYS: &[&str] = &[
    "backend",
    "ttl_secs",
    "expiry",
    "max_lifetime_secs",
    "key_prefix",
    "codec",
    "max_session_bytes",
    "namespaces",
    "memory",
    "redis",
    "fallback",
    "metrics",
];

/// Which store [`crate::build`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// [`MemoryStore`](session_memory::MemoryStore): one process, no persistence.
    #[default]
    Memory,
    /// `RedisStore`: shared by every instance of the service.
    Redis,
    /// `FallbackStore` of Redis over memory: Redis, and memory during an outage.
    Fallback,
}

impl Backend {
    /// `"memory"`, `"redis"` or `"fallback"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Fallback => "fallback",
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
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            refresh_secs: 15,
            namespaces: Vec::new(),
        }
    }
}

/// The whole configuration. Field names are the configuration keys; see
/// `docs/configuration.md` for every key with its default.
///
/// Read it with [`Settings::load`] (TOML file + environment) or build it in
/// code from `Settings::default()`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// `memory` (default), `redis` or `fallback`.
    pub backend: Backend,
    /// TTL (absolute) or idle timeout (sliding) in seconds. Default 3600.
    pub ttl_secs: u64,
    /// `absolute` (default) or `sliding`.
    pub expiry: ExpiryMode,
    /// Lifetime cap in seconds; default none (absolute) or 86400 (sliding).
    pub max_lifetime_secs: Option<u64>,
    /// Prefix of every key. Default `session:`.
    pub key_prefix: String,
    /// Codec for writing: `bincode` (default when built) or `json`.
    pub codec: CodecKind,
    /// Largest encoded session in bytes. Default 1 MiB.
    pub max_session_bytes: usize,
    /// Per-namespace overrides: `namespaces.<name>.ttl_secs`, `.expiry`, `.max_lifetime_secs`.
    pub namespaces: BTreeMap<String, NamespaceConfig>,
    /// The memory store (also the secondary of `fallback`).
    #[cfg(feature = "memory")]
    pub memory: session_memory::MemoryConfig,
    /// The Redis store (also the primary of `fallback`).
    #[cfg(feature = "redis")]
    pub redis: session_redis::RedisConfig,
    /// The fallback store's circuit and journal.
    #[cfg(feature = "fallback")]
    pub fallback: session_fallback::FallbackConfig,
    /// Metrics and tracing.
    pub metrics: MetricsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let core = CoreConfig::default();
        Settings {
            backend: Backend::default(),
            ttl_secs: core.ttl_secs,
            expiry: core.expiry,
            max_lifetime_secs: core.max_lifetime_secs,
            key_prefix: core.key_prefix,
            codec: core.codec,
            max_session_bytes: core.max_session_bytes,
            namespaces: core.namespaces,
            #[cfg(feature = "memory")]
            memory: session_memory::MemoryConfig::default(),
            #[cfg(feature = "redis")]
            redis: session_redis::RedisConfig::default(),
            #[cfg(feature = "fallback")]
            fallback: session_fallback::FallbackConfig::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

/// Passwords are never printed: the Redis section redacts its own.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Settings");
        d.field("backend", &self.backend)
            .field("ttl_secs", &self.ttl_secs)
            .field("expiry", &self.expiry)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .field("key_prefix", &self.key_prefix)
            .field("codec", &self.codec)
            .field("max_session_bytes", &self.max_session_bytes)
            .field("namespaces", &self.namespaces);
        #[cfg(feature = "memory")]
        d.field("memory", &self.memory);
        #[cfg(feature = "redis")]
        d.field("redis", &self.redis);
        #[cfg(feature = "fallback")]
        d.field("fallback", &self.fallback);
        d.field("metrics", &self.metrics).finish()
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Settings {
    /// Reads the configuration: defaults, then the TOML file (if given; a
    /// missing file is an error), then environment variables `SESSION_*`
    /// with `__` for nesting (`SESSION_REDIS__URL=redis://…`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key and what is accepted.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        Self::load_with_defaults("", file)
    }

    /// Like [`load`](Self::load), with an application's own defaults (TOML
    /// text) between the library defaults and the file.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn load_with_defaults(defaults: &str, file: Option<&Path>) -> Result<Settings> {
        let mut figment = Figment::new().merge(Toml::string(defaults));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::config(
                    "config file",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(env_provider());
        // Secrets and names are strings even when they look like numbers
        // (`SESSION_REDIS__PASSWORD=123456`), which the generic provider would parse.
        for (key, value) in string_env_vars() {
            figment = figment.merge(Serialized::default(&key, value));
        }
        Self::extract(figment)
    }

    /// Reads the configuration from TOML text (and nothing else): for tests
    /// and embedded defaults.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bad key.
    pub fn from_toml(text: &str) -> Result<Settings> {
        Self::extract(Figment::new().merge(Toml::string(text)))
    }

    fn extract(figment: Figment) -> Result<Settings> {
        let settings: Settings = figment.extract().map_err(figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings shared by every backend.
    pub fn core(&self) -> CoreConfig {
        let mut core = CoreConfig::default();
        core.ttl_secs = self.ttl_secs;
        core.expiry = self.expiry;
        core.max_lifetime_secs = self.max_lifetime_secs;
        core.key_prefix = self.key_prefix.clone();
        core.codec = self.codec;
        core.max_session_bytes = self.max_session_bytes;
        core.namespaces = self.namespaces.clone();
        core
    }

    /// Checks every value, naming the key of the first bad one.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        self.core().validate()?;
        match self.backend {
            Backend::Memory if !cfg!(feature = "memory") => return Err(not_built("memory")),
            Backend::Redis if !cfg!(feature = "redis") => return Err(not_built("redis")),
            Backend::Fallback if !(cfg!(feature = "fallback") && cfg!(feature = "redis")) => {
                return Err(not_built("fallback"))
            }
            _ => {}
        }
        #[cfg(feature = "memory")]
        self.memory_config().validate()?;
        #[cfg(feature = "redis")]
        if self.backend != Backend::Memory {
            self.redis_config().validate()?;
        }
        #[cfg(feature = "fallback")]
        self.fallback.validate()?;
        #[cfg(feature = "fallback")]
        if self.backend == Backend::Fallback {
            self.check_fallback_deadline()?;
        }
        Ok(())
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

    /// The memory section with the top-level key prefix and size limit applied.
    #[cfg(feature = "memory")]
    pub fn memory_config(&self) -> session_memory::MemoryConfig {
        self.memory
            .clone()
            .with_key_prefix(self.key_prefix.clone())
            .with_max_session_bytes(self.max_session_bytes)
    }

    /// The Redis section with the top-level key prefix and size limit applied.
    #[cfg(feature = "redis")]
    pub fn redis_config(&self) -> session_redis::RedisConfig {
        let mut redis = self.redis.clone();
        redis.key_prefix = self.key_prefix.clone();
        redis.max_session_bytes = self.max_session_bytes;
        redis
    }
}

/// The margin suggested between `redis.timeout_ms` and `fallback.primary_timeout_ms`.
#[cfg(feature = "fallback")]
const FALLBACK_MARGIN_MS: u64 = 50;

fn not_built(backend: &str) -> Error {
    Error::config(
        "backend",
        format!(
            "backend {backend:?} is not built into this binary; enable the cargo feature `{backend}` of session-store"
        ),
    )
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let first = key.as_str().split('.').next().unwrap_or("");
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
    })
}

/// `SESSION_*` variables whose last segment names a string-only key.
fn string_env_vars() -> Vec<(String, String)> {
    std::env::vars()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let last = key.rsplit('.').next().unwrap_or("");
            let first = key.split('.').next().unwrap_or("");
            let string_only = matches!(
                last,
                "password" | "username" | "url" | "key_prefix" | "service_name"
            );
            (string_only && TOP_LEVEL_KEYS.contains(&first)).then_some((key, v))
        })
        .collect()
}

fn figment_error(e: figment::Error) -> Error {
    let key = if e.path.is_empty() {
        "config".to_owned()
    } else {
        e.path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    let secret = e.path.iter().any(|p| p.contains("password") || p == "url");
    let message = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!("unknown key `{field}`; accepted: {}{source}", expected.join(", "))
        }
        // The value of a secret (or of a URL, which may hold one) is never echoed.
        _ if secret => format!("invalid value (not shown: it may hold a secret){source}"),
        kind => format!("{kind}{source}"),
    };
    Error::Config {
        key,
        message,
        source: None,
    }
}
