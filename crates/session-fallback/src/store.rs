//! [`FallbackStore`]: the public type, what it is made of, and its [`SessionStore`] impl,
//! which hands each call to the module that routes it:
//!
//! * single-key calls: `route` runs them through `Inner::exec`, generic over the operation
//!   (`ops`: one type per operation, with its own answer type); their outage path is in
//!   `outage`;
//! * `rotate` and `reconcile`: `route`;
//! * `load_many` and `save_many`: `batch`;
//! * `count`, `stats` and `health`: `whole`;
//! * calls to the primary and what they do to the circuits: `primary`;
//! * the background task (probes and replay): `recovery`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use session_core::backend::{is_principal_index, Change, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    Error, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey,
    SessionStore, StoreStats, Version,
};
use tokio::sync::Notify;

use crate::circuits::Circuits;
use crate::config::FallbackConfig;
use crate::grace::Grace;
use crate::journal::{Journal, KeyLocks};
use crate::ops::{Create, Delete, Load, Save, SaveIf, StoreFuture, Touch, Update};
use crate::revoke::Revocations;
use crate::state::{CircuitState, Counters, FallbackCounters, Metrics};
use crate::warm::WarmCopy;

/// The backend name a fallback store reports.
pub const BACKEND: &str = "fallback";

/// A session store that serves from a primary and, while the primary is down,
/// from a secondary, then replays what happened into the primary.
///
/// See the [crate docs](crate) for the state machine, the journal and what
/// callers see in each state.
///
/// Dropping the store stops its background task.
pub struct FallbackStore<P, S> {
    inner: Arc<Inner<P, S>>,
}

/// Shared by the store handle and its background task.
pub(crate) struct Inner<P, S> {
    /// Shared, so that a kept revocation can be applied to it as a store of its own.
    pub(crate) primary: Arc<P>,
    pub(crate) secondary: S,
    pub(crate) config: FallbackConfig,
    pub(crate) timeout: Duration,
    /// One circuit per partition of the primary, and their aggregate state.
    pub(crate) circuits: Circuits,
    pub(crate) journal: Journal,
    /// The revocations journaled (as [`PendingOp::Revoke`](crate::journal::PendingOp)) during
    /// an outage, by principal index key.
    pub(crate) revocations: Revocations,
    /// Sessions served while healthy, for an outage.
    pub(crate) warm: WarmCopy,
    /// The window after a recovery in which a load with no trace in the primary is "can't
    /// tell".
    pub(crate) grace: Grace,
    pub(crate) locks: KeyLocks,
    pub(crate) counters: Counters,
    pub(crate) worker_running: AtomicBool,
    pub(crate) shutdown: Arc<Notify>,
    /// Wakes the background task early: a circuit opened, or a session was journaled whose
    /// partition is not open (so it can be replayed now).
    pub(crate) wake: Arc<Notify>,
    /// The category of the last primary error, for logs and health.
    pub(crate) last_error: Mutex<&'static str>,
    /// A weak reference to this, for the background task.
    pub(crate) me: Weak<Inner<P, S>>,
}

