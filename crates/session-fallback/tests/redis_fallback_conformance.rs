//! The session-core conformance suite against `FallbackStore` with a Redis
//! primary and a memory secondary, per Redis topology.
//!
//! `cargo xtask test` runs this target once per topology with
//! `SESSION_TEST_TOPOLOGY` and that topology's URL set (see
//! `testkit_redis::env`); the modules of the other topologies skip. With
//! `SESSION_TEST_REQUIRE_REDIS=1` a missing URL for the current topology
//! fails instead of skipping. By hand:
//! `SESSION_TEST_TOPOLOGY=standalone SESSION_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -p session-fallback --test redis_fallback_conformance`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, RawAccess, TestStore};
use session_core::{async_trait, Bytes, KeyPrefix, Result, SessionKey, StoreOptions};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::fred::interfaces::KeysInterface;
use session_redis::fred::types::Expiration;
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{topology_url, Topology};

/// Redis as the primary, memory as the secondary; raw access writes into Redis.
struct RedisOverMemory {
    config: RedisConfig,
}

impl RedisOverMemory {
    fn for_topology(topology: Topology) -> Option<Self> {
        let target = topology_url(topology)?;
        let mut config = RedisConfig::new(target.url.clone());
        config.tls.ca_file = target.tls_ca.clone();
        config.tls.cert_file = target.tls_client_cert.clone();
        config.tls.key_file = target.tls_client_key.clone();
        // Generous for a loaded CI machine.
        config.timeout_ms = 2_000;
        config.unresponsive_timeout_ms = 5_000;
        config.connect_timeout_ms = 5_000;
        Some(RedisOverMemory { config })
    }
}

/// `SET` and `GET` through a separate connection, bypassing both stores.
struct RawRedis {
    client: RedisStore,
    prefix: KeyPrefix,
}

#[async_trait]
impl RawAccess for RawRedis {
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()> {
        let client = self.client.clients().remove(0);
        let _: () = client
            .set(
                self.prefix.render(key),
                bytes,
                Some(Expiration::PX(ttl_ms as i64)),
                None,
                false,
            )
            .await
            .expect("raw SET");
        Ok(())
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        let client = self.client.clients().remove(0);
        let bytes: Option<Bytes> = client.get(self.prefix.render(key)).await.expect("raw GET");
        Ok(bytes)
    }
}

#[async_trait]
impl Harness for RedisOverMemory {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        // A fallback's primary keeps tombstones (several instances may share it).
        self.open_tombstoned(prefix, Duration::from_secs(3600)).await
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        let mut config = self.config.clone();
        config.tombstone_ttl_ms = u64::try_from(ttl.as_millis()).unwrap();
        let options = StoreOptions::new(prefix.clone());
        let redis = RedisStore::builder(config.clone())
            .options(options.clone())
            .connect()
            .await
            .expect("Redis connects");
        let memory = MemoryStore::with_options(
            MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
            options.clone(),
        )
        .unwrap();
        let fallback = FallbackConfig::default()
            .with_primary_timeout(Duration::from_millis(config.timeout_ms + 500))
            .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(1000));
        let store = FallbackStore::new(redis, memory, fallback).await.unwrap();
        let raw = RawRedis {
            client: RedisStore::builder(config)
                .options(options)
                .connect()
                .await
                .expect("raw client connects"),
            prefix,
        };
        TestStore {
            store: Arc::new(store),
            raw: Arc::new(raw),
        }
    }
}

/// The suite for one topology.
macro_rules! suite {
    ($topology:expr) => {
        use super::*;

        async fn harness() -> Option<RedisOverMemory> {
            RedisOverMemory::for_topology($topology)
        }

        session_core::conformance_tests!(harness);
    };
}

mod standalone {
    suite!(Topology::Standalone);
}

mod cluster {
    suite!(Topology::Cluster);
}

mod sentinel {
    suite!(Topology::Sentinel);
}

mod tls {
    suite!(Topology::Tls);
}
