//! The warm copy: the sessions this instance served while the primary was
//! healthy, with the primary's versions, and the sessions it deleted there
//! (the version of the tombstone its delete left), bounded by entries and
//! bytes.
//!
//! During an outage they stay readable and writable here: a change is
//! journaled against the warm copy's version (its *base*), so replay applies
//! it only if the primary still holds that version, and resolves a conflict
//! otherwise. A session deleted here reads as a miss, and writing it again
//! (a login after a logout under the same id) is based on its tombstone, so
//! replay stores it even over that tombstone. The copy may be stale — another
//! instance may have written since — which replay's rule settles (see
//! `session_core::backend::decide`).
//!
//! Sharded mutexes around hash tables; at a bound, the oldest insertions of
//! the shard go first (FIFO), counted as evictions. Payloads are copied in,
//! so a copy never pins a larger read buffer; the copy goes into the buffer
//! of the entry it replaces or evicts when nothing else holds that buffer and
//! it fits (a warm copy at its bound then allocates nothing per call).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use hashbrown::HashTable;
use session_core::backend::{cap_deadline, CodecId, Record, HEADER_LEN};
use session_core::{Bytes, Meta, SessionKey, Version};

/// A recycled buffer is used only for a payload of at least this share of its capacity, so
/// a copy never pins much more memory than its byte bound counts.
const RECYCLE_MIN_FILL: usize = 2;

/// Shards of the copy; a power of two.
const SHARDS: usize = 16;

/// What this instance knows of a session from the primary's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// The record as the primary holds it.
    Live(Record),
    /// Deleted by this instance: the primary holds a tombstone of this version (until
    /// `until`, ms, or until another delete replaces it).
    Gone {
        /// The tombstone's version.
        version: Version,
        /// How long this knowledge is kept, ms since the Unix epoch.
        until: u64,
    },
}

impl Known {
    /// The primary version a change made now would be based on.
    pub(crate) fn version(&self) -> Version {
        match self {
            Known::Live(r) => r.meta.version,
            Known::Gone { version, .. } => *version,
        }
    }

    fn deadline(&self) -> u64 {
        match self {
            Known::Live(r) => r.meta.deadline(),
            Known::Gone { until, .. } => *until,
        }
    }
}

/// One entry.
struct Slot {
    key: SessionKey,
    known: Known,
    /// The insertion this slot came from, matched against the FIFO.
    seq: u64,
}

struct Shard {
    table: HashTable<Slot>,
    /// (hash, seq) in insertion order; entries whose slot was replaced or removed are skipped.
    fifo: VecDeque<(u64, u64)>,
    bytes: u64,
}

/// The bounded copy.
pub(crate) struct WarmCopy {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_entries_per_shard: usize,
    max_bytes_per_shard: u64,
    next_seq: AtomicU64,
    evicted: AtomicU64,
}

/// What an entry costs against the byte bound: key, envelope header and payload (a deleted
/// session: key and header, as its tombstone).
fn cost(key: &SessionKey, known: &Known) -> u64 {
    match known {
        Known::Live(record) => cost_of(key, record.payload.len()),
        Known::Gone { .. } => cost_of(key, 0),
    }
}

/// The cost of an entry of `key` whose payload is `payload_len` bytes (0: a tombstone).
fn cost_of(key: &SessionKey, payload_len: usize) -> u64 {
    (key.ns().len() + key.id.as_str().len() + HEADER_LEN + payload_len) as u64
}

/// The payload buffer of an entry that is leaving, if nothing else holds it.
fn reusable(known: Known) -> Option<BytesMut> {
    match known {
        Known::Live(record) => record.payload.try_into_mut().ok(),
        Known::Gone { .. } => None,
    }
}

/// `payload` copied into `spare` when it fits without pinning much more than it holds,
/// else into a new buffer of its own size.
fn copy_into(spare: Option<BytesMut>, payload: &[u8]) -> Bytes {
    let mut buf = match spare {
        Some(b)
            if b.capacity() >= payload.len() && b.capacity() <= payload.len().max(64) * RECYCLE_MIN_FILL =>
        {
            b
        }
        _ => BytesMut::with_capacity(payload.len()),
    };
    buf.clear();
    buf.extend_from_slice(payload);
    buf.freeze()
}