impl<P: SessionStore, S: SessionStore> FallbackStore<P, S> {
    /// Builds a fallback store and checks the primary's health once, waiting
    /// at most `primary_timeout_ms`. If the primary is down the store starts
    /// with the circuit open (serving from the secondary) and probes the
    /// primary in the background until it answers.
    ///
    /// Call it inside a tokio runtime: the background task is spawned on it.
    /// Its metrics ([`metric`](crate::metric), labelled `store` with
    /// [`FallbackConfig::name`]) are registered here: install the `metrics`
    /// recorder first.
    ///
    /// The secondary must not evict sessions to stay within a bound (a
    /// memory secondary should reject at its bound instead): an evicted
    /// session would be an acknowledged outage write lost by the secondary
    /// itself.
    ///
    /// # Errors
    /// [`Error::Config`] naming `fallback.<key>` for a bad setting.
    pub async fn new(primary: P, secondary: S, config: FallbackConfig) -> Result<Self> {
        config.validate()?;
        if !primary.keeps_tombstones() {
            return Err(Error::config(
                "fallback.primary",
                format!(
                    "the primary ({}) does not keep tombstones, so a logout made while another instance \
                     was cut off could be undone by that instance's replay; enable them (Redis: \
                     redis.tombstone_ttl_ms, memory: memory.tombstone_ttl_ms)",
                    primary.backend()
                ),
            ));
        }
        if secondary.evicts() {
            return Err(Error::config(
                "fallback.secondary",
                format!(
                    "the secondary ({}) evicts sessions at its bound, which would drop writes acknowledged \
                     during an outage; configure it to refuse at its bound instead (memory: \
                     at_capacity = \"reject\")",
                    secondary.backend()
                ),
            ));
        }
        let timeout = config.primary_timeout();
        let metrics = Arc::new(Metrics::register(&config.name));
        let inner = Arc::new_cyclic(|me| Inner {
            primary: Arc::new(primary),
            secondary,
            timeout,
            circuits: Circuits::new(config.probe_min_ms, config.probe_max_ms, Arc::clone(&metrics)),
            journal: Journal::new(config.max_journal_keys, Arc::clone(&metrics)),
            revocations: Revocations::default(),
            warm: WarmCopy::new(config.warm_entries, config.warm_bytes),
            grace: Grace::new(Duration::from_millis(config.recovery_grace_ms)),
            locks: KeyLocks::new(),
            counters: Counters::new(metrics),
            worker_running: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
            wake: Arc::new(Notify::new()),
            last_error: Mutex::new("none"),
            me: me.clone(),
            config,
        });
        let health = inner.first_answer().await;
        if !is_answering(&health) {
            inner.start_open(health);
        }
        Ok(FallbackStore { inner })
    }

    /// The circuits' aggregate state: open if the circuit of any partition of the primary is
    /// open, else probing, replaying or closed likewise (see [`CircuitState`]). For a primary
    /// of one partition, that circuit's state.
    pub fn state(&self) -> CircuitState {
        self.inner.circuits.aggregate()
    }

    /// The state of one partition's circuit ([`SessionStore::partition`] of the primary names
    /// a key's partition). Closed for a partition the store has seen no failure of.
    pub fn partition_state(&self, partition: Partition) -> CircuitState {
        self.inner.circuits.state_of(partition)
    }

    /// Partitions of the primary whose circuit is open or probing now: their keys are served
    /// by the secondary. At most 1 for a primary of one partition.
    pub fn open_partitions(&self) -> usize {
        self.inner.circuits.open_count()
    }

    /// Sessions waiting in the journal for replay into the primary.
    pub fn journal_len(&self) -> usize {
        self.inner.journal.len()
    }

    /// A snapshot of the counters (and of the partitions open now).
    pub fn counters(&self) -> FallbackCounters {
        self.inner.counters()
    }

