//! [`SecureStore`]: any store, with ids hashed and payloads sealed on the way in and opened on
//! the way out.

use std::sync::Arc;

use async_trait::async_trait;
use session_core::backend::{check_size, Change, CodecId, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    Error, Health, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey, SessionStore,
    StoreStats, Version, DEFAULT_MAX_SESSION_BYTES,
};

use crate::config::SecureConfig;
use crate::keyring::Keyring;
#[cfg(doc)]
use crate::keyring::SEAL_OVERHEAD;
use crate::layout::Layouts;

/// How many times a rotate re-reads a moved session whose seal it is renewing when another
/// write lands in between.
const RESEAL_ATTEMPTS: usize = 5;

/// A store whose backend never sees a session id or a payload in the clear (as configured):
/// keys hold an HMAC of the id, payloads are sealed with XChaCha20-Poly1305 and bound to the
/// key they are stored under.
///
/// Every call of the [`SessionStore`] contract works as on the wrapped store; what changes is
/// only what the backend holds. Put it outermost (inside instrumentation only), so that every
/// store it wraps — a fallback's journal and secondary, a backup's database — holds hashed
/// ids and sealed values too.
///
/// Turning either part on logs no one out when its transition setting is on
/// (`hashed_ids.read_plain_ids`, `encryption.accept_plaintext`): values stored the old way
/// keep loading, and are deleted, updated and rotated in place until they expire. See
/// docs/operations.md, "Security", for the steps.
pub struct SecureStore<S> {
    inner: S,
    layouts: Layouts,
    keyring: Option<Arc<Keyring>>,
    accept_plaintext: bool,
    write_plaintext: bool,
    max_session_bytes: usize,
}

impl<S: SessionStore> SecureStore<S> {
    /// Wraps `inner` as `config` says.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting: a missing, short or non-base64 secret or key, a
    /// key id given twice, a `current` key that is not configured. Never key material.
    pub fn new(inner: S, config: &SecureConfig) -> Result<Self> {
        let layouts = Layouts::new(&config.hashed_ids)?;
        let keyring = if config.encryption.enabled {
            let keys: Vec<_> = config
                .encryption
                .keys
                .iter()
                .map(|k| (k.id, k.key.clone()))
                .collect();
            Some(Arc::new(Keyring::new(
                &keys,
                config.encryption.current,
                "encryption",
            )?))
        } else {
            None
        };
        Ok(SecureStore {
            inner,
            layouts,
            keyring,
            accept_plaintext: config.encryption.accept_plaintext || config.encryption.write_plaintext,
            write_plaintext: config.encryption.write_plaintext,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
        })
    }

    /// Sets the largest session accepted, in bytes of the envelope as the application writes
    /// it, before sealing (default [`DEFAULT_MAX_SESSION_BYTES`]). Sealing adds
    /// [`SEAL_OVERHEAD`] bytes: give the wrapped store a limit that much higher
    /// ([`SecureConfig::inner_limit`]), as the `session-store` facade does.
    pub fn with_max_session_bytes(mut self, max_session_bytes: usize) -> Self {
        self.max_session_bytes = max_session_bytes;
        self
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Whether ids are stored as keyed hashes.
    pub fn hashes_ids(&self) -> bool {
        self.layouts.hashes()
    }

    /// The keyring that seals payloads, if encryption is on.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The key the backend holds `key`'s session under (the hashed id, when ids are hashed).
    /// For tools and tests that read the backend directly.
    pub fn stored_key(&self, key: &SessionKey) -> SessionKey {
        self.layouts.written(key)
    }

    /// `record` as it is written under `stored`: sealed when encryption is on.
    ///
    /// # Errors
    /// As [`Keyring::seal`].
    pub fn seal_for(&self, stored: &SessionKey, record: &Record) -> Result<Record> {
        check_size(stored, record, self.max_session_bytes)?;
        match &self.keyring {
            Some(ring) if !self.write_plaintext => ring.seal(stored, record),
            _ => Ok(record.clone()),
        }
    }

    /// A record read from under `stored`, opened; an unsealed one is refused with
    /// [`Error::Corrupt`] when encryption is on and `accept_plaintext` is off.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub fn open_from(&self, stored: &SessionKey, record: Record) -> Result<Record> {
        match &self.keyring {
            Some(ring) if record.codec == CodecId::SEALED => ring.open(stored, record),
            Some(_) if !self.accept_plaintext => Err(Error::corrupt(
                stored.ns(),
                "the value is not sealed, and encryption.accept_plaintext is off (was it written by \
                 another program, or before encryption was turned on?)",
            )),
            _ if record.codec == CodecId::SEALED => Err(Error::corrupt(
                stored.ns(),
                "the value is sealed and encryption is off here: configure its keys (encryption.keys)",
            )),
            _ => Ok(record),
        }
    }

