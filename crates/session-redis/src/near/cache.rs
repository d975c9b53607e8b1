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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use session_core::backend::Record;

use super::NearCacheStats;

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
    hits: u64,
    misses: u64,
    invalidations: u64,
    evictions: u64,
}

/// Shards of a large cache: loads on many cores take different locks.
const SHARDS: usize = 16;
/// A cache bounded below this many entries, or bytes, per shard has fewer shards (one: its
/// bounds exact).
const MIN_SHARD_ENTRIES: usize = 1_024;
const MIN_SHARD_BYTES: u64 = 1 << 20;

/// Loaded sessions, bounded, kept true by invalidations. Large caches are split into shards by
/// key, each with its share of the bounds.
pub(crate) struct NearCache {
    /// Per shard.
    max_entries: usize,
    max_bytes: u64,
    shards: Box<[Mutex<Table>]>,
    epoch: AtomicU64,
    next: AtomicU64,
    /// Each tracker's lease (one per primary): until when, in ms of [`Self::clock`], its
    /// stream is known whole (`0`: not ready). The cache serves only while there is a tracker
    /// and every lease runs.
    leases: Mutex<HashMap<u64, u64>>,
    /// The shortest lease, read on every `get`.
    lease_until: AtomicU64,
    started: Instant,
    resets: AtomicU64,
    /// Loads while the cache was not serving.
    idle_misses: AtomicU64,
}

