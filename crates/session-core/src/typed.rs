//! [`Sessions<T>`]: a typed handle on one namespace of a store.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{decode_payload, CodecKind};
use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::expiry::{now_ms, ExpiryPolicy};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::store::{SessionStore, DEFAULT_MAX_SESSION_BYTES};

/// A loaded session: its id, value and metadata.
#[derive(Clone)]
pub struct Session<T> {
    /// The session id.
    pub id: SessionId,
    /// The decoded value.
    pub value: T,
    /// Version, times and deadline as stored.
    pub meta: Meta,
}

impl<T: fmt::Debug> fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("value", &self.value)
            .field("meta", &self.meta)
            .finish()
    }
}

/// Typed access to one namespace of a store: encodes `T` with the configured
/// codec, applies the namespace's expiry policy and size limit, and decodes
/// whatever codec a stored value was written with.
///
/// ```
/// # async fn demo(store: std::sync::Arc<dyn session_core::SessionStore>) -> session_core::Result<()> {
/// use session_core::{Namespace, Sessions};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Cart { items: Vec<String> }
///
/// let carts: Sessions<Cart> = Sessions::new(store, Namespace::new("cart")?);
/// let (id, _meta) = carts.create(&Cart { items: vec!["book".into()] }).await?;
/// let cart = carts.load(&id).await?.expect("just created");
/// carts.save_if(&id, cart.meta.version, &Cart { items: vec![] }).await?;
/// # Ok(()) }
/// ```
pub struct Sessions<T> {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
    codec: CodecKind,
    policy: ExpiryPolicy,
    max_bytes: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Sessions<T> {
    fn clone(&self) -> Self {
        Sessions {
            store: Arc::clone(&self.store),
            namespace: self.namespace.clone(),
            codec: self.codec,
            policy: self.policy,
            max_bytes: self.max_bytes,
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Sessions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("backend", &self.store.backend())
            .field("namespace", &self.namespace)
            .field("codec", &self.codec)
            .field("policy", &self.policy)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> Sessions<T> {
    /// A handle with the default codec, a one-hour absolute TTL and a 1 MiB limit.
    pub fn new(store: Arc<dyn SessionStore>, namespace: Namespace) -> Self {
        Sessions {
            store,
            namespace,
            codec: CodecKind::default(),
            policy: ExpiryPolicy::default(),
            max_bytes: DEFAULT_MAX_SESSION_BYTES,
            _type: PhantomData,
        }
    }

    /// Sets the codec used for writing (reads decode any codec).
    pub fn with_codec(mut self, codec: CodecKind) -> Self {
        self.codec = codec;
        self
    }

    /// Sets the expiry policy.
    pub fn with_policy(mut self, policy: ExpiryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the largest encoded session accepted, in bytes.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    fn key(&self, id: &SessionId) -> SessionKey {
        SessionKey::new(self.namespace.clone(), id.clone())
    }

    fn record(&self, value: &T) -> Result<Record> {
        let payload = self.codec.encode(value, self.namespace.as_str())?;
        let size = crate::envelope::HEADER_LEN + payload.len();
        if size > self.max_bytes {
            return Err(Error::TooLarge {
                namespace: self.namespace.as_str().to_owned(),
                size,
                limit: self.max_bytes,
            });
        }
        Ok(Record {
            meta: self.policy.meta_for_write(now_ms()),
            codec: self.codec.id(),
            payload: Bytes::from(payload),
        })
    }

    fn decode(&self, id: SessionId, record: Record) -> Result<Session<T>> {
        let value = decode_payload(record.codec, &record.payload, self.namespace.as_str())?;
        Ok(Session {
            id,
            value,
            meta: record.meta,
        })
    }

    /// Creates a session under a new random id.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn create(&self, value: &T) -> Result<(SessionId, Meta)> {
        let record = self.record(value)?;
        // A 128-bit random id does not collide in practice; retry once anyway
        // rather than report a collision the caller cannot act on.
        let mut attempts = 0;
        loop {
            let id = SessionId::generate()?;
            match self.store.create(&self.key(&id), &record).await {
                Ok(meta) => return Ok((id, meta)),
                Err(Error::AlreadyExists { .. }) if attempts < 2 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a session under a caller-chosen id, failing if it exists.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn create_with_id(&self, id: &SessionId, value: &T) -> Result<Meta> {
        let record = self.record(value)?;
        self.store.create(&self.key(id), &record).await
    }

    /// Loads a session; with a sliding policy this also moves its deadline.
    ///
    /// # Errors
    /// [`Error::Corrupt`], [`Error::Codec`] (the stored value is not a `T`), store errors.
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session<T>>> {
        let key = self.key(id);
        let Some(record) = self.store.load(&key).await? else {
            return Ok(None);
        };
        let mut session = self.decode(id.clone(), record)?;
        if let Some(deadline) = self.policy.slide(&session.meta, now_ms()) {
            if self.store.touch(&key, deadline).await? {
                session.meta.expires_at =
                    crate::envelope::cap_deadline(deadline, session.meta.max_expires_at);
            } else {
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    /// Writes a session whether or not it exists (last writer wins).
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn save(&self, id: &SessionId, value: &T) -> Result<Meta> {
        let record = self.record(value)?;
        self.store.save(&self.key(id), &record).await
    }

    /// Writes a session only if it still exists.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn update(&self, id: &SessionId, value: &T) -> Result<Meta> {
        let record = self.record(value)?;
        self.store.update(&self.key(id), &record).await
    }

    /// Writes a session only if its stored version is `expected_version`.
    ///
    /// # Errors
    /// [`Error::Conflict`], [`Error::NotFound`], [`Error::TooLarge`], store errors.
    pub async fn save_if(&self, id: &SessionId, expected_version: u64, value: &T) -> Result<Meta> {
        let record = self.record(value)?;
        self.store.save_if(&self.key(id), expected_version, &record).await
    }

    /// Deletes a session; `true` if it existed.
    ///
    /// # Errors
    /// Store errors.
    pub async fn delete(&self, id: &SessionId) -> Result<bool> {
        self.store.delete(&self.key(id)).await
    }

    /// Moves a session's deadline to now + TTL (capped by its max lifetime).
    ///
    /// # Errors
    /// Store errors.
    pub async fn touch(&self, id: &SessionId) -> Result<bool> {
        let deadline = self.policy.meta_for_write(now_ms()).expires_at;
        self.store.touch(&self.key(id), deadline).await
    }

    /// Gives a session a new random id and removes the old one.
    ///
    /// # Errors
    /// [`Error::NotFound`], store errors.
    pub async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        let new_id = SessionId::generate()?;
        self.store.rotate(&self.key(id), &new_id).await?;
        Ok(new_id)
    }

    /// Loads many sessions in one round trip where the backend allows.
    ///
    /// # Errors
    /// A temporary error for the whole batch; per-session errors are inside.
    pub async fn load_many(&self, ids: &[SessionId]) -> Result<Vec<Result<Option<Session<T>>>>> {
        let keys: Vec<SessionKey> = ids.iter().map(|id| self.key(id)).collect();
        let records = self.store.load_many(&keys).await?;
        Ok(records
            .into_iter()
            .zip(ids)
            .map(|(r, id)| match r {
                Ok(Some(record)) => self.decode(id.clone(), record).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            })
            .collect())
    }

    /// Saves many sessions, pipelined where the backend allows.
    ///
    /// # Errors
    /// [`Error::TooLarge`] or [`Error::Codec`] before any I/O; store errors.
    pub async fn save_many(&self, items: &[(SessionId, T)]) -> Result<Vec<Meta>> {
        let records = items
            .iter()
            .map(|(id, v)| Ok((self.key(id), self.record(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.store.save_many(&records).await
    }

    /// The number of live sessions in this namespace.
    ///
    /// # Errors
    /// Store errors.
    pub async fn count(&self) -> Result<u64> {
        self.store.count(&self.namespace).await
    }
}
