//! `TowerSessionsStore` over a `RedisStore`, per Redis topology: the cases of
//! `tower_cases/mod.rs` (ported from upstream tower-sessions' store tests; see there).
//!
//! `cargo xtask test` runs this target once per topology with `SESSION_TEST_TOPOLOGY` and that
//! topology's URL set (see `testkit_redis::env`); the modules of the other topologies skip. With
//! `SESSION_TEST_REQUIRE_REDIS=1` a missing URL for the current topology fails instead of
//! skipping. By hand:
//! `SESSION_TEST_TOPOLOGY=standalone SESSION_TEST_REDIS_URL=redis://127.0.0.1:6379 cargo test -p
//! session-axum --features tower-sessions --test redis_tower_sessions`.

#![cfg(feature = "tower-sessions")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

#[macro_use]
mod tower_cases;

use std::sync::Arc;

use session_axum::TowerSessionsStore;
use session_core::{KeyPrefix, Namespace, SessionId, StoreOptions};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{topology_url, Topology};

/// The adapter over a Redis store of `topology`, under a key prefix of its own, or `None` to
/// skip (another topology under test, or no server configured and none required).
async fn open(topology: Topology) -> Option<TowerSessionsStore> {
    let target = topology_url(topology)?;
    let mut config = RedisConfig::new(target.url.clone());
    config.tls.ca_file = target.tls_ca.clone();
    config.tls.cert_file = target.tls_client_cert.clone();
    config.tls.key_file = target.tls_client_key.clone();
    // Generous for a loaded CI machine.
    config.timeout_ms = 2_000;
    config.unresponsive_timeout_ms = 5_000;
    config.connect_timeout_ms = 5_000;
    let store = RedisStore::builder(config)
        .options(StoreOptions::new(random_prefix()))
        .connect()
        .await
        .expect("Redis connects");
    Some(TowerSessionsStore::new(
        Arc::new(store),
        Namespace::new("tower").unwrap(),
    ))
}

/// A key prefix no other test run shares.
fn random_prefix() -> KeyPrefix {
    let id = SessionId::generate().unwrap();
    let tag: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    KeyPrefix::new(&format!("t{tag}:")).unwrap()
}

mod standalone {
    tower_cases!(crate::open(testkit_redis::Topology::Standalone));
}

mod cluster {
    tower_cases!(crate::open(testkit_redis::Topology::Cluster));
}

mod sentinel {
    tower_cases!(crate::open(testkit_redis::Topology::Sentinel));
}

mod tls {
    tower_cases!(crate::open(testkit_redis::Topology::Tls));
}
