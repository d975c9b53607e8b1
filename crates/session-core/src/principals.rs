//! Every session of a principal: the index [`Sessions::bind`] keeps, [`Sessions::list`] reads
//! and [`Sessions::revoke_all`] ends.
//!
//! The index of principal `P` in namespace `ns` is one more record of the same store, under
//! the key `{ns}:p.{base64url(P)}` — an id no session can have (`.` is not an id character),
//! one key, so one Redis Cluster slot, and copied, backed up, hashed and sealed by every
//! wrapper as any record is. Its value lists the bound sessions: id, the session's lifetime
//! cap, when the entry was made, when the session was first bound (kept through `rotate`
//! and a second `bind`), whether a revoke has flagged it, and (after a `rotate`) the id it
//! came from. Before it reads the entries it ends, a revoke flags them: a flagged session can
//! no longer be rotated (its `rotate` answers `NotFound`), so that rotating a session again
//! and again cannot outrun the revoke. Its deadline is
//! the latest cap, so the index never outlives the sessions it lists. Every change is a
//! compare-and-set of the whole list, which drops the entries whose cap has passed; entries
//! of sessions that ended early (a logout, an idle timeout) are dropped by `list`,
//! `revoke_all` and a `bind` to a principal with many entries, once they are older than a
//! grace period (an entry younger than that may be a login or a rotate still in progress).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::Clock;
use crate::codec::CodecId;
use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::principal::Principal;
use crate::store::SessionStore;
use crate::typed::{Session, Sessions};
use crate::version::Version;

/// The start of a principal index's id.
const INDEX_ID_PREFIX: &str = "p.";
/// The index value's format: 2 (each entry with its first binding time and a revoke's flag);
/// 1, read only, had neither.
const INDEX_FORMAT: u8 = 2;
/// Compare-and-set attempts on one index before giving up (each lost one means another
/// instance changed the same principal's index at that moment).
const INDEX_ATTEMPTS: usize = 32;
/// The lifetime cap a session gets when bound without one: a day, or its TTL if longer,
/// counted from the binding.
const DEFAULT_BOUND_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// How old an entry must be before an absent or unbound session drops it: younger, it may
/// be a login (listed before it is bound) or a rotate (listed before the move) in progress.
const PRUNE_GRACE_MS: u64 = 60_000;
/// A `bind` to a principal with more entries than this first drops the ended ones.
const PRUNE_ON_BIND: usize = 16;
/// The most entries one index holds (a `bind` beyond it fails).
const MAX_ENTRIES: usize = 10_000;
/// Rounds `revoke_all` makes after its first one, following sessions rotated meanwhile.
const REVOKE_ROUNDS: usize = 8;
/// A kept revocation (applied after the call that asked for it) ends the sessions bound up to
/// this long after it, by the asking instance's clock against the binding one's: a clock skew
/// between instances up to this much never lets a session bound before the revocation escape
/// it (a login that soon after it ends too: the safer mistake).
pub const REVOKE_SKEW_MS: u64 = 1_000;

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

/// A stored key's id: a session id, or a principal index's (what copies and snapshots carry).
pub fn parse_stored_id(id: &str) -> Option<SessionId> {
    match SessionId::parse(id) {
        Ok(id) => Some(id),
        Err(_) if is_index_id(id) => Some(SessionId::index(id.to_owned())),
        Err(_) => None,
    }
}

/// The key of `principal`'s index in `namespace`.
fn index_key(namespace: &Namespace, principal: &Principal) -> SessionKey {
    let id = format!(
        "{INDEX_ID_PREFIX}{}",
        crate::id::encode_b64url(principal.as_str().as_bytes())
    );
    SessionKey::new(namespace.clone(), SessionId::index(id))
}

/// One bound session in an index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    id: SessionId,
    /// The session's lifetime cap, ms.
    until: u64,
    /// When the entry was made, ms.
    at: u64,
    /// When the session was first bound to the principal, ms: kept by a `rotate` (the entry
    /// of the new id) and by binding it again, so that a kept revocation ends the sessions
    /// bound before it whatever happened to them since.
    bound_at: u64,
    /// Flagged by a revoke before it reads the entries it ends: the session may not be
    /// rotated any more (its `rotate` answers `NotFound`), so that a session rotated again
    /// and again cannot outrun the revoke's rounds.
    revoking: bool,
    /// The id the session had before a `rotate` (so that a revoke that ended that id follows
    /// it to this one).
    from: Option<SessionId>,
}

