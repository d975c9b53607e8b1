//! [`Sessions<T>`]: a typed handle on one namespace of a store.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Clock;
use crate::codec::{decode_payload, CodecKind};
use crate::envelope::{cap_deadline, Meta, Record};
use crate::error::{Error, Result};
use crate::expiry::ExpiryPolicy;
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::principal::Principal;
use crate::store::{SessionStore, DEFAULT_MAX_SESSION_BYTES};
use crate::version::Version;

/// A session as loaded or written: its id, value and metadata.
///
/// Writes through [`Sessions`] take a `&mut Session<T>`: they store
/// `value`, carry `meta.created_at` and `meta.max_expires_at` over (so a
/// lifetime cap counts from the first write whatever writes follow), and on
/// success set `meta` to what was stored (its new version included), ready for
/// the next compare-and-set.
#[derive(Clone)]
pub struct Session<T> {
    /// The session id.
    pub id: SessionId,
    /// The decoded value.
    pub value: T,
    /// Version, times and deadline as stored.
    pub meta: Meta,
    /// Who the session belongs to: set only by [`Sessions::bind`] (which lists it in the
    /// principal's index), so that no bound session escapes `revoke_all`.
    principal: Option<Principal>,
}

impl<T> Session<T> {
    /// Who the session belongs to, once [bound](Sessions::bind) (at login): every write
    /// keeps it, [`rotate`](Sessions::rotate) moves it, and
    /// [`revoke_all`](Sessions::revoke_all) ends every session bound to it.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub(crate) fn set_principal(&mut self, principal: Option<Principal>) {
        self.principal = principal;
    }

    /// A session never stored yet (its version is [`Version::NONE`]): the
    /// first write of it starts its lifetime. For [`Sessions::save_many`] of
    /// new sessions and for writing under a caller-chosen id.
    pub fn new(id: SessionId, value: T) -> Self {
        Session {
            id,
            value,
            meta: Meta::default(),
            principal: None,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("value", &self.value)
            .field("meta", &self.meta)
            .field("principal", &self.principal)
            .finish()
    }
}

/// What [`Sessions`] does when a stored session cannot be decoded into its
/// type: after a deploy that changed the type incompatibly, after a codec
/// feature was dropped from the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Undecodable {
    /// The default: the session reads as absent (`Ok(None)`), as if it had
    /// expired. The user starts a new session instead of getting an error on
    /// every request until the old one expires. The stored value is left in
    /// place (a rollback of the deploy can read it again) and expires with its
    /// TTL. Each occurrence is counted ([`Sessions::undecodable_count`] and,
    /// with the `instrument` feature, `session_undecodable_total{namespace}`);
    /// the first per handle is logged at WARN with the namespace, the codec
    /// and the decoder's message (quoted values removed).
    #[default]
    Miss,
    /// The load fails with [`Error::Codec`] (or [`Error::Corrupt`] when the
    /// codec is not built into this binary).
    Error,
}

