//! The session-core conformance suite against `SecureStore` over `MemoryStore`: ids hashed,
//! payloads sealed, both, both with every transition setting on, and the first step of a
//! rolling change (plain written, hashed and sealed read).

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use session_core::testing::{Harness, TestStore};
use session_core::{KeyPrefix, StoreOptions, DEFAULT_MAX_SESSION_BYTES};
use session_memory::{MemoryConfig, MemoryStore};
use session_secure::testing::SecureHarness;
use session_secure::{KeyEntry, Secret, SecureConfig, SEAL_OVERHEAD};

struct MemoryHarness;

fn test_store(config: MemoryConfig, prefix: KeyPrefix) -> TestStore {
    // Room for a sealed session of the default limit.
    let limit = DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD;
    let options = StoreOptions::new(prefix).with_max_session_bytes(limit).unwrap();
    let store = Arc::new(MemoryStore::with_options(config, options).unwrap());
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

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OLD_SECRET: &str = "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ=";
const KEY_1: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3bzI=";

fn hashed() -> SecureConfig {
    SecureConfig::new().with_hashed_ids(SECRET)
}

fn sealed() -> SecureConfig {
    SecureConfig::new().with_encryption([(1, KEY_1)])
}

fn transition() -> SecureConfig {
    let mut c = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1), (2, KEY_2)]);
    c.hashed_ids.previous_secrets = vec![Secret::new(OLD_SECRET)];
    c.hashed_ids.read_plain_ids = true;
    c.encryption.accept_plaintext = true;
    c.encryption
        .keys
        .push(KeyEntry::parse("7:a2V5LXNldmVuLWtleS1zZXZlbi1rZXktc2V2ZW4tay0=").unwrap());
    c.encryption.current = Some(2);
    c
}

mod hashed_ids {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(MemoryHarness, hashed()))
    }
    session_core::conformance_tests!(harness);
}

mod encryption {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(MemoryHarness, sealed()))
    }
    session_core::conformance_tests!(harness);
}

mod both {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(
            MemoryHarness,
            SecureConfig::new()
                .with_hashed_ids(SECRET)
                .with_encryption([(1, KEY_1)]),
        ))
    }
    session_core::conformance_tests!(harness);
}

mod both_in_transition {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(MemoryHarness, transition()))
    }
    session_core::conformance_tests!(harness);
}

/// The first step of turning both on across instances: plain ids and values written, hashed
/// and sealed ones read.
mod first_step {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        let mut c = transition();
        c.hashed_ids.write_plain_ids = true;
        c.encryption.write_plaintext = true;
        Some(SecureHarness::new(MemoryHarness, c))
    }
    session_core::conformance_tests!(harness);
}