    fn open_entry(&self, stored: &SessionKey, entry: Entry) -> Result<Entry> {
        match entry {
            Entry::Live(record) => self.open_from(stored, record).map(Entry::Live),
            tombstone @ Entry::Tombstone(_) => Ok(tombstone),
        }
    }

    /// Whether `error` means the call found no session under that layout.
    fn absent(error: &Error) -> bool {
        matches!(error, Error::NotFound { .. })
    }

    /// `write` on the written layout; when it finds no session there, on each other layout in
    /// turn (a session stored before the layout changed is written in place). Each attempt
    /// gets the record sealed for its key.
    async fn write_in_place(
        &self,
        key: &SessionKey,
        record: &Record,
        write: impl for<'a> Fn(&'a S, SessionKey, Record) -> futures::future::BoxFuture<'a, Result<Meta>>,
    ) -> Result<Meta> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        let first = write(&self.inner, written, sealed).await;
        match &first {
            Err(e) if Self::absent(e) => {}
            _ => return first,
        }
        for stored in self.layouts.legacy(key) {
            let sealed = self.seal_for(&stored, record)?;
            match write(&self.inner, stored, sealed).await {
                Err(e) if Self::absent(&e) => {}
                other => return other,
            }
        }
        first
    }

    /// After the inner store moved a session to `to` (or was found to have), renews its seal
    /// for `to` when it is still sealed for one of `from` (a sealed value is bound to its key).
    /// `None` when `to` holds nothing.
    async fn reseal_moved(&self, from: &[SessionKey], to: &SessionKey) -> Result<Option<(Meta, bool)>> {
        let Some(ring) = &self.keyring else {
            return Ok(self.inner.load(to).await?.map(|r| (r.meta, false)));
        };
        for _ in 0..RESEAL_ATTEMPTS {
            let Some(stored) = self.inner.load(to).await? else {
                return Ok(None);
            };
            if stored.codec != CodecId::SEALED || ring.open(to, stored.clone()).is_ok() {
                return Ok(Some((stored.meta, false)));
            }
            let Some(plain) = from.iter().find_map(|k| ring.open(k, stored.clone()).ok()) else {
                return Err(ring
                    .open(to, stored)
                    .err()
                    .unwrap_or_else(|| Error::corrupt(to.ns(), "does not open")));
            };
            // The same session under a new seal: its version stays (a caller holding it may
            // still compare-and-set), as a rotate without encryption keeps it.
            let renewed = ring.seal(to, &plain)?;
            match self.inner.save_if(to, stored.meta.version, &renewed).await {
                Ok(meta) => return Ok(Some((meta, true))),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            backend: self.inner.backend(),
            message: format!(
                "the rotated session was written {RESEAL_ATTEMPTS} times while its seal was renewed; retry the rotate"
            ),
            source: None,
        })
    }
}

