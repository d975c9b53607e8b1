//! The journal of sessions written or deleted on the secondary, and the
//! striped per-key locks that order live calls against replay.
//!
//! Invariant: a key is in the journal exactly when the secondary holds its
//! authoritative state (a value, or its absence for a tombstone). Every change
//! of a key's journal entry happens under that key's lock.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_core::{SessionKey, Version};

use crate::state::Metrics;

/// What replay must make the primary reflect for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PendingOp {
    /// The secondary holds the session's latest value: write it (or, if it
    /// has expired since, remove the older value from the primary).
    Write,
    /// The session was deleted: delete it in the primary.
    Tombstone,
    /// A principal's sessions were revoked (the key is the principal's index): apply the
    /// revocation kept for it to the primary.
    Revoke,
}

/// One journal entry: the latest pending operation on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// What to replay.
    pub(crate) op: PendingOp,
    /// When it happened, ms: the record's `updated_at` for a write, the
    /// deletion time for a tombstone. A primary value updated after this wins.
    pub(crate) at: u64,
    /// A number unique to this journal residency of the key: replay removes
    /// the entry only if it is still the one it replayed.
    pub(crate) generation: u64,
    /// The primary's version this residency's first change was based on
    /// ([`Version::NONE`] when this instance knew none): replay applies only
    /// over it, and resolves a conflict otherwise.
    pub(crate) base: Version,
}

/// The journal is full: a key not yet in it cannot be admitted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JournalFull {
    pub(crate) max: usize,
}

/// The journal: key → latest pending operation, bounded in keys.
#[derive(Debug)]
pub(crate) struct Journal {
    map: Mutex<HashMap<SessionKey, Entry>>,
    len: AtomicUsize,
    max: usize,
    next_generation: AtomicU64,
    /// The length and "active" gauges this publishes.
    metrics: Arc<Metrics>,
}

impl Journal {
    /// An empty journal of at most `max` keys.
    pub(crate) fn new(max: usize, metrics: Arc<Metrics>) -> Self {
        Journal {
            map: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max,
            next_generation: AtomicU64::new(1),
            metrics,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys waiting for replay.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    pub(crate) fn get(&self, key: &SessionKey) -> Option<Entry> {
        if self.len() == 0 {
            return None;
        }
        self.map().get(key).copied()
    }

    /// A snapshot of the pending keys.
    pub(crate) fn keys(&self) -> Vec<SessionKey> {
        self.map().keys().cloned().collect()
    }

    /// Calls `f` with every pending key, under the journal's lock (`f` must not touch the
    /// journal).
    pub(crate) fn for_each_key(&self, mut f: impl FnMut(&SessionKey)) {
        if self.len() == 0 {
            return;
        }
        for key in self.map().keys() {
            f(key);
        }
    }

    /// Admits `key` for an operation about to be made on the secondary.
    /// Call with the key's lock held. A key already present is always
    /// admitted; a new key only below the bound, with a fresh generation and
    /// a provisional entry that the [`Reservation`] removes unless committed.
    /// `base` is kept only for a new residency.
    pub(crate) fn admit<'a>(
        &'a self,
        key: &SessionKey,
        op: PendingOp,
        at: u64,
        base: Version,
    ) -> Result<Reservation<'a>, JournalFull> {
        let mut map = self.map();
        if let Some(entry) = map.get(key) {
            return Ok(Reservation {
                journal: self,
                key: key.clone(),
                generation: entry.generation,
                new: false,
                committed: false,
            });
        }
        if map.len() >= self.max {
            return Err(JournalFull { max: self.max });
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        map.insert(
            key.clone(),
            Entry {
                op,
                at,
                generation,
                base,
            },
        );
        self.len.store(map.len(), Ordering::SeqCst);
        self.metrics.journal_length.set(map.len() as f64);
        self.metrics.active.set(1.0);
        Ok(Reservation {
            journal: self,
            key: key.clone(),
            generation,
            new: true,
            committed: false,
        })
    }

    /// Sets the operation of a present entry (keeps its generation).
    fn set(&self, key: &SessionKey, op: PendingOp, at: u64) {
        if let Some(entry) = self.map().get_mut(key) {
            // A revocation waiting under a principal's index key is never replaced by a write
            // or a delete of that key (index keys are refused on the outage paths anyway).
            if entry.op == PendingOp::Revoke && op != PendingOp::Revoke {
                return;
            }
            entry.op = op;
            entry.at = at;
        }
    }

    /// Removes a key whose entry has the given generation (replayed, or a
    /// provisional entry rolled back).
    pub(crate) fn remove(&self, key: &SessionKey, generation: u64) {
        let mut map = self.map();
        if map.get(key).is_some_and(|e| e.generation == generation) {
            map.remove(key);
            self.len.store(map.len(), Ordering::SeqCst);
            self.metrics.journal_length.set(map.len() as f64);
        }
    }
}

/// A key admitted to the journal for one secondary operation. Commit it when
/// the secondary acknowledged; dropping it uncommitted removes a key that was
/// new (the secondary is not authoritative for it), and leaves a key that was
/// already present as it was (replay mirrors whatever the secondary holds).
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    journal: &'a Journal,
    key: SessionKey,
    generation: u64,
    new: bool,
    committed: bool,
}

