//! The index operations on one store — read, change by compare-and-set, revoke — that
//! [`Sessions`](crate::Sessions) and a kept revocation share.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::Clock;
use crate::codec::CodecId;
use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::principal::Principal;
use crate::store::SessionStore;
use crate::version::Version;

use super::index::{index_key, Bound, Index};
use super::{INDEX_ATTEMPTS, MAX_ENTRIES, PRUNE_GRACE_MS, REVOKE_ROUNDS};

/// What a listed session is now, read from the store.
pub(super) enum Found {
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

/// The index operations of one namespace on one store: what [`Sessions`] and a
/// [`PrincipalRevocation`] (applied to whatever store keeps it) share.
///
/// [`Sessions`]: crate::Sessions
/// [`PrincipalRevocation`]: super::revocation::PrincipalRevocation
pub(super) struct Indexes<'a> {
    pub(super) store: &'a dyn SessionStore,
    pub(super) namespace: &'a Namespace,
    pub(super) clock: &'a Clock,
}

impl Indexes<'_> {
    fn key(&self, id: &SessionId) -> SessionKey {
        SessionKey::new(self.namespace.clone(), id.clone())
    }

    /// Ends every session listed in `principal`'s index (see [`Sessions::revoke_all`]); with
    /// `bound_by`, only the sessions first bound at or before that time (ms) — and those
    /// rotated from them, which keep their binding time. Returns how many sessions it ended.
    ///
    /// [`Sessions::revoke_all`]: crate::Sessions::revoke_all
    pub(super) async fn revoke(&self, principal: &Principal, bound_by: Option<u64>) -> Result<u64> {
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
    pub(super) async fn find(&self, principal: &Principal, index: &Index) -> Result<Vec<Found>> {
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
    pub(super) async fn stale_entries(
        &self,
        principal: &Principal,
        index: &Index,
    ) -> Result<BTreeSet<SessionId>> {
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
    pub(super) async fn load(&self, principal: &Principal) -> Result<Option<(Index, Meta)>> {
        let key = index_key(self.namespace, principal);
        match self.store.load(&key).await? {
            Some(record) => Ok(Some((Index::decode(&record, key.ns())?, record.meta))),
            None => Ok(None),
        }
    }

    /// Applies `change` to `principal`'s index by compare-and-set, dropping entries whose cap
    /// has passed; an index left empty is removed (a write whose deadline has passed). Returns
    /// the index as written.
    pub(super) async fn change(&self, principal: &Principal, change: impl Fn(&mut Index)) -> Result<Index> {
        self.change_from(principal, None, change).await
    }

    /// [`change`](Self::change), its first attempt on `first` (the index as just read) when
    /// given.
    pub(super) async fn change_from(
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

/// `entries` with each session before those rotated from it (by the length of its chain of
/// `from` links within `entries`; otherwise in their order), so that a revoke deletes a
/// source before its target: a move still in flight then fails instead of carrying the
/// session past both deletes.
pub(super) fn sources_first(entries: Vec<Bound>) -> Vec<Bound> {
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
pub(super) fn old(entry: &Bound, now: u64) -> bool {
    entry.at.saturating_add(PRUNE_GRACE_MS) <= now
}
