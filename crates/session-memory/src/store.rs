//! [`MemoryStore`] and its [`SessionStore`](session_core::SessionStore) implementation.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_core::{Clock, KeyPrefix, Meta, Result, StoreOptions, MAX_ID_LEN, MAX_NAMESPACE_LEN};

use crate::config::MemoryConfig;
use crate::entry::{Entry, Value};
use crate::shard::Shard;

/// The backend name reported by [`SessionStore::backend`](session_core::SessionStore::backend).
pub(crate) const BACKEND: &str = "memory";

/// Fewest shards, whatever the core count.
const MIN_SHARDS: usize = 32;

/// Most shards.
const MAX_SHARDS: usize = 1024;

/// An in-process [`SessionStore`](session_core::SessionStore): sharded, bounded, actively expiring.
///
/// Create it with [`MemoryStore::new`] (or [`MemoryStore::default`]) and share
/// it as `Arc<MemoryStore>` or `Arc<dyn SessionStore>`. Two stores never
/// share sessions. See the [crate documentation](crate) for the design, the
/// policy at the bounds and the background sweeper.
pub struct MemoryStore {
    pub(crate) inner: Arc<Inner>,
    sweeper: Option<tokio::task::AbortHandle>,
}

/// The state shared by the store and its sweeper.
pub(crate) struct Inner {
    pub(crate) shards: Box<[Shard]>,
    /// `shards.len() - 1`; the length is a power of two.
    pub(crate) mask: usize,
    pub(crate) hasher: RandomState,
    pub(crate) prefix: KeyPrefix,
    /// The shared size limit (`max_session_bytes`).
    pub(crate) max_session_bytes: usize,
    pub(crate) config: MemoryConfig,
    /// The clock expiry is judged by.
    pub(crate) clock: Clock,
    pub(crate) usage: Usage,
    pub(crate) evicted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) random: AtomicU64,
}

/// The gauges checked against the bounds, on their own cache line.
#[repr(align(128))]
pub(crate) struct Usage {
    pub(crate) entries: AtomicU64,
    pub(crate) bytes: AtomicU64,
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
pub(crate) enum Removal {
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
    /// [`Error::Config`](session_core::Error::Config) naming the bad key, e.g. `memory.max_entries`.
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
    pub(crate) fn raw_bytes(&self, key: &session_core::SessionKey) -> Option<session_core::Bytes> {
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
    pub(crate) fn put_value(&self, key: &session_core::SessionKey, value: Value<'_>) -> Result<()> {
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
    pub(crate) fn hash(&self, namespace: &str, id: &str) -> u64 {
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

    pub(crate) fn hash_entry(&self, entry: &Entry) -> u64 {
        let (namespace, id) = entry.parts();
        self.hash(namespace, id)
    }

    /// The shard of a hash: bits the table itself does not use for small tables.
    #[inline]
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        ((hash >> 40) as usize) & self.mask
    }

    pub(crate) fn random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, and only used at capacity.
        let mut z = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn prefix_len(&self) -> usize {
        self.prefix.as_str().len()
    }

    // ------------------------------------------------------------ accounting
}
