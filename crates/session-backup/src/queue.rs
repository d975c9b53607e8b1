//! The write-behind queue: per key, the latest change not yet in the backup.
//!
//! A key appears once: a newer change replaces the queued one in place (the latest state
//! wins; order between keys does not matter, each key is written on its own). A flush takes a
//! batch out; if writing it fails, each change goes back unless a newer one for its key was
//! queued meanwhile (at least once, never an older state over a newer one).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use session_core::backend::{Record, Tombstone};
use session_core::SessionKey;

/// A change to copy into the backup.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Store this record (the primary's state after a write).
    Put(Record),
    /// Delete (leaving this tombstone in a backup that keeps them).
    Delete(Option<Tombstone>),
    /// Move the deadline (a `touch`).
    Retime(u64),
    /// The primary's state is not known here (a rotate's new key, a replayed change): read it
    /// from the primary when flushing.
    Refresh,
}

impl Change {
    pub(crate) fn is_delete(&self) -> bool {
        matches!(self, Change::Delete(_))
    }
}

/// A queued change and when the oldest change it stands for was made.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) change: Change,
    pub(crate) since: Instant,
    /// Bumped by every change of the key: tells a requeued change from a newer one.
    pub(crate) seq: u64,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued (or merged into the key's queued change).
    Queued,
    /// Not queued: the queue is full (a write), or full twice over (a delete).
    Dropped,
}

/// The queue itself (behind the store's mutex).
#[derive(Debug, Default)]
pub(crate) struct Queue {
    map: HashMap<SessionKey, Queued>,
    order: VecDeque<SessionKey>,
    seq: u64,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The change queued for `key`, if any.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Change> {
        self.map.get(key).map(|q| &q.change)
    }

    /// Queues `change` for `key`, merging with a queued change of the same key.
    pub(crate) fn push(&mut self, key: &SessionKey, change: Change, max: usize) -> Pushed {
        self.seq += 1;
        let seq = self.seq;
        if let Some(queued) = self.map.get_mut(key) {
            queued.change = merge(&queued.change, change);
            queued.seq = seq;
            return Pushed::Queued;
        }
        let bound = if change.is_delete() {
            max.saturating_mul(2)
        } else {
            max
        };
        if self.map.len() >= bound {
            return Pushed::Dropped;
        }
        self.map.insert(
            key.clone(),
            Queued {
                change,
                since: Instant::now(),
                seq,
            },
        );
        self.order.push_back(key.clone());
        Pushed::Queued
    }

    /// Takes up to `n` changes, oldest keys first.
    pub(crate) fn take(&mut self, n: usize) -> Vec<(SessionKey, Queued)> {
        let mut out = Vec::with_capacity(n.min(self.map.len()));
        while out.len() < n {
            let Some(key) = self.order.pop_front() else { break };
            if let Some(queued) = self.map.remove(&key) {
                out.push((key, queued));
            }
        }
        out
    }

    /// Puts back a change whose write failed, unless its key has a newer change queued.
    pub(crate) fn requeue(&mut self, key: SessionKey, queued: Queued) {
        if self.map.contains_key(&key) {
            return;
        }
        self.order.push_front(key.clone());
        self.map.insert(key, queued);
    }
}

/// The change that stands for `old` followed by `new`.
fn merge(old: &Change, new: Change) -> Change {
    match (old, new) {
        // A new deadline on a record still waiting: the record with that deadline.
        (Change::Put(record), Change::Retime(deadline)) => {
            let mut record = record.clone();
            record.meta.expires_at =
                session_core::backend::cap_deadline(deadline, record.meta.max_expires_at);
            Change::Put(record)
        }
        // A deadline for a key whose state is read at flush time anyway.
        (Change::Refresh, Change::Retime(_)) => Change::Refresh,
        // A touch after a delete changes nothing (it found no session).
        (Change::Delete(t), Change::Retime(_)) => Change::Delete(*t),
        (_, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::backend::CodecId;
    use session_core::{Namespace, SessionId};

    fn key() -> SessionKey {
        SessionKey::new(
            Namespace::new("task").unwrap_or_else(|_| unreachable!()),
            SessionId::generate().unwrap_or_else(|_| unreachable!()),
        )
    }

    #[test]
    fn the_latest_change_of_a_key_wins_and_keeps_its_place() {
        let mut q = Queue::default();
        let (a, b) = (key(), key());
        assert_eq!(
            q.push(&a, Change::Put(Record::new(CodecId::JSON, &b"1"[..], 10)), 10),
            Pushed::Queued
        );
        q.push(&b, Change::Refresh, 10);
        q.push(&a, Change::Retime(99), 10);
        assert_eq!(q.len(), 2);
        match q.get(&a) {
            Some(Change::Put(r)) => assert_eq!(r.meta.expires_at, 99),
            other => panic!("{other:?}"),
        }
        q.push(&a, Change::Delete(None), 10);
        let taken = q.take(10);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].0, a);
        assert!(taken[0].1.change.is_delete());
    }

    #[test]
    fn a_full_queue_drops_writes_first_and_requeue_never_passes_a_newer_change() {
        let mut q = Queue::default();
        let keys: Vec<SessionKey> = (0..3).map(|_| key()).collect();
        assert_eq!(q.push(&keys[0], Change::Refresh, 1), Pushed::Queued);
        assert_eq!(q.push(&keys[1], Change::Refresh, 1), Pushed::Dropped);
        assert_eq!(q.push(&keys[1], Change::Delete(None), 1), Pushed::Queued);
        assert_eq!(q.push(&keys[2], Change::Delete(None), 1), Pushed::Dropped);
        let mut taken = q.take(1);
        let (k, old) = taken.remove(0);
        q.push(&k, Change::Delete(None), 1);
        q.requeue(k.clone(), old);
        assert!(q.get(&k).is_some_and(Change::is_delete), "the newer change stays");
    }
}
