//! Shared by the Redis test targets: configuration from the test environment, a conformance
//! harness and raw access to the stored bytes.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different part of this module"
)]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, RawAccess, TestStore};
use session_core::{async_trait, Bytes, KeyPrefix, Result, SessionKey, StoreOptions};
use session_redis::fred::interfaces::KeysInterface;
use session_redis::fred::types::Expiration;
use session_redis::{NearCacheConfig, RedisConfig, RedisStore};
use testkit_redis::{topology_url, TestTarget, Topology};

/// A store configuration for a test target: its URL, and for TLS its CA and client certificate.
pub fn config_for(target: &TestTarget) -> RedisConfig {
    let mut config = RedisConfig::new(target.url.clone());
    config.tls.ca_file = target.tls_ca.clone();
    config.tls.cert_file = target.tls_client_cert.clone();
    config.tls.key_file = target.tls_client_key.clone();
    // Generous for a loaded CI machine; the fault scenarios set their own.
    config.timeout_ms = 2_000;
    config.unresponsive_timeout_ms = 5_000;
    config.connect_timeout_ms = 5_000;
    config
}

/// The configuration of `topology` from the environment, or `None` to skip (another topology
/// under test, or no server configured and none required).
pub fn config_from_env(topology: Topology) -> Option<RedisConfig> {
    topology_url(topology).map(|target| config_for(&target))
}

/// Writes raw bytes through a separate fred client, bypassing the store.
pub struct RawRedis {
    store: RedisStore,
}

impl RawRedis {
    /// A separate connection with the same settings.
    pub async fn connect(config: &RedisConfig) -> Self {
        let store = RedisStore::connect(config.clone())
            .await
            .expect("raw client connects");
        RawRedis { store }
    }

    /// `SET key bytes PX ttl_ms` on the full key.
    pub async fn set(&self, full_key: &str, bytes: Bytes, ttl_ms: u64) {
        let client = self.store.clients().remove(0);
        let _: () = client
            .set(full_key, bytes, Some(Expiration::PX(ttl_ms as i64)), None, false)
            .await
            .expect("raw SET");
    }

    /// `GET key`.
    pub async fn get(&self, full_key: &str) -> Option<Bytes> {
        let client = self.store.clients().remove(0);
        client.get(full_key).await.expect("raw GET")
    }

    /// `PTTL key`.
    pub async fn pttl(&self, full_key: &str) -> i64 {
        let client = self.store.clients().remove(0);
        client.pttl(full_key).await.expect("raw PTTL")
    }
}

struct PrefixedRaw {
    raw: RawRedis,
    prefix: KeyPrefix,
    /// The store under test: a raw write waits until its near cache has applied the write's
    /// invalidation (as if another process had written).
    store: RedisStore,
}

#[async_trait]
impl RawAccess for PrefixedRaw {
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()> {
        self.raw.set(&self.prefix.render(key), bytes, ttl_ms).await;
        self.store.sync_near_cache().await;
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        Ok(self.raw.get(&self.prefix.render(key)).await)
    }
}

/// The conformance harness: one store per test, with the suite's random key prefix.
pub struct RedisHarness {
    pub config: RedisConfig,
    /// The stores' size limit (default [`session_core::DEFAULT_MAX_SESSION_BYTES`]).
    pub max_session_bytes: usize,
}

impl RedisHarness {
    /// The harness for `topology`, or `None` to skip.
    pub fn for_topology(topology: Topology) -> Option<Self> {
        config_from_env(topology).map(|config| RedisHarness {
            config,
            max_session_bytes: session_core::DEFAULT_MAX_SESSION_BYTES,
        })
    }

    /// The harness for `topology` with the near cache on.
    pub fn for_topology_near(topology: Topology) -> Option<Self> {
        config_from_env(topology).map(|mut config| {
            config.near_cache = NearCacheConfig::enabled();
            RedisHarness {
                config,
                max_session_bytes: session_core::DEFAULT_MAX_SESSION_BYTES,
            }
        })
    }
}

impl RedisHarness {
    /// A store with the suite's key prefix and `tombstone_ttl_ms` (`0`: tombstones off), and
    /// raw access to its keys.
    async fn open_with(&self, prefix: KeyPrefix, tombstone_ttl_ms: u64) -> TestStore {
        let mut config = self.config.clone();
        config.tombstone_ttl_ms = tombstone_ttl_ms;
        let store = RedisStore::builder(config.clone())
            .options(
                StoreOptions::new(prefix.clone())
                    .with_max_session_bytes(self.max_session_bytes)
                    .expect("a valid limit"),
            )
            .connect()
            .await
            .expect("store connects");
        let mut raw_config = config.clone();
        raw_config.near_cache.enabled = false;
        let raw = RawRedis::connect(&raw_config).await;
        TestStore {
            store: Arc::new(store.clone()),
            raw: Arc::new(PrefixedRaw { raw, prefix, store }),
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        self.open_with(prefix, 0).await
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        let ttl_ms = u64::try_from(ttl.as_millis()).expect("a test TTL fits").max(1);
        self.open_with(prefix, ttl_ms).await
    }
}
