//! The near cache's memory: loaded sessions by Redis key, bounded by entries and bytes, with
//! the bookkeeping that keeps a read from caching a value an invalidation has already
//! replaced.
//!
//! A load registers a ticket for its key before the `GET` goes out ([`NearCache::begin_read`]);
//! an invalidation of the key (another client's write, delete or expiry), or this instance's
//! own write, withdraws the key's ticket; the reply is cached only if its ticket is still the
//! key's and the cache's epoch has not moved ([`NearCache::finish_read`]). The epoch moves when
//! the cache can no longer know what it missed (the tracking connection was lost, a flush):
//! everything is dropped, and no read begun before is cached.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use session_core::backend::Record;

/// Bytes an entry costs beyond its key and payload (map slot, record header, queue slot).
const ENTRY_OVERHEAD: u64 = 160;

/// What a load got from the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A live session, cached.
    Hit(Record),
    /// Not cached (or past its deadline, or the cache is not serving).
    Miss,
}

/// A read in flight: cached on its reply only if nothing invalidated its key meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    token: u64,
}

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) hits: u64,
    pub(crate) misses: u64,
    pub(crate) invalidations: u64,
    pub(crate) evictions: u64,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

struct Entry {
    record: Record,
    /// Its insertion number, to tell a queue slot of a replaced entry from the live one.
    seq: u64,
    cost: u64,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Box<str>, Entry>,
    /// Insertion order (oldest first), with each entry's `seq`; stale slots are skipped.
    order: VecDeque<(Box<str>, u64)>,
    /// The ticket token each key's latest read in flight holds.
    pending: HashMap<Box<str>, u64>,
    bytes: u64,
}

/// Loaded sessions, bounded, kept true by invalidations.
pub(crate) struct NearCache {
    max_entries: usize,
    max_bytes: u64,
    table: Mutex<Table>,
    epoch: AtomicU64,
    next: AtomicU64,
    serving: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    evictions: AtomicU64,
}