/// One principal's bound sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Index {
    entries: Vec<Bound>,
}

fn put_id(b: &mut BytesMut, id: Option<&SessionId>) {
    let text = id.map_or(&b""[..], |id| id.as_str().as_bytes());
    // Ids are at most 128 bytes.
    b.put_u8(u8::try_from(text.len()).unwrap_or(u8::MAX));
    b.put_slice(text);
}

impl Index {
    fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(3 + self.entries.len() * 72);
        b.put_u8(INDEX_FORMAT);
        // At most MAX_ENTRIES (checked before every write).
        b.put_u16(u16::try_from(self.entries.len()).unwrap_or(u16::MAX));
        for e in &self.entries {
            put_id(&mut b, Some(&e.id));
            b.put_u64(e.until);
            b.put_u64(e.at);
            b.put_u64(e.bound_at);
            b.put_u8(u8::from(e.revoking));
            put_id(&mut b, e.from.as_ref());
        }
        b.freeze()
    }

    fn decode(record: &Record, namespace: &str) -> Result<Index> {
        let bad = || Error::corrupt(namespace, "a principal index that does not parse");
        if record.codec != CodecId::RAW {
            return Err(bad());
        }
        let mut r = Reader(&record.payload);
        let format = r.u8().ok_or_else(bad)?;
        if format != INDEX_FORMAT && format != 1 {
            return Err(bad());
        }
        let count = usize::from(r.u16().ok_or_else(bad)?);
        // Each entry takes at least 19 bytes: no allocation beyond what the bytes can hold.
        let mut entries = Vec::with_capacity(count.min(r.0.len() / 19));
        for _ in 0..count {
            let id = r.id().ok_or_else(bad)?.ok_or_else(bad)?;
            let until = r.u64().ok_or_else(bad)?;
            let at = r.u64().ok_or_else(bad)?;
            let (bound_at, revoking) = if format == 1 {
                (at, false)
            } else {
                let bound_at = r.u64().ok_or_else(bad)?;
                match r.u8().ok_or_else(bad)? {
                    0 => (bound_at, false),
                    1 => (bound_at, true),
                    _ => return Err(bad()),
                }
            };
            let from = r.id().ok_or_else(bad)?;
            entries.push(Bound {
                id,
                until,
                at,
                bound_at,
                revoking,
                from,
            });
        }
        if !r.0.is_empty() {
            return Err(bad());
        }
        Ok(Index { entries })
    }

    /// The latest cap, the index's own deadline.
    fn deadline(&self) -> u64 {
        self.entries.iter().map(|e| e.until).max().unwrap_or(0)
    }

    fn ids(&self) -> Vec<SessionId> {
        self.entries.iter().map(|e| e.id.clone()).collect()
    }
}

/// Reads an index's bytes front to back; `None` when they run out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Some(u64::from_be_bytes(buf))
    }
    /// An id (`Some(None)` for an empty one).
    fn id(&mut self) -> Option<Option<SessionId>> {
        let len = usize::from(self.u8()?);
        if len == 0 {
            return Some(None);
        }
        let text = std::str::from_utf8(self.take(len)?).ok()?;
        Some(Some(SessionId::parse(text).ok()?))
    }
}

/// What a listed session is now, read from the store.
enum Found {
    /// Live and bound to the principal.
    Bound(Record),
    /// Live and bound to another principal: the entry is stale.
    Elsewhere,
    /// Live and unbound: a login in progress (young entry) or a stale entry (old).
    Unbound,
    /// Not there (ended, or not moved yet by a rotate in progress).
    Absent,
    /// Unreadable (corrupt, undecodable): kept, never pruned.
    Unknown,
}

