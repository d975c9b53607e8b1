//! The session-core conformance suite against `MemoryStore`.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, TestStore};
use session_core::{KeyPrefix, StoreOptions};
use session_memory::{MemoryConfig, MemoryStore};

struct MemoryHarness;

fn test_store(config: MemoryConfig, prefix: KeyPrefix) -> TestStore {
    let store = Arc::new(MemoryStore::with_options(config, StoreOptions::new(prefix)).unwrap());
    TestStore {
        store: store.clone(),
        raw: store,
    }
}

#[session_core::async_trait]
impl Harness for MemoryHarness {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        test_store(MemoryConfig::default(), prefix)
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        test_store(MemoryConfig::default().with_tombstones(ttl), prefix)
    }
}

async fn harness() -> Option<MemoryHarness> {
    Some(MemoryHarness)
}

session_core::conformance_tests!(harness);
