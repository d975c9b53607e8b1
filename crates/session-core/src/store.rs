//! The [`SessionStore`] trait every backend implements, and what it reports.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::{Entry, Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::partition::Partition;
use crate::principals::{Revocation, Revoked};
use crate::reconcile::{Change, Reconciled, Tombstone};
use crate::scan::{ScanCursor, ScanPage};
use crate::version::Version;

/// The default limit on one encoded session: 1 MiB.
pub const DEFAULT_MAX_SESSION_BYTES: usize = 1024 * 1024;

/// A backend that stores session [`Record`]s under [`SessionKey`]s.
///
/// Object safe: use it as `Arc<dyn SessionStore>`. `Arc<T>` and `Box<T>` of a
/// store are stores too.
///
/// # Contract
///
/// Every implementation, whatever its backend, behaves as follows; the
/// conformance suite (`session_core::testing`, feature `testing`) checks it.
///
/// **Keys.** A store adds its own key prefix: the backend key of a session is
/// `{key_prefix}{namespace}:{id}`. Stores never see an unvalidated id.
///
/// **Misses.** `load` of a key that was never written, was deleted or has
/// expired is `Ok(None)`. An expired session is never returned, even if the
/// backend has not reclaimed it yet.
///
/// **Writes and metadata.** A store writes the caller's record as given,
/// with two exceptions: a version of [`Version::NONE`] is replaced by a fresh
/// token ([`Version::generate`]), and the deadline is `expires_at` capped at
/// `max_expires_at` ([`stamp`] does both). The store keeps nothing of the
/// value it replaces, so a caller writing raw records supplies:
/// * `version` — a fresh token per write (or `NONE`); reusing one defeats
///   `save_if` for whoever read it;
/// * `created_at` and `max_expires_at` — carried over from the session it
///   loaded (for a new session: now, and now + max lifetime or `0`), so a
///   lifetime cap counts from the first write;
/// * `updated_at` and `expires_at` — now and the deadline it wants.
///
/// [`Sessions`](crate::Sessions) does all of this. The deadline is set
/// atomically with the write, as an absolute time (a write that lands late
/// cannot extend a session's life). A write whose deadline has already passed
/// by the backend's clock leaves no session behind: the key is gone, and a
/// later `create` succeeds.
///
/// Each write returns the metadata it stored.
///
/// **Clocks.** Each backend judges expiry by one clock: the memory store by
/// its [`Clock`](crate::Clock), Redis by the server's. Callers compute
/// deadlines by theirs; a skew between the two shifts when a session ends,
/// never whether two backends agree on what is stored.
///
/// **Fencing.** Once a store has reported a write as failed or timed out, that
/// write can no longer change the stored state: it either took effect before
/// the error was returned or never will (see the backend's docs for how).
///
/// **Atomicity.** `create`, `update`, `save_if`, `touch` and `delete` are each
/// atomic on one key: `create` writes only if absent; `update` only if present
/// (a request that finishes after a logout cannot bring the session back);
/// `save_if` only if present with the expected version (tokens compared for
/// equality). `save` is plain
/// last-writer-wins. `rotate`, `load_many` and `save_many` are not atomic as a
/// whole; see each method.
///
/// **Errors.** Size is checked before any I/O ([`Error::TooLarge`]). Bytes
/// under a key that are not an envelope are [`Error::Corrupt`], never a panic.
/// A backend that is down or slow gives [`Error::Unavailable`] or
/// [`Error::Timeout`] (temporary: [`Error::is_temporary`]); a timed-out write
/// has an unknown outcome, which a fencing store makes final (see **Fencing**).
///
/// **Partitions.** A store made of parts that fail independently (a Redis Cluster's nodes)
/// names the part serving each key with [`partition`](Self::partition) and probes one part
/// with [`partition_health`](Self::partition_health), so that a wrapper such as a fallback
/// keeps one circuit per part: one node down then costs only its own keys. A store that is
/// one unit keeps the defaults ([`Partition::WHOLE`] for every key, `health()` as the probe).
/// A partitioned store guarantees:
/// * `partition(key)` is cheap and does no I/O: it reads what the store already knows (a
///   slot map). It may change over time — a failover moves keys to another part — and a
///   wrapper asks again whenever it routes or replays a key;
/// * keys of different partitions fail independently: an outage of one part does not make
///   calls on another's keys fail, and calls on one part's keys succeed or fail together
///   (as far as the part is concerned);
/// * `partition_health(p)` checks the server that serves `p` *now* (reading the store's view
///   of its topology again if needed), never just any server, and answers up or degraded
///   only when calls on `p`'s keys would be served. A partition no key maps to any more (a
///   node that was failed over or removed) answers [`HealthStatus::Up`], so that a circuit
///   kept for it ends and its keys are handled under their current partition;
/// * [`Partition::WHOLE`] is the store as a whole: keyless calls (`count`, `stats`) belong
///   to it, a key the store cannot place yet may map to it, and `partition_health(WHOLE)`
///   answers as `health()` does.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// A short backend name for metrics and logs: `"memory"`, `"redis"`, ...
    fn backend(&self) -> &'static str;

    /// Loads a session. `Ok(None)` when it does not exist or has expired.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for bytes that are not an envelope; temporary errors.
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>>;

    /// Loads what the store holds under a key, telling a deleted session's tombstone
    /// ([`Entry::Tombstone`]) from nothing at all (`Ok(None)`: never written, expired, or
    /// its tombstone's time is over). [`load`](Self::load) answers `Ok(None)` for both.
    ///
    /// A wrapper uses it to tell "known to be gone" from "not known here" (the fallback,
    /// right after an outage). The default answers from `load`, so a store that
    /// [keeps no tombstones](Self::keeps_tombstones) need not implement it; one that keeps
    /// them should.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        Ok(self.load(key).await?.map(Entry::Live))
    }

    /// Writes a session whether or not it exists (last writer wins).
    ///
    /// # Errors
    /// [`Error::TooLarge`]; temporary errors.
    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta>;

    /// Writes a session only if no session exists under the key.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`]; [`Error::TooLarge`]; temporary errors.
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta>;

    /// Writes a session only if it still exists.
    ///
    /// # Errors
    /// [`Error::NotFound`] (deleted or expired: nothing is written);
    /// [`Error::TooLarge`]; temporary errors.
    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta>;

    /// Compare-and-set: writes only if the stored version is `expected_version`.
    /// The stored version becomes the record's (fresh) version.
    ///
    /// # Errors
    /// [`Error::Conflict`] with the stored version; [`Error::NotFound`];
    /// [`Error::TooLarge`]; temporary errors.
    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta>;

    /// Deletes a session. `Ok(true)` if it existed.
    ///
    /// # Errors
    /// Temporary errors.
    async fn delete(&self, key: &SessionKey) -> Result<bool>;

    /// [`delete`](Self::delete), leaving this tombstone in a store that
    /// [keeps tombstones](Self::keeps_tombstones): the stored tombstone gets
    /// `tombstone.version` (and `deleted_at`), so that the caller can later
    /// base a change on this very delete (see [`reconcile`](Self::reconcile):
    /// a session created again after its logout). Its deadline is the deleted
    /// session's, or for a key holding no session the store's own tombstone
    /// lifetime (a store may take `tombstone.until` for it). Other stores
    /// just delete (the default).
    ///
    /// # Errors
    /// As [`delete`](Self::delete).
    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        let _ = tombstone;
        self.delete(key).await
    }

    /// Moves a session's deadline to `expires_at` (capped at its
    /// `max_expires_at`) without changing its value or version. `Ok(false)`
    /// if it does not exist.
    ///
    /// # Errors
    /// [`Error::Corrupt`]; temporary errors.
    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool>;

    /// Moves a session to a new id in the same namespace (fixation defence
    /// after login), keeping its value, metadata and deadline; afterwards the
    /// old id is gone. Works on a Redis cluster (no cross-slot command).
    ///
    /// Never loses the session: after any error it is still under the old id
    /// or already under the new one. With [`Error::NotFound`],
    /// [`Error::AlreadyExists`] (the new id holds another session) or
    /// [`Error::Corrupt`] nothing changed. After a temporary error the move
    /// may have happened or not (it is fenced: it will not happen later);
    /// calling `rotate` again with the same `new_id` finishes it — it
    /// succeeds if the new id already holds this session — or answers
    /// `NotFound` when the first call completed the move (load `new_id`).
    ///
    /// A concurrent write to the old id either happens before the move (and
    /// moves with it) or fails with `NotFound`; it never brings the old id back.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the old id does not exist; [`Error::AlreadyExists`]
    /// if the new id holds a different session; temporary errors.
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta>;

    /// Loads many sessions; the answer has one entry per key, in order, each
    /// `Ok(None)` for a miss or `Err` for a value that is not an envelope.
    /// Pipelined where the backend allows.
    ///
    /// # Errors
    /// The outer error is a temporary error for the batch as a whole.
    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>>;

    /// Saves many sessions (each as [`save`](Self::save)). Not atomic: on an
    /// error, some may have been written.
    ///
    /// # Errors
    /// [`Error::TooLarge`] before any I/O if any record is too large; temporary errors.
    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>>;

    /// The number of live sessions in a namespace. Exact for in-process
    /// stores; from SCAN for Redis (a session written during the scan may or
    /// may not be counted).
    ///
    /// # Errors
    /// Temporary errors.
    async fn count(&self, namespace: &Namespace) -> Result<u64>;

    /// Entries, bytes and bounds, where the backend knows them.
    ///
    /// # Errors
    /// Temporary errors.
    async fn stats(&self) -> Result<StoreStats>;

    /// Whether the backend answers, and how fast. Never fails: a down
    /// backend is reported as [`HealthStatus::Down`].
    async fn health(&self) -> Health;

    /// Applies a change made elsewhere — a fallback's outage journal, replayed
    /// into this store — atomically on one key, by the rule of
    /// [`backend::decide`](crate::backend::decide): it applies if the store
    /// still holds `base` (or nothing, for [`Version::NONE`]); otherwise a
    /// delete wins over any session, a tombstone over any write, and of two
    /// writes the greater `(updated_at, version)`. A delete leaves a
    /// tombstone (the deleted session's deadline, or the change's own), which
    /// every live call treats as absent. Never a read followed by a blind
    /// write.
    ///
    /// # Errors
    /// [`Error::TooLarge`]; [`Error::Corrupt`] for a value that is not an
    /// envelope (left as is); temporary errors (a fenced store: the change
    /// either happened or never will).
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled>;

    /// Lists the live sessions under the store's key prefix, about `limit` at a time (a hint:
    /// a page may hold fewer, or more), starting where `cursor` says (`None`: the beginning).
    /// Every session that lives through the whole scan is listed (once, except that Redis may
    /// list a key again on a later page after its table shrank: a copy then writes it twice,
    /// which changes nothing); one written, deleted or expiring during the scan may be listed
    /// or not. Tombstones are not listed. Pages come in no
    /// particular order; pass each page's `next` to get the following one.
    ///
    /// For copying sessions between stores, a backup's resync and a bulk restore; never on a
    /// request path. The default answers [`Error::Backend`]: the store cannot list.
    ///
    /// # Errors
    /// Temporary errors; [`Error::Backend`] for a store that cannot list, or a cursor that is
    /// not one of this store's.
    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        let _ = (cursor, limit);
        Err(Error::Backend {
            backend: self.backend(),
            message: "this store cannot list its sessions (scan)".to_owned(),
            source: None,
        })
    }

    /// Takes a revocation of a principal's sessions ([`Sessions::revoke_all`]) to keep and
    /// apply later, when this store cannot apply it now: a fallback whose primary is down
    /// keeps it in its journal (and ends at once what it holds itself), then applies it to the
    /// primary when it replays. `Ok(None)`, the default: not kept — the caller
    /// applies it through this store now ([`Revocation::apply`]).
    ///
    /// A wrapper hands the call to the store it wraps; one that changes keys or values on
    /// their way (hashed ids, sealed payloads) or copies writes elsewhere (a write-behind
    /// backup) wraps the revocation in its own first, so that applying it below goes through
    /// the wrapper's logic.
    ///
    /// [`Sessions::revoke_all`]: crate::Sessions::revoke_all
    ///
    /// # Errors
    /// Temporary errors (nothing kept: the caller retries).
    async fn revoke_principal(&self, revocation: Arc<dyn Revocation>) -> Result<Option<Revoked>> {
        let _ = revocation;
        Ok(None)
    }

    /// Whether [`delete`](Self::delete) leaves a tombstone (so that another
    /// instance's replay cannot bring the session back; see
    /// [`reconcile`](Self::reconcile)), and [`update`](Self::update) treats
    /// one as absent. A fallback's primary shared by several instances needs
    /// it. Default `false`.
    fn keeps_tombstones(&self) -> bool {
        false
    }

    /// Whether the store may drop live sessions on its own to stay within a
    /// bound (an evicting memory store). A store that holds writes it
    /// acknowledged for someone else — a fallback's secondary during an
    /// outage — must not, and says so at construction. Default `false`.
    fn evicts(&self) -> bool {
        false
    }

    /// The partition serving `key` now: the part of the store that fails and recovers with
    /// it (see **Partitions** in the trait docs). Cheap, no I/O, never fails. Default
    /// [`Partition::WHOLE`]: the store is one unit.
    fn partition(&self, key: &SessionKey) -> Partition {
        let _ = key;
        Partition::WHOLE
    }

    /// Whether calls on the keys of `partition` would be served now: the probe of one
    /// partition's circuit. Checks the server serving that partition now; a partition no key
    /// maps to any more answers [`HealthStatus::Up`]; [`Partition::WHOLE`] answers as
    /// [`health`](Self::health). Never fails. Default: [`health`](Self::health).
    async fn partition_health(&self, partition: Partition) -> Health {
        let _ = partition;
        self.health().await
    }
}

