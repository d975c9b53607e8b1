//! The write-behind queue: per key, the latest change not yet in the backup.
//!
//! A key appears once. A second change of a key that is still queued becomes `Refresh` — the
//! primary's state read at flush time, with the latest write's record kept for a primary that
//! lost its data — unless both are deletes (the later one) or one is a
//! `Recheck` (a failed write's, which adds nothing to another change): calls on one key may finish
//! (and be queued) in another order than the primary applied them, so only the primary can say
//! which state is the latest. Order between keys does not matter, each key is written on its
//! own. A flush takes a batch out (its keys stay *in flight* until it ends); if writing fails,
//! each change goes back, merged with any change of its key queued meanwhile (at least once,
//! never an older state over a newer one).

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
    /// The primary's state is not known here (a rotate's new key, two changes of one key):
    /// read it from the primary when flushing — a session there is written, a tombstone
    /// deleted. With it, the record of the latest change if that was a write (its deadline moved
    /// by a later `touch`): what the backup gets if the primary holds nothing at all (it lost
    /// its data), so that an acknowledged write is not lost with it.
    Refresh(Option<Record>),
    /// A write the primary answered with an error may have landed: when flushing, a session
    /// the primary holds is written; if it holds none, the backup keeps what it has (a primary
    /// that lost its data must not empty the backup).
    Recheck,
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
    /// Keys of batches being written: not in the backup yet either.
    in_flight: HashMap<SessionKey, usize>,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The change queued for `key`, if any.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &SessionKey) -> Option<&Change> {
        self.map.get(key).map(|q| &q.change)
    }

    /// Whether a change made before `instant` is still queued (a requeued change keeps the
    /// time of the oldest change it stands for).
    pub(crate) fn holds_older_than(&self, instant: Instant) -> bool {
        self.map.values().any(|q| q.since < instant)
    }

    /// Whether `key` has a change that is not in the backup yet: queued or in flight.
    pub(crate) fn pending(&self, key: &SessionKey) -> bool {
        self.map.contains_key(key) || self.in_flight.contains_key(key)
    }

    /// Queues `change` for `key`, merging with a queued change of the same key.
    pub(crate) fn push(&mut self, key: &SessionKey, change: Change, max: usize) -> Pushed {
        if let Some(queued) = self.map.get_mut(key) {
            queued.change = merge(&queued.change, change);
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
            },
        );
        self.order.push_back(key.clone());
        Pushed::Queued
    }

    /// Takes up to `n` changes, oldest keys first; their keys are in flight until
    /// [`landed`](Self::landed).
    pub(crate) fn take(&mut self, n: usize) -> Vec<(SessionKey, Queued)> {
        let mut out = Vec::with_capacity(n.min(self.map.len()));
        while out.len() < n {
            let Some(key) = self.order.pop_front() else { break };
            if let Some(queued) = self.map.remove(&key) {
                *self.in_flight.entry(key.clone()).or_default() += 1;
                out.push((key, queued));
            }
        }
        out
    }

    /// A taken batch is over (written, or its failures put back): its keys are no longer in
    /// flight.
    pub(crate) fn landed<'a>(&mut self, keys: impl IntoIterator<Item = &'a SessionKey>) {
        for key in keys {
            if let Some(n) = self.in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(key);
                }
            }
        }
    }

    /// Puts back a change whose write failed: merged with a change of its key queued
    /// meanwhile (the newer one), else queued first.
    pub(crate) fn requeue(&mut self, key: SessionKey, queued: Queued) {
        if let Some(newer) = self.map.get_mut(&key) {
            newer.change = merge(&queued.change, newer.change.clone());
            newer.since = newer.since.min(queued.since);
            return;
        }
        self.order.push_front(key.clone());
        self.map.insert(key, queued);
    }
}

/// The change that stands for `old` followed by `new`: two deletes are the later one; anything
/// else is read from the primary at flush time (the calls may have finished in another order
/// than the primary applied them), keeping the latest write's record for a primary that lost
/// its data.
fn merge(old: &Change, new: Change) -> Change {
    match (old, new) {
        (Change::Delete(_), Change::Delete(t)) => Change::Delete(t),
        // A failed write adds nothing to a change already on its way.
        (old, Change::Recheck) => old.clone(),
        (Change::Recheck, new) => new,
        (_, Change::Put(record)) => Change::Refresh(Some(record)),
        (Change::Put(record) | Change::Refresh(Some(record)), Change::Retime(deadline)) => {
            let mut record = record.clone();
            record.meta.expires_at = deadline;
            Change::Refresh(Some(record))
        }
        (_, Change::Refresh(last)) => Change::Refresh(last),
        _ => Change::Refresh(None),
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
    fn a_key_changed_twice_is_read_from_the_primary_and_keeps_its_place() {
        let mut q = Queue::default();
        let (a, b) = (key(), key());
        assert_eq!(
            q.push(&a, Change::Put(Record::new(CodecId::JSON, &b"1"[..], 10)), 10),
            Pushed::Queued
        );
        q.push(&b, Change::Delete(None), 10);
        q.push(&a, Change::Retime(99), 10);
        q.push(&b, Change::Delete(None), 10);
        assert_eq!(q.len(), 2);
        assert!(matches!(q.get(&a), Some(Change::Refresh(Some(r))) if r.meta.expires_at == 99));
        assert!(
            q.get(&b).is_some_and(Change::is_delete),
            "two deletes stay a delete"
        );
        let taken = q.take(10);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[0].0, a);
        assert!(q.pending(&a), "in flight");
        q.landed(taken.iter().map(|(k, _)| k));
        assert!(!q.pending(&a));
    }

    #[test]
    fn a_full_queue_drops_writes_first_and_requeue_never_passes_a_newer_change() {
        let mut q = Queue::default();
        let keys: Vec<SessionKey> = (0..3).map(|_| key()).collect();
        assert_eq!(q.push(&keys[0], Change::Refresh(None), 1), Pushed::Queued);
        assert_eq!(q.push(&keys[1], Change::Refresh(None), 1), Pushed::Dropped);
        assert_eq!(q.push(&keys[1], Change::Delete(None), 1), Pushed::Queued);
        assert_eq!(q.push(&keys[2], Change::Delete(None), 1), Pushed::Dropped);
        let mut taken = q.take(1);
        let (k, old) = taken.remove(0);
        q.push(&k, Change::Put(Record::new(CodecId::JSON, &b"2"[..], 10)), 1);
        q.requeue(k.clone(), old);
        assert!(
            matches!(q.get(&k), Some(Change::Refresh(_))),
            "merged with the newer change"
        );
        q.landed([&k]);
        assert!(q.pending(&k), "still queued");
    }
}
