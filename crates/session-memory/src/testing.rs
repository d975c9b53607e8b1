//! [`RawAccess`] and the [`MemoryHarness`] of the conformance suite (feature `testing`).

use session_core::testing::RawAccess;
use session_core::{async_trait, Bytes, Result, SessionKey};

use crate::entry::Value;
use crate::MemoryStore;

#[async_trait]
impl RawAccess for MemoryStore {
    /// Stores `bytes` as they are; a later `load` decodes them and reports
    /// [`Error::Corrupt`](session_core::Error::Corrupt) if they are not an envelope.
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()> {
        let deadline = self.clock().now_ms().saturating_add(ttl_ms);
        self.put_value(
            key,
            Value::Raw {
                bytes: &bytes,
                deadline,
            },
        )
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        Ok(self.raw_bytes(key))
    }
}

/// The conformance harness of [`MemoryStore`]: a store per test with the suite's key prefix
/// and `max_session_bytes` (a wrapper that adds bytes, such as a sealing one, needs more).
#[derive(Debug, Clone, Copy)]
pub struct MemoryHarness {
    /// The stores' size limit.
    pub max_session_bytes: usize,
}

impl Default for MemoryHarness {
    fn default() -> Self {
        MemoryHarness {
            max_session_bytes: session_core::DEFAULT_MAX_SESSION_BYTES,
        }
    }
}

impl MemoryHarness {
    fn store(
        &self,
        config: crate::MemoryConfig,
        prefix: session_core::KeyPrefix,
    ) -> session_core::testing::TestStore {
        let options = session_core::StoreOptions::new(prefix).with_max_session_bytes(self.max_session_bytes);
        let store = options
            .and_then(|options| MemoryStore::with_options(config, options))
            .map(std::sync::Arc::new)
            .unwrap_or_else(|e| panic!("a memory store for the suite: {e}"));
        session_core::testing::TestStore {
            store: store.clone(),
            raw: store,
        }
    }
}

#[async_trait]
impl session_core::testing::Harness for MemoryHarness {
    async fn open(&self, prefix: session_core::KeyPrefix) -> session_core::testing::TestStore {
        self.store(crate::MemoryConfig::default(), prefix)
    }

    async fn open_tombstoned(
        &self,
        prefix: session_core::KeyPrefix,
        ttl: std::time::Duration,
    ) -> session_core::testing::TestStore {
        self.store(crate::MemoryConfig::default().with_tombstones(ttl), prefix)
    }
}