impl<S> std::fmt::Debug for SecureStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStore")
            .field("hashed_ids", &self.layouts.hashes())
            .field("keyring", &self.keyring)
            .field("accept_plaintext", &self.accept_plaintext)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for SecureStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.layouts.check(key)?;
        for stored in self.layouts.every(key) {
            if let Some(record) = self.inner.load(&stored).await? {
                return self.open_from(&stored, record).map(Some);
            }
        }
        Ok(None)
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.layouts.check(key)?;
        for stored in self.layouts.every(key) {
            if let Some(entry) = self.inner.load_entry(&stored).await? {
                return self.open_entry(&stored, entry).map(Some);
            }
        }
        Ok(None)
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        if !self.layouts.has_legacy() {
            return self.inner.save(&written, &sealed).await;
        }
        // While layouts change, a session lives under one of them only: one stored the old
        // way is overwritten in place (a copy under the new layout would leave the old one
        // for instances that read it first); so is a value that is not a session.
        for stored in self.layouts.every(key) {
            let sealed = self.seal_for(&stored, record)?;
            match self.inner.update(&stored, &sealed).await {
                Err(e) if Self::absent(&e) => {}
                Err(Error::Corrupt { .. }) => return self.inner.save(&stored, &sealed).await,
                other => return other,
            }
        }
        self.inner.save(&written, &sealed).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.layouts.check(key)?;
        for stored in self.layouts.legacy(key) {
            if self.inner.load(&stored).await?.is_some() {
                return Err(Error::AlreadyExists {
                    namespace: key.ns().to_owned(),
                });
            }
        }
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        self.inner.create(&written, &sealed).await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write_in_place(key, record, |inner, k, r| {
            Box::pin(async move { inner.update(&k, &r).await })
        })
        .await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.write_in_place(key, record, move |inner, k, r| {
            Box::pin(async move { inner.save_if(&k, expected_version, &r).await })
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.layouts.check(key)?;
        let keys = self.layouts.every(key);
        let results = futures::future::join_all(keys.iter().map(|k| self.inner.delete(k))).await;
        let mut existed = false;
        for result in results {
            existed |= result?;
        }
        Ok(existed)
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.layouts.check(key)?;
        let keys = self.layouts.every(key);
        let results =
            futures::future::join_all(keys.iter().map(|k| self.inner.delete_leaving(k, tombstone))).await;
        let mut existed = false;
        for result in results {
            existed |= result?;
        }
        Ok(existed)
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.layouts.check(key)?;
        for stored in self.layouts.every(key) {
            if self.inner.touch(&stored, expires_at).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.layouts.check(key)?;
        let target = SessionKey::new(key.namespace.clone(), new_id.clone());
        self.layouts.check(&target)?;
        let to = self.layouts.written(&target);
        let from = self.layouts.every(key);
        for stored in &from {
            match self.inner.rotate(stored, &to.id).await {
                Ok(meta) => {
                    return match self.reseal_moved(&from, &to).await? {
                        Some((renewed, _)) => Ok(renewed),
                        // Moved, then deleted or expired at once: what the move stored.
                        None => Ok(meta),
                    };
                }
                Err(e) if Self::absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        // Nothing under the old id: an earlier call may have moved the session without
        // renewing its seal; finish that, else the move is complete (NotFound, as the contract
        // says).
        if self.keyring.is_some() {
            if let Some((meta, true)) = self.reseal_moved(&from, &to).await? {
                return Ok(meta);
            }
        }
        Err(Error::not_found(key.ns()))
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let written: Vec<SessionKey> = keys.iter().map(|k| self.layouts.written(k)).collect();
        let mut out: Vec<Result<Option<Record>>> = self
            .inner
            .load_many(&written)
            .await?
            .into_iter()
            .zip(&written)
            .map(|(result, stored)| {
                result.and_then(|found| found.map(|r| self.open_from(stored, r)).transpose())
            })
            .collect();
        for (slot, key) in out.iter_mut().zip(keys) {
            if let Err(e) = self.layouts.check(key) {
                *slot = Err(e);
            }
        }
        if !self.layouts.has_legacy() {
            return Ok(out);
        }
        // Misses may be stored under another layout: one call per key (only while a
        // transition is configured).
        for (i, key) in keys.iter().enumerate() {
            if matches!(out.get(i), Some(Ok(None))) {
                for stored in self.layouts.legacy(key) {
                    if let Some(record) = self.inner.load(&stored).await? {
                        out[i] = self.open_from(&stored, record).map(Some);
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        if self.layouts.has_legacy() {
            // One `save` each (in place, see `save`), every size checked first.
            for (key, record) in items {
                self.layouts.check(key)?;
                check_size(key, record, self.max_session_bytes)?;
            }
            let saves = items.iter().map(|(key, record)| self.save(key, record));
            return futures::future::join_all(saves).await.into_iter().collect();
        }
        let sealed = items
            .iter()
            .map(|(key, record)| {
                self.layouts.check(key)?;
                let written = self.layouts.written(key);
                self.seal_for(&written, record).map(|r| (written, r))
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.save_many(&sealed).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.inner.count(namespace).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        match change {
            Change::Write(record) => {
                // In place, under the layout that holds the key now (see `save`).
                let mut target = written;
                if self.layouts.has_legacy() && self.inner.load_entry(&target).await?.is_none() {
                    for stored in self.layouts.legacy(key) {
                        if self.inner.load_entry(&stored).await?.is_some() {
                            target = stored;
                            break;
                        }
                    }
                }
                let sealed = self.seal_for(&target, record)?;
                self.inner.reconcile(&target, base, Change::Write(&sealed)).await
            }
            Change::Delete(tombstone) => {
                let done = self
                    .inner
                    .reconcile(&written, base, Change::Delete(tombstone))
                    .await?;
                for stored in self.layouts.legacy(key) {
                    self.inner.delete(&stored).await?;
                }
                Ok(done)
            }
            Change::Expire => self.inner.reconcile(&written, base, Change::Expire).await,
        }
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        if self.layouts.any_hashed() {
            return Err(Error::Backend {
                backend: self.inner.backend(),
                message: "a store with hashed ids cannot list the ids of its sessions; copy or back up the \
                          store it wraps (the same secrets read the copy)"
                    .to_owned(),
                source: None,
            });
        }
        let page = self.inner.scan(cursor, limit).await?;
        let mut sessions = Vec::with_capacity(page.sessions.len());
        let mut skipped = page.skipped;
        for (key, record) in page.sessions {
            match self.open_from(&key, record) {
                Ok(record) => sessions.push((key, record)),
                Err(_) => skipped += 1,
            }
        }
        Ok(ScanPage::new(sessions, page.next, skipped))
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }

    fn evicts(&self) -> bool {
        self.inner.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        self.inner.partition(&self.layouts.written(key))
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.inner.partition_health(partition).await
    }
}