impl<T: Serialize + DeserializeOwned + Send + Sync> Sessions<T> {
    /// The index operations of this handle's namespace, on its store.
    fn indexes(&self) -> Indexes<'_> {
        Indexes {
            store: &**self.store(),
            namespace: self.namespace(),
            clock: self.clock(),
        }
    }

    /// Binds a session to `principal` (at login, after [`rotate`](Self::rotate)): it is
    /// listed by [`list`](Self::list) and ended by [`revoke_all`](Self::revoke_all) from then
    /// on, on every instance. The binding is stored with the session (every write keeps it,
    /// `rotate` moves it). A session without a lifetime cap gets one, counted from now (the
    /// namespace's max lifetime, else a day or its TTL if longer), so that no bound session
    /// lives forever. Written as [`save_if`](Self::save_if): [`Error::Conflict`] if the
    /// session changed since it was loaded.
    ///
    /// # Errors
    /// [`Error::Conflict`], [`Error::NotFound`], store errors (the session is then not bound;
    /// the index may list it for a while, which ends nothing); [`Error::Backend`] when the
    /// principal already has 10 000 live bound sessions.
    pub async fn bind(&self, session: &mut Session<T>, principal: &Principal) -> Result<()> {
        let (before_meta, before_principal) = (session.meta, session.principal().cloned());
        let same_principal = before_principal.as_ref() == Some(principal);
        let now = self.clock().now_ms();
        if session.meta.max_expires_at == 0 {
            let lifetime = self
                .policy()
                .max_lifetime
                .map_or_else(|| DEFAULT_BOUND_LIFETIME_MS.max(ms(self.policy().ttl)), ms);
            session.meta.max_expires_at = now.saturating_add(lifetime).max(1);
        }
        let entry = Bound {
            id: session.id.clone(),
            until: session.meta.max_expires_at,
            at: now,
            bound_at: now,
            revoking: false,
            from: None,
        };
        let indexes = self.indexes();
        let stored = match indexes.load(principal).await {
            Ok(stored) => stored,
            Err(e) => {
                session.meta = before_meta;
                return Err(e);
            }
        };
        // Many entries: drop those of ended sessions first (one `load_many`).
        let ended = match &stored {
            Some((index, _)) if index.entries.len() > PRUNE_ON_BIND => {
                indexes.stale_entries(principal, index).await.unwrap_or_default()
            }
            _ => BTreeSet::new(),
        };
        // Listed before it is bound: a revoke that runs in between finds it. The index just
        // read is the first attempt's.
        let listed = indexes
            .change_from(principal, Some(stored), |index| {
                // Bound again to the same principal: it keeps its first binding time, and a
                // revoke's flag. (An entry left from an earlier binding to this principal,
                // when it was bound elsewhere since, is not its binding.)
                let (bound_at, revoking) = index
                    .entries
                    .iter()
                    .find(|e| e.id == entry.id)
                    .filter(|_| same_principal)
                    .map_or((entry.bound_at, false), |e| {
                        (e.bound_at.min(entry.bound_at), e.revoking)
                    });
                index
                    .entries
                    .retain(|e| e.id != entry.id && !ended.contains(&e.id));
                index.entries.push(Bound {
                    bound_at,
                    revoking,
                    ..entry.clone()
                });
            })
            .await;
        if let Err(e) = listed {
            session.meta = before_meta;
            return Err(e);
        }
        session.set_principal(Some(principal.clone()));
        if let Err(e) = self.save_if(session).await {
            session.meta = before_meta;
            session.set_principal(before_principal);
            return Err(e);
        }
        if let Some(old) = before_principal.filter(|old| old != principal) {
            let id = session.id.clone();
            let _ = indexes
                .change(&old, |index| index.entries.retain(|e| e.id != id))
                .await;
        }
        Ok(())
    }

    /// The live sessions bound to `principal` (a "your devices" page), in the order they
    /// were bound. One read of the index and one `load_many`; entries of sessions that ended
    /// (past the grace period) are dropped from the index on the way. A session that does not
    /// decode into `T` is left out of the answer, not out of the index.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an index that does not parse; store errors.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<Session<T>>> {
        let indexes = self.indexes();
        let Some((index, _)) = indexes.load(principal).await? else {
            return Ok(Vec::new());
        };
        let found = indexes.find(principal, &index).await?;
        let now = self.clock().now_ms();
        let mut sessions = Vec::new();
        let mut stale = BTreeSet::new();
        for (entry, found) in index.entries.iter().zip(found) {
            match found {
                Found::Bound(record) => {
                    if let Ok(Some(session)) = self.decode(entry.id.clone(), record) {
                        sessions.push(session);
                    }
                }
                Found::Elsewhere => {
                    stale.insert(entry.id.clone());
                }
                Found::Absent | Found::Unbound if old(entry, now) => {
                    stale.insert(entry.id.clone());
                }
                _ => {}
            }
        }
        if !stale.is_empty() {
            let _ = indexes
                .change(principal, |index| {
                    index.entries.retain(|e| !stale.contains(&e.id))
                })
                .await;
        }
        Ok(sessions)
    }

    /// Ends every session bound to `principal` (after a password change, a stolen device):
    /// each is deleted as by [`delete`](Self::delete) — a tombstone where the store keeps
    /// them — and its entry leaves the index; a session rotated meanwhile is followed to its
    /// new id. A session bound after this call read the index (a new login) is not affected.
    /// One read of the index, one `load_many` and one delete per listed session (again for
    /// sessions rotated meanwhile).
    ///
    /// A store that cannot reach the index now may keep the revocation and apply it when it
    /// can ([`SessionStore::revoke_principal`]; the fallback does, during an outage): the
    /// answer is then [`Revoked::pending`], with the sessions it could end at once counted,
    /// and the rest end when the store applies it, every session bound before this call.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an index that does not parse; store errors (some sessions may
    /// have ended: call it again).
    pub async fn revoke_all(&self, principal: &Principal) -> Result<Revoked> {
        let revocation: Arc<dyn Revocation> = Arc::new(PrincipalRevocation {
            namespace: self.namespace().clone(),
            principal: principal.clone(),
            clock: self.clock().clone(),
            at: self.clock().now_ms(),
            index: index_key(self.namespace(), principal),
        });
        if let Some(kept) = self.store().revoke_principal(Arc::clone(&revocation)).await? {
            return Ok(kept);
        }
        match revocation.apply(Arc::clone(self.store()), false).await {
            Ok(ended) => Ok(Revoked {
                ended,
                pending: false,
            }),
            // The index became unreachable on the way (a fallback's circuit opened): the
            // store may keep the revocation now.
            Err(e) if e.is_temporary() => match self.store().revoke_principal(revocation).await {
                Ok(Some(kept)) => Ok(kept),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Moves a bound session's entry to `new_id` around a rotate: the new id is listed (with
    /// the id it comes from) before the move, so that a revoke in between finds it; the old
    /// one leaves after.
    pub(crate) async fn rotate_bound(
        &self,
        principal: &Principal,
        until: u64,
        id: &SessionId,
        new_id: &SessionId,
        rotate: impl std::future::Future<Output = Result<Meta>>,
    ) -> Result<Meta> {
        let now = self.clock().now_ms();
        let entry = Bound {
            id: new_id.clone(),
            until,
            at: now,
            bound_at: now,
            revoking: false,
            from: Some(id.clone()),
        };
        let indexes = self.indexes();
        let revoked = AtomicBool::new(false);
        indexes
            .change(principal, |index| {
                let old = index.entries.iter().find(|e| e.id == *id);
                // A revoke that covers this session has begun: it does not move.
                let covered = old.is_some_and(|e| e.revoking);
                revoked.store(covered, Ordering::Relaxed);
                if covered || index.entries.iter().any(|e| e.id == *new_id) {
                    return;
                }
                // The moved session keeps the binding time of the one it comes from.
                let bound_at = old.map_or(entry.bound_at, |e| e.bound_at);
                index.entries.push(Bound {
                    bound_at,
                    ..entry.clone()
                });
            })
            .await?;
        if revoked.load(Ordering::Relaxed) {
            return Err(Error::not_found(self.namespace().as_str()));
        }
        let meta = rotate.await?;
        let _ = indexes
            .change(principal, |index| index.entries.retain(|e| e.id != *id))
            .await;
        Ok(meta)
    }

    /// After a rotate that found the session unbound: if it was bound meanwhile (a `bind`
    /// between the read and the move), list the new id too — unless a revoke has handled or
    /// flagged the old id meanwhile: then the moved session is ended.
    pub(crate) async fn list_if_bound(&self, id: &SessionId, new_id: &SessionId) {
        let key = self.key(new_id);
        if let Ok(Some(record)) = self.store().load(&key).await {
            if let Ok(Some(principal)) = record.principal(key.ns()) {
                let entry = Bound {
                    id: new_id.clone(),
                    until: if record.meta.max_expires_at == 0 {
                        u64::MAX
                    } else {
                        record.meta.max_expires_at
                    },
                    at: self.clock().now_ms(),
                    bound_at: self.clock().now_ms(),
                    revoking: false,
                    from: Some(id.clone()),
                };
                let revoked = AtomicBool::new(false);
                let listed = self
                    .indexes()
                    .change(&principal, |index| {
                        if index.entries.iter().any(|e| e.id == *new_id) {
                            return;
                        }
                        // The bind listed the old id before it bound it: with no entry left, a
                        // revoke has handled it; with a flagged one, a revoke is under way.
                        // Either way the moved session is not listed, it is ended below.
                        let Some(old) = index.entries.iter().find(|e| e.id == *id) else {
                            revoked.store(true, Ordering::Relaxed);
                            return;
                        };
                        if old.revoking {
                            revoked.store(true, Ordering::Relaxed);
                            return;
                        }
                        // The moved session keeps its binding time.
                        index.entries.push(Bound {
                            bound_at: old.bound_at,
                            ..entry.clone()
                        });
                    })
                    .await;
                if listed.is_ok() && revoked.load(Ordering::Relaxed) {
                    let _ = self.store().delete(&key).await;
                }
            }
        }
    }
}

/// The index operations of one namespace on one store: what [`Sessions`] and a
/// [`PrincipalRevocation`] (applied to whatever store keeps it) share.
struct Indexes<'a> {
    store: &'a dyn SessionStore,
    namespace: &'a Namespace,
    clock: &'a Clock,
}

impl Indexes<'_> {
    fn key(&self, id: &SessionId) -> SessionKey {
        SessionKey::new(self.namespace.clone(), id.clone())
    }

    /// Ends every session listed in `principal`'s index (see [`Sessions::revoke_all`]); with
    /// `bound_by`, only the sessions first bound at or before that time (ms) — and those
    /// rotated from them, which keep their binding time. Returns how many sessions it ended.
    async fn revoke(&self, principal: &Principal, bound_by: Option<u64>) -> Result<u64> {
        let covered = |e: &Bound| bound_by.is_none_or(|by| e.bound_at <= by);
        // First the flags: from this write on, none of these sessions can be rotated, so the
        // rounds below cannot be outrun; the entries to end are the index as written.
        let index = self
            .change(principal, |index| {
                for e in index.entries.iter_mut().filter(|e| covered(e)) {
                    e.revoking = true;
                }
            })
            .await?;
        let mut handled: BTreeSet<SessionId> = BTreeSet::new();
        let mut revoked = 0;
        let mut round: Vec<Bound> = index.entries.into_iter().filter(|e| covered(e)).collect();
        for _ in 0..=REVOKE_ROUNDS {
            if round.is_empty() {
                break;
            }
            let now = self.clock.now_ms();
            let current = Index {
                entries: sources_first(round),
            };
            let found = self.find(principal, &current).await?;
            for (entry, found) in current.entries.iter().zip(found) {
                // Bound elsewhere: left alone. Unbound: a login of this principal in progress
                // (a young entry) ends too; an old entry's session is someone else's.
                let end = match found {
                    Found::Elsewhere => false,
                    Found::Unbound => !old(entry, now),
                    _ => true,
                };
                if end && self.store.delete(&self.key(&entry.id)).await? {
                    revoked += 1;
                }
                handled.insert(entry.id.clone());
            }
            // Remove exactly what was handled; what a rotate moved meanwhile from a handled
            // id (in the index as written) is flagged and is the next round.
            let after = self
                .change(principal, |index| {
                    index.entries.retain(|e| !handled.contains(&e.id));
                    for e in &mut index.entries {
                        if e.from.as_ref().is_some_and(|f| handled.contains(f)) {
                            e.revoking = true;
                        }
                    }
                })
                .await?;
            round = after
                .entries
                .into_iter()
                .filter(|e| e.from.as_ref().is_some_and(|f| handled.contains(f)))
                .collect();
        }
        Ok(revoked)
    }

    /// What each entry's session is now (one `load_many` of the raw records).
    async fn find(&self, principal: &Principal, index: &Index) -> Result<Vec<Found>> {
        let keys: Vec<SessionKey> = index.ids().iter().map(|id| self.key(id)).collect();
        let loaded = self.store.load_many(&keys).await?;
        Ok(keys
            .iter()
            .zip(loaded)
            .map(|(key, result)| match result {
                Ok(Some(record)) => match record.principal(key.ns()) {
                    Ok(Some(p)) if p == *principal => Found::Bound(record),
                    Ok(Some(_)) => Found::Elsewhere,
                    Ok(None) => Found::Unbound,
                    Err(_) => Found::Unknown,
                },
                Ok(None) => Found::Absent,
                Err(_) => Found::Unknown,
            })
            .collect())
    }

    /// The ids of entries whose session ended or was bound elsewhere (past the grace period).
    async fn stale_entries(&self, principal: &Principal, index: &Index) -> Result<BTreeSet<SessionId>> {
        let now = self.clock.now_ms();
        let found = self.find(principal, index).await?;
        Ok(index
            .entries
            .iter()
            .zip(found)
            .filter(|(entry, found)| match found {
                Found::Elsewhere => true,
                Found::Absent | Found::Unbound => old(entry, now),
                _ => false,
            })
            .map(|(entry, _)| entry.id.clone())
            .collect())
    }

    /// The index of `principal` as stored, with its record's metadata.
    async fn load(&self, principal: &Principal) -> Result<Option<(Index, Meta)>> {
        let key = index_key(self.namespace, principal);
        match self.store.load(&key).await? {
            Some(record) => Ok(Some((Index::decode(&record, key.ns())?, record.meta))),
            None => Ok(None),
        }
    }

    /// Applies `change` to `principal`'s index by compare-and-set, dropping entries whose cap
    /// has passed; an index left empty is removed (a write whose deadline has passed). Returns
    /// the index as written.
    async fn change(&self, principal: &Principal, change: impl Fn(&mut Index)) -> Result<Index> {
        self.change_from(principal, None, change).await
    }

    /// [`change`](Self::change), its first attempt on `first` (the index as just read) when
    /// given.
    async fn change_from(
        &self,
        principal: &Principal,
        mut first: Option<Option<(Index, Meta)>>,
        change: impl Fn(&mut Index),
    ) -> Result<Index> {
        let key = index_key(self.namespace, principal);
        for _ in 0..INDEX_ATTEMPTS {
            let now = self.clock.now_ms();
            let stored = match first.take() {
                Some(stored) => stored,
                None => self.load(principal).await?,
            };
            let mut index = stored.as_ref().map(|(i, _)| i.clone()).unwrap_or_default();
            change(&mut index);
            index.entries.retain(|e| e.until > now);
            // Nothing changed: nothing to write (a refused rotate, a revoke with nothing left).
            if matches!(&stored, Some((before, _)) if *before == index) {
                return Ok(index);
            }
            if index.entries.len() > MAX_ENTRIES {
                return Err(Error::Backend {
                    backend: self.store.backend(),
                    message: format!(
                        "a principal has more than {MAX_ENTRIES} live bound sessions in namespace {}",
                        key.ns()
                    ),
                    source: None,
                });
            }
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
                Some((_, meta)) => self.store.save_if(&key, meta.version, &record).await.map(|_| ()),
                None if index.entries.is_empty() => return Ok(index),
                None => self.store.create(&key, &record).await.map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(index),
                Err(Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            backend: self.store.backend(),
            message: format!(
                "a principal's session index changed {INDEX_ATTEMPTS} times while this call updated it; retry"
            ),
            source: None,
        })
    }
}

