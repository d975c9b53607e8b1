//! Every session of a principal: the index [`Sessions::bind`] keeps, [`Sessions::list`] reads
//! and [`Sessions::revoke_all`] ends.
//!
//! The index of principal `P` in namespace `ns` is one more record of the same store, under
//! the key `{ns}:p.{base64url(P)}` — an id no session can have (`.` is not an id character),
//! one key, so one Redis Cluster slot, and copied, backed up, journaled, hashed and sealed by
//! every wrapper as any record is. Its value lists the bound sessions' ids, each with the
//! lifetime cap of its session; its deadline is the latest of those caps, so the index never
//! outlives the sessions it lists. Every change is a compare-and-set of the whole list, which
//! drops the entries whose cap has passed; `list` and `revoke_all` also drop the entries of
//! sessions that ended early (a logout, an idle timeout).

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::CodecId;
use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::SessionKey;
use crate::principal::Principal;
use crate::typed::{Session, Sessions};
use crate::version::Version;

/// The start of a principal index's id.
const INDEX_ID_PREFIX: &str = "p.";
/// The index value's format.
const INDEX_FORMAT: u8 = 1;
/// Compare-and-set attempts on one index before giving up (each lost one means another
/// instance changed the same principal's index at that moment).
const INDEX_ATTEMPTS: usize = 16;
/// The lifetime cap a session gets when bound without one: a day, or its TTL if longer.
const DEFAULT_BOUND_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// Whether `key` is a principal index (`{ns}:p.…`) rather than a session. Stores leave these
/// out of [`count`](crate::SessionStore::count).
pub fn is_principal_index(key: &SessionKey) -> bool {
    key.id.as_str().starts_with(INDEX_ID_PREFIX)
}

