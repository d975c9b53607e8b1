//! The bounds: room reserved and released for every write, expired entries reclaimed, live
//! ones evicted (or the write refused) when the store is full.

use std::sync::atomic::Ordering;

use hashbrown::HashTable;
use session_core::Error;

use crate::config::AtCapacity;
use crate::entry::Entry;
use crate::shard::{sample_soonest, Shard};

use crate::store::{Inner, Removal, BACKEND};

/// A table is shrunk by the sweeper when under a quarter full and above this capacity.
const SHRINK_ABOVE: usize = 1024;

impl Inner {
    /// Takes room for a write: one more entry if `new_entry`, and the change
    /// from `old` to `new` charged bytes. `false` (and nothing taken) if a
    /// bound would be passed.
    pub(crate) fn reserve(&self, new_entry: bool, old: u64, new: u64) -> bool {
        let u = &self.usage;
        if new_entry {
            let max = self.config.max_entries;
            if u.entries
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |e| {
                    (e < max).then_some(e + 1)
                })
                .is_err()
            {
                return false;
            }
        }
        if new > old {
            let grow = new - old;
            let max = self.config.max_bytes;
            if u.bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    b.checked_add(grow).filter(|&t| t <= max)
                })
                .is_err()
            {
                if new_entry {
                    u.entries.fetch_sub(1, Ordering::Relaxed);
                }
                return false;
            }
        } else if old > new {
            u.bytes.fetch_sub(old - new, Ordering::Relaxed);
        }
        true
    }

    /// Whether a write of this size would fit now (a hint; `reserve` decides).
    pub(crate) fn would_fit(&self, new_entry: bool, old: u64, new: u64) -> bool {
        let entries = self.usage.entries.load(Ordering::Relaxed) + u64::from(new_entry);
        let bytes = self
            .usage
            .bytes
            .load(Ordering::Relaxed)
            .saturating_add(new.saturating_sub(old));
        entries <= self.config.max_entries && bytes <= self.config.max_bytes
    }

    /// Gives back the room of removed entries.
    pub(crate) fn release(&self, entries: u64, bytes: u64) {
        self.usage.entries.fetch_sub(entries, Ordering::Relaxed);
        self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn count_removal(&self, why: Removal, n: u64) {
        match why {
            Removal::Caller => {}
            Removal::Expired => {
                self.expired.fetch_add(n, Ordering::Relaxed);
            }
            Removal::Evicted => {
                self.evicted.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Removes the entry in bucket `index`, releasing its room.
    pub(crate) fn remove_at(
        &self,
        table: &mut HashTable<Entry>,
        index: usize,
        why: Removal,
    ) -> Option<Entry> {
        let (entry, _) = table.get_bucket_entry(index).ok()?.remove();
        self.release(1, entry.charge(self.prefix_len()));
        self.count_removal(why, 1);
        Some(entry)
    }

    /// Removes every expired entry of a locked shard; returns how many.
    pub(crate) fn reclaim(&self, shard: &Shard, table: &mut HashTable<Entry>, now: u64) -> u64 {
        let prefix_len = self.prefix_len();
        let (mut removed, mut freed, mut min) = (0u64, 0u64, u64::MAX);
        table.retain(|e| {
            let d = e.deadline();
            if d <= now {
                removed += 1;
                freed += e.charge(prefix_len);
                false
            } else {
                min = min.min(d);
                true
            }
        });
        shard.set_min_deadline(min);
        if removed > 0 {
            self.release(removed, freed);
            self.count_removal(Removal::Expired, removed);
        }
        removed
    }

    /// One sweeper step: reclaims the expired entries of shard `i` if it may
    /// have any, and shrinks a mostly empty table. Returns how many were removed.
    pub(crate) fn sweep_shard(&self, i: usize, now: u64) -> u64 {
        let Some(shard) = self.shards.get(i) else {
            return 0;
        };
        let expired = shard.may_have_expired(now);
        if !expired {
            let t = shard.read();
            if !(t.capacity() > SHRINK_ABOVE && t.len() * 4 < t.capacity()) {
                return 0;
            }
        }
        let mut table = shard.write();
        let removed = if expired {
            self.reclaim(shard, &mut table, now)
        } else {
            0
        };
        if table.capacity() > SHRINK_ABOVE && table.len() * 4 < table.capacity() {
            let target = table.len() * 2;
            table.shrink_to(target, |e| self.hash_entry(e));
        }
        removed
    }

    /// Makes room in the locked target shard: reclaims its expired entries,
    /// then (evict policy) evicts sampled entries other than bucket `keep`,
    /// until the write's reservation succeeds. `true` once it has.
    #[allow(
        clippy::too_many_arguments,
        reason = "private helper; the arguments are the write's reservation"
    )]
    pub(crate) fn make_room_in(
        &self,
        shard: &Shard,
        table: &mut HashTable<Entry>,
        keep: Option<usize>,
        new_entry: bool,
        old: u64,
        new: u64,
        now: u64,
    ) -> bool {
        if shard.may_have_expired(now)
            && self.reclaim(shard, table, now) > 0
            && self.reserve(new_entry, old, new)
        {
            return true;
        }
        if self.config.at_capacity != AtCapacity::EvictSoonestExpiring {
            return false;
        }
        while let Some(victim) = sample_soonest(table, keep, self.random()) {
            let why = match table.get_bucket(victim) {
                Some(e) if e.deadline() <= now => Removal::Expired,
                _ => Removal::Evicted,
            };
            self.remove_at(table, victim, why);
            if self.reserve(new_entry, old, new) {
                return true;
            }
        }
        false
    }

    /// Makes room in shards other than `skip`, one lock at a time: first
    /// reclaims expired entries everywhere they may be, then (evict policy)
    /// evicts one sampled entry per shard in turn. `true` when the write
    /// would now fit; `false` when nothing more can be freed.
    pub(crate) fn make_room_elsewhere(
        &self,
        skip: usize,
        new_entry: bool,
        old: u64,
        new: u64,
        now: u64,
    ) -> bool {
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            if i != skip && shard.may_have_expired(now) {
                let mut table = shard.write();
                self.reclaim(shard, &mut table, now);
            }
        }
        if self.would_fit(new_entry, old, new) {
            return true;
        }
        if self.config.at_capacity != AtCapacity::EvictSoonestExpiring {
            return false;
        }
        let start = self.random() as usize;
        let mut idle = 0;
        let mut i = start;
        while idle < n {
            i = (i + 1) & self.mask;
            if i == skip {
                idle += 1;
                continue;
            }
            let shard = &self.shards[i];
            let mut table = shard.write();
            match sample_soonest(&table, None, self.random()) {
                Some(victim) => {
                    let why = match table.get_bucket(victim) {
                        Some(e) if e.deadline() <= now => Removal::Expired,
                        _ => Removal::Evicted,
                    };
                    self.remove_at(&mut table, victim, why);
                    idle = 0;
                }
                None => idle += 1,
            }
            drop(table);
            if self.would_fit(new_entry, old, new) {
                return true;
            }
        }
        false
    }

    pub(crate) fn full(&self) -> Error {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let c = &self.config;
        let advice = match c.at_capacity {
            AtCapacity::Reject => "raise memory.max_entries or memory.max_bytes, or set memory.at_capacity = \"evict_soonest_expiring\"",
            _ => "raise memory.max_entries or memory.max_bytes",
        };
        Error::Full {
            backend: BACKEND,
            message: format!(
                "{} of max_entries {} and {} of max_bytes {} in use; {advice}",
                self.usage.entries.load(Ordering::Relaxed),
                c.max_entries,
                self.usage.bytes.load(Ordering::Relaxed),
                c.max_bytes
            ),
        }
    }

    // ------------------------------------------------------------ operations
}
