//! The near cache: loads answered from this process's memory, kept true by Redis's
//! client-side-caching invalidations (`cache` holds the sessions, `tracker` listens to one
//! primary). docs/architecture.md describes each race and its handling.

pub(crate) mod cache;
pub(crate) mod tracker;

use std::sync::Arc;
use std::time::Duration;

use fred::types::config::{Config as FredConfig, ConnectionConfig};

use self::cache::NearCache;
use self::tracker::{Settings, Target, Tracker};
use crate::config::NearCacheConfig;

/// What the near cache did since the store was made, and holds now
/// ([`RedisStore::near_cache_stats`](crate::RedisStore::near_cache_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NearCacheStats {
    /// Loads answered from the cache.
    pub hits: u64,
    /// Loads that went to Redis (not cached, past the deadline, or the cache not serving).
    pub misses: u64,
    /// Copies dropped because the key changed (an invalidation, or this store's own write).
    pub invalidations: u64,
    /// Copies dropped to keep within `max_entries`/`max_bytes`.
    pub evictions: u64,
    /// Times the whole cache was dropped (a flush, a tracking connection lost or unconfirmed,
    /// a failover).
    pub resets: u64,
    /// Sessions held now.
    pub entries: u64,
    /// Bytes held now (keys, payloads and a fixed per-entry overhead).
    pub bytes: u64,
    /// Whether the cache answers now (tracking set up and confirmed on every primary).
    pub serving: bool,
}

/// A store's near cache and what its trackers connect with.
pub(crate) struct Near {
    pub(crate) cache: Arc<NearCache>,
    settings: Settings,
}

impl Near {
    /// The cache for a store, tracked over connections made with `fred` and `connection` (the
    /// store's servers, credentials and TLS); `readers` reading connections per primary, whose
    /// `GET`s time out after `timeout`.
    pub(crate) fn new(
        config: &NearCacheConfig,
        fred: &FredConfig,
        connection: &ConnectionConfig,
        readers: usize,
        timeout: Duration,
    ) -> Self {
        Near {
            cache: Arc::new(NearCache::new(config.max_entries, config.max_bytes)),
            settings: Settings {
                fred: fred.clone(),
                connection: connection.clone(),
                readers,
                timeout,
                heartbeat: Duration::from_millis(config.heartbeat_ms),
                max_stale: Duration::from_millis(config.max_stale_ms),
            },
        }
    }

    /// Starts a tracker on `target` (the cache stops serving until it is ready).
    pub(crate) fn track(&self, target: Target) -> Tracker {
        Tracker::start(Arc::clone(&self.cache), self.settings.clone(), target)
    }

    /// The counters and the size now.
    pub(crate) fn stats(&self) -> NearCacheStats {
        self.cache.counts()
    }
}