/// What [`Sessions::revoke_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revoked {
    /// Sessions ended by this call.
    pub ended: u64,
    /// Whether the store kept the revocation to apply it later (its index was unreachable: a
    /// fallback's outage). Every session bound before the call ends when it is applied; until
    /// then the instances that still reach the index may serve them.
    pub pending: bool,
}

impl Revoked {
    /// The answer of a store that kept the revocation to apply it later
    /// ([`SessionStore::revoke_principal`]), having ended `ended` sessions at once.
    pub fn kept(ended: u64) -> Revoked {
        Revoked { ended, pending: true }
    }
}

/// One principal's sessions to end, as [`Sessions::revoke_all`] hands it to a store
/// ([`SessionStore::revoke_principal`]). A wrapper that changes keys or values on their way
/// (hashed ids, sealed payloads, a write-behind copy) wraps the revocation in turn, so that
/// whichever store below keeps it can apply it to its own inner store and tell its own
/// records apart.
#[async_trait]
pub trait Revocation: Send + Sync + fmt::Debug {
    /// The principal index's key, as the store this revocation was handed to stores it.
    fn index(&self) -> &SessionKey;

    /// When the revocation was asked for, ms since the Unix epoch (the asking instance's
    /// clock).
    fn revoked_at(&self) -> u64;