/// Shared by a handle's clones: how many undecodable sessions were seen, and
/// whether the first was logged.
#[derive(Default)]
struct UndecodableLog {
    count: AtomicU64,
    logged: AtomicBool,
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
/// let mut cart = carts.create(Cart { items: vec!["book".into()] }).await?;
/// cart.value.items.push("pen".into());
/// // Compare-and-set on the version just stored: Error::Conflict if another
/// // request wrote in between.
/// carts.save_if(&mut cart).await?;
/// let again = carts.load(&cart.id).await?.expect("just written");
/// assert_eq!(again.meta.version, cart.meta.version);
/// # Ok(()) }
/// ```
pub struct Sessions<T> {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
    codec: CodecKind,
    policy: ExpiryPolicy,
    max_bytes: usize,
    clock: Clock,
    on_undecodable: Undecodable,
    undecodable: Arc<UndecodableLog>,
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
            clock: self.clock.clone(),
            on_undecodable: self.on_undecodable,
            undecodable: Arc::clone(&self.undecodable),
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
            .field("on_undecodable", &self.on_undecodable)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> Sessions<T> {
    /// A handle with the default codec, a one-hour absolute TTL, a 1 MiB
    /// limit and the system clock.
    pub fn new(store: Arc<dyn SessionStore>, namespace: Namespace) -> Self {
        Sessions {
            store,
            namespace,
            codec: CodecKind::default(),
            policy: ExpiryPolicy::default(),
            max_bytes: DEFAULT_MAX_SESSION_BYTES,
            clock: Clock::system(),
            on_undecodable: Undecodable::default(),
            undecodable: Arc::default(),
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

    /// Sets the clock that deadlines and `updated_at` are computed by.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sets what a load does with a stored session that no longer decodes
    /// into `T` (default [`Undecodable::Miss`]).
    pub fn with_undecodable(mut self, policy: Undecodable) -> Self {
        self.on_undecodable = policy;
        self
    }

    /// How many stored sessions this handle (and its clones) could not decode
    /// and read as absent under [`Undecodable::Miss`].
    pub fn undecodable_count(&self) -> u64 {
        self.undecodable.count.load(Ordering::Relaxed)
    }

    /// The clock deadlines and `updated_at` are computed by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The expiry policy.
    pub fn policy(&self) -> &ExpiryPolicy {
        &self.policy
    }

    pub(crate) fn key(&self, id: &SessionId) -> SessionKey {
        SessionKey::new(self.namespace.clone(), id.clone())
    }

    /// The record of a write of `value` at `now`, continuing the lifetime of
    /// `prior` (the session loaded before) or starting a new one (no prior,
    /// or one never stored: version `NONE`).
    fn record(&self, value: &T, prior: Option<&Meta>, principal: Option<&Principal>) -> Result<Record> {
        let prior = prior.filter(|m| !m.version.is_none());
        let payload = self.codec.encode(value, self.namespace.as_str())?;
        let binding = principal.map_or(0, |p| 1 + p.as_str().len());
        let size = crate::envelope::HEADER_LEN + binding + payload.len();
        if size > self.max_bytes {
            return Err(Error::TooLarge {
                namespace: self.namespace.as_str().to_owned(),
                size,
                limit: self.max_bytes,
            });
        }
        let now = self.clock.now_ms();
        let mut meta = self.policy.meta_for_write(now);
        if let Some(prior) = prior {
            meta.created_at = prior.created_at;
            // A session stored before a max lifetime was configured gets one counted from its creation.
            meta.max_expires_at = match (prior.max_expires_at, self.policy.max_lifetime) {
                (0, Some(max)) => prior
                    .created_at
                    .saturating_add(u64::try_from(max.as_millis()).unwrap_or(u64::MAX))
                    .max(1),
                (cap, _) => cap,
            };
            meta.expires_at = cap_deadline(meta.expires_at, meta.max_expires_at);
        }
        meta.version = Version::generate();
        let record = Record {
            meta,
            codec: self.codec.id(),
            payload: Bytes::from(payload),
        };
        Ok(match principal {
            Some(p) => record.bound_to(p),
            None => record,
        })
    }

    /// Decodes a loaded record; under [`Undecodable::Miss`] a payload that is
    /// not a `T` (or whose codec this binary lacks) is a miss.
    pub(crate) fn decode(&self, id: SessionId, record: Record) -> Result<Option<Session<T>>> {
        let ns = self.namespace.as_str();
        let (codec, payload) = record.unbound_parts();
        let decoded = record
            .principal(ns)
            .and_then(|principal| Ok((principal, decode_payload(codec, &payload, ns)?)));
        match decoded {
            Ok((principal, value)) => Ok(Some(Session {
                id,
                value,
                meta: record.meta,
                principal,
            })),
            Err(e) if self.on_undecodable == Undecodable::Miss => {
                self.note_undecodable(codec.name(), &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn note_undecodable(&self, codec: &'static str, error: &Error) {
        self.undecodable.count.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "instrument")]
        metrics::counter!("session_undecodable_total", "namespace" => self.namespace.as_str().to_owned())
            .increment(1);
        if !self.undecodable.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                namespace = self.namespace.as_str(),
                codec,
                error = %without_quoted(&error_chain(error)),
                "a stored session does not decode into this session type (changed incompatibly, or its \
                 codec is not built in): it reads as absent; further ones are counted, not logged"
            );
        }
    }

    /// Creates a session under a new random id.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn create(&self, value: T) -> Result<Session<T>> {
        let record = self.record(&value, None, None)?;
        // A 128-bit random id does not collide in practice; retry anyway
        // rather than report a collision the caller cannot act on.
        let mut attempts = 0;
        loop {
            let id = SessionId::generate()?;
            match self.store.create(&self.key(&id), &record).await {
                Ok(meta) => {
                    return Ok(Session {
                        id,
                        value,
                        meta,
                        principal: None,
                    })
                }
                Err(Error::AlreadyExists { .. }) if attempts < 2 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates a session under a caller-chosen id, failing if it exists.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn create_with_id(&self, id: &SessionId, value: T) -> Result<Session<T>> {
        let record = self.record(&value, None, None)?;
        let meta = self.store.create(&self.key(id), &record).await?;
        Ok(Session {
            id: id.clone(),
            value,
            meta,
            principal: None,
        })
    }

    /// Loads a session; with a sliding policy this also moves its deadline.
    /// A stored value that does not decode into `T` reads as absent unless
    /// the handle was built [`with_undecodable(Undecodable::Error)`](Self::with_undecodable).
    ///
    /// # Errors
    /// [`Error::Corrupt`] (a damaged envelope), store errors; with
    /// [`Undecodable::Error`], [`Error::Codec`] when the stored value is not a `T`.
    pub async fn load(&self, id: &SessionId) -> Result<Option<Session<T>>> {
        let key = self.key(id);
        let Some(record) = self.store.load(&key).await? else {
            return Ok(None);
        };
        let Some(mut session) = self.decode(id.clone(), record)? else {
            return Ok(None);
        };
        if let Some(deadline) = self.policy.slide(&session.meta, self.clock.now_ms()) {
            if self.store.touch(&key, deadline).await? {
                session.meta.expires_at = cap_deadline(deadline, session.meta.max_expires_at);
            } else {
                return Ok(None);
            }
        }
        Ok(Some(session))
    }

    /// Writes `session.value` whether or not the session still exists (last
    /// writer wins), continuing its lifetime. On success `session.meta` is
    /// what was stored.
    ///
    /// # Errors
    /// [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn save(&self, session: &mut Session<T>) -> Result<()> {
        let record = self.record(&session.value, Some(&session.meta), session.principal.as_ref())?;
        session.meta = self.store.save(&self.key(&session.id), &record).await?;
        Ok(())
    }

    /// Writes `session.value` only if the session still exists (a request
    /// that finishes after a logout cannot bring it back).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::TooLarge`], [`Error::Codec`], store errors.
    pub async fn update(&self, session: &mut Session<T>) -> Result<()> {
        let record = self.record(&session.value, Some(&session.meta), session.principal.as_ref())?;
        session.meta = self.store.update(&self.key(&session.id), &record).await?;
        Ok(())
    }

    /// Writes `session.value` only if the stored version is still
    /// `session.meta.version` (compare-and-set).
    ///
    /// # Errors
    /// [`Error::Conflict`] (someone wrote in between: reload and retry),
    /// [`Error::NotFound`], [`Error::TooLarge`], store errors.
    pub async fn save_if(&self, session: &mut Session<T>) -> Result<()> {
        let record = self.record(&session.value, Some(&session.meta), session.principal.as_ref())?;
        session.meta = self
            .store
            .save_if(&self.key(&session.id), session.meta.version, &record)
            .await?;
        Ok(())
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
        let deadline = self.policy.meta_for_write(self.clock.now_ms()).expires_at;
        self.store.touch(&self.key(id), deadline).await
    }

    /// Gives a session a new random id; the old id is gone afterwards.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for a bound session that a running
    /// [`revoke_all`](Self::revoke_all) is ending), store errors. After a temporary error
    /// the session is under the old id or the new one, which this call does not return:
    /// use [`rotate_to`](Self::rotate_to) to retry with the same new id.
    pub async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        let new_id = SessionId::generate()?;
        self.rotate_to(id, &new_id).await?;
        Ok(new_id)
    }

    /// Moves a session to `new_id`. Calling it again with the same ids after
    /// a temporary error finishes an interrupted move (see
    /// [`SessionStore::rotate`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for a bound session that a running
    /// [`revoke_all`](Self::revoke_all) is ending), [`Error::AlreadyExists`], store errors.
    pub async fn rotate_to(&self, id: &SessionId, new_id: &SessionId) -> Result<Meta> {
        let key = self.key(id);
        // A bound session's index entry moves with it (one read first; rotating is rare).
        let bound = match self.store.load(&key).await? {
            Some(record) => record
                .principal(key.ns())?
                .map(|p| (p, record.meta.max_expires_at)),
            None => None,
        };
        match bound {
            Some((principal, until)) => {
                let until = if until == 0 { u64::MAX } else { until };
                self.rotate_bound(&principal, until, id, new_id, self.store.rotate(&key, new_id))
                    .await
            }
            None => {
                let meta = self.store.rotate(&key, new_id).await?;
                // Bound between the read and the move: its new id is listed too.
                self.list_if_bound(id, new_id).await;
                Ok(meta)
            }
        }
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
                Ok(Some(record)) => self.decode(id.clone(), record),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            })
            .collect())
    }

    /// Saves many sessions (each as [`save`](Self::save)), pipelined where
    /// the backend allows. On success each session's `meta` is what was
    /// stored; on an error some may have been written.
    ///
    /// # Errors
    /// [`Error::TooLarge`] or [`Error::Codec`] before any I/O; store errors.
    pub async fn save_many(&self, sessions: &mut [Session<T>]) -> Result<()> {
        let records = sessions
            .iter()
            .map(|s| {
                Ok((
                    self.key(&s.id),
                    self.record(&s.value, Some(&s.meta), s.principal.as_ref())?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let metas = self.store.save_many(&records).await?;
        for (session, meta) in sessions.iter_mut().zip(metas) {
            session.meta = meta;
        }
        Ok(())
    }

    /// The number of live sessions in this namespace.
    ///
    /// # Errors
    /// Store errors.
    pub async fn count(&self) -> Result<u64> {
        self.store.count(&self.namespace).await
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `text` with every double-quoted part replaced by `"…"`: decoders quote the
/// offending value (`invalid type: string "…", expected u64`), which is session
/// data and stays out of logs.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut parts = text.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}
