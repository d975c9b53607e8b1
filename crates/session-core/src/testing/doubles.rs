//! Test doubles: a wrapper store that fails, hangs or slows down on command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
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
}
