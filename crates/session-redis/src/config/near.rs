//! `redis.near_cache.*`: the opt-in near cache's settings and their checks.

use serde::Deserialize;
use session_core::Result;

use super::config_err;

/// Default `redis.near_cache.max_entries`.
pub const DEFAULT_NEAR_MAX_ENTRIES: usize = 100_000;
/// Default `redis.near_cache.max_bytes`: 64 MiB.
pub const DEFAULT_NEAR_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default `redis.near_cache.heartbeat_ms`.
pub const DEFAULT_NEAR_HEARTBEAT_MS: u64 = 200;
/// Default `redis.near_cache.max_stale_ms`.
pub const DEFAULT_NEAR_MAX_STALE_MS: u64 = 500;

const MAX_NEAR_MS: u64 = 60_000;

/// The near cache (`redis.near_cache.*`): loads of sessions this process has read recently are
/// answered from its memory, and each copy is dropped as soon as Redis reports that any client
/// wrote, deleted or expired the key (server-assisted client-side caching, `CLIENT TRACKING`,
/// on every primary). Off by default.
///
/// The cache serves only while it can be sure it hears every invalidation: from the moment
/// tracking is set up on every primary until a tracking connection is lost, a failover starts,
/// or a heartbeat `PING` on a tracking connection goes unanswered for `max_stale_ms`. Then it
/// drops everything and serves again once tracking is set up anew. A stalled network can thus
/// delay an invalidation by at most `heartbeat_ms + max_stale_ms` before the cache stops
/// serving; a delivered invalidation takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NearCacheConfig {
    /// Turns the near cache on. Default `false`.
    pub enabled: bool,
    /// Sessions held at most; the oldest cached goes first. Default 100 000.
    pub max_entries: usize,
    /// Bytes held at most (keys, payloads and a fixed per-entry overhead). Default 64 MiB.
    pub max_bytes: u64,
    /// How often each tracking connection is checked with a `PING`, in milliseconds. Default 200.
    pub heartbeat_ms: u64,
    /// How long a heartbeat may go unanswered before the cache stops serving, in milliseconds.
    /// Default 500.
    pub max_stale_ms: u64,
}

impl Default for NearCacheConfig {
    fn default() -> Self {
        NearCacheConfig {
            enabled: false,
            max_entries: DEFAULT_NEAR_MAX_ENTRIES,
            max_bytes: DEFAULT_NEAR_MAX_BYTES,
            heartbeat_ms: DEFAULT_NEAR_HEARTBEAT_MS,
            max_stale_ms: DEFAULT_NEAR_MAX_STALE_MS,
        }
    }
}

impl NearCacheConfig {
    /// The defaults, turned on.
    pub fn enabled() -> Self {
        NearCacheConfig {
            enabled: true,
            ..NearCacheConfig::default()
        }
    }

    /// Checks the values (also when off, so a typo shows before it is turned on).
    pub(crate) fn check(&self) -> Result<()> {
        if self.max_entries == 0 {
            return Err(config_err("redis.near_cache.max_entries", "must be at least 1"));
        }
        if self.max_bytes == 0 {
            return Err(config_err("redis.near_cache.max_bytes", "must be at least 1"));
        }
        for (key, v) in [
            ("redis.near_cache.heartbeat_ms", self.heartbeat_ms),
            ("redis.near_cache.max_stale_ms", self.max_stale_ms),
        ] {
            if v == 0 || v > MAX_NEAR_MS {
                return Err(config_err(
                    key,
                    format!("must be 1 to {MAX_NEAR_MS} milliseconds, not {v}"),
                ));
            }
        }
        Ok(())
    }
}
