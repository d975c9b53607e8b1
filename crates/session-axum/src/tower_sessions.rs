//! [`TowerSessionsStore`]: a `tower_sessions_core::SessionStore` over any
//! [`session_core::SessionStore`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use session_core::backend::{check_size, decode_payload, now_ms, CodecId, Record};
use session_core::{
    CodecKind, Error, Namespace, SessionId, SessionKey, SessionStore, DEFAULT_MAX_SESSION_BYTES,
};
use time::{Date, OffsetDateTime, Time};
use tower_sessions_core::session::{Id, Record as TowerRecord};
use tower_sessions_core::session_store;

/// How many ids `create` tries before giving up. A collision of two random
/// 128-bit ids does not happen in practice; a bound keeps a store that answers
/// `AlreadyExists` to everything from spinning forever.
const CREATE_ATTEMPTS: usize = 8;

/// A [`tower_sessions_core::SessionStore`] over any [`SessionStore`] of this
/// family: the memory store, Redis (standalone, sentinel, cluster) or a
/// fallback of the two. An application built on `tower-sessions` moves to
/// them by changing the store it hands to `SessionManagerLayer::new`.
///
/// Each tower session is one session of `namespace`, under its tower
/// [`Id`] (whose 22-character base64url text is a valid [`SessionId`]):
///
/// * **Value.** The record's `data` map is stored as JSON (codec
///   [`CodecId::JSON`]); its deadline is `expiry_date` in milliseconds since
///   the Unix epoch (rounded down, so a session never outlives the date tower
///   gave it). Loads return the stored deadline, so `expiry_date` round-trips
///   to the millisecond. Numbers come back exactly (this crate turns on
///   `serde_json`'s `float_roundtrip`).
/// * **`create`** writes only under an id no session holds (the store's atomic
///   `create`); on a collision it picks a new random [`Id`] and tries again,
///   so it never overwrites another session.
/// * **`save`** writes whether or not the session exists (last writer wins),
///   in one round trip, as tower-sessions expects of a store: a request that
///   saves after another request of the same browser deleted the session (a
///   logout) writes it again. [`SessionLayer`](crate::SessionLayer) does not. **`load`** answers `None` for a missing or expired
///   session. **`delete`** of a missing session is `Ok`.
/// * **Expiry.** An `expiry_date` at or before now leaves no session: `save`
///   deletes the session, `create` writes nothing. Dates past what a backend
///   can hold are capped by the backend, as for any session.
/// * **Lifetime.** tower-sessions decides the deadline (`Expiry`); this
///   adapter sets no lifetime cap of its own (`max_expires_at` is `0`), and
///   the stored `created_at` is the time of the latest write.
/// * **Errors.** A payload that is not a JSON map, or a stored value that is
///   not an envelope, is [`session_store::Error::Decode`]; a map that cannot
///   be encoded, or one over the size limit, is
///   [`session_store::Error::Encode`]; anything else (a backend down, a
///   timeout) is [`session_store::Error::Backend`]. The text is the store's
///   error message, which never holds a session id.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
///
/// use session_axum::TowerSessionsStore;
/// use session_core::Namespace;
/// use session_memory::MemoryStore;
/// use time::{Duration, OffsetDateTime};
/// use tower_sessions_core::session::{Id, Record};
/// use tower_sessions_core::SessionStore as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Where a tower-sessions app had `MemoryStore::default()` (or a Redis store):
/// let store = TowerSessionsStore::new(Arc::new(MemoryStore::new_default()), Namespace::new("tower")?);
/// // ... and then, as before: `SessionManagerLayer::new(store)`.
///
/// // What the session layer does with it:
/// let mut record = Record {
///     id: Id::default(),
///     data: [("user".to_owned(), serde_json::json!("ada"))].into(),
///     expiry_date: OffsetDateTime::now_utc() + Duration::hours(1),
/// };
/// store.create(&mut record).await?;
/// let loaded = store.load(&record.id).await?.expect("just created");
/// assert_eq!(loaded.data, record.data);
/// store.delete(&record.id).await?;
/// assert!(store.load(&record.id).await?.is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TowerSessionsStore {
    store: Arc<dyn SessionStore>,
    namespace: Namespace,
    max_bytes: usize,
}

impl fmt::Debug for TowerSessionsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerSessionsStore")
            .field("backend", &self.store.backend())
            .field("namespace", &self.namespace)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl TowerSessionsStore {
    /// An adapter storing tower sessions in `namespace` of `store` (e.g.
    /// `Namespace::new("tower")`), with a size limit of
    /// [`DEFAULT_MAX_SESSION_BYTES`] (1 MiB) per encoded session.
    pub fn new(store: Arc<dyn SessionStore>, namespace: Namespace) -> Self {
        TowerSessionsStore {
            store,
            namespace,
            max_bytes: DEFAULT_MAX_SESSION_BYTES,
        }
    }

    /// Sets the largest encoded session (52-byte envelope header plus the JSON
    /// of the data) a write accepts, in bytes; a larger one fails with
    /// [`session_store::Error::Encode`] before any I/O. The store's own limit
    /// applies as well.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The namespace the sessions are stored in.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The key of a tower id. A tower id's text is always a valid session id;
    /// should it not be, the error names the reason, never the id.
    fn key(&self, id: &Id) -> session_store::Result<SessionKey> {
        let id = SessionId::parse(&id.to_string()).map_err(to_tower_error)?;
        Ok(SessionKey::new(self.namespace.clone(), id))
    }

    /// The record of a write of `record` now, or `None` when its expiry date
    /// is not after now (the write must leave no session).
    fn encode(&self, key: &SessionKey, record: &TowerRecord) -> session_store::Result<Option<Record>> {
        let expires_at = deadline_ms(record.expiry_date);
        if expires_at <= now_ms() {
            return Ok(None);
        }
        let payload = CodecKind::Json
            .encode(&record.data, self.namespace.as_str())
            .map_err(to_tower_error)?;
        let stored = Record::new(CodecId::JSON, payload, expires_at);
        check_size(key, &stored, self.max_bytes).map_err(to_tower_error)?;
        Ok(Some(stored))
    }
}