impl NearCache {
    /// An empty cache holding at most `max_entries` sessions and `max_bytes` bytes; not
    /// serving until [`set_serving`](Self::set_serving) says the tracking is up.
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        NearCache {
            max_entries,
            max_bytes,
            table: Mutex::new(Table::default()),
            epoch: AtomicU64::new(0),
            next: AtomicU64::new(1),
            serving: AtomicBool::new(false),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cache answers and fills (the invalidation stream is known to be whole).
    pub(crate) fn set_serving(&self, serving: bool) {
        if !serving {
            self.drop_all();
        }
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// The session cached under `key`, if it is live at `now_ms`.
    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Lookup {
        if !self.serving.load(Ordering::SeqCst) {
            return Lookup::Miss;
        }
        let found = self
            .table()
            .entries
            .get(key)
            .filter(|e| now_ms < e.record.meta.deadline())
            .map(|e| e.record.clone());
        match found {
            Some(record) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(record)
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss
            }
        }
    }

    /// Registers a read of `key` about to be sent.
    pub(crate) fn begin_read(&self, key: &str) -> Ticket {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.table().pending.insert(key.into(), token);
        Ticket { epoch, token }
    }

    /// The reply of the read `ticket` stands for: `Some` is cached if nothing invalidated the
    /// key since the read began and the cache still serves the same epoch; `None` (no
    /// session) only ends the ticket.
    pub(crate) fn finish_read(&self, ticket: Ticket, key: &str, found: Option<&Record>) {
        let mut table = self.table();
        let current = table.pending.get(key) == Some(&ticket.token);
        if current {
            table.pending.remove(key);
        }
        let Some(record) = found else { return };
        if !current
            || ticket.epoch != self.epoch.load(Ordering::SeqCst)
            || !self.serving.load(Ordering::SeqCst)
        {
            return;
        }
        let cost = key.len() as u64 + record.payload.len() as u64 + ENTRY_OVERHEAD;
        if cost > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = table.entries.insert(
            key.into(),
            Entry {
                record: record.clone(),
                seq,
                cost,
            },
        ) {
            table.bytes -= old.cost;
        }
        table.bytes += cost;
        table.order.push_back((key.into(), seq));
        self.evict(&mut table);
    }

    /// Drops the oldest entries until both bounds hold.
    fn evict(&self, table: &mut Table) {
        while table.entries.len() > self.max_entries || table.bytes > self.max_bytes {
            let Some((key, seq)) = table.order.pop_front() else {
                break;
            };
            if table.entries.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(old) = table.entries.remove(&key) {
                    table.bytes -= old.cost;
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Stale queue slots (replaced or invalidated entries) are dropped as they reach the
        // front; keep the queue from growing past twice the entries.
        if table.order.len() > 2 * table.entries.len() + 64 {
            let live: VecDeque<(Box<str>, u64)> = table
                .order
                .drain(..)
                .filter(|(k, s)| table.entries.get(k).is_some_and(|e| e.seq == *s))
                .collect();
            table.order = live;
        }
    }

    /// `key` changed elsewhere (an invalidation) or here (this instance's own write or
    /// delete): its entry goes, and a read of it in flight is not cached.
    pub(crate) fn invalidate(&self, key: &str) {
        let mut table = self.table();
        table.pending.remove(key);
        if let Some(old) = table.entries.remove(key) {
            table.bytes -= old.cost;
        }
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything goes, and no read begun before is cached (a flush, a lost connection).
    pub(crate) fn drop_all(&self) {
        let mut table = self.table();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        table.entries.clear();
        table.order.clear();
        table.pending.clear();
        table.bytes = 0;
    }

    /// The counters and the current size.
    pub(crate) fn counts(&self) -> Counts {
        let table = self.table();
        Counts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries: table.entries.len() as u64,
            bytes: table.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use session_core::backend::CodecId;

    use super::*;

    const NOW: u64 = 1_000_000;

    fn rec(payload: &[u8]) -> Record {
        Record::new(CodecId::RAW, payload.to_vec(), NOW + 60_000)
    }

    fn serving(entries: usize, bytes: u64) -> NearCache {
        let c = NearCache::new(entries, bytes);
        c.set_serving(true);
        c
    }

    fn fill(c: &NearCache, key: &str, r: &Record) {
        let t = c.begin_read(key);
        c.finish_read(t, key, Some(r));
    }

    #[test]
    fn a_read_is_cached_and_served_until_its_deadline() {
        let c = serving(10, 1 << 20);
        let r = rec(b"a");
        fill(&c, "k", &r);
        assert_eq!(c.get("k", NOW), Lookup::Hit(r.clone()));
        assert_eq!(
            c.get("k", r.meta.deadline()),
            Lookup::Miss,
            "never past its deadline"
        );
    }

    #[test]
    fn an_invalidation_before_the_reply_keeps_the_reply_out() {
        let c = serving(10, 1 << 20);
        let t = c.begin_read("k");
        c.invalidate("k");
        c.finish_read(t, "k", Some(&rec(b"old")));
        assert_eq!(c.get("k", NOW), Lookup::Miss);
    }

    #[test]
    fn a_flush_or_a_lost_connection_drops_everything_and_in_flight_reads() {
        let c = serving(10, 1 << 20);
        fill(&c, "a", &rec(b"a"));
        let t = c.begin_read("b");
        c.drop_all();
        c.finish_read(t, "b", Some(&rec(b"b")));
        assert_eq!((c.get("a", NOW), c.get("b", NOW)), (Lookup::Miss, Lookup::Miss));
        c.set_serving(false);
        fill(&c, "c", &rec(b"c"));
        c.set_serving(true);
        assert_eq!(c.get("c", NOW), Lookup::Miss, "nothing is kept while not serving");
    }

    #[test]
    fn bounds_hold_and_evictions_are_counted() {
        let c = serving(3, 1 << 20);
        for k in ["a", "b", "c", "d", "e"] {
            fill(&c, k, &rec(k.as_bytes()));
        }
        let n = c.counts();
        assert_eq!((n.entries, n.evictions), (3, 2));
        assert_eq!(c.get("a", NOW), Lookup::Miss, "the oldest went first");
        let small = serving(100, 2 * (ENTRY_OVERHEAD + 101));
        for k in ["a", "b", "c"] {
            fill(&small, k, &rec(&[0; 100]));
        }
        assert!(small.counts().bytes <= 2 * (ENTRY_OVERHEAD + 101));
        assert_eq!(small.counts().entries, 2);
    }

    #[test]
    fn a_later_read_of_the_same_key_wins_the_ticket() {
        let c = serving(10, 1 << 20);
        let first = c.begin_read("k");
        let second = c.begin_read("k");
        c.finish_read(first, "k", Some(&rec(b"first")));
        assert_eq!(c.get("k", NOW), Lookup::Miss);
        c.finish_read(second, "k", Some(&rec(b"second")));
        assert_eq!(c.get("k", NOW), Lookup::Hit(rec(b"second")));
    }
}
