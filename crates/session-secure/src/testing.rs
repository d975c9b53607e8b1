//! Running the session-core conformance suite against a [`SecureStore`]: a harness that wraps
//! any other harness's store, and raw access that reads and writes through the store's
//! layout (a planted envelope is stored as the store would store it).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: a failed expectation is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use session_core::backend::{decode_entry, Entry};
use session_core::testing::{Harness, RawAccess, TestStore};
use session_core::{KeyPrefix, Result, SessionKey, SessionStore};

use crate::{SecureConfig, SecureStore};

/// Raw access to a [`SecureStore`]'s backend through its layout: `put_raw` of an envelope
/// stores it under the hashed id and sealed (as the store would have written it), other
/// bytes as they are; `get_raw` answers the stored envelope opened.
pub struct SecureRaw {
    raw: Arc<dyn RawAccess>,
    store: Arc<SecureStore<Arc<dyn SessionStore>>>,
}

#[async_trait]
impl RawAccess for SecureRaw {
    async fn put_raw(&self, key: &SessionKey, bytes: Bytes, ttl_ms: u64) -> Result<()> {
        let stored = self.store.stored_key(key);
        let bytes = match decode_entry(&bytes, key.ns()) {
            Ok(Entry::Live(record)) => self.store.seal_for(&stored, &record)?.encode(),
            _ => bytes,
        };
        self.raw.put_raw(&stored, bytes, ttl_ms).await
    }

    async fn get_raw(&self, key: &SessionKey) -> Result<Option<Bytes>> {
        let stored = self.store.stored_key(key);
        let Some(bytes) = self.raw.get_raw(&stored).await? else {
            return Ok(None);
        };
        Ok(Some(match decode_entry(&bytes, key.ns()) {
            Ok(Entry::Live(record)) => match self.store.open_from(&stored, record) {
                Ok(opened) => opened.encode(),
                Err(_) => bytes,
            },
            _ => bytes,
        }))
    }
}

/// A harness whose stores are `inner`'s, wrapped in a [`SecureStore`] with `config`. The inner
/// harness's stores need a size limit [`SEAL_OVERHEAD`](crate::SEAL_OVERHEAD) above the
/// default when encryption is on ([`SecureConfig::inner_limit`]).
pub struct SecureHarness<H> {
    inner: H,
    config: SecureConfig,
}

impl<H: Harness> SecureHarness<H> {
    /// Wraps `inner`'s stores with `config`.
    pub fn new(inner: H, config: SecureConfig) -> Self {
        SecureHarness { inner, config }
    }

    fn wrap(&self, t: TestStore) -> TestStore {
        let store = Arc::new(SecureStore::new(t.store, &self.config).expect("a valid configuration"));
        TestStore {
            store: Arc::clone(&store) as Arc<dyn SessionStore>,
            raw: Arc::new(SecureRaw { raw: t.raw, store }),
        }
    }
}

#[async_trait]
impl<H: Harness> Harness for SecureHarness<H> {
    async fn open(&self, prefix: KeyPrefix) -> TestStore {
        let t = self.inner.open(prefix).await;
        self.wrap(t)
    }

    async fn open_tombstoned(&self, prefix: KeyPrefix, ttl: Duration) -> TestStore {
        let t = self.inner.open_tombstoned(prefix, ttl).await;
        self.wrap(t)
    }

    fn can_list(&self) -> bool {
        !self.config.hashed_ids.enabled
    }
}