#[async_trait]
impl tower_sessions_core::SessionStore for TowerSessionsStore {
    async fn create(&self, record: &mut TowerRecord) -> session_store::Result<()> {
        let mut key = self.key(&record.id)?;
        let Some(stored) = self.encode(&key, record)? else {
            // Born expired: nothing to write, and nothing overwritten.
            return Ok(());
        };
        for _ in 0..CREATE_ATTEMPTS {
            match self.store.create(&key, &stored).await {
                Ok(_) => return Ok(()),
                Err(Error::AlreadyExists { .. }) => {
                    record.id = Id::default();
                    key = self.key(&record.id)?;
                }
                Err(e) => return Err(to_tower_error(e)),
            }
        }
        Err(session_store::Error::Backend(format!(
            "{} backend: {CREATE_ATTEMPTS} random session ids in a row were taken in namespace {:?}",
            self.store.backend(),
            self.namespace.as_str()
        )))
    }

    async fn save(&self, record: &TowerRecord) -> session_store::Result<()> {
        let key = self.key(&record.id)?;
        match self.encode(&key, record)? {
            Some(stored) => self.store.save(&key, &stored).await.map(drop),
            None => self.store.delete(&key).await.map(drop),
        }
        .map_err(to_tower_error)
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<TowerRecord>> {
        let key = self.key(session_id)?;
        let Some(stored) = self.store.load(&key).await.map_err(to_tower_error)? else {
            return Ok(None);
        };
        let data: HashMap<String, Value> =
            decode_payload(stored.codec, &stored.payload, self.namespace.as_str()).map_err(to_tower_error)?;
        Ok(Some(TowerRecord {
            id: *session_id,
            data,
            expiry_date: date_of(stored.meta.deadline()),
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let key = self.key(session_id)?;
        self.store.delete(&key).await.map(drop).map_err(to_tower_error)
    }
}

/// `date` in milliseconds since the Unix epoch, rounded down: `0` for a date
/// before the epoch, `u64::MAX` past what a `u64` holds (the store caps it).
fn deadline_ms(date: OffsetDateTime) -> u64 {
    let ms = date.unix_timestamp_nanos().div_euclid(1_000_000);
    if ms <= 0 {
        0
    } else {
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// The date of a deadline in milliseconds since the Unix epoch, or the latest
/// date `time` represents for one past it.
fn date_of(deadline_ms: u64) -> OffsetDateTime {
    let nanos = i128::from(deadline_ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::new_utc(Date::MAX, Time::MAX))
}

/// The tower-sessions error of a store error, with the store's message (which
/// never holds a session id).
fn to_tower_error(error: Error) -> session_store::Error {
    let message = error.to_string();
    match error {
        Error::Codec { action: "encode", .. } | Error::TooLarge { .. } => {
            session_store::Error::Encode(message)
        }
        Error::Codec { .. } | Error::Corrupt { .. } => session_store::Error::Decode(message),
        _ => session_store::Error::Backend(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_round_down_and_saturate() {
        assert_eq!(deadline_ms(OffsetDateTime::UNIX_EPOCH), 0);
        assert_eq!(
            deadline_ms(OffsetDateTime::UNIX_EPOCH - time::Duration::days(1)),
            0
        );
        let date = OffsetDateTime::UNIX_EPOCH + time::Duration::nanoseconds(1_999_999);
        assert_eq!(deadline_ms(date), 1);
        let max = OffsetDateTime::new_utc(Date::MAX, Time::MAX);
        assert!(deadline_ms(max) > 0);
        assert_eq!(date_of(1).unix_timestamp_nanos(), 1_000_000);
        assert_eq!(date_of(u64::MAX), max);
        assert_eq!(
            date_of(deadline_ms(max)).unix_timestamp_nanos() / 1_000_000,
            max.unix_timestamp_nanos() / 1_000_000
        );
    }

    #[test]
    fn errors_map_by_kind() {
        let e = to_tower_error(Error::corrupt("tower", "bad magic"));
        assert!(
            matches!(e, session_store::Error::Decode(ref m) if m.contains("bad magic")),
            "{e}"
        );
        let e = to_tower_error(Error::TooLarge {
            namespace: "tower".into(),
            size: 10,
            limit: 5,
        });
        assert!(matches!(e, session_store::Error::Encode(_)), "{e}");
        let e = to_tower_error(Error::unavailable("redis", "connection refused"));
        assert!(
            matches!(e, session_store::Error::Backend(ref m) if m.contains("connection refused")),
            "{e}"
        );
    }

    #[test]
    fn every_tower_id_is_a_session_id() {
        for id in [Id(0), Id(-1), Id(i128::MAX), Id(i128::MIN), Id::default()] {
            assert!(SessionId::parse(&id.to_string()).is_ok());
        }
    }
}