    /// Whether `record`, stored under `key` in the store this revocation was handed to, is a
    /// session bound to the principal (unreadable or unbound: `false`).
    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool;

    /// Called by a store that keeps this revocation for each session of the principal it is
    /// about to end on its own, before applying the revocation (a fallback's own copies during
    /// an outage), with the key as that store holds it: a wrapper between treats it as a
    /// delete made through it (a write-behind backup queues it). The default does nothing.
    fn ending(&self, key: &SessionKey) {
        let _ = key;
    }

    /// Ends the principal's sessions in `store` (the store this revocation was handed to, or
    /// the one it wraps). `later`: the revocation is applied after the call that asked for
    /// it (a kept revocation): only sessions bound by [`revoked_at`](Self::revoked_at) (and up
    /// to [`REVOKE_SKEW_MS`] after, for clock skew between instances) end, with the sessions
    /// rotated from them. Returns how many sessions it ended.
    ///
    /// # Errors
    /// Store errors ([`Error::Corrupt`] for an index that does not parse); applying it again
    /// is safe.
    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64>;
}

/// The revocation [`Sessions::revoke_all`] makes.
struct PrincipalRevocation {
    namespace: Namespace,
    principal: Principal,
    clock: Clock,
    at: u64,
    index: SessionKey,
}

