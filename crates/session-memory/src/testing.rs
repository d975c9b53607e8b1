//! [`RawAccess`] for the conformance suite (feature `testing`).

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
