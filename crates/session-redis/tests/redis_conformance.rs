//! The session-core conformance suite against every Redis topology.
//!
//! `cargo xtask test` runs this target once per topology with `SESSION_TEST_TOPOLOGY` and the
//! topology's URL set (see `testkit_redis::env`); the modules of the other topologies skip.
//! By hand: `SESSION_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -p session-redis --test
//! redis_conformance`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use common::RedisHarness;
use testkit_redis::Topology;

mod standalone {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology(Topology::Standalone)
    }

    session_core::conformance_tests!(harness);
}

mod cluster {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology(Topology::Cluster)
    }

    session_core::conformance_tests!(harness);
}

mod sentinel {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology(Topology::Sentinel)
    }

    session_core::conformance_tests!(harness);
}

mod tls {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology(Topology::Tls)
    }

    session_core::conformance_tests!(harness);
}

/// The suite with the near cache on.
mod near_standalone {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology_near(Topology::Standalone)
    }

    session_core::conformance_tests!(harness);
}

/// The suite with the near cache on.
mod near_cluster {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology_near(Topology::Cluster)
    }

    session_core::conformance_tests!(harness);
}

/// The suite with the near cache on.
mod near_sentinel {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology_near(Topology::Sentinel)
    }

    session_core::conformance_tests!(harness);
}

/// The suite with the near cache on.
mod near_tls {
    use super::*;

    async fn harness() -> Option<RedisHarness> {
        RedisHarness::for_topology_near(Topology::Tls)
    }

    session_core::conformance_tests!(harness);
}