impl fmt::Debug for PrincipalRevocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrincipalRevocation")
            .field("namespace", &self.namespace)
            .field("principal", &self.principal)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Revocation for PrincipalRevocation {
    fn index(&self) -> &SessionKey {
        &self.index
    }

    fn revoked_at(&self) -> u64 {
        self.at
    }

    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool {
        key.namespace == self.namespace
            && !is_principal_index(key)
            && matches!(record.principal(key.ns()), Ok(Some(p)) if p == self.principal)
    }

    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64> {
        let indexes = Indexes {
            store: &*store,
            namespace: &self.namespace,
            clock: &self.clock,
        };
        indexes
            .revoke(
                &self.principal,
                later.then(|| self.at.saturating_add(REVOKE_SKEW_MS)),
            )
            .await
    }
}

/// `entries` with each session before those rotated from it (by the length of its chain of
/// `from` links within `entries`; otherwise in their order), so that a revoke deletes a
/// source before its target: a move still in flight then fails instead of carrying the
/// session past both deletes.
fn sources_first(entries: Vec<Bound>) -> Vec<Bound> {
    let from: BTreeMap<SessionId, Option<SessionId>> =
        entries.iter().map(|e| (e.id.clone(), e.from.clone())).collect();
    let depth = |e: &Bound| {
        let mut depth = 0usize;
        let mut at = e.from.as_ref();
        while let Some(source) = at {
            match from.get(source) {
                Some(next) if depth < from.len() => {
                    depth += 1;
                    at = next.as_ref();
                }
                _ => break,
            }
        }
        depth
    };
    let mut keyed: Vec<(usize, Bound)> = entries.into_iter().map(|e| (depth(&e), e)).collect();
    keyed.sort_by_key(|(depth, _)| *depth);
    keyed.into_iter().map(|(_, e)| e).collect()
}

