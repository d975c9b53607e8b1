//! [`MemoryStore`] and its [`SessionStore`] implementation.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use session_core::backend::{
    cap_deadline, check_size, decide, stamp, Change, Decision, Reconciled, Record, Stored, Tombstone,
};
use session_core::{
    async_trait, Clock, Error, Health, HealthStatus, KeyPrefix, Meta, Namespace, Result, SessionId,
    SessionKey, SessionStore, StoreOptions, StoreStats, Version, MAX_ID_LEN, MAX_NAMESPACE_LEN,
};

use crate::config::{AtCapacity, MemoryConfig};
use crate::shard::{charge, deadline, sample_soonest, Entry, Shard, State, Value};

/// The backend name reported by [`SessionStore::backend`].
const BACKEND: &str = "memory";

/// Attempts a write makes to find room in other shards before giving up.
const MAX_ROUNDS: usize = 32;

/// Fewest shards, whatever the core count.
const MIN_SHARDS: usize = 32;

/// Most shards.
const MAX_SHARDS: usize = 1024;

/// A table is shrunk by the sweeper when under a quarter full and above this capacity.
const SHRINK_ABOVE: usize = 1024;

/// An in-process [`SessionStore`]: sharded, bounded, actively expiring.
///
/// Create it with [`MemoryStore::new`] (or [`MemoryStore::default`]) and share
/// it as `Arc<MemoryStore>` or `Arc<dyn SessionStore>`. Two stores never
/// share sessions. See the [crate documentation](crate) for the design, the
/// policy at the bounds and the background sweeper.
pub struct MemoryStore {
    inner: Arc<Inner>,
    sweeper: Option<tokio::task::AbortHandle>,
}

/// The state shared by the store and its sweeper.
pub(crate) struct Inner {
    shards: Box<[Shard]>,
    /// `shards.len() - 1`; the length is a power of two.
    mask: usize,
    hasher: RandomState,
    prefix: KeyPrefix,
    /// The shared size limit (`max_session_bytes`).
    max_session_bytes: usize,
    config: MemoryConfig,
    /// The clock expiry is judged by.
    pub(crate) clock: Clock,
    usage: Usage,
    evicted: AtomicU64,
    rejected: AtomicU64,
    expired: AtomicU64,
    random: AtomicU64,
}

/// The gauges checked against the bounds, on their own cache line.
#[repr(align(128))]
struct Usage {
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// What a write operation decided, given what it found.
pub(crate) enum Outcome<'a, R> {
    /// Store this value and answer `R`.
    Write(Value<'a>, R),
    /// Keep the stored session's payload with this metadata (`touch`), and answer `R`.
    Retime(Meta, R),
    /// Remove what the key holds (no tombstone) and answer `R`.
    Remove(R),
    /// Write nothing and answer `R`.
    Keep(R),
}

/// Why an entry is removed, for the counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// Deleted or moved by a caller.
    Caller,
    /// Past its deadline.
    Expired,
    /// To make room.
    Evicted,
}