impl NearCache {
    /// An empty cache holding at most `max_entries` sessions and `max_bytes` bytes; not
    /// serving until a tracker is added and ready.
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        let by_bytes = usize::try_from(max_bytes / MIN_SHARD_BYTES).unwrap_or(usize::MAX);
        let shards = (max_entries / MIN_SHARD_ENTRIES).min(by_bytes).clamp(1, SHARDS);
        NearCache {
            max_entries: max_entries / shards,
            max_bytes: max_bytes / shards as u64,
            shards: (0..shards).map(|_| Mutex::new(Table::default())).collect(),
            epoch: AtomicU64::new(0),
            next: AtomicU64::new(1),
            leases: Mutex::new(HashMap::new()),
            lease_until: AtomicU64::new(0),
            started: Instant::now(),
            resets: AtomicU64::new(0),
            idle_misses: AtomicU64::new(0),
        }
    }

    /// The shard of `key`: FNV-1a of its last 8 bytes (a session id's random end).
    fn table(&self, key: &str) -> MutexGuard<'_, Table> {
        let bytes = key.as_bytes();
        let tail = &bytes[bytes.len().saturating_sub(8)..];
        let hash = tail.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let i = (hash % self.shards.len() as u64) as usize;
        self.lock(i)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Table> {
        self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the cache was made: the clock of leases (monotonic).
    pub(crate) fn clock(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the cache answers and fills: there is a tracker, and every tracker's lease runs.
    pub(crate) fn serving(&self) -> bool {
        self.clock() < self.lease_until.load(Ordering::SeqCst)
    }

    fn set_lease(&self, tracker: u64, until: Option<u64>) {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match until {
            Some(until) => {
                leases.insert(tracker, until);
            }
            None => {
                leases.remove(&tracker);
            }
        }
        let shortest = leases.values().copied().min().unwrap_or(0);
        self.lease_until.store(shortest, Ordering::SeqCst);
    }

    /// A tracker was started (not ready yet): its id.
    pub(crate) fn tracker_added(&self) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.set_lease(id, Some(0));
        self.clear();
        id
    }

    /// A tracker set tracking up: no read begun before is cached (it may have been answered
    /// before tracking started), then its lease runs until `until`.
    pub(crate) fn tracker_ready(&self, tracker: u64, until: u64) {
        self.clear();
        self.set_lease(tracker, Some(until));
    }

    /// A tracker confirmed that every invalidation sent before the heartbeat it sent at some
    /// time has been applied: its lease runs until `until` (that time plus the heartbeat and
    /// `max_stale`).
    pub(crate) fn renew(&self, tracker: u64, until: u64) {
        self.set_lease(tracker, Some(until));
    }

    /// A tracker can no longer be sure it hears every invalidation: stop serving, drop all.
    pub(crate) fn tracker_lost(&self, tracker: u64) {
        self.set_lease(tracker, Some(0));
        self.drop_all();
    }

    /// A tracker ended (its node left the cluster, or the store was closed or dropped):
    /// invalidations it had not applied yet are lost, and the keys read through it are tracked
    /// by nobody now, so everything goes.
    pub(crate) fn tracker_removed(&self, tracker: u64) {
        self.set_lease(tracker, None);
        self.drop_all();
    }

    /// The session cached under `key`, if it is live at `now_ms`.
    pub(crate) fn get(&self, key: &str, now_ms: u64) -> Lookup {
        if !self.serving() {
            self.idle_misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        }
        let mut table = self.table(key);
        let found = table
            .entries
            .get(key)
            .filter(|e| now_ms < e.record.meta.deadline())
            .map(|e| e.record.clone());
        match found {
            Some(record) => {
                table.hits += 1;
                Lookup::Hit(record)
            }
            None => {
                table.misses += 1;
                Lookup::Miss
            }
        }
    }

    /// Registers a read of `key` about to be sent (`None`: the cache is not serving, the
    /// reply will not be kept).
    pub(crate) fn begin_read(&self, key: &str) -> Option<Ticket> {
        if !self.serving() {
            return None;
        }
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.table(key).pending.insert(key.into(), token);
        Some(Ticket { epoch, token })
    }

    /// The reply of the read `ticket` stands for: `Some` is cached if nothing invalidated the
    /// key since the read began and the cache still serves the same epoch; `None` (no
    /// session) only ends the ticket.
    pub(crate) fn finish_read(&self, ticket: Ticket, key: &str, found: Option<&Record>) {
        let mut table = self.table(key);
        let current = table.pending.get(key) == Some(&ticket.token);
        if current {
            table.pending.remove(key);
        }
        let Some(record) = found else { return };
        if !current || ticket.epoch != self.epoch.load(Ordering::SeqCst) || !self.serving() {
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

    /// Drops the shard's oldest entries until both of its bounds hold.
    fn evict(&self, table: &mut Table) {
        while table.entries.len() > self.max_entries || table.bytes > self.max_bytes {
            let Some((key, seq)) = table.order.pop_front() else {
                break;
            };
            if table.entries.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(old) = table.entries.remove(&key) {
                    table.bytes -= old.cost;
                    table.evictions += 1;
                }
            }
        }
        // Stale queue slots (replaced or invalidated entries) are dropped as they reach the
        // front; keep the queue from growing past twice the entries.
        if table.order.len() > 2 * table.entries.len() + 64 {
            let order = std::mem::take(&mut table.order);
            table.order = order
                .into_iter()
                .filter(|(k, s)| table.entries.get(k).is_some_and(|e| e.seq == *s))
                .collect();
        }
    }

    /// `key` changed elsewhere (an invalidation) or here (this instance's own write or
    /// delete): its entry goes, and a read of it in flight is not cached.
    pub(crate) fn invalidate(&self, key: &str) {
        let mut table = self.table(key);
        table.pending.remove(key);
        if let Some(old) = table.entries.remove(key) {
            table.bytes -= old.cost;
            table.invalidations += 1;
        }
    }

    /// Everything goes, and no read begun before is cached (a flush, a lost connection),
    /// counted as a reset.
    pub(crate) fn drop_all(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.clear();
    }

    /// [`drop_all`](Self::drop_all) without counting it (a tracker starting or ready: the
    /// cache holds nothing then, and reads begun before must not be kept).
    fn clear(&self) {
        // The epoch first: a reply checked under a shard's lock after this is refused, one
        // kept before it is cleared below.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in 0..self.shards.len() {
            let mut table = self.lock(shard);
            table.entries.clear();
            table.order.clear();
            table.pending.clear();
            table.bytes = 0;
        }
    }

    /// The counters and the current size.
    pub(crate) fn counts(&self) -> NearCacheStats {
        let mut counts = NearCacheStats {
            misses: self.idle_misses.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            serving: self.serving(),
            ..NearCacheStats::default()
        };
        for shard in 0..self.shards.len() {
            let table = self.lock(shard);
            counts.hits += table.hits;
            counts.misses += table.misses;
            counts.invalidations += table.invalidations;
            counts.evictions += table.evictions;
            counts.entries += table.entries.len() as u64;
            counts.bytes += table.bytes;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use session_core::backend::CodecId;

    use super::*;

    const NOW: u64 = 1_000_000;

    /// The same record for the same payload (fixed times), so two are comparable.
    fn rec(payload: &[u8]) -> Record {
        let mut r = Record::new(CodecId::RAW, payload.to_vec(), NOW + 60_000);
        r.meta.created_at = NOW;
        r.meta.updated_at = NOW;
        r
    }

    fn serving(entries: usize, bytes: u64) -> NearCache {
        let c = NearCache::new(entries, bytes);
        let t = c.tracker_added();
        c.tracker_ready(t, u64::MAX);
        c
    }

    fn fill(c: &NearCache, key: &str, r: &Record) {
        if let Some(t) = c.begin_read(key) {
            c.finish_read(t, key, Some(r));
        }
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
        let t = c.begin_read("k").unwrap();
        c.invalidate("k");
        c.finish_read(t, "k", Some(&rec(b"old")));
        assert_eq!(c.get("k", NOW), Lookup::Miss);
    }

    #[test]
    fn a_flush_or_a_lost_connection_drops_everything_and_in_flight_reads() {
        let c = serving(10, 1 << 20);
        fill(&c, "a", &rec(b"a"));
        let t = c.begin_read("b").unwrap();
        c.drop_all();
        c.finish_read(t, "b", Some(&rec(b"b")));
        assert_eq!((c.get("a", NOW), c.get("b", NOW)), (Lookup::Miss, Lookup::Miss));
        let only = 1;
        c.tracker_lost(only);
        fill(&c, "c", &rec(b"c"));
        assert!(
            c.begin_read("d").is_none(),
            "no read is registered while not serving"
        );
        c.tracker_ready(only, u64::MAX);
        let t = c.begin_read("d").unwrap();
        c.tracker_lost(only);
        c.tracker_ready(only, u64::MAX);
        c.finish_read(t, "d", Some(&rec(b"d")));
        assert_eq!(c.get("c", NOW), Lookup::Miss, "nothing is kept while not serving");
        assert_eq!(
            c.get("d", NOW),
            Lookup::Miss,
            "a read begun before tracking was set up is not kept"
        );
        fill(&c, "e", &rec(b"e"));
        assert_eq!(c.get("e", NOW), Lookup::Hit(rec(b"e")));
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
    fn a_sharded_cache_keeps_its_bounds() {
        let c = serving(16 * MIN_SHARD_ENTRIES, 1 << 30);
        assert_eq!(c.shards.len(), SHARDS);
        for i in 0..40_000 {
            fill(&c, &format!("p:ns:{i:08}"), &rec(b"x"));
        }
        let n = c.counts();
        assert!(n.entries <= (16 * MIN_SHARD_ENTRIES) as u64, "{n:?}");
        assert!(
            n.entries > (12 * MIN_SHARD_ENTRIES) as u64,
            "keys spread over the shards: {n:?}"
        );
        assert_eq!(n.entries + n.evictions, 40_000);
    }

    #[test]
    fn one_tracker_not_ready_stops_the_whole_cache() {
        let c = NearCache::new(10, 1 << 20);
        let first = c.tracker_added();
        c.tracker_ready(first, u64::MAX);
        let second = c.tracker_added();
        fill(&c, "a", &rec(b"a"));
        assert_eq!(
            c.get("a", NOW),
            Lookup::Miss,
            "a new primary's tracker is not ready yet"
        );
        c.tracker_ready(second, u64::MAX);
        fill(&c, "a", &rec(b"a"));
        assert_eq!(c.get("a", NOW), Lookup::Hit(rec(b"a")));
        c.tracker_lost(second);
        assert_eq!(c.get("a", NOW), Lookup::Miss);
        c.tracker_removed(second);
        fill(&c, "a", &rec(b"a"));
        assert_eq!(
            c.get("a", NOW),
            Lookup::Hit(rec(b"a")),
            "the removed tracker no longer counts"
        );
        c.tracker_removed(first);
        assert!(!c.serving(), "no tracker left");
    }

    #[test]
    fn an_expired_lease_stops_serving_until_renewed_and_keeps_the_entries() {
        let c = NearCache::new(10, 1 << 20);
        let t = c.tracker_added();
        c.tracker_ready(t, c.clock() + 60_000);
        fill(&c, "a", &rec(b"a"));
        assert_eq!(c.get("a", NOW), Lookup::Hit(rec(b"a")));
        c.renew(t, c.clock());
        assert_eq!(
            c.get("a", NOW),
            Lookup::Miss,
            "an unconfirmed stream serves nothing"
        );
        c.renew(t, c.clock() + 60_000);
        assert_eq!(
            c.get("a", NOW),
            Lookup::Hit(rec(b"a")),
            "a renewal confirms every invalidation before it: the copy is still true"
        );
    }

    #[test]
    fn a_later_read_of_the_same_key_wins_the_ticket() {
        let c = serving(10, 1 << 20);
        let first = c.begin_read("k").unwrap();
        let second = c.begin_read("k").unwrap();
        c.finish_read(first, "k", Some(&rec(b"first")));
        assert_eq!(c.get("k", NOW), Lookup::Miss);
        c.finish_read(second, "k", Some(&rec(b"second")));
        assert_eq!(c.get("k", NOW), Lookup::Hit(rec(b"second")));
    }
}
