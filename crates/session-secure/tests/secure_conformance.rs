//! The session-core conformance suite against `SecureStore` over `MemoryStore`: ids hashed,
//! payloads sealed, both, both with every transition setting on, and the first step of a
//! rolling change (plain written, hashed and sealed read).

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use session_core::DEFAULT_MAX_SESSION_BYTES;
use session_memory::MemoryHarness;
use session_secure::testing::SecureHarness;
mod secrets;

use secrets::{KEY_1, SECRET};
use session_secure::{KeyEntry, SecureConfig, SEAL_OVERHEAD};

/// Memory stores with room for a sealed session of the default limit.
fn memory() -> MemoryHarness {
    MemoryHarness {
        max_session_bytes: DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD,
    }
}

fn hashed() -> SecureConfig {
    SecureConfig::new().with_hashed_ids(SECRET)
}

fn sealed() -> SecureConfig {
    SecureConfig::new().with_encryption([(1, KEY_1)])
}

/// [`secrets::transition`] with a third key, key 2 sealing.
fn transition() -> SecureConfig {
    let mut c = secrets::transition();
    c.encryption
        .keys
        .push(KeyEntry::parse("7:a2V5LXNldmVuLWtleS1zZXZlbi1rZXktc2V2ZW4tay0=").unwrap());
    c.encryption.current = Some(2);
    c
}

mod hashed_ids {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(memory(), hashed()))
    }
    session_core::conformance_tests!(harness);
}

mod encryption {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(memory(), sealed()))
    }
    session_core::conformance_tests!(harness);
}

mod both {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(memory(), crate::secrets::both()))
    }
    session_core::conformance_tests!(harness);
}

mod both_in_transition {
    use super::*;
    async fn harness() -> Option<SecureHarness<MemoryHarness>> {
        Some(SecureHarness::new(memory(), transition()))
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
        Some(SecureHarness::new(memory(), c))
    }
    session_core::conformance_tests!(harness);
}
