//! The session-core conformance suite against `FallbackStore` with a memory
//! primary and a memory secondary (circuit closed: every behaviour of the
//! contract must hold through the wrapper). `RawAccess` writes into the primary.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, TestStore};
use session_core::{KeyPrefix, StoreOptions};
use session_fallback::{FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};

struct MemoryOverMemory;

/// A fallback's primary keeps tombstones (several instances may share it).
const TOMBSTONES: Duration = Duration::from_secs(3600);

#[session_core::async_trait]
impl Harness for MemoryOverMemory {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        self.open_tombstoned(prefix, TOMBSTONES).await
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        let options = StoreOptions::new(prefix);
        let config = MemoryConfig::default();
        let primary = Arc::new(
            MemoryStore::with_options(config.clone().with_tombstones(ttl), options.clone()).unwrap(),
        );
        let secondary =
            MemoryStore::with_options(config.with_at_capacity(AtCapacity::Reject), options).unwrap();
        let store = FallbackStore::new(Arc::clone(&primary), secondary, FallbackConfig::default())
            .await
            .unwrap();
        TestStore {
            store: Arc::new(store),
            raw: primary,
        }
    }
}

async fn harness() -> Option<MemoryOverMemory> {
    Some(MemoryOverMemory)
}

session_core::conformance_tests!(harness);
