//! Test doubles: a wrapper store that fails, hangs or slows down on command, and a store of
//! several partitions that fail on their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::{Entry, Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::partition::Partition;
use crate::reconcile::{Change, Reconciled, Tombstone};
use crate::store::{Health, HealthStatus, SessionStore, StoreStats};
use crate::version::Version;

/// How a [`FaultyStore`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultMode {
    /// Pass every call to the inner store.
    Pass,
    /// Fail every call at once with [`Error::Unavailable`] (temporary).
    Fail,
    /// Fail every call at once with [`Error::Backend`] (permanent).
    FailPermanent,
    /// Never answer (the caller's timeout must act).
    Hang,
    /// Wait this long, then pass the call on.
    Delay(Duration),
    /// Wait this long, then fail with [`Error::Timeout`] *after* passing a
    /// write on: the outcome a caller sees as a timeout, but the write landed.
    TimeoutAfterWrite(Duration),
}

/// Wraps a store and injects faults on command. Counts calls that reached
/// the inner store.
pub struct FaultyStore<S> {
    inner: S,
    mode: Mutex<FaultMode>,
    passed: AtomicU64,
    refused: AtomicU64,
}

impl<S: SessionStore> FaultyStore<S> {
    /// Wraps `inner`, passing calls through.
    pub fn new(inner: S) -> Arc<Self> {
        Arc::new(FaultyStore {
            inner,
            mode: Mutex::new(FaultMode::Pass),
            passed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Changes how calls are answered from now on.
    pub fn set_mode(&self, mode: FaultMode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> FaultMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls passed to the inner store.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::Relaxed)
    }

    /// Calls failed or hung by the double.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn gate(&self, is_write: bool) -> Result<Option<Duration>> {
        match self.mode() {
            FaultMode::Pass => {}
            FaultMode::Fail => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::unavailable("faulty", "injected failure"));
            }
            FaultMode::FailPermanent => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Backend {
                    backend: "faulty",
                    message: "injected permanent failure".into(),
                    source: None,
                });
            }
            FaultMode::Hang => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
            }
            FaultMode::Delay(d) => tokio::time::sleep(d).await,
            FaultMode::TimeoutAfterWrite(d) => {
                if is_write {
                    return Ok(Some(d));
                }
                tokio::time::sleep(d).await;
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Timeout {
                    backend: "faulty",
                    op: if is_write { "write" } else { "load" },
                    after: d,
                });
            }
        }
        self.passed.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    async fn write<T: Send>(&self, f: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
        match self.gate(true).await? {
            None => f.await,
            Some(d) => {
                self.passed.fetch_add(1, Ordering::Relaxed);
                let _ = f.await;
                tokio::time::sleep(d).await;
                Err(Error::Timeout {
                    backend: "faulty",
                    op: "write",
                    after: d,
                })
            }
        }
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for FaultyStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.gate(false).await?;
        self.inner.load(key).await
    }
    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.gate(false).await?;
        self.inner.load_entry(key).await
    }
    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write(self.inner.save(key, record)).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write(self.inner.create(key, record)).await
    }
    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.write(self.inner.update(key, record)).await
    }
    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.write(self.inner.save_if(key, expected_version, record))
            .await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.write(self.inner.delete(key)).await
    }
    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.write(self.inner.delete_leaving(key, tombstone)).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.write(self.inner.touch(key, expires_at)).await
    }
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.write(self.inner.reconcile(key, base, change)).await
    }
    async fn scan(&self, cursor: Option<&crate::ScanCursor>, limit: usize) -> Result<crate::ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.write(self.inner.rotate(key, new_id)).await
    }
    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        self.gate(false).await?;
        self.inner.load_many(keys).await
    }
    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        self.write(self.inner.save_many(items)).await
    }
    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.gate(false).await?;
        self.inner.count(namespace).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.gate(false).await?;
        self.inner.stats().await
    }
    async fn health(&self) -> Health {
        match self.mode() {
            FaultMode::Pass | FaultMode::Delay(_) => self.inner.health().await,
            _ => Health::new(self.inner.backend(), HealthStatus::Down).with_detail("injected fault"),
        }
    }
    fn evicts(&self) -> bool {
        self.inner.evicts()
    }
    fn partition(&self, key: &SessionKey) -> Partition {
        self.inner.partition(key)
    }
    async fn partition_health(&self, partition: Partition) -> Health {
        match self.mode() {
            FaultMode::Pass | FaultMode::Delay(_) => self.inner.partition_health(partition).await,
            _ => Health::new(self.inner.backend(), HealthStatus::Down).with_detail("injected fault"),
        }
    }
}

