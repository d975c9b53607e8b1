#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cluster;
mod config;
mod error;
mod fence;
mod near;
mod node;
mod ops;
mod replies;
mod scripts;
mod sentinel;
mod slots;
mod store;

pub use config::{
    redact_url, NearCacheConfig, ReconnectConfig, RedisConfig, RedisTlsConfig, SentinelConfig, Topology,
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_MAX_PENDING_COMMANDS, DEFAULT_NEAR_HEARTBEAT_MS,
    DEFAULT_NEAR_MAX_BYTES, DEFAULT_NEAR_MAX_ENTRIES, DEFAULT_NEAR_MAX_STALE_MS, DEFAULT_POOL_SIZE,
    DEFAULT_RECONNECT_MAX_DELAY_MS, DEFAULT_RECONNECT_MIN_DELAY_MS, DEFAULT_TIMEOUT_MS,
    DEFAULT_TOMBSTONE_TTL_MS, DEFAULT_UNRESPONSIVE_TIMEOUT_MS, DEFAULT_URL, MAX_TOMBSTONE_TTL_MS,
};
pub use near::NearCacheStats;
pub use store::{RedisStore, RedisStoreBuilder};

/// The fred version this crate is built on, so users name the same types.
pub use fred;

/// The backend name reported by [`RedisStore`] in errors, metrics and health.
pub const BACKEND: &str = "redis";
