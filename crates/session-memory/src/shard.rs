//! One shard of the store: a hash table of entries behind a reader-writer lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashTable;
use session_core::{decode_header, Bytes, CodecId, Error, Meta, Record, HEADER_LEN};

/// Milliseconds since the Unix epoch: `session_core::now_ms`, inlined and
/// without its 128-bit arithmetic (it runs on every operation). Same clock,
/// same truncation.
#[inline]
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
    })
}

/// `Meta::deadline`, inlined: `expires_at` capped at `max_expires_at` unless that is `0`.
#[inline]
pub(crate) fn deadline(meta: &Meta) -> u64 {
    if meta.max_expires_at == 0 {
        meta.expires_at
    } else {
        meta.expires_at.min(meta.max_expires_at)
    }
}

/// What is stored under a key.
pub(crate) enum Value {
    /// A session written through the store: kept decoded, so a load only
    /// clones the payload handle.
    Rec {
        /// Version, times and deadline.
        meta: Meta,
        /// The payload's codec.
        codec: CodecId,
        /// The payload, shared with every reader.
        payload: Bytes,
    },
    /// Bytes planted by `RawAccess` (tests): decoded on every load.
    #[cfg_attr(
        not(feature = "testing"),
        allow(dead_code, reason = "built only by RawAccess")
    )]
    Raw {
        /// The bytes as given.
        bytes: Bytes,
        /// When the key expires, ms since the epoch.
        deadline: u64,
    },
}

impl Value {
    /// A decoded session value.
    pub(crate) fn record(meta: Meta, record: &Record) -> Value {
        Value::Rec {
            meta,
            codec: record.codec,
            payload: record.payload.clone(),
        }
    }

    /// The deadline after which the entry no longer exists.
    #[inline]
    pub(crate) fn deadline(&self) -> u64 {
        match self {
            Value::Rec { meta, .. } => deadline(meta),
            Value::Raw { deadline, .. } => *deadline,
        }
    }

    /// The envelope length (or the raw length).
    fn stored_len(&self) -> usize {
        match self {
            Value::Rec { payload, .. } => HEADER_LEN + payload.len(),
            Value::Raw { bytes, .. } => bytes.len(),
        }
    }

    /// The value as a record, for a load. Raw bytes are decoded.
    pub(crate) fn to_record(&self, namespace: &str) -> Result<Record, Error> {
        match self {
            Value::Rec { meta, codec, payload } => Ok(Record {
                meta: *meta,
                codec: *codec,
                payload: payload.clone(),
            }),
            Value::Raw { bytes, .. } => Record::decode(bytes, namespace),
        }
    }

    /// Whether the value is live at `now`, and its metadata.
    pub(crate) fn state(&self, namespace: &str, now: u64) -> State {
        match self {
            Value::Rec { meta, .. } if deadline(meta) > now => State::Live(*meta),
            Value::Rec { .. } => State::Expired,
            Value::Raw { deadline, .. } if *deadline <= now => State::Expired,
            Value::Raw { bytes, .. } => match decode_header(bytes, namespace) {
                Ok(meta) if deadline(&meta) <= now => State::Expired,
                Ok(meta) => State::Live(meta),
                Err(e) => State::Corrupt(e),
            },
        }
    }
}

/// What a write operation finds under its key.
pub(crate) enum State {
    /// Nothing.
    Absent,
    /// An entry past its deadline: treated as absent, and reclaimed.
    Expired,
    /// A live session with this metadata.
    Live(Meta),
    /// Live bytes that are not an envelope.
    Corrupt(Error),
}

/// One stored session: its key without the store's prefix, and its value.
pub(crate) struct Entry {
    /// `{namespace}:{id}`.
    pub(crate) key: Box<str>,
    /// The session.
    pub(crate) value: Value,
}

impl Entry {
    /// Builds the key `{namespace}:{id}`.
    pub(crate) fn key(namespace: &str, id: &str) -> Box<str> {
        let mut s = String::with_capacity(namespace.len() + 1 + id.len());
        s.push_str(namespace);
        s.push(':');
        s.push_str(id);
        s.into_boxed_str()
    }

    /// Whether this entry is the session `namespace`/`id`.
    #[inline]
    pub(crate) fn is(&self, namespace: &str, id: &str) -> bool {
        self.key.len() == namespace.len() + 1 + id.len()
            && self.key.ends_with(id)
            && self.key.starts_with(namespace)
            && self.key.as_bytes().get(namespace.len()) == Some(&b':')
    }

    /// The namespace and id of the key.
    pub(crate) fn parts(&self) -> (&str, &str) {
        self.key.split_once(':').unwrap_or((&self.key, ""))
    }

    /// Bytes charged for this entry (see `MemoryConfig::max_bytes`).
    pub(crate) fn charge(&self, prefix_len: usize) -> u64 {
        charge(prefix_len, self.key.len(), &self.value)
    }
}

/// Bytes charged for a value under a key of `key_len` bytes (without prefix).
pub(crate) fn charge(prefix_len: usize, key_len: usize, value: &Value) -> u64 {
    (prefix_len + key_len + value.stored_len()) as u64 + crate::config::ENTRY_OVERHEAD_BYTES
}

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
            let d = e.value.deadline();
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