/// One partition of a [`PartitionedStore`]: a [`FaultyStore`] over the shared inner store.
pub type Part<S> = FaultyStore<Arc<S>>;

/// A store of `n` partitions over one shared inner store, each failing on its own: a fake
/// Redis Cluster whose nodes are [`FaultyStore`]s. Every keyed call goes through the part
/// serving its key ([`index_of`](Self::index_of)), so setting one part's [`FaultMode`] fails
/// exactly the keys it serves; each part counts the calls it passed or refused.
///
/// A key's home part is a hash of its id; [`fail_over`](Self::fail_over) hands one part's
/// keys to another (a failover: the partition of those keys changes), after which the old
/// part serves no key and its probe answers up. `partition` of the part at index `i` is
/// `Partition::new(i + 1)`; calls of [`SessionStore::partition`] are counted
/// ([`lookups`](Self::lookups)).
///
/// Batch calls fail as a whole when a part of one of their keys fails (as on a cluster);
/// keyless calls (`count`, `stats`) fail when any part does.
pub struct PartitionedStore<S> {
    inner: Arc<S>,
    parts: Vec<Arc<Part<S>>>,
    /// Per part: the part its keys belong to now (itself unless failed over).
    serving: Mutex<Vec<usize>>,
    lookups: AtomicU64,
}

impl<S: SessionStore> PartitionedStore<S> {
    /// `n` parts (at least one) over `inner`, all passing calls through.
    pub fn new(inner: S, n: usize) -> Arc<Self> {
        let inner = Arc::new(inner);
        let n = n.max(1);
        Arc::new(PartitionedStore {
            parts: (0..n).map(|_| FaultyStore::new(Arc::clone(&inner))).collect(),
            inner,
            serving: Mutex::new((0..n).collect()),
            lookups: AtomicU64::new(0),
        })
    }

    /// The part at `index`: set its mode, read its counts.
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn part(&self, index: usize) -> &Arc<Part<S>> {
        &self.parts[index]
    }

    /// Sets the mode of the part at `index`.
    ///
    /// # Panics
    /// When `index` is out of range.
    pub fn set_mode(&self, index: usize, mode: FaultMode) {
        self.parts[index].set_mode(mode);
    }

    /// The partition id of the part at `index`.
    pub fn partition_at(index: usize) -> Partition {
        Partition::new(index as u64 + 1)
    }

