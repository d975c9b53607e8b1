//! One shard of the store: a hash table of entries behind a reader-writer lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;

use crate::entry::Entry;

/// A shard: its table, and a lower bound on the deadlines in it.
///
/// Aligned to 128 bytes so that two shards' locks never share a cache line.
#[repr(align(128))]
pub(crate) struct Shard {
    table: RwLock<HashTable<Entry>>,
    /// No entry of the shard expires before this (`u64::MAX` when empty).
    /// Lowered by every write under the write lock; made exact by a sweep.
    /// Lets sweeps and at-capacity reclaims skip shards with nothing expired.
    min_deadline: AtomicU64,
}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            table: RwLock::new(HashTable::new()),
            min_deadline: AtomicU64::new(u64::MAX),
        }
    }

    /// Read access. Poisoning is ignored: no code holding the lock leaves a
    /// table half-changed on panic.
    #[inline]
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashTable<Entry>> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access.
    #[inline]
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, HashTable<Entry>> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether an entry of the shard may have expired at `now`.
    #[inline]
    pub(crate) fn may_have_expired(&self, now: u64) -> bool {
        self.min_deadline.load(Ordering::Relaxed) <= now
    }

    /// Records that an entry with `deadline` was written (call with the write lock held).
    #[inline]
    pub(crate) fn note_deadline(&self, deadline: u64) {
        if deadline < self.min_deadline.load(Ordering::Relaxed) {
            self.min_deadline.store(deadline, Ordering::Relaxed);
        }
    }

    /// Sets the exact earliest deadline after a full scan (write lock held).
    pub(crate) fn set_min_deadline(&self, deadline: u64) {
        self.min_deadline.store(deadline, Ordering::Relaxed);
    }
}

/// How many entries an eviction compares.
pub(crate) const EVICTION_SAMPLE: usize = 8;

/// Picks, among up to [`EVICTION_SAMPLE`] entries found from a random
/// bucket onwards, the one with the soonest deadline, skipping bucket
/// `exclude`. Returns its bucket index.
pub(crate) fn sample_soonest(table: &HashTable<Entry>, exclude: Option<usize>, random: u64) -> Option<usize> {
    let buckets = table.num_buckets();
    if buckets == 0 || table.len() <= usize::from(exclude.is_some()) {
        return None;
    }
    let start = (random % buckets as u64) as usize;
    let mut best: Option<(usize, u64)> = None;
    let mut seen = 0;
    for step in 0..buckets {
        let i = (start + step) % buckets;
        if Some(i) == exclude {
            continue;
        }
        if let Some(e) = table.get_bucket(i) {
            let d = e.deadline();
            if best.is_none_or(|(_, bd)| d < bd) {
                best = Some((i, d));
            }
            seen += 1;
            if seen == EVICTION_SAMPLE {
                break;
            }
        }
    }
    best.map(|(i, _)| i)
}