/// Whether an entry is past the grace period of a login or rotate in progress.
fn old(entry: &Bound, now: u64) -> bool {
    entry.at.saturating_add(PRUNE_GRACE_MS) <= now
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn an_index_round_trips_and_bad_bytes_are_corrupt() {
        let index = Index {
            entries: vec![
                Bound {
                    id: id("aaaaaaaaaaaaaaaaaaaaaa"),
                    until: 5,
                    at: 1,
                    bound_at: 1,
                    revoking: true,
                    from: None,
                },
                Bound {
                    id: id(&"b".repeat(128)),
                    until: u64::MAX,
                    at: 2,
                    bound_at: 1,
                    revoking: false,
                    from: Some(id("cccccccccccccccccccccc")),
                },
            ],
        };
        let record = |payload: Bytes| Record::new(CodecId::RAW, payload, 10);
        let bytes = index.encode();
        assert_eq!(
            Index::decode(&record(bytes.clone()), "t").ok(),
            Some(index.clone())
        );
        assert_eq!(index.deadline(), u64::MAX);
        for cut in 0..bytes.len() {
            assert!(Index::decode(&record(bytes.slice(..cut)), "t").is_err(), "{cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(
            Index::decode(&record(Bytes::from(longer)), "t").is_err(),
            "trailing bytes"
        );
        let sealed = Record::new(CodecId::SEALED, bytes, 10);
        assert!(Index::decode(&sealed, "t").is_err(), "not raw");
        let huge = Bytes::from_static(&[1, 0xff, 0xff]);
        assert!(Index::decode(&record(huge), "t").is_err());
    }

    #[test]
    fn a_format_1_index_reads_with_its_entry_times_as_binding_times() {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u16(1);
        put_id(&mut b, Some(&id("aaaaaaaaaaaaaaaaaaaaaa")));
        b.put_u64(9);
        b.put_u64(7);
        put_id(&mut b, None);
        let index = Index::decode(&Record::new(CodecId::RAW, b.freeze(), 10), "t").unwrap();
        assert_eq!(index.entries.len(), 1);
        assert_eq!((index.entries[0].at, index.entries[0].bound_at), (7, 7));
        assert!(Index::decode(
            &Record::new(CodecId::RAW, Bytes::from_static(&[3, 0, 0]), 10),
            "t"
        )
        .is_err());
    }

    #[test]
    fn sources_come_before_the_sessions_rotated_from_them() {
        let entry = |name: &str, from: Option<&str>| Bound {
            id: id(&name.repeat(22)),
            until: 9,
            at: 1,
            bound_at: 1,
            revoking: false,
            from: from.map(|f| id(&f.repeat(22))),
        };
        // c was rotated from b, b from a; d stands alone; e comes from an id not listed.
        let order = sources_first(vec![
            entry("c", Some("b")),
            entry("d", None),
            entry("b", Some("a")),
            entry("e", Some("z")),
            entry("a", None),
        ]);
        let names: Vec<char> = order
            .iter()
            .map(|e| e.id.as_str().chars().next().unwrap_or('?'))
            .collect();
        assert_eq!(names, vec!['d', 'e', 'a', 'b', 'c']);
        // A cycle (not made by this code) ends.
        let cycle = sources_first(vec![entry("a", Some("b")), entry("b", Some("a"))]);
        assert_eq!(cycle.len(), 2);
    }

    #[test]
    fn index_ids_are_told_from_session_ids() {
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
        assert_eq!(parse_stored_id(key.id.as_str()), Some(key.id.clone()));
        assert_eq!(parse_stored_id("p.a:b"), None);
    }
}