impl MemoryStore {
    /// Builds a store from validated settings.
    ///
    /// Called inside a Tokio runtime (with timers enabled), it spawns the
    /// background sweeper on it; the task holds only a weak reference and ends
    /// when the store is dropped. Called outside a runtime, there is no
    /// sweeper: expired entries are invisible all the same, and are reclaimed
    /// when a write or load meets them, when a write needs room, or by
    /// [`sweep_now`](Self::sweep_now).
    ///
    /// The key prefix and the size limit are the defaults (`session:`, 1 MiB);
    /// [`with_options`](Self::with_options) sets them.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad key, e.g. `memory.max_entries`.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        MemoryStore::with_clock(config, StoreOptions::default(), Clock::system())
    }

    /// As [`new`](Self::new), with the shared key prefix and size limit.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_options(config: MemoryConfig, options: StoreOptions) -> Result<Self> {
        MemoryStore::with_clock(config, options, Clock::system())
    }

    /// As [`with_options`](Self::with_options), judging expiry by `clock`
    /// instead of the system clock (tests of skew and expiry without sleeping).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_clock(config: MemoryConfig, options: StoreOptions, clock: Clock) -> Result<Self> {
        config.validate(&options)?;
        let prefix = options.key_prefix().clone();
        let max_session_bytes = options.max_session_bytes();
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let n = cores
            .saturating_mul(4)
            .next_power_of_two()
            .clamp(MIN_SHARDS, MAX_SHARDS);
        let hasher = RandomState::new();
        let seed = hasher.hash_one(0x5eed_u64);
        let inner = Arc::new(Inner {
            shards: (0..n).map(|_| Shard::new()).collect(),
            mask: n - 1,
            hasher,
            prefix,
            max_session_bytes,
            config,
            clock,
            usage: Usage {
                entries: AtomicU64::new(0),
                bytes: AtomicU64::new(0),
            },
            evicted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            random: AtomicU64::new(seed),
        });
        let sweeper = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let period = Duration::from_millis(inner.config.sweep_interval_ms);
            rt.spawn(crate::sweeper::run(Arc::downgrade(&inner), period))
                .abort_handle()
        });
        Ok(MemoryStore { inner, sweeper })
    }

    /// A store with the default settings ([`MemoryConfig::default`]).
    #[allow(
        clippy::expect_used,
        reason = "the defaults are constants, valid by a unit test; no input reaches this"
    )]
    pub fn new_default() -> Self {
        MemoryStore::new(MemoryConfig::default()).expect("the default memory config is valid")
    }

    /// The settings the store was built with.
    pub fn config(&self) -> &MemoryConfig {
        &self.inner.config
    }

    /// The key prefix of every session of this store.
    pub fn key_prefix(&self) -> &KeyPrefix {
        &self.inner.prefix
    }

    /// Whether a background sweeper task was started (the store was built
    /// inside a Tokio runtime).
    pub fn has_sweeper(&self) -> bool {
        self.sweeper.is_some()
    }

    /// Reclaims every expired entry now, shard by shard, and returns how many
    /// were removed. The background sweeper does the same periodically; call
    /// this for a store built outside a runtime.
    pub fn sweep_now(&self) -> u64 {
        let now = self.inner.clock.now_ms();
        (0..self.inner.shards.len())
            .map(|i| self.inner.sweep_shard(i, now))
            .sum()
    }

    /// The number of shards (a power of two, at least 32).
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// A store without a sweeper even inside a runtime (unit tests).
    #[cfg(test)]
    pub(crate) fn new_detached(config: MemoryConfig) -> Self {
        let mut store = MemoryStore::new(config).unwrap_or_else(|e| panic!("{e}"));
        if let Some(sweeper) = store.sweeper.take() {
            sweeper.abort();
        }
        store
    }

    /// The shared state (unit tests).
    #[cfg(test)]
    pub(crate) fn inner_for_tests(&self) -> Arc<Inner> {
        Arc::clone(&self.inner)
    }

    /// The clock expiry is judged by.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// The bytes stored under `key` as an envelope (a tombstone's included) or as planted, if
    /// not past its deadline, for `RawAccess`.
    #[cfg(feature = "testing")]
    pub(crate) fn raw_bytes(&self, key: &SessionKey) -> Option<session_core::Bytes> {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.inner.hash(namespace, id);
        let table = self.inner.shards[self.inner.shard_of(hash)].read();
        let entry = table.find(hash, |e| e.is(namespace, id))?;
        if entry.deadline() <= self.inner.clock.now_ms() {
            return None;
        }
        Some(entry.envelope())
    }

    /// Stores `value` under `key` as given, for `RawAccess`.
    #[cfg(feature = "testing")]
    pub(crate) fn put_value(&self, key: &SessionKey, value: Value<'_>) -> Result<()> {
        let mut value = Some(value);
        self.inner.apply(key, |_, _| match value.take() {
            Some(v) => Ok(Outcome::Write(v, ())),
            None => Ok(Outcome::Keep(())),
        })
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new_default()
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("key_prefix", &self.inner.prefix)
            .field("shards", &self.inner.shards.len())
            .field("entries", &self.inner.usage.entries.load(Ordering::Relaxed))
            .field("bytes", &self.inner.usage.bytes.load(Ordering::Relaxed))
            .field("sweeper", &self.sweeper.is_some())
            .finish()
    }
}

