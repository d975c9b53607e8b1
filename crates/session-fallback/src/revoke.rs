//! Revoking a principal's sessions while the primary holding its index is down: the
//! revocation is journaled under the index's key and applied to the primary by replay (before
//! its circuit closes), and what this instance holds of the principal's sessions ends at
//! once: an outage write in the secondary as a logout journaled like any other, a warm copy
//! marked gone here (deleted as a logout if the revocation is ever dropped). A revocation
//! kept here never undoes a later login: replay ends only the sessions first bound by the
//! time it was asked for (rotated or bound again since or not; plus `REVOKE_SKEW_MS` for
//! clock skew), and by the delete-wins rule a replayed write of an ended session loses to
//! its tombstone whichever instance replays first.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_core::backend::{now_ms, Change, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Health, Meta, Namespace, Result, Revocation, Revoked, ScanCursor, ScanPage, SessionId,
    SessionKey, SessionStore, StoreStats, Version,
};

use crate::journal::PendingOp;
use crate::ops::Delete;
use crate::store::Inner;

/// The revocations waiting for replay, by principal index key (one per principal: a later
/// revocation of the same principal covers everything an earlier one did).
#[derive(Default)]
pub(crate) struct Revocations {
    map: Mutex<HashMap<SessionKey, Kept>>,
}

/// A revocation waiting for replay, and the warm copies it marked gone here (deleted as
/// logouts if it is dropped).
struct Kept {
    revocation: Arc<dyn Revocation>,
    marked: Vec<SessionKey>,
}

impl Revocations {
    fn map(&self) -> MutexGuard<'_, HashMap<SessionKey, Kept>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `revocation` for `key`, unless a later one is kept already.
    fn keep(&self, key: &SessionKey, revocation: Arc<dyn Revocation>) {
        let mut map = self.map();
        match map.get_mut(key) {
            Some(kept) if kept.revocation.revoked_at() > revocation.revoked_at() => {}
            Some(kept) => kept.revocation = revocation,
            None => {
                map.insert(
                    key.clone(),
                    Kept {
                        revocation,
                        marked: Vec::new(),
                    },
                );
            }
        }
    }

    /// Remembers the warm copies marked gone for the revocation kept under `key`.
    fn marked(&self, key: &SessionKey, keys: impl IntoIterator<Item = SessionKey>) {
        if let Some(kept) = self.map().get_mut(key) {
            kept.marked.extend(keys);
        }
    }

    /// The revocation kept for `key`.
    pub(crate) fn get(&self, key: &SessionKey) -> Option<Arc<dyn Revocation>> {
        self.map().get(key).map(|k| Arc::clone(&k.revocation))
    }

    /// Forgets `applied`; `false` when another revocation replaced it meanwhile (kept).
    pub(crate) fn applied(&self, key: &SessionKey, applied: &Arc<dyn Revocation>) -> bool {
        self.drop_kept(key, applied).is_some()
    }

    /// Forgets `dropped`, answering the keys it marked gone; `None` when another revocation
    /// replaced it meanwhile (kept).
    pub(crate) fn drop_kept(
        &self,
        key: &SessionKey,
        dropped: &Arc<dyn Revocation>,
    ) -> Option<Vec<SessionKey>> {
        let mut map = self.map();
        if map
            .get(key)
            .is_some_and(|kept| Arc::ptr_eq(&kept.revocation, dropped))
        {
            return map.remove(key).map(|kept| kept.marked);
        }
        None
    }
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// [`SessionStore::revoke_principal`]: `Ok(None)` while the index's partition answers (the
    /// caller applies the revocation through this store, to the primary); otherwise journaled,
    /// and this instance's own copies of the principal's sessions end now.
    pub(crate) async fn keep_revocation(&self, revocation: Arc<dyn Revocation>) -> Result<Option<Revoked>> {
        let index = revocation.index().clone();
        if self.fast_path() {
            return Ok(None);
        }
        let kept = {
            let _guard = self.locks.lock(&index).await;
            if !self.open_for(&index) && self.journal.get(&index).is_none() {
                return Ok(None);
            }
            let at = revocation.revoked_at();
            match self.journal.admit(&index, PendingOp::Revoke, at, Version::NONE) {
                Ok(reservation) => {
                    self.revocations.keep(&index, Arc::clone(&revocation));
                    reservation.commit(PendingOp::Revoke, at);
                    Ok(())
                }
                Err(full) => Err(self.journal_full(&index, "revoke", full)),
            }
        };
        if let Err(e) = kept {
            // Not kept (the journal is full): this instance still stops serving what it holds
            // of the principal's sessions; the caller is told the revocation did not happen.
            let (_, marked) = self.end_local_copies(&*revocation).await;
            self.end_marked(&marked).await;
            return Err(e);
        }
        self.journaled(&index);
        tracing::warn!(
            primary = self.primary.backend(),
            namespace = index.ns(),
            "session fallback: a principal's sessions were revoked while its index is unreachable; \
             the revocation is journaled and applied when the primary answers"
        );
        let (ended, marked) = self.end_local_copies(&*revocation).await;
        self.revocations.marked(&index, marked);
        Ok(Some(Revoked::kept(ended)))
    }

