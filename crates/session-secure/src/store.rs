//! [`SecureStore`]: any store, with ids hashed and payloads sealed on the way in and opened on
//! the way out. The calls of the contract are in `session_store`, `rotate` in `rotate`.

use std::sync::Arc;

use session_core::backend::{check_size, is_principal_index, CodecId, Record, Tombstone};
use session_core::{Error, Result, SessionKey, SessionStore, DEFAULT_MAX_SESSION_BYTES};

use crate::config::SecureConfig;
use crate::keyring::Keyring;
#[cfg(doc)]
use crate::keyring::SEAL_OVERHEAD;
use crate::layout::Layouts;

/// What the keys that seal principal indexes (when only ids are hashed) are derived for.
const INDEX_KEY_PURPOSE: &[u8] = b"principal index";

/// A store whose backend never sees a session id or a payload in the clear (as configured):
/// keys hold an HMAC of the id, payloads are sealed with XChaCha20-Poly1305 and bound to the
/// key they are stored under.
///
/// Every call of the [`SessionStore`] contract works as on the wrapped store; what changes is
/// only what the backend holds. Put it outermost (inside instrumentation only), so that every
/// store it wraps — a fallback's journal and secondary, a backup's database — holds hashed
/// ids and sealed values too. With hashed ids, a principal's session index (see
/// [`Sessions::bind`](session_core::Sessions::bind)) is sealed even without `encryption`,
/// by a key derived from the hashing secret: it lists session ids.
///
/// Turning either part on logs no one out when its transition settings are followed
/// (`hashed_ids.write_plain_ids` then `read_plain_ids`, `encryption.write_plaintext` then
/// `accept_plaintext`): values stored the old way keep loading, and are deleted, updated and
/// rotated in place until they expire. See docs/operations.md, "Security", for the steps.
pub struct SecureStore<S> {
    pub(crate) inner: S,
    pub(crate) layouts: Layouts,
    keyring: Option<Arc<Keyring>>,
    /// Seals principal indexes when ids are hashed and payloads are not sealed otherwise.
    index_ring: Option<Arc<Keyring>>,
    accept_plaintext: bool,
    write_plaintext: bool,
    pub(crate) max_session_bytes: usize,
}