/// Whether `id` (the id part of a backend key) names a principal index: `p.` and base64url
/// (the principal), or `p..` and base64url (an id a store derived from one, see
/// [`principal_index_id`]).
pub(crate) fn is_index_id(id: &str) -> bool {
    id.strip_prefix(INDEX_ID_PREFIX).is_some_and(|rest| {
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        !rest.is_empty()
            && id.len() <= crate::id::MAX_ID_LEN
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The id of a principal index whose id a store derives from the original one (a store that
/// hashes ids keeps an index an index): `p..` followed by `suffix`, which must be 1 to 125
/// characters of `[A-Za-z0-9_-]`; `None` otherwise. The second `.` keeps it apart from every
/// principal's own index id (`p.` and base64url), so neither can be read as the other.
pub fn principal_index_id(suffix: &str) -> Option<SessionId> {
    let id = format!("{INDEX_ID_PREFIX}.{suffix}");
    is_index_id(&id).then(|| SessionId::index(id))
}

/// The key of `principal`'s index in `namespace`.
fn index_key(namespace: &crate::key::Namespace, principal: &Principal) -> SessionKey {
    let id = format!(
        "{INDEX_ID_PREFIX}{}",
        crate::id::encode_b64url(principal.as_str().as_bytes())
    );
    SessionKey::new(namespace.clone(), SessionId::index(id))
}

/// One principal's bound sessions: id and lifetime cap (ms).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    entries: Vec<(SessionId, u64)>,
}

impl Index {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(3 + self.entries.len() * 40);
        b.put_u8(INDEX_FORMAT);
        b.put_u16(u16::try_from(self.entries.len()).unwrap_or(u16::MAX));
        for (id, until) in self.entries.iter().take(usize::from(u16::MAX)) {
            let text = id.as_str().as_bytes();
            b.put_u8(u8::try_from(text.len()).unwrap_or(u8::MAX));
            b.put_slice(text);
            b.put_u64(*until);
        }
        b.freeze()
    }

    fn decode(bytes: &[u8], namespace: &str) -> Result<Index> {
        let bad = || Error::corrupt(namespace, "a principal index that does not parse");
        let (&format, mut rest) = bytes.split_first().ok_or_else(bad)?;
        if format != INDEX_FORMAT || rest.len() < 2 {
            return Err(bad());
        }
        let count = u16::from_be_bytes([rest[0], rest[1]]);
        rest = &rest[2..];
        let mut entries = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let (&len, after) = rest.split_first().ok_or_else(bad)?;
            let len = usize::from(len);
            let id = after.get(..len).ok_or_else(bad)?;
            let until = after.get(len..len + 8).ok_or_else(bad)?;
            let id = std::str::from_utf8(id)
                .ok()
                .and_then(|t| SessionId::parse(t).ok())
                .ok_or_else(bad)?;
            let mut buf = [0u8; 8];
            buf.copy_from_slice(until);
            entries.push((id, u64::from_be_bytes(buf)));
            rest = &after[len + 8..];
        }
        Ok(Index { entries })
    }

    /// The latest cap, the index's own deadline.
    fn deadline(&self) -> u64 {
        self.entries.iter().map(|(_, until)| *until).max().unwrap_or(0)
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> Sessions<T> {
    /// Binds a session to `principal` (at login, after [`rotate`](Self::rotate)): it is
    /// listed by [`list`](Self::list) and ended by [`revoke_all`](Self::revoke_all) from then
    /// on, on every instance. The binding is stored with the session (every write keeps it,
    /// `rotate` moves it). A session without a lifetime cap gets one (the namespace's max
    /// lifetime, else a day or its TTL if longer), so that no bound session lives forever.
    /// Written as [`save_if`](Self::save_if): [`Error::Conflict`] if the session changed
    /// since it was loaded.
    ///
    /// # Errors
    /// [`Error::Conflict`], [`Error::NotFound`], store errors (the session is then not bound,
    /// though the index may list it until it ends).
    pub async fn bind(&self, session: &mut Session<T>, principal: &Principal) -> Result<()> {
        let (before_meta, before_principal) = (session.meta, session.principal.clone());
        if session.meta.max_expires_at == 0 {
            let now = self.clock().now_ms();
            let lifetime = self
                .policy()
                .max_lifetime
                .map_or_else(|| DEFAULT_BOUND_LIFETIME_MS.max(ms(self.policy().ttl)), ms);
            let from = if session.meta.created_at == 0 {
                now
            } else {
                session.meta.created_at
            };
            session.meta.max_expires_at = from.saturating_add(lifetime).max(now.saturating_add(1));
        }
        let until = session.meta.max_expires_at;
        // Listed before it is bound: a revoke that runs in between finds it.
        self.index_change(principal, |index| {
            index.entries.retain(|(id, _)| *id != session.id);
            index.entries.push((session.id.clone(), until));
        })
        .await?;
        session.principal = Some(principal.clone());
        if let Err(e) = self.save_if(session).await {
            session.meta = before_meta;
            session.principal = before_principal;
            return Err(e);
        }
        if let Some(old) = before_principal.filter(|old| old != principal) {
            let id = session.id.clone();
            let _ = self
                .index_change(&old, |index| index.entries.retain(|(e, _)| *e != id))
                .await;
        }
        Ok(())
    }

    /// The live sessions bound to `principal` (a "your devices" page), in the order they
    /// were bound. One read of the index and one `load_many`; entries of sessions that have
    /// ended are dropped from the index on the way.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an index that does not parse; store errors.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Session<T>>> {
        let Some((index, _)) = self.index_load(principal).await? else {
            return Ok(Vec::new());
        };
        let ids: Vec<SessionId> = index.entries.iter().map(|(id, _)| id.clone()).collect();
        let loaded = self.load_many(&ids).await?;
        let mut sessions = Vec::new();
        let mut ended = Vec::new();
        for (id, result) in ids.into_iter().zip(loaded) {
            match result {
                Ok(Some(session)) if session.principal.as_ref() == Some(principal) => sessions.push(session),
                Ok(Some(_)) | Ok(None) => ended.push(id),
                Err(_) => {}
            }
        }
        if !ended.is_empty() {
            let _ = self
                .index_change(principal, |index| {
                    index.entries.retain(|(id, _)| !ended.contains(id))
                })
                .await;
        }
        Ok(sessions)
    }

    /// Ends every session bound to `principal` (after a password change, a stolen device):
    /// each is deleted as by [`delete`](Self::delete) — a tombstone where the store keeps
    /// them, a journaled delete through a fallback — and its entry leaves the index. A
    /// session bound later (a new login) is not affected. Returns how many sessions existed.
    /// One read of the index, one `load_many` and one delete per listed session.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an index that does not parse; store errors (some sessions may
    /// have ended: call it again).
    pub async fn revoke_all(&self, principal: &Principal) -> Result<u64> {
        let Some((index, _)) = self.index_load(principal).await? else {
            return Ok(0);
        };
        let keys: Vec<SessionKey> = index.entries.iter().map(|(id, _)| self.key(id)).collect();
        let loaded = self.store().load_many(&keys).await?;
        let mut ended = Vec::new();
        let mut revoked = 0;
        for ((id, _), (key, found)) in index.entries.iter().zip(keys.iter().zip(loaded)) {
            // A session listed here but since bound to someone else is left alone; one not
            // bound yet is a login of this principal still in progress, and ends too.
            let other = match &found {
                Ok(Some(record)) => record
                    .principal(key.ns())
                    .ok()
                    .flatten()
                    .is_some_and(|p| p != *principal),
                _ => false,
            };
            if !other && self.store().delete(key).await? {
                revoked += 1;
            }
            ended.push(id.clone());
        }
        self.index_change(principal, |index| {
            index.entries.retain(|(id, _)| !ended.contains(id))
        })
        .await?;
        Ok(revoked)
    }

    /// The index of `principal` as stored, with its record's metadata.
    async fn index_load(&self, principal: &Principal) -> Result<Option<(Index, Meta)>> {
        let key = index_key(self.namespace(), principal);
        match self.store().load(&key).await? {
            Some(record) => Ok(Some((Index::decode(&record.payload, key.ns())?, record.meta))),
            None => Ok(None),
        }
    }

    /// Applies `change` to `principal`'s index by compare-and-set, dropping entries whose cap
    /// has passed; an index left empty is removed (a write whose deadline has passed).
    async fn index_change(&self, principal: &Principal, change: impl Fn(&mut Index)) -> Result<()> {
        let key = index_key(self.namespace(), principal);
        for _ in 0..INDEX_ATTEMPTS {
            let now = self.clock().now_ms();
            let stored = self.index_load(principal).await?;
            let mut index = stored.as_ref().map(|(i, _)| i.clone()).unwrap_or_default();
            change(&mut index);
            index.entries.retain(|(_, until)| *until > now);
            let deadline = if index.entries.is_empty() {
                1
            } else {
                index.deadline()
            };
            let record = Record {
                meta: Meta {
                    version: Version::generate(),
                    created_at: stored.as_ref().map_or(now, |(_, m)| m.created_at),
                    updated_at: now,
                    expires_at: deadline,
                    max_expires_at: 0,
                },
                codec: CodecId::RAW,
                payload: index.encode(),
            };
            let written = match &stored {
                Some((_, meta)) => self
                    .store()
                    .save_if(&key, meta.version, &record)
                    .await
                    .map(|_| ()),
                None if index.entries.is_empty() => return Ok(()),
                None => self.store().create(&key, &record).await.map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(()),
                Err(Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            backend: self.store().backend(),
            message: format!(
                "a principal's session index changed {INDEX_ATTEMPTS} times while this call updated it; retry"
            ),
            source: None,
        })
    }

    /// Moves a bound session's entry to `new_id` around a rotate: the new id is listed
    /// before the move (a revoke in between finds it), the old one leaves after.
    pub(crate) async fn rotate_bound(
        &self,
        principal: &Principal,
        until: u64,
        id: &SessionId,
        new_id: &SessionId,
        rotate: impl std::future::Future<Output = Result<Meta>>,
    ) -> Result<Meta> {
        self.index_change(principal, |index| {
            if !index.entries.iter().any(|(e, _)| e == new_id) {
                index.entries.push((new_id.clone(), until));
            }
        })
        .await?;
        let meta = rotate.await?;
        let _ = self
            .index_change(principal, |index| index.entries.retain(|(e, _)| e != id))
            .await;
        Ok(meta)
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_round_trips_and_bad_bytes_are_corrupt() {
        let id = |s: &str| SessionId::parse(s).unwrap_or_else(|_| unreachable!());
        let index = Index {
            entries: vec![
                (id("aaaaaaaaaaaaaaaaaaaaaa"), 5),
                (id(&"b".repeat(128)), u64::MAX),
            ],
        };
        let bytes = index.encode();
        assert_eq!(Index::decode(&bytes, "t").ok(), Some(index.clone()));
        assert_eq!(index.deadline(), u64::MAX);
        for cut in 0..bytes.len() {
            assert!(Index::decode(&bytes[..cut], "t").is_err(), "{cut}");
        }
        let p = Principal::new("alice@example.com").unwrap_or_else(|_| unreachable!());
        let key = index_key(
            &crate::key::Namespace::new("task").unwrap_or_else(|_| unreachable!()),
            &p,
        );
        assert!(is_principal_index(&key) && is_index_id(key.id.as_str()));
        assert!(!is_index_id("aaaaaaaaaaaaaaaaaaaaaa") && !is_index_id("p.") && !is_index_id("p.a:b"));
        assert!(!is_index_id("p..") && !is_index_id("p...a") && !is_index_id("p.a.b"));
        let derived = principal_index_id("abc").unwrap_or_else(|| unreachable!());
        assert_eq!(derived.as_str(), "p..abc");
        assert!(is_index_id(derived.as_str()) && principal_index_id("a.b").is_none());
    }
}