    /// Ends the sessions bound to the revoked principal that this instance holds: outage
    /// writes in the secondary, each deleted as by a logout (journaled in the slot it already
    /// has, so that replay deletes it in the primary too), and warm copies — marked gone here
    /// while their partition is open (the revocation's replay ends them in the primary; no
    /// journal slot needed, so a full journal cannot keep them served), deleted in the primary
    /// now otherwise. Returns how many it ended and the keys it marked gone; failures are
    /// logged (the revocation is kept whatever happens here).
    async fn end_local_copies(&self, revocation: &dyn Revocation) -> (u64, Vec<SessionKey>) {
        let mut journaled: HashSet<SessionKey> = HashSet::new();
        for key in self.journal.keys() {
            if !matches!(self.journal.get(&key), Some(e) if e.op == PendingOp::Write) {
                continue;
            }
            if let Ok(Some(record)) = self.secondary.load(&key).await {
                if revocation.is_bound(&key, &record) {
                    journaled.insert(key);
                }
            }
        }
        let warm = if self.warm.enabled() {
            self.warm
                .live_matching(|key, record| revocation.is_bound(key, record))
        } else {
            Vec::new()
        };
        let (mut ended, mut marked) = (0, Vec::new());
        let gone_until = now_ms().saturating_add(self.config.tombstone_ttl_ms);
        for key in warm.into_iter().filter(|k| !journaled.contains(k)) {
            revocation.ending(&key);
            if self.open_for(&key) && self.journal.get(&key).is_none() {
                self.warm.put_gone(&key, Version::generate(), gone_until);
                marked.push(key);
                ended += 1;
            } else if self.end_now(&key).await {
                ended += 1;
            } else {
                // Not ended now: at least not served from here.
                self.warm.put_gone(&key, Version::generate(), gone_until);
                marked.push(key);
            }
        }
        for key in &journaled {
            revocation.ending(key);
            ended += u64::from(self.end_now(key).await);
        }
        (ended, marked)
    }

    /// Deletes, as logouts, the warm copies a revocation that will not be applied had marked
    /// gone (wherever each belongs now: journaled while its partition is open).
    pub(crate) async fn end_marked(&self, marked: &[SessionKey]) {
        for key in marked {
            self.end_now(key).await;
        }
    }

    /// Deletes `key` wherever it belongs now; whether a session was there (a failure is
    /// logged and counts as none).
    async fn end_now(&self, key: &SessionKey) -> bool {
        match self.delete_now(key).await {
            Ok(existed) => existed,
            Err(e) => {
                tracing::error!(
                    primary = self.primary.backend(),
                    namespace = key.ns(),
                    sid = %key.id.short_hash(),
                    error = e.kind().as_str(),
                    "session fallback: a revoked session held here could not be ended now; the kept \
                     revocation ends it in the primary when it is replayed"
                );
                false
            }
        }
    }
}

/// The primary as a kept revocation is applied to it on replay: the principal's index is read
/// and changed on the primary directly, each call under the primary timeout (the fallback's
/// own routing refuses index keys while a revocation waits under one); sessions are read with
/// the fallback's `load_many` and ended with its `delete`, so that a session on a partition
/// that is still open is journaled as a logout there (instead of failing the whole replay),
/// and the warm copy learns of each delete.
pub(crate) struct ReplayTarget<P, S> {
    inner: Arc<Inner<P, S>>,
    /// A call on the primary directly (the index's) failed: the index's partition is down.
    primary_failed: AtomicBool,
}

impl<P: SessionStore, S: SessionStore> ReplayTarget<P, S> {
    pub(crate) fn new(inner: Arc<Inner<P, S>>) -> Self {
        ReplayTarget {
            inner,
            primary_failed: AtomicBool::new(false),
        }
    }

    /// Whether a call on the primary directly failed with a temporary error.
    pub(crate) fn primary_failed(&self) -> bool {
        self.primary_failed.load(Ordering::Relaxed)
    }

    async fn direct<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let answer = self.inner.on_primary(op, call).await;
        if matches!(&answer, Err(e) if e.is_temporary()) {
            self.primary_failed.store(true, Ordering::Relaxed);
        }
        answer
    }
}

#[async_trait]
impl<P: SessionStore, S: SessionStore> SessionStore for ReplayTarget<P, S> {
    fn backend(&self) -> &'static str {
        self.inner.primary.backend()
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.direct("load", self.inner.primary.load(key)).await
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.direct("load", self.inner.primary.load_entry(key)).await
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.direct("save", self.inner.primary.save(key, record)).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.direct("create", self.inner.primary.create(key, record))
            .await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.direct("update", self.inner.primary.update(key, record))
            .await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.direct(
            "save_if",
            self.inner.primary.save_if(key, expected_version, record),
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.inner.delete_now(key).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.inner.exec(key, Delete(tombstone)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.direct("touch", self.inner.primary.touch(key, expires_at))
            .await
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.direct("rotate", self.inner.primary.rotate(key, new_id))
            .await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        self.inner.load_many(keys).await
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        self.inner
            .on_primary_batch("save_many", items.len(), self.inner.primary.save_many(items))
            .await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.direct("count", self.inner.primary.count(namespace)).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.direct("stats", self.inner.primary.stats()).await
    }

    async fn health(&self) -> Health {
        self.inner.primary_health().await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.direct("reconcile", self.inner.primary.reconcile(key, base, change))
            .await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.direct("scan", self.inner.primary.scan(cursor, limit)).await
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.primary.keeps_tombstones()
    }

    fn evicts(&self) -> bool {
        self.inner.primary.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        self.inner.primary.partition(key)
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.inner.primary.partition_health(partition).await
    }
}
