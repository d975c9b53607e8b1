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

mod index;
mod revocation;
mod revoke;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::envelope::Meta;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::principal::Principal;
use crate::typed::{Session, Sessions};

use index::{index_key, Bound};
pub use index::{is_principal_index, parse_stored_id, principal_index_id};
use revocation::PrincipalRevocation;
pub use revocation::{Revocation, Revoked};
use revoke::{old, Found, Indexes};

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
    ///
    /// [`SessionStore::revoke_principal`]: crate::SessionStore::revoke_principal
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

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
