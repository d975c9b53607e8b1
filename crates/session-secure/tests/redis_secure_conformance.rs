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

mod secrets;

use common::RedisHarness;
use session_secure::testing::SecureHarness;
use session_secure::SecureConfig;
use testkit_redis::Topology;

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
            super::harness(Topology::Standalone, crate::secrets::both())
        }
        session_core::conformance_tests!(harness);
    }

    mod transition {
        use super::*;
        async fn harness() -> Option<SecureHarness<RedisHarness>> {
            super::harness(Topology::Standalone, crate::secrets::transition())
        }
        session_core::conformance_tests!(harness);
    }
}

mod cluster {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Cluster, crate::secrets::both())
    }
    session_core::conformance_tests!(harness);
}

mod sentinel {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Sentinel, crate::secrets::both())
    }
    session_core::conformance_tests!(harness);
}

mod tls {
    use super::*;
    async fn harness() -> Option<SecureHarness<RedisHarness>> {
        super::harness(Topology::Tls, crate::secrets::both())
    }
    session_core::conformance_tests!(harness);
}