    /// The configuration in force.
    pub fn config(&self) -> &FallbackConfig {
        &self.inner.config
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The secondary store.
    pub fn secondary(&self) -> &S {
        &self.inner.secondary
    }
}

impl<P, S> Drop for FallbackStore<P, S> {
    fn drop(&mut self) {
        self.inner.shutdown.notify_one();
    }
}

impl<P, S> std::fmt::Debug for FallbackStore<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStore")
            .field("state", &self.inner.circuits.aggregate())
            .field("open_partitions", &self.inner.circuits.open_count())
            .field("journal", &self.inner.journal.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Whether a health answer means the store serves calls (up or degraded).
pub(crate) fn is_answering(health: &Health) -> bool {
    matches!(health.status, HealthStatus::Up | HealthStatus::Degraded)
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// A snapshot of the counters, with the partitions open now.
    pub(crate) fn counters(&self) -> FallbackCounters {
        let mut c = self.counters.snapshot();
        c.open_partitions = self.circuits.open_count() as u64;
        c
    }
}

// Each call boxes the future of the function that routes it, once, as `async_trait` would box
// an `async fn` body that awaits it: written out, so that the box holds that future alone
// rather than an async block around it (one state and one copy of the arguments fewer).
impl<P: SessionStore, S: SessionStore> SessionStore for FallbackStore<P, S> {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn load<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<Option<Record>>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            match self.inner.exec(key, Load).await {
                // Within a recovery grace a miss may be a session another instance still has
                // to replay: asked again, telling a tombstone from nothing.
                // A principal's index is never journaled: its miss is a miss.
                Ok(None) if self.inner.grace.open() && !is_principal_index(key) => {
                    Box::pin(self.inner.miss_in_grace(key)).await
                }
                other => other,
            }
        })
    }

    fn load_entry<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<Option<Entry>>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.load_entry(key))
    }

    fn save<'s, 'k, 'r, 'f>(
        &'s self,
        key: &'k SessionKey,
        record: &'r Record,
    ) -> StoreFuture<'f, Result<Meta>>
    where
        's: 'f,
        'k: 'f,
        'r: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.exec(key, Save(record)))
    }

    fn create<'s, 'k, 'r, 'f>(
        &'s self,
        key: &'k SessionKey,
        record: &'r Record,
    ) -> StoreFuture<'f, Result<Meta>>
    where
        's: 'f,
        'k: 'f,
        'r: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.exec(key, Create(record)))
    }

    fn update<'s, 'k, 'r, 'f>(
        &'s self,
        key: &'k SessionKey,
        record: &'r Record,
    ) -> StoreFuture<'f, Result<Meta>>
    where
        's: 'f,
        'k: 'f,
        'r: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.exec(key, Update(record)))
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
        Box::pin(self.inner.exec(key, SaveIf(expected_version, record)))
    }

    fn delete<'s, 'k, 'f>(&'s self, key: &'k SessionKey) -> StoreFuture<'f, Result<bool>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.delete_now(key))
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
        Box::pin(self.inner.exec(key, Delete(tombstone)))
    }

    /// A change replayed into this store (a fallback stacked on a fallback): applied by the
    /// primary while it answers; otherwise a temporary error, so the caller keeps it.
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
        Box::pin(self.inner.reconcile(key, base, change))
    }

    /// The primary's sessions (a copy or a backup's resync reads the store of record); a
    /// temporary error while it is down.
    fn scan<'s, 'c, 'f>(
        &'s self,
        cursor: Option<&'c ScanCursor>,
        limit: usize,
    ) -> StoreFuture<'f, Result<ScanPage>>
    where
        's: 'f,
        'c: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.primary.scan(cursor, limit))
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.primary.keeps_tombstones()
    }

    /// Kept (journaled) while the partition of the principal's index is open; see the crate
    /// docs, "Revoking during an outage".
    fn revoke_principal<'s, 'f>(
        &'s self,
        revocation: Arc<dyn session_core::Revocation>,
    ) -> StoreFuture<'f, Result<Option<session_core::Revoked>>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.keep_revocation(revocation))
    }

    fn touch<'s, 'k, 'f>(&'s self, key: &'k SessionKey, expires_at: u64) -> StoreFuture<'f, Result<bool>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.exec(key, Touch(expires_at)))
    }

    fn rotate<'s, 'k, 'i, 'f>(
        &'s self,
        key: &'k SessionKey,
        new_id: &'i SessionId,
    ) -> StoreFuture<'f, Result<Meta>>
    where
        's: 'f,
        'k: 'f,
        'i: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.rotate(key, new_id))
    }

    fn load_many<'s, 'k, 'f>(
        &'s self,
        keys: &'k [SessionKey],
    ) -> StoreFuture<'f, Result<Vec<Result<Option<Record>>>>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let mut found = self.inner.load_many(keys).await?;
            if self.inner.grace.open() {
                self.inner.misses_in_grace(keys, &mut found).await;
            }
            Ok(found)
        })
    }

    fn save_many<'s, 'k, 'f>(
        &'s self,
        items: &'k [(SessionKey, Record)],
    ) -> StoreFuture<'f, Result<Vec<Meta>>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.save_many(items))
    }

    fn count<'s, 'n, 'f>(&'s self, namespace: &'n Namespace) -> StoreFuture<'f, Result<u64>>
    where
        's: 'f,
        'n: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.count(namespace))
    }

    fn stats<'s, 'f>(&'s self) -> StoreFuture<'f, Result<StoreStats>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.stats())
    }

    fn health<'s, 'f>(&'s self) -> StoreFuture<'f, Health>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(self.inner.health())
    }
}