/// Sizes and counters reported by [`SessionStore::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// The backend name.
    pub backend: &'static str,
    /// Stored sessions, if known.
    pub entries: Option<u64>,
    /// Bytes used, if known (memory store: keys and envelopes; Redis: `used_memory`).
    pub bytes: Option<u64>,
    /// Sessions removed to stay within a bound, since start.
    pub evicted: u64,
    /// Writes refused to stay within a bound, since start.
    pub rejected: u64,
    /// Expired sessions reclaimed, since start.
    pub expired: u64,
    /// Backend-specific figures, by name.
    pub extra: Vec<(&'static str, u64)>,
}

impl StoreStats {
    /// Empty stats for a backend.
    pub fn new(backend: &'static str) -> Self {
        StoreStats {
            backend,
            ..StoreStats::default()
        }
    }
}

/// Whether a backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Answering.
    Up,
    /// Answering, but not in its normal way (e.g. a fallback serving from its secondary).
    Degraded,
    /// Not answering.
    Down,
}

impl HealthStatus {
    /// `"up"`, `"degraded"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Down => "down",
        }
    }
}

/// A health report: one per backend, nested for wrapper stores.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Health {
    /// The backend name.
    pub backend: &'static str,
    /// Up, degraded or down.
    pub status: HealthStatus,
    /// How long the check took.
    pub latency: Option<Duration>,
    /// A short explanation (never a secret).
    pub detail: Option<String>,
    /// Backend-specific figures (e.g. journal length).
    pub extra: Vec<(&'static str, u64)>,
    /// The health of wrapped stores (a fallback's primary and secondary).
    pub components: Vec<(&'static str, Health)>,
}

impl Health {
    /// A report with the given status and nothing else.
    pub fn new(backend: &'static str, status: HealthStatus) -> Self {
        Health {
            backend,
            status,
            latency: None,
            detail: None,
            extra: Vec::new(),
            components: Vec::new(),
        }
    }

    /// Sets the latency.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Sets the detail text.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Whether the status is [`HealthStatus::Up`].
    pub fn is_up(&self) -> bool {
        self.status == HealthStatus::Up
    }
}

/// Checks a record against a size limit, before any I/O.
///
/// # Errors
/// [`Error::TooLarge`] when the envelope would exceed `limit` bytes.
pub fn check_size(key: &SessionKey, record: &Record, limit: usize) -> Result<()> {
    let size = record.encoded_len();
    if size > limit {
        return Err(Error::TooLarge {
            namespace: key.ns().to_owned(),
            size,
            limit,
        });
    }
    Ok(())
}

/// The metadata a store stores for a caller's record: the record's own, with
/// a fresh token for [`Version::NONE`] and the deadline capped at
/// `max_expires_at`. See the trait's contract; backends share this rule.
#[inline]
pub fn stamp(record: &Record) -> Meta {
    let m = &record.meta;
    Meta {
        version: m.version.or_generate(),
        created_at: m.created_at,
        updated_at: m.updated_at,
        expires_at: crate::envelope::cap_deadline(m.expires_at, m.max_expires_at),
        max_expires_at: m.max_expires_at,
    }
}

/// The boxed future of a [`SessionStore`] method, as `async_trait` declares it.
type StoreFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

// `Arc<S>` and `Box<S>` forward each call to the store inside, handing back *its* boxed future.
// (With `#[async_trait]` on these impls each call would box a second future around the first:
// `arc_dyn_store.load(key)` resolves to this impl, so every `Arc<dyn SessionStore>` user would
// pay an extra allocation per operation.)
macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<S: SessionStore + ?Sized> SessionStore for $ty {
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
            fn load<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<Option<Record>>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).load(key)
            }
            fn load_entry<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<Option<Entry>>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).load_entry(key)
            }
            fn save<'s, 'k, 'r, 'f>(&'s self, key: &'k SessionKey, record: &'r Record) -> StoreFuture<'f, Result<Meta>>
            where
                's: 'f,
                'k: 'f,
                'r: 'f,
                Self: 'f,
            {
                (**self).save(key, record)
            }
            fn create<'s, 'k, 'r, 'f>(&'s self, key: &'k SessionKey, record: &'r Record) -> StoreFuture<'f, Result<Meta>>
            where
                's: 'f,
                'k: 'f,
                'r: 'f,
                Self: 'f,
            {
                (**self).create(key, record)
            }
            fn update<'s, 'k, 'r, 'f>(&'s self, key: &'k SessionKey, record: &'r Record) -> StoreFuture<'f, Result<Meta>>
            where
                's: 'f,
                'k: 'f,
                'r: 'f,
                Self: 'f,
            {
                (**self).update(key, record)
            }
            fn save_if<'s, 'k, 'r, 'f>(
                &'s self,
                key: &'k SessionKey,
                expected_version: Version,
                record: &'r Record,
            ) -> StoreFuture<'f, Result<Meta>>
            where
                's: 'f,
                'k: 'f,
                'r: 'f,
                Self: 'f,
            {
                (**self).save_if(key, expected_version, record)
            }
            fn delete<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<bool>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).delete(key)
            }
            fn delete_leaving<'s, 'k, 'f>(
                &'s self,
                key: &'k SessionKey,
                tombstone: Tombstone,
            ) -> StoreFuture<'f, Result<bool>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).delete_leaving(key, tombstone)
            }
            fn touch<'s, 'k, 'f>(&'s self, key: &'k SessionKey, expires_at: u64) -> StoreFuture<'f, Result<bool>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).touch(key, expires_at)
            }
            fn rotate<'s, 'k, 'i, 'f>(&'s self, key: &'k SessionKey, new_id: &'i SessionId) -> StoreFuture<'f, Result<Meta>>
            where
                's: 'f,
                'k: 'f,
                'i: 'f,
                Self: 'f,
            {
                (**self).rotate(key, new_id)
            }
            fn load_many<'s, 'k, 'f>(&'s self, keys: &'k [SessionKey]) -> StoreFuture<'f, Result<Vec<Result<Option<Record>>>>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).load_many(keys)
            }
            fn save_many<'s, 'k, 'f>(&'s self, items: &'k [(SessionKey, Record)]) -> StoreFuture<'f, Result<Vec<Meta>>>
            where
                's: 'f,
                'k: 'f,
                Self: 'f,
            {
                (**self).save_many(items)
            }
            fn count<'s, 'n, 'f>(&'s self, namespace: &'n Namespace) -> StoreFuture<'f, Result<u64>>
            where
                's: 'f,
                'n: 'f,
                Self: 'f,
            {
                (**self).count(namespace)
            }
            fn stats<'s, 'f>(&'s self) -> StoreFuture<'f, Result<StoreStats>>
            where
                's: 'f,
                Self: 'f,
            {
                (**self).stats()
            }
            fn health<'s, 'f>(&'s self) -> StoreFuture<'f, Health>
            where
                's: 'f,
                Self: 'f,
            {
                (**self).health()
            }
            fn reconcile<'s, 'k, 'c, 'f>(
                &'s self,
                key: &'k SessionKey,
                base: Version,
                change: Change<'c>,
            ) -> StoreFuture<'f, Result<Reconciled>>
            where
                's: 'f,
                'k: 'f,
                'c: 'f,
                Self: 'f,
            {
                (**self).reconcile(key, base, change)
            }
            fn scan<'s, 'c, 'f>(&'s self, cursor: Option<&'c ScanCursor>, limit: usize) -> StoreFuture<'f, Result<ScanPage>>
            where
                's: 'f,
                'c: 'f,
                Self: 'f,
            {
                (**self).scan(cursor, limit)
            }
            fn revoke_principal<'s, 'f>(
                &'s self,
                revocation: Arc<dyn Revocation>,
            ) -> StoreFuture<'f, Result<Option<Revoked>>>
            where
                's: 'f,
                Self: 'f,
            {
                (**self).revoke_principal(revocation)
            }
            fn keeps_tombstones(&self) -> bool {
                (**self).keeps_tombstones()
            }
            fn evicts(&self) -> bool {
                (**self).evicts()
            }
            fn partition(&self, key: &SessionKey) -> Partition {
                (**self).partition(key)
            }
            fn partition_health<'s, 'f>(&'s self, partition: Partition) -> StoreFuture<'f, Health>
            where
                's: 'f,
                Self: 'f,
            {
                (**self).partition_health(partition)
            }
        }
    )*};
}

