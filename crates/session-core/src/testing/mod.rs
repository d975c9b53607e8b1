//! Test support for backends (feature `testing`): the conformance suite every
//! store runs, and test doubles that fail or hang on command (one store, or
//! each partition of a partitioned one).
//!
//! # Running the suite against a store
//!
//! Implement [`Harness`] for your store, then expand
//! [`conformance_tests!`](crate::conformance_tests) in an integration test:
//!
//! ```ignore
//! use session_core::testing::{Harness, TestStore};
//!
//! struct MyHarness;
//! #[session_core::async_trait]
//! impl Harness for MyHarness {
//!     async fn open(&self, prefix: session_core::KeyPrefix) -> TestStore { /* ... */ }
//! }
//! async fn harness() -> Option<MyHarness> { Some(MyHarness) }
//! session_core::conformance_tests!(harness);
//! ```
//!
//! Every test opens its own store with a random key prefix, so tests run in
//! parallel against one server without a flush.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed expectation is a failed test"
)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::key::{KeyPrefix, SessionKey};
use crate::store::SessionStore;

pub mod conformance;
mod doubles;

pub use doubles::{FaultMode, FaultyStore, Part, PartitionedStore};

/// Direct access to a backend's stored bytes, bypassing the store's checks.
/// The suite uses it to plant values that are not envelopes.
#[async_trait]
pub trait RawAccess: Send + Sync {
    /// Stores `bytes` as the value of `key` (the store's own key prefix
    /// applies), with a TTL of `ttl_ms` milliseconds.
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()>;

    /// The bytes stored under `key` (the store's own key prefix applies),
    /// whatever they are, or `None` when the backend holds no such key.
    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>>;
}

/// A store opened for one test.
pub struct TestStore {
    /// The store under test.
    pub store: Arc<dyn SessionStore>,
    /// Raw access to the same keyspace.
    pub raw: Arc<dyn RawAccess>,
}

/// What a backend provides to run the conformance suite.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// Opens a store whose keys start with `prefix` (unique per test), with
    /// the default size limit ([`crate::DEFAULT_MAX_SESSION_BYTES`]).
    async fn open(&self, prefix: KeyPrefix) -> TestStore;

    /// Opens a store like [`open`](Self::open) that keeps tombstones
    /// ([`SessionStore::keeps_tombstones`]): `delete` leaves one, lasting
    /// `ttl` when the store held no session.
    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: std::time::Duration) -> TestStore;

    /// Whether the store lists its sessions ([`SessionStore::scan`]). A store that cannot —
    /// its backend keys do not give the ids back, as with hashed ids — answers
    /// [`Error::Backend`](crate::Error::Backend), which the listing tests then check instead.
    fn can_list(&self) -> bool {
        true
    }
}

/// A key prefix no other test uses: `t{random}:`.
pub fn random_prefix() -> KeyPrefix {
    let id = crate::SessionId::generate().expect("os random");
    let tag: String = id
        .as_str()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    KeyPrefix::new(&format!("t{tag}:")).expect("valid prefix")
}

/// Reads an integer from the environment, for scaling test sizes.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