/// What is being put: a live record (its payload to be copied in) or a delete.
enum Put<'a> {
    /// Metadata, codec and payload of the record.
    Live(Meta, CodecId, &'a [u8]),
    Gone {
        version: Version,
        until: u64,
    },
}

impl Put<'_> {
    fn cost(&self, key: &SessionKey) -> u64 {
        match self {
            Put::Live(_, _, payload) => cost_of(key, payload.len()),
            Put::Gone { .. } => cost_of(key, 0),
        }
    }

    fn into_known(self, spare: Option<BytesMut>) -> Known {
        match self {
            Put::Live(meta, codec, payload) => Known::Live(Record {
                meta,
                codec,
                payload: copy_into(spare, payload),
            }),
            Put::Gone { version, until } => Known::Gone { version, until },
        }
    }
}

impl WarmCopy {
    /// A copy of at most `max_entries` sessions and `max_bytes` bytes (0 entries: off).
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        WarmCopy {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: HashTable::new(),
                        fifo: VecDeque::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            max_entries_per_shard: max_entries.div_ceil(SHARDS),
            max_bytes_per_shard: max_bytes.div_ceil(SHARDS as u64),
            next_seq: AtomicU64::new(1),
            evicted: AtomicU64::new(0),
        }
    }

    /// Whether the copy keeps anything.
    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.max_entries_per_shard > 0
    }

    /// Entries evicted to stay within the bounds, since start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The keys of live copies for which `matches` holds (one pass over every shard: for a
    /// revocation, not a request path).
    pub(crate) fn live_matching(
        &self,
        mut matches: impl FnMut(&SessionKey, &Record) -> bool,
    ) -> Vec<SessionKey> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            // Copied out (a reference count each) so that `matches`, which may open sealed
            // records, runs without the shard's lock.
            let live: Vec<(SessionKey, Record)> = lock(shard)
                .table
                .iter()
                .filter_map(|slot| match &slot.known {
                    Known::Live(record) => Some((slot.key.clone(), record.clone())),
                    Known::Gone { .. } => None,
                })
                .collect();
            keys.extend(
                live.into_iter()
                    .filter(|(key, record)| matches(key, record))
                    .map(|(key, _)| key),
            );
        }
        keys
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(hash as usize) & (SHARDS - 1)])
    }

    /// Keeps (or replaces) the copy of `key`: the record as the primary holds it.
    pub(crate) fn put(&self, key: &SessionKey, record: &Record) {
        self.put_written(key, record.meta, record);
    }

    /// Keeps (or replaces) the copy of `key` after a write of `record` that the primary
    /// stored with `meta`.
    pub(crate) fn put_written(&self, key: &SessionKey, meta: Meta, record: &Record) {
        if !self.enabled() {
            return;
        }
        self.insert(key, Put::Live(meta, record.codec, &record.payload));
    }

    /// Remembers that this instance deleted `key` in the primary, leaving a tombstone of
    /// `version`; kept until `until` (ms) at most.
    pub(crate) fn put_gone(&self, key: &SessionKey, version: Version, until: u64) {
        if !self.enabled() {
            return;
        }
        self.insert(key, Put::Gone { version, until });
    }

    fn insert(&self, key: &SessionKey, put: Put<'_>) {
        let new_cost = put.cost(key);
        if new_cost > self.max_bytes_per_shard {
            self.remove(key);
            return;
        }
        let hash = self.hasher.hash_one(key);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(hash);
        let shard = &mut *shard;
        // Replaced in place: the old payload's buffer takes the new one if it can.
        if let Some(slot) = shard.table.find_mut(hash, |s| &s.key == key) {
            let old_cost = cost(&slot.key, &slot.known);
            let old = std::mem::replace(
                &mut slot.known,
                Known::Gone {
                    version: Version::NONE,
                    until: 0,
                },
            );
            slot.known = put.into_known(reusable(old));
            slot.seq = seq;
            shard.bytes = shard.bytes - old_cost + new_cost;
            shard.fifo.push_back((hash, seq));
            self.make_room(shard, 0, 0);
            return;
        }
        // New: room first, so that an evicted entry's buffer can take the copy.
        let spare = self.make_room(shard, 1, new_cost);
        shard.table.insert_unique(
            hash,
            Slot {
                key: key.clone(),
                known: put.into_known(spare),
                seq,
            },
            |s| self.hasher.hash_one(&s.key),
        );
        shard.bytes += new_cost;
        shard.fifo.push_back((hash, seq));
    }

    /// Evicts the oldest insertions until the shard has room for `entries` more entries of
    /// `bytes` more bytes, and drops stale FIFO entries so the queue stays proportional to
    /// the table. Returns the payload buffer of the last live entry evicted, if nothing else
    /// holds it.
    fn make_room(&self, shard: &mut Shard, entries: usize, bytes: u64) -> Option<BytesMut> {
        let mut spare = None;
        while shard.table.len() + entries > self.max_entries_per_shard
            || shard.bytes + bytes > self.max_bytes_per_shard
        {
            let Some((hash, seq)) = shard.fifo.pop_front() else {
                break;
            };
            if let Ok(entry) = shard.table.find_entry(hash, |s| s.seq == seq) {
                let (slot, _) = entry.remove();
                shard.bytes -= cost(&slot.key, &slot.known);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                if let Some(buf) = reusable(slot.known) {
                    spare = Some(buf);
                }
            }
        }
        if shard.fifo.len() > 2 * shard.table.len() + 16 {
            let table = &shard.table;
            shard
                .fifo
                .retain(|&(hash, seq)| table.find(hash, |s| s.seq == seq).is_some());
        }
        spare
    }

    /// What is known of `key`, if anything and not past its deadline at `now` (ms).
    pub(crate) fn known(&self, key: &SessionKey, now: u64) -> Option<Known> {
        if !self.enabled() {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let slot = shard.table.find(hash, |s| &s.key == key)?;
        (slot.known.deadline() > now).then(|| slot.known.clone())
    }

    /// The copy of `key`, if it is a live session not past its deadline at `now` (ms).
    pub(crate) fn get(&self, key: &SessionKey, now: u64) -> Option<Record> {
        match self.known(key, now)? {
            Known::Live(record) => Some(record),
            Known::Gone { .. } => None,
        }
    }

    /// Moves the copy's deadline (a `touch` the primary acknowledged).
    pub(crate) fn retime(&self, key: &SessionKey, expires_at: u64) {
        if !self.enabled() {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        if let Some(Slot {
            known: Known::Live(record),
            ..
        }) = shard.table.find_mut(hash, |s| &s.key == key)
        {
            let meta = &mut record.meta;
            meta.expires_at = cap_deadline(expires_at, meta.max_expires_at);
        }
    }

    /// Forgets `key` (moved, or no longer known to be current).
    pub(crate) fn remove(&self, key: &SessionKey) {
        if !self.enabled() {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let mut shard = self.shard(hash);
        if let Ok(entry) = shard.table.find_entry(hash, |s| &s.key == key) {
            let (slot, _) = entry.remove();
            shard.bytes -= cost(&slot.key, &slot.known);
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use session_core::backend::CodecId;
    use session_core::{Namespace, SessionId, Version};

    fn key() -> SessionKey {
        SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
    }

    fn rec(payload: &[u8], version: u64) -> Record {
        let mut r = Record::new(CodecId::RAW, payload.to_vec(), u64::MAX / 2);
        r.meta.version = Version::from_u64(version);
        r
    }

    #[test]
    fn keeps_replaces_and_forgets() {
        let w = WarmCopy::new(100, 1 << 20);
        let k = key();
        w.put(&k, &rec(b"a", 1));
        assert_eq!(w.get(&k, 0).unwrap().meta.version, Version::from_u64(1));
        w.put(&k, &rec(b"b", 2));
        assert_eq!(&w.get(&k, 0).unwrap().payload[..], b"b");
        assert_eq!(w.len(), 1);
        w.remove(&k);
        assert!(w.get(&k, 0).is_none());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn bounds_hold_and_evictions_are_counted() {
        let w = WarmCopy::new(SHARDS * 4, 1 << 30);
        for i in 0..1000 {
            w.put(&key(), &rec(b"x", i));
        }
        assert!(w.len() <= SHARDS * 4, "{}", w.len());
        assert_eq!(w.evicted(), 1000 - w.len() as u64);
        // Bytes: a shard of 1 KiB holds at most a few of these.
        let w = WarmCopy::new(10_000, (SHARDS * 1024) as u64);
        for i in 0..1000 {
            w.put(&key(), &rec(&[0u8; 200], i));
        }
        for s in w.shards.iter() {
            assert!(lock(s).bytes <= 1024);
        }
        // Replacing one key over and over keeps the queue short.
        let k = key();
        for i in 0..10_000 {
            w.put(&k, &rec(b"y", i));
        }
        assert!(w.shards.iter().all(|s| lock(s).fifo.len() < 2_100));
    }

    #[test]
    fn buffers_are_recycled_only_when_unshared_and_fitting() {
        // One entry per shard at most: every new key evicts.
        let w = WarmCopy::new(SHARDS, 1 << 20);
        let k = key();
        w.put(&k, &rec(&[1u8; 1000], 1));
        let first = w.get(&k, 0).unwrap().payload.as_ptr();
        // Replaced while nothing holds the old copy: the same buffer.
        w.put(&k, &rec(&[2u8; 990], 2));
        let second = w.get(&k, 0).unwrap();
        assert_eq!(second.payload.as_ptr(), first);
        assert_eq!(&second.payload[..], &[2u8; 990][..]);
        // Held by a reader: a new buffer, and the reader's copy is left as it was.
        w.put(&k, &rec(&[3u8; 990], 3));
        assert_eq!(&second.payload[..], &[2u8; 990][..]);
        assert_ne!(w.get(&k, 0).unwrap().payload.as_ptr(), first);
        // Far smaller than the buffer: not recycled (it would pin the rest).
        let held = w.get(&k, 0).unwrap().payload.as_ptr();
        w.put(&k, &rec(&[4u8; 10], 4));
        assert_ne!(w.get(&k, 0).unwrap().payload.as_ptr(), held);
        // Eviction: many keys through a full copy keep every payload intact.
        for i in 0..200u8 {
            let k = key();
            w.put(&k, &rec(&[i; 700], u64::from(i)));
            assert_eq!(&w.get(&k, 0).unwrap().payload[..], &[i; 700][..]);
        }
        assert!(w.len() <= SHARDS);
        for s in w.shards.iter() {
            let s = lock(s);
            let want: u64 = s.table.iter().map(|slot| cost(&slot.key, &slot.known)).sum();
            assert_eq!(s.bytes, want);
        }
    }

    #[test]
    fn expired_copies_are_not_served_and_off_keeps_nothing() {
        let w = WarmCopy::new(10, 1 << 20);
        let k = key();
        let mut r = rec(b"a", 1);
        r.meta.expires_at = 1_000;
        w.put(&k, &r);
        assert!(w.get(&k, 999).is_some());
        assert!(w.get(&k, 1_000).is_none());
        w.retime(&k, 5_000);
        assert!(w.get(&k, 1_000).is_some());
        let off = WarmCopy::new(0, 0);
        off.put(&k, &r);
        assert!(off.get(&k, 0).is_none());
    }

    #[test]
    fn a_deleted_session_is_known_gone_until_its_deadline() {
        let w = WarmCopy::new(10, 1 << 20);
        let k = key();
        w.put(&k, &rec(b"a", 1));
        w.put_gone(&k, Version::from_u64(9), 2_000);
        assert!(w.get(&k, 0).is_none(), "no live copy");
        assert_eq!(
            w.known(&k, 1_999).map(|k| k.version()),
            Some(Version::from_u64(9))
        );
        assert!(w.known(&k, 2_000).is_none());
        w.retime(&k, 9_000);
        assert!(
            w.known(&k, 2_000).is_none(),
            "touch does not revive a deleted session"
        );
        assert_eq!(w.len(), 1);
        for s in w.shards.iter() {
            let s = lock(s);
            let want: u64 = s.table.iter().map(|slot| cost(&slot.key, &slot.known)).sum();
            assert_eq!(s.bytes, want);
        }
    }
}