forward_store!(Arc<S>, Box<S>);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::CodecId;
    use bytes::Bytes;

    fn rec(version: Version, expires_at: u64, max: u64) -> Record {
        Record {
            meta: Meta {
                version,
                created_at: 10,
                updated_at: 20,
                expires_at,
                max_expires_at: max,
            },
            codec: CodecId::JSON,
            payload: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn stamp_keeps_the_callers_meta() {
        let m = stamp(&rec(Version::NONE, 100, 0));
        assert!(!m.version.is_none());
        assert_eq!((m.created_at, m.updated_at, m.expires_at), (10, 20, 100));
        let m = stamp(&rec(Version::from_u64(9), 100, 50));
        assert_eq!(
            (m.version, m.expires_at, m.max_expires_at),
            (Version::from_u64(9), 50, 50)
        );
    }

    #[test]
    fn dyn_and_forwarding_compile() {
        fn takes(_: &dyn SessionStore) {}
        fn arc<S: SessionStore>(s: Arc<S>) -> Arc<dyn SessionStore> {
            s
        }
        fn boxed(s: Box<dyn SessionStore>) -> Arc<dyn SessionStore> {
            Arc::new(s)
        }
        let _ = (takes, arc::<Box<dyn SessionStore>>, boxed);
    }
}