impl<S: SessionStore> SecureStore<S> {
    /// Wraps `inner` as `config` says.
    ///
    /// # Errors
    /// [`Error::Config`] naming the setting: a missing, short or non-base64 secret or key, a
    /// key id given twice, a `current` key that is not configured, transition settings of a
    /// part that is off. Never key material.
    pub fn new(inner: S, config: &SecureConfig) -> Result<Self> {
        config.check_transitions()?;
        let layouts = Layouts::new(&config.hashed_ids)?;
        let derived = layouts.derived_keys(INDEX_KEY_PURPOSE);
        let keyring = match config.encryption.keyring()? {
            Some(ring) => Some(Arc::new(ring.with_derived(&derived)?)),
            None => None,
        };
        let index_ring = if derived.is_empty() {
            None
        } else {
            Some(Arc::new(Keyring::derived_only(&derived)?))
        };
        Ok(SecureStore {
            inner,
            layouts,
            keyring,
            index_ring,
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

    /// Deletes `key` under every layout at once (leaving `tombstone` where given); `true` if
    /// any held a session.
    pub(crate) async fn delete_every(&self, key: &SessionKey, tombstone: Option<Tombstone>) -> Result<bool> {
        self.layouts.check(key)?;
        let keys = self.layouts.every(key);
        let results = futures::future::join_all(keys.iter().map(|k| async move {
            match tombstone {
                Some(t) => self.inner.delete_leaving(k, t).await,
                None => self.inner.delete(k).await,
            }
        }))
        .await;
        let mut existed = false;
        for result in results {
            existed |= result?;
        }
        Ok(existed)
    }

    /// Whether `error` means the call found no session under that layout.
    pub(crate) fn absent(error: &Error) -> bool {
        matches!(error, Error::NotFound { .. })
    }

    /// The key `key` is stored under now: the first layout holding anything under it (a
    /// session, a tombstone, bytes that are not a session), else the written one. One read
    /// per layout tried, only while a transition is configured.
    pub(crate) async fn holding(&self, key: &SessionKey) -> Result<SessionKey> {
        let written = self.layouts.written(key);
        if !self.layouts.has_legacy() {
            return Ok(written);
        }
        for stored in self.layouts.every(key) {
            match self.inner.load_entry(&stored).await {
                Ok(Some(_)) | Err(Error::Corrupt { .. }) => return Ok(stored),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }

    /// `write` on the written layout; when it finds no session there, on each other layout in
    /// turn (a session stored before the layout changed is written in place). Each attempt
    /// gets the record sealed for its key.
    pub(crate) async fn write_in_place(
        &self,
        key: &SessionKey,
        record: &Record,
        write: impl for<'a> Fn(
            &'a S,
            SessionKey,
            Record,
        ) -> futures::future::BoxFuture<'a, Result<session_core::Meta>>,
    ) -> Result<session_core::Meta> {
        self.layouts.check(key)?;
        let written = self.layouts.written(key);
        let sealed = self.seal_for(&written, record)?;
        let first = write(&self.inner, written, sealed).await;
        match &first {
            Err(e) if Self::absent(e) => {}
            _ => return first,
        }
        let index = is_principal_index(key);
        for stored in self.layouts.legacy(key) {
            if index {
                // A principal's index is moved to the written layout before it changes, so
                // that it leaves an old layout even while its principal keeps binding (which
                // keeps pushing its deadline out).
                if self.inner.load(&stored).await?.is_none() {
                    continue;
                }
                let written = self.layouts.written(key);
                match self.inner.rotate(&stored, &written.id).await {
                    Ok(_) | Err(Error::NotFound { .. } | Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e),
                }
                self.reseal_moved(std::slice::from_ref(&stored), &written).await?;
                let sealed = self.seal_for(&written, record)?;
                return write(&self.inner, written, sealed).await;
            }
            let sealed = self.seal_for(&stored, record)?;
            match write(&self.inner, stored, sealed).await {
                Err(e) if Self::absent(&e) => {}
                other => return other,
            }
        }
        first
    }
}

impl<S> SecureStore<S> {
    /// The same settings over another store (a revocation applied by a store below this one
    /// goes through them).
    pub(crate) fn over<T>(&self, inner: T) -> SecureStore<T> {
        SecureStore {
            inner,
            layouts: self.layouts.clone(),
            keyring: self.keyring.clone(),
            index_ring: self.index_ring.clone(),
            accept_plaintext: self.accept_plaintext,
            write_plaintext: self.write_plaintext,
            max_session_bytes: self.max_session_bytes,
        }
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

    /// The ring that seals what is written under `stored`, if any.
    fn sealing_ring(&self, stored: &SessionKey) -> Option<&Keyring> {
        match &self.keyring {
            Some(ring) if !self.write_plaintext => Some(ring),
            // A principal's index under its hashed key (`p..`): it lists session ids. Under
            // its plain key (the first step of turning hashing on) the key names the principal
            // anyway, and instances not changed yet must read it.
            _ if is_principal_index(stored) && stored.id.as_str().starts_with("p..") => {
                self.index_ring.as_deref()
            }
            _ => None,
        }
    }

    /// `record` as it is written under `stored`: sealed when encryption is on (and a
    /// principal index also when ids are hashed), with its version drawn first (the seal
    /// binds it).
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a record over the limit (before sealing); as [`Keyring::seal`].
    pub fn seal_for(&self, stored: &SessionKey, record: &Record) -> Result<Record> {
        check_size(stored, record, self.max_session_bytes)?;
        match self.sealing_ring(stored) {
            Some(ring) => {
                let mut record = record.clone();
                record.meta.version = record.meta.version.or_generate();
                ring.seal(stored, &record)
            }
            None => Ok(record.clone()),
        }
    }

    /// A record read from under `stored`, opened; an unsealed one is refused with
    /// [`Error::Corrupt`] when encryption is on and `accept_plaintext` is off.
    ///
    /// # Errors
    /// As [`Keyring::open`].
    pub fn open_from(&self, stored: &SessionKey, record: Record) -> Result<Record> {
        let ring = self.keyring.as_deref().or(self.index_ring.as_deref());
        match ring {
            Some(ring) if record.codec == CodecId::SEALED => ring.open(stored, record),
            _ if record.codec == CodecId::SEALED => Err(Error::corrupt(
                stored.ns(),
                "the value is sealed and encryption is off here: configure its keys (encryption.keys)",
            )),
            _ if self.keyring.is_some() && !self.accept_plaintext => Err(Error::corrupt(
                stored.ns(),
                "the value is not sealed, and encryption.accept_plaintext is off (was it written by \
                 another program, or before encryption was turned on?)",
            )),
            _ => Ok(record),
        }
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
