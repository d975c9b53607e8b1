//! The session-core conformance suite against `SecureStore` over every Redis topology, ids
//! hashed and payloads sealed (the configuration a service runs with), and on a standalone
//! server also in the middle of turning both on (every transition setting).
//!
//! `cargo xtask test` runs this target in each Redis cell (`SESSION_TEST_TOPOLOGY` and the
//! topology's URL set); the modules of the other topologies skip.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed expectation is a failed test"
)]

#[path = "../../session-redis/tests/common/mod.rs"]
mod common;

use common::RedisHarness;
use session_secure::testing::SecureHarness;
use session_secure::{Secret, SecureConfig};
use testkit_redis::Topology;

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const OLD_SECRET: &str = "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ=";
const KEY_1: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const KEY_2: &str = "a2V5LXR3by1rZXktdHdvLWtleS10d28ta2V5LXR3bzI=";

fn both() -> SecureConfig {
    SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1)])
}

fn transition() -> SecureConfig {
    let mut c = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1), (2, KEY_2)]);
    c.hashed_ids.previous_secrets = vec![Secret::new(OLD_SECRET)];
    c.hashed_ids.read_plain_ids = true;
    c.encryption.accept_plaintext = true;
    c
}

fn harness(topology: Topology, config: SecureConfig) -> Option<SecureHarness<RedisHarness>> {
    let mut inner = RedisHarness::for_topology(topology)?;
    inner.max_session_bytes = config.inner_limit(session_core::DEFAULT_MAX_SESSION_BYTES);
    Some(SecureHarness::new(inner, config))
}

mod standalone {
    use super::*;

    mod both {
        use super::*;
        async fn harness() -> Option<SecureHarness<RedisHarness>> {
            super::harness(Topology::Standalone, both())
        }
        session_core::conformance_tests!(harness);
    }

    mod transition {
        use super::*;
        async fn harness() -> Option<SecureHarness<RedisHarness>> {
            super::harness(Topology::Standalone, transition())
        }
        session_core::conformance_tests!(harness);
    }
}

mod cluster {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Cluster, both())
    }
    session_core::conformance_tests!(harness);
}

mod sentinel {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Sentinel, both())
    }
    session_core::conformance_tests!(harness);
}

mod tls {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Tls, both())
    }
    session_core::conformance_tests!(harness);
}