impl Reservation<'_> {
    /// The generation of the key's journal residency.
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the key was not in the journal before.
    pub(crate) fn is_new(&self) -> bool {
        self.new
    }

    /// Records the operation the secondary acknowledged.
    pub(crate) fn commit(mut self, op: PendingOp, at: u64) {
        self.journal.set(&self.key, op, at);
        self.committed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.new && !self.committed {
            self.journal.remove(&self.key, self.generation);
        }
    }
}

/// Striped async mutexes: one lock per stripe of the key space.
#[derive(Debug)]
pub(crate) struct KeyLocks {
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

/// Held while a key's journal entry may change.
pub(crate) type KeyGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

const STRIPES: usize = 1024;

impl KeyLocks {
    pub(crate) fn new() -> Self {
        KeyLocks {
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn index(&self, key: &SessionKey) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    /// Locks the stripe of one key.
    pub(crate) async fn lock(&self, key: &SessionKey) -> KeyGuard<'_> {
        self.stripes[self.index(key)].lock().await
    }

    /// Locks the stripes of many keys, in stripe order (no deadlock between
    /// two callers locking overlapping sets).
    pub(crate) async fn lock_many<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k SessionKey>,
    ) -> Vec<KeyGuard<'_>> {
        let mut idx: Vec<usize> = keys.into_iter().map(|k| self.index(k)).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use session_core::{Namespace, SessionId};

    fn key() -> SessionKey {
        SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
    }

    #[test]
    fn uncommitted_new_key_is_rolled_back() {
        let j = Journal::new(10, Arc::new(Metrics::register("test")));
        let k = key();
        drop(j.admit(&k, PendingOp::Write, 1, Version::NONE).unwrap());
        assert_eq!(j.len(), 0);
        j.admit(&k, PendingOp::Write, 1, Version::NONE)
            .unwrap()
            .commit(PendingOp::Write, 5);
        assert_eq!(j.get(&k).unwrap().at, 5);
        // An existing key is left as it was when not committed.
        drop(j.admit(&k, PendingOp::Tombstone, 9, Version::NONE).unwrap());
        assert_eq!(j.get(&k).unwrap().op, PendingOp::Write);
        j.admit(&k, PendingOp::Tombstone, 9, Version::NONE)
            .unwrap()
            .commit(PendingOp::Tombstone, 9);
        let e = j.get(&k).unwrap();
        assert_eq!((e.op, e.at), (PendingOp::Tombstone, 9));
    }

    #[test]
    fn bound_refuses_only_new_keys() {
        let j = Journal::new(2, Arc::new(Metrics::register("test")));
        let (a, b, c) = (key(), key(), key());
        j.admit(&a, PendingOp::Write, 1, Version::NONE)
            .unwrap()
            .commit(PendingOp::Write, 1);
        j.admit(&b, PendingOp::Write, 1, Version::NONE)
            .unwrap()
            .commit(PendingOp::Write, 1);
        assert!(j.admit(&c, PendingOp::Write, 1, Version::NONE).is_err());
        assert!(j.admit(&a, PendingOp::Tombstone, 2, Version::NONE).is_ok());
        let g = j.get(&a).unwrap().generation;
        j.remove(&a, g + 100);
        assert_eq!(j.len(), 2, "a stale generation removes nothing");
        j.remove(&a, g);
        assert_eq!(j.len(), 1);
        assert!(j.admit(&c, PendingOp::Write, 1, Version::NONE).is_ok());
    }

    #[test]
    fn generations_are_fresh_per_residency() {
        let j = Journal::new(2, Arc::new(Metrics::register("test")));
        let k = key();
        let r = j.admit(&k, PendingOp::Write, 1, Version::NONE).unwrap();
        let g1 = r.generation();
        assert!(r.is_new());
        r.commit(PendingOp::Write, 1);
        j.remove(&k, g1);
        let r = j.admit(&k, PendingOp::Write, 1, Version::NONE).unwrap();
        assert_ne!(r.generation(), g1);
    }
}