    /// The part a key's id hashes to (before any failover).
    pub fn home_of(&self, key: &SessionKey) -> usize {
        // FNV-1a: stable across runs, unlike the std hasher.
        let hash = key.id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % self.parts.len() as u64) as usize
    }

    /// The part serving `key` now.
    pub fn index_of(&self, key: &SessionKey) -> usize {
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = self.home_of(key);
        // Follow failovers (at most one hop per part).
        for _ in 0..serving.len() {
            if serving[at] == at {
                break;
            }
            at = serving[at];
        }
        at
    }

    /// A new key (random id in `namespace`) served by the part at `index`.
    pub fn key_in(&self, namespace: &Namespace, index: usize) -> SessionKey {
        loop {
            let key = SessionKey::new(namespace.clone(), SessionId::generate().expect("os random"));
            if self.index_of(&key) == index {
                return key;
            }
        }
    }

    /// A failover: the keys the part at `from` serves are served by the part at `to` from
    /// now on; `from` serves no key any more, so its partition's probe answers up.
    pub fn fail_over(&self, from: usize, to: usize) {
        let mut serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        serving[from] = to;
    }

    /// How often [`SessionStore::partition`] was called.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// The shared store every part passes calls to.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn of(&self, key: &SessionKey) -> &Part<S> {
        &self.parts[self.index_of(key)]
    }

    /// A part that does not pass calls now, if any (it answers keyless calls' failures).
    fn failing(&self) -> Option<&Part<S>> {
        self.parts
            .iter()
            .map(|p| &**p)
            .find(|p| !matches!(p.mode(), FaultMode::Pass | FaultMode::Delay(_)))
    }
}

#[async_trait]
impl<S: SessionStore> SessionStore for PartitionedStore<S> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.of(key).load(key).await
    }
    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.of(key).load_entry(key).await
    }
    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.of(key).save(key, record).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.of(key).create(key, record).await
    }
    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.of(key).update(key, record).await
    }
    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.of(key).save_if(key, expected_version, record).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.of(key).delete(key).await
    }
    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.of(key).delete_leaving(key, tombstone).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.of(key).touch(key, expires_at).await
    }
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.of(key).reconcile(key, base, change).await
    }
    async fn scan(&self, cursor: Option<&crate::ScanCursor>, limit: usize) -> Result<crate::ScanPage> {
        self.inner.scan(cursor, limit).await
    }
    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        let target = self.of(&new_key);
        if !matches!(target.mode(), FaultMode::Pass | FaultMode::Delay(_)) {
            return Err(Error::unavailable(
                "faulty",
                "injected failure (the new id's partition)",
            ));
        }
        self.of(key).rotate(key, new_id).await
    }
    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let mut out: Vec<Result<Option<Record>>> = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(match self.of(key).load(key).await {
                Err(e) if e.is_temporary() => return Err(e),
                other => other,
            });
        }
        Ok(out)
    }
    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let mut out = Vec::with_capacity(items.len());
        for (key, record) in items {
            out.push(self.of(key).save(key, record).await?);
        }
        Ok(out)
    }
    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        match self.failing() {
            Some(part) => part.count(namespace).await,
            None => self.inner.count(namespace).await,
        }
    }
    async fn stats(&self) -> Result<StoreStats> {
        match self.failing() {
            Some(part) => part.stats().await,
            None => self.inner.stats().await,
        }
    }
    /// Up when every part is, degraded when some are, down when none.
    async fn health(&self) -> Health {
        let up = self
            .parts
            .iter()
            .filter(|p| matches!(p.mode(), FaultMode::Pass | FaultMode::Delay(_)))
            .count();
        let status = match up {
            0 => HealthStatus::Down,
            n if n == self.parts.len() => HealthStatus::Up,
            _ => HealthStatus::Degraded,
        };
        Health::new(self.inner.backend(), status)
            .with_detail(format!("{up} of {} parts up", self.parts.len()))
    }
    fn evicts(&self) -> bool {
        self.inner.evicts()
    }
    fn partition(&self, key: &SessionKey) -> Partition {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        Self::partition_at(self.index_of(key))
    }
    async fn partition_health(&self, partition: Partition) -> Health {
        if partition.is_whole() {
            return self.health().await;
        }
        let index = usize::try_from(partition.id() - 1).unwrap_or(usize::MAX);
        let serves = {
            let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
            serving.get(index).is_some_and(|&s| s == index)
        };
        match self.parts.get(index) {
            Some(part) if serves => part.health().await,
            // No key maps to it (failed over, or never a part): nothing to wait for.
            _ => Health::new(self.inner.backend(), HealthStatus::Up).with_detail("serves no key"),
        }
    }
}