impl Inner {
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The hash of `{namespace}:{id}`. Stored keys are hashed in the same
    /// pieces (see [`Inner::hash_entry`]).
    #[inline]
    fn hash(&self, namespace: &str, id: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        // One `write` of the whole key is cheaper than three of its parts. Validated keys
        // (a namespace of at most 32 bytes, an id of at most 128) always fit the buffer.
        let len = namespace.len() + 1 + id.len();
        let mut buf = [0u8; 1 + MAX_NAMESPACE_LEN + MAX_ID_LEN];
        if let Some(key) = buf.get_mut(..len) {
            key[..namespace.len()].copy_from_slice(namespace.as_bytes());
            key[namespace.len()] = b':';
            key[namespace.len() + 1..].copy_from_slice(id.as_bytes());
            h.write(key);
        } else {
            h.write(namespace.as_bytes());
            h.write(b":");
            h.write(id.as_bytes());
        }
        h.finish()
    }

    fn hash_entry(&self, entry: &Entry) -> u64 {
        let (namespace, id) = entry.parts();
        self.hash(namespace, id)
    }

    /// The shard of a hash: bits the table itself does not use for small tables.
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 40) as usize) & self.mask
    }

    fn random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, and only used at capacity.
        let mut z = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn prefix_len(&self) -> usize {
        self.prefix.as_str().len()
    }

    // ------------------------------------------------------------ accounting

    /// Takes room for a write: one more entry if `new_entry`, and the change
    /// from `old` to `new` charged bytes. `false` (and nothing taken) if a
    /// bound would be passed.
    fn reserve(&self, new_entry: bool, old: u64, new: u64) -> bool {
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
    fn would_fit(&self, new_entry: bool, old: u64, new: u64) -> bool {
        let entries = self.usage.entries.load(Ordering::Relaxed) + u64::from(new_entry);
        let bytes = self
            .usage
            .bytes
            .load(Ordering::Relaxed)
            .saturating_add(new.saturating_sub(old));
        entries <= self.config.max_entries && bytes <= self.config.max_bytes
    }

    /// Gives back the room of removed entries.
    fn release(&self, entries: u64, bytes: u64) {
        self.usage.entries.fetch_sub(entries, Ordering::Relaxed);
        self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn count_removal(&self, why: Removal, n: u64) {
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
    fn remove_at(&self, table: &mut HashTable<Entry>, index: usize, why: Removal) -> Option<Entry> {
        let (entry, _) = table.get_bucket_entry(index).ok()?.remove();
        self.release(1, entry.charge(self.prefix_len()));
        self.count_removal(why, 1);
        Some(entry)
    }

    /// Removes every expired entry of a locked shard; returns how many.
    fn reclaim(&self, shard: &Shard, table: &mut HashTable<Entry>, now: u64) -> u64 {
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
    fn make_room_in(
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
    fn make_room_elsewhere(&self, skip: usize, new_entry: bool, old: u64, new: u64, now: u64) -> bool {
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

    fn full(&self) -> Error {
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

    /// The one write path: under the key's shard lock, finds the entry,
    /// reclaims it if expired, lets `decide` choose, and writes within the
    /// bounds. `decide` may run again (on a fresh look) if room had to be made
    /// in other shards.
    pub(crate) fn apply<'a, R>(
        &self,
        key: &SessionKey,
        decide: impl FnMut(State, Option<&Entry>) -> Result<Outcome<'a, R>>,
    ) -> Result<R> {
        self.apply_at(key, self.clock.now_ms(), decide)
    }

    /// [`apply`](Self::apply), judging expiry at `now` (the time `decide` judges by too).
    fn apply_at<'a, R>(
        &self,
        key: &SessionKey,
        now: u64,
        mut decide: impl FnMut(State, Option<&Entry>) -> Result<Outcome<'a, R>>,
    ) -> Result<R> {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let si = self.shard_of(hash);
        let shard = &self.shards[si];
        let prefix_len = self.prefix_len();
        for _ in 0..MAX_ROUNDS {
            let mut table = shard.write();
            let mut index = table.find_bucket_index(hash, |e| e.is(namespace, id));
            let state = match index.and_then(|i| table.get_bucket(i)) {
                Some(e) => e.state(namespace, now),
                None => State::Absent,
            };
            if matches!(state, State::Expired) {
                if let Some(i) = index.take() {
                    self.remove_at(&mut table, i, Removal::Expired);
                }
            }
            let current = index.and_then(|i| table.get_bucket(i));
            let (value, meta, answer) = match decide(state, current)? {
                Outcome::Keep(answer) => return Ok(answer),
                Outcome::Remove(answer) => {
                    let old = index.and_then(|i| self.remove_at(&mut table, i, Removal::Caller));
                    drop(table);
                    drop(old);
                    return Ok(answer);
                }
                Outcome::Write(value, answer) => (Some(value), None, answer),
                // Retiming needs a session to retime.
                Outcome::Retime(_, answer) if index.is_none() => return Ok(answer),
                Outcome::Retime(meta, answer) => (None, Some(meta), answer),
            };
            let deadline = match (&value, &meta) {
                (Some(v), _) => v.deadline(),
                (None, Some(m)) => deadline(m),
                (None, None) => return Ok(answer),
            };
            if deadline <= now {
                // Written already expired: the session no longer exists.
                let old = index.and_then(|i| self.remove_at(&mut table, i, Removal::Expired));
                drop(table);
                drop(old);
                return Ok(answer);
            }
            let old = index
                .and_then(|i| table.get_bucket(i))
                .map_or(0, |e| e.charge(prefix_len));
            let new = match &value {
                Some(v) => charge(prefix_len, namespace.len() + 1 + id.len(), v),
                // Retiming keeps the key and the payload.
                None => old,
            };
            let new_entry = index.is_none();
            if self.reserve(new_entry, old, new)
                || self.make_room_in(shard, &mut table, index, new_entry, old, new, now)
            {
                // In place when the entry's allocation is free and large enough; otherwise a
                // new allocation, the old one freed after the lock is released.
                let replaced = match (index.and_then(|i| table.get_bucket_mut(i)), &value, &meta) {
                    (Some(e), Some(v), _) => {
                        if e.overwrite(v) {
                            None
                        } else {
                            Some(std::mem::replace(e, Entry::new(namespace, id, v)))
                        }
                    }
                    (Some(e), None, Some(m)) => {
                        if e.retime(m) {
                            None
                        } else {
                            let rebuilt = e.rebuilt(namespace, id, Some(*m));
                            Some(std::mem::replace(e, rebuilt))
                        }
                    }
                    (Some(_), None, None) => None,
                    (None, Some(v), _) => {
                        table.insert_unique(hash, Entry::new(namespace, id, v), |e| self.hash_entry(e));
                        None
                    }
                    (None, None, _) => None,
                };
                shard.note_deadline(deadline);
                drop(table);
                drop(replaced);
                return Ok(answer);
            }
            drop(table);
            if !self.make_room_elsewhere(si, new_entry, old, new, now) {
                break;
            }
        }
        Err(self.full())
    }

    fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let shard = &self.shards[self.shard_of(hash)];
        let now = self.clock.now_ms();
        let table = shard.read();
        let Some(entry) = table.find(hash, |e| e.is(namespace, id)) else {
            return Ok(None);
        };
        if entry.deadline() <= now {
            drop(table);
            self.reclaim_key(key, hash, now);
            return Ok(None);
        }
        // A tombstone reads as absent.
        let record = entry.to_record(namespace);
        drop(table);
        // A raw value's envelope has its own deadline.
        match record {
            Ok(Some(r)) if deadline(&r.meta) <= now => Ok(None),
            Ok(r) => Ok(r),
            Err(e) => Err(e),
        }
    }

    /// Removes `key` if it is still expired (lazy reclaim after a load met it).
    fn reclaim_key(&self, key: &SessionKey, hash: u64, now: u64) {
        let (namespace, id) = (key.ns(), key.id.as_str());
        let mut table = self.shards[self.shard_of(hash)].write();
        if let Some(i) = table.find_bucket_index(hash, |e| e.is(namespace, id)) {
            if table.get_bucket(i).is_some_and(|e| e.deadline() <= now) {
                let old = self.remove_at(&mut table, i, Removal::Expired);
                drop(table);
                drop(old);
            }
        }
    }

    fn delete(&self, key: &SessionKey) -> Result<bool> {
        if self.config.keeps_tombstones() {
            let now = self.clock.now_ms();
            return self.delete_leaving_tombstone(key, Tombstone::new(now, now));
        }
        let (namespace, id) = (key.ns(), key.id.as_str());
        let hash = self.hash(namespace, id);
        let now = self.clock.now_ms();
        let mut table = self.shards[self.shard_of(hash)].write();
        let Some(i) = table.find_bucket_index(hash, |e| e.is(namespace, id)) else {
            return Ok(false);
        };
        let why = match table.get_bucket(i).map(|e| e.state(namespace, now)) {
            // A replayed delete's tombstone: no session to delete, and the tombstone stays (a
            // replayed write must still not pass it).
            Some(State::Tombstone(_)) => return Ok(false),
            Some(State::Expired) => Removal::Expired,
            _ => Removal::Caller,
        };
        let old = self.remove_at(&mut table, i, why);
        drop(table);
        Ok(old.is_some() && why == Removal::Caller)
    }

    /// `delete` in tombstone mode: the key's session (or nothing) is replaced by a tombstone, by
    /// the reconciliation rule — the session's own deadline, or `tombstone_ttl_ms` from now for
    /// a key holding none; a tombstone already there stays, extended to that if it is later.
    /// `true` if a live session (or a value that is not one, as a plain delete) was there.
    ///
    /// The tombstone stored carries `given`'s version and time; its lifetime is this store's.
    fn delete_leaving_tombstone(&self, key: &SessionKey, given: Tombstone) -> Result<bool> {
        let now = self.clock.now_ms();
        let tombstone = Tombstone {
            until: now.saturating_add(self.config.tombstone_ttl_ms),
            ..given
        };
        let change = Change::Delete(tombstone);
        self.apply_at(key, now, |state, current| {
            let (stored, deleted) = match state {
                State::Live(meta) => (Stored::Live(meta), true),
                State::Tombstone(meta) => (Stored::Tombstone(meta), false),
                State::Absent | State::Expired => (Stored::Absent, false),
                // Bytes that are not an envelope: deleted like a session, their own deadline kept.
                State::Corrupt(_) => {
                    let until = current.map_or(tombstone.until, Entry::deadline);
                    let meta = tombstone.meta(until);
                    return Ok(Outcome::Write(Value::Tomb { meta }, true));
                }
            };
            let (decision, _) = decide(stored, Version::NONE, &change, now);
            outcome(decision, &change, stored, deleted)
        })
    }

    /// [`SessionStore::reconcile`], after the size check: under the key's shard lock, reads what
    /// is stored, lets `session_core`'s rule decide, and acts on it within the bounds.
    fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        let now = self.clock.now_ms();
        self.apply_at(key, now, |state, _| {
            let stored = match state {
                State::Absent | State::Expired => Stored::Absent,
                State::Tombstone(meta) => Stored::Tombstone(meta),
                State::Live(meta) => Stored::Live(meta),
                // Left as it is.
                State::Corrupt(e) => return Err(e),
            };
            let (decision, reconciled) = decide(stored, base, &change, now);
            outcome(decision, &change, stored, reconciled)
        })
    }

    fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let namespace = key.ns();
        let now = self.clock.now_ms();
        let prefix_len = self.prefix_len();

        // 1. Take the session out of its old key, atomically. Its room stays
        //    reserved while it moves.
        let old_hash = self.hash(namespace, key.id.as_str());
        let old_shard = &self.shards[self.shard_of(old_hash)];
        let (meta, entry) = {
            let mut table = old_shard.write();
            let Some(i) = table.find_bucket_index(old_hash, |e| e.is(namespace, key.id.as_str())) else {
                return Err(Error::not_found(namespace));
            };
            let state = match table.get_bucket(i) {
                Some(e) => e.state(namespace, now),
                None => State::Absent,
            };
            match state {
                State::Live(meta) => match table.get_bucket_entry(i) {
                    Ok(occupied) => (meta, occupied.remove().0),
                    Err(_) => return Err(Error::not_found(namespace)),
                },
                State::Corrupt(e) => return Err(e),
                State::Expired => {
                    self.remove_at(&mut table, i, Removal::Expired);
                    return Err(Error::not_found(namespace));
                }
                // A deleted session: nothing to move, and the tombstone stays.
                State::Tombstone(_) | State::Absent => return Err(Error::not_found(namespace)),
            }
        };
        let old_charge = entry.charge(prefix_len);
        let deadline = entry.deadline();

        // 2. Insert it under the new id unless a live session is there.
        let new_hash = self.hash(namespace, new_id.as_str());
        let new_shard = &self.shards[self.shard_of(new_hash)];
        let moved = entry.rebuilt(namespace, new_id.as_str(), None);
        drop(entry);
        let moved = {
            let mut table = new_shard.write();
            let found = table.find_bucket_index(new_hash, |e| e.is(namespace, new_id.as_str()));
            let taken = match found {
                Some(i) => match table.get_bucket(i).map(|e| e.state(namespace, now)) {
                    Some(State::Expired) => {
                        self.remove_at(&mut table, i, Removal::Expired);
                        false
                    }
                    // A deleted session's tombstone: the id is free, as it is for `create`.
                    Some(State::Tombstone(_)) => {
                        self.remove_at(&mut table, i, Removal::Caller);
                        false
                    }
                    // The new id holds this very write (an interrupted move being retried):
                    // the move is complete once the old id is gone, as it now is.
                    Some(State::Live(there)) if there.version == meta.version => {
                        self.release(1, old_charge);
                        drop(table);
                        drop(moved);
                        self.leave_rotated(key, deadline);
                        return Ok(there);
                    }
                    Some(_) => true,
                    None => false,
                },
                None => false,
            };
            if !taken {
                // The key length may differ: adjust the reserved bytes.
                self.adjust_bytes(old_charge, moved.charge(prefix_len));
                table.insert_unique(new_hash, moved, |e| self.hash_entry(e));
                new_shard.note_deadline(deadline);
                drop(table);
                self.leave_rotated(key, deadline);
                return Ok(meta);
            }
            moved
        };

        // 3. The new id is taken: put the session back under its old id,
        //    unless a live session (or a delete's tombstone) was written there meanwhile.
        let back = moved.rebuilt(namespace, key.id.as_str(), None);
        drop(moved);
        let mut table = old_shard.write();
        let found = table.find_bucket_index(old_hash, |e| e.is(namespace, key.id.as_str()));
        let occupied = match found {
            Some(i) => match table.get_bucket(i).map(|e| e.state(namespace, now)) {
                Some(State::Expired) => {
                    self.remove_at(&mut table, i, Removal::Expired);
                    false
                }
                Some(_) => true,
                None => false,
            },
            None => false,
        };
        if occupied {
            self.release(1, old_charge);
            drop(table);
            drop(back);
        } else {
            table.insert_unique(old_hash, back, |e| self.hash_entry(e));
            old_shard.note_deadline(deadline);
        }
        Err(Error::AlreadyExists {
            namespace: namespace.to_owned(),
        })
    }

    /// After a rotate moved the session away from `key`: a store that keeps tombstones leaves
    /// one there (a token of its own, not the session's, so a replayed write based on the
    /// session as it was loses to it as to a logout; the session's deadline), unless something
    /// was written under the old id meanwhile. A tombstone the bounds refuse is not left: the
    /// session has moved either way.
    fn leave_rotated(&self, key: &SessionKey, deadline: u64) {
        if !self.config.keeps_tombstones() {
            return;
        }
        let now = self.clock.now_ms();
        let meta = Tombstone::new(now, deadline).meta(deadline);
        let _ = self.apply_at(key, now, |state, _| {
            Ok(match state {
                State::Absent | State::Expired => Outcome::Write(Value::Tomb { meta }, ()),
                _ => Outcome::Keep(()),
            })
        });
    }

    /// Moves the reserved bytes of an entry from `old` to `new` (no bound check:
    /// a rotated key differs only in its id's length).
    fn adjust_bytes(&self, old: u64, new: u64) {
        if new > old {
            self.usage.bytes.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.usage.bytes.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    fn count(&self, namespace: &Namespace) -> u64 {
        let namespace = namespace.as_str();
        let now = self.clock.now_ms();
        let mut n = 0u64;
        for shard in self.shards.iter() {
            let table = shard.read();
            n += table
                .iter()
                .filter(|e| e.deadline() > now && e.parts().0 == namespace && !e.is_tombstone())
                .count() as u64;
        }
        n
    }

    fn stats(&self) -> StoreStats {
        let mut stats = StoreStats::new(BACKEND);
        stats.entries = Some(self.usage.entries.load(Ordering::Relaxed));
        stats.bytes = Some(self.usage.bytes.load(Ordering::Relaxed));
        stats.evicted = self.evicted.load(Ordering::Relaxed);
        stats.rejected = self.rejected.load(Ordering::Relaxed);
        stats.expired = self.expired.load(Ordering::Relaxed);
        stats.extra = vec![
            ("max_entries", self.config.max_entries),
            ("max_bytes", self.config.max_bytes),
            ("shards", self.shards.len() as u64),
        ];
        stats
    }
}

/// What a write does on `session_core`'s reconciliation `decision` for `change`, given what
/// was `stored`, answering `answer`.
fn outcome<'a, R>(
    decision: Decision,
    change: &Change<'a>,
    stored: Stored,
    answer: R,
) -> Result<Outcome<'a, R>> {
    Ok(match (decision, *change, stored) {
        (Decision::Keep, _, _) => Outcome::Keep(answer),
        (Decision::Remove, _, _) => Outcome::Remove(answer),
        // Its own metadata, as `save` stores it.
        (Decision::Write, Change::Write(record), _) => {
            let meta = stamp(record);
            Outcome::Write(Value::record(meta, record), answer)
        }
        (Decision::Tombstone(deadline), Change::Delete(tombstone), _) => Outcome::Write(
            Value::Tomb {
                meta: tombstone.meta(deadline),
            },
            answer,
        ),
        // The stored tombstone (its token and time) with the later deadline; a tombstone has
        // no lifetime cap.
        (Decision::Extend(deadline), _, Stored::Tombstone(meta)) => Outcome::Write(
            Value::Tomb {
                meta: Meta {
                    expires_at: deadline,
                    max_expires_at: 0,
                    ..meta
                },
            },
            answer,
        ),
        (decision, _, _) => {
            return Err(Error::Backend {
                backend: BACKEND,
                message: format!(
                    "reconciliation decided {decision:?}, which does not fit the change or the stored value"
                ),
                source: None,
            })
        }
    })
}

/// `decide` for `save`: last writer wins; a corrupt value or a tombstone is replaced.
fn save_decision<'r>(
    record: &'r Record,
) -> impl FnMut(State, Option<&Entry>) -> Result<Outcome<'r, Meta>> + 'r {
    let meta = stamp(record);
    move |_, _| Ok(Outcome::Write(Value::record(meta, record), meta))
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.load(key)
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, save_decision(record))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(_) | State::Corrupt(_) => Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            }),
            // A new session may take the id of a deleted one.
            State::Absent | State::Expired | State::Tombstone(_) => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
        })
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(_) => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
            State::Corrupt(e) => Err(e),
            State::Absent | State::Expired | State::Tombstone(_) => Err(Error::not_found(key.ns())),
        })
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        check_size(key, record, self.inner.max_session_bytes)?;
        self.inner.apply(key, |state, _| match state {
            State::Live(old) if old.version == expected_version => {
                let meta = stamp(record);
                Ok(Outcome::Write(Value::record(meta, record), meta))
            }
            State::Live(old) => Err(Error::Conflict {
                namespace: key.ns().to_owned(),
                expected: expected_version,
                actual: old.version,
            }),
            State::Corrupt(e) => Err(e),
            State::Absent | State::Expired | State::Tombstone(_) => Err(Error::not_found(key.ns())),
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete(key)
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        if self.inner.config.keeps_tombstones() {
            self.inner.delete_leaving_tombstone(key, tombstone)
        } else {
            self.inner.delete(key)
        }
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.inner.apply(key, |state, current| match (state, current) {
            (State::Live(old), Some(_)) => {
                let meta = Meta {
                    expires_at: cap_deadline(expires_at, old.max_expires_at),
                    ..old
                };
                Ok(Outcome::Retime(meta, true))
            }
            (State::Corrupt(e), _) => Err(e),
            _ => Ok(Outcome::Keep(false)),
        })
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.inner.rotate(key, new_id)
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        if let Change::Write(record) = change {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        self.inner.reconcile(key, base, change)
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.config.keeps_tombstones()
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        Ok(keys.iter().map(|k| self.inner.load(k)).collect())
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        for (key, record) in items {
            check_size(key, record, self.inner.max_session_bytes)?;
        }
        items
            .iter()
            .map(|(key, record)| self.inner.apply(key, save_decision(record)))
            .collect()
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        Ok(self.inner.count(namespace))
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.inner.stats())
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        drop(self.inner.shards[0].read());
        Health::new(BACKEND, HealthStatus::Up).with_latency(start.elapsed())
    }

    fn evicts(&self) -> bool {
        self.inner.config.at_capacity == AtCapacity::EvictSoonestExpiring
    }
}
