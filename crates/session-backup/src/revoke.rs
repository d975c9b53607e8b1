//! A revocation of a principal's sessions ([`SessionStore::revoke_principal`]) through a
//! [`BackupStore`]: handed to the primary wrapped, so that wherever it is applied — now,
//! through this store, or later by a fallback below that kept it during an outage — its
//! deletes and index writes reach the backup like any others. A revoked session must not
//! stay in the backup, where a read-through or a bulk restore would bring it back.

use std::sync::{Arc, Weak};

use session_core::backend::{Change as Replay, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Health, Meta, Namespace, Result, Revocation, Revoked, ScanCursor, ScanPage, SessionId,
    SessionKey, SessionStore, StoreStats, Version,
};

use crate::store::{BackupStore, Shared};

/// `base`, handed to the primary of a [`BackupStore`]. It holds the store weakly: a store
/// below that keeps it (a fallback's journal) is owned by the backup store, and a strong
/// reference would keep both alive forever.
struct BackupRevocation<P, B> {
    base: Arc<dyn Revocation>,
    shared: Weak<Shared<P, B>>,
}

impl<P, B> std::fmt::Debug for BackupRevocation<P, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRevocation")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<P: SessionStore, B: SessionStore> Revocation for BackupRevocation<P, B> {
    fn index(&self) -> &SessionKey {
        self.base.index()
    }

    fn revoked_at(&self) -> u64 {
        self.base.revoked_at()
    }

    fn is_bound(&self, key: &SessionKey, record: &Record) -> bool {
        self.base.is_bound(key, record)
    }

    /// Queued for the backup as a delete through the store would be (before the delete).
    fn ending(&self, key: &SessionKey) {
        if let Some(shared) = self.shared.upgrade() {
            shared.record_delete(key, None);
        }
        self.base.ending(key);
    }

    /// Through a [`Recording`] of `store` (as it is while the backup store lives).
    async fn apply(&self, store: Arc<dyn SessionStore>, later: bool) -> Result<u64> {
        match self.shared.upgrade() {
            Some(shared) => {
                let recording = Recording {
                    target: store,
                    shared,
                };
                self.base.apply(Arc::new(recording), later).await
            }
            None => self.base.apply(store, later).await,
        }
    }
}

impl<P: SessionStore, B: SessionStore> BackupStore<P, B> {
    /// [`SessionStore::revoke_principal`]: handed to the primary, wrapped.
    pub(crate) async fn keep_revocation(&self, revocation: Arc<dyn Revocation>) -> Result<Option<Revoked>> {
        let wrapped = BackupRevocation {
            base: revocation,
            shared: Arc::downgrade(&self.shared),
        };
        self.shared.primary.revoke_principal(Arc::new(wrapped)).await
    }
}

/// A store below a [`BackupStore`] whose acknowledged writes and deletes are queued for the
/// backup as the backup store's own are. Reads are the target's (no read-through).
struct Recording<P, B> {
    target: Arc<dyn SessionStore>,
    shared: Arc<Shared<P, B>>,
}

#[async_trait]
impl<P: SessionStore, B: SessionStore> SessionStore for Recording<P, B> {
    fn backend(&self) -> &'static str {
        self.target.backend()
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.target.load(key).await
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.target.load_entry(key).await
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.save_on(&*self.target, key, record).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.create_on(&*self.target, key, record).await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.update_on(&*self.target, key, record).await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.shared
            .save_if_on(&*self.target, key, expected_version, record)
            .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.shared.delete_on(&*self.target, key, None).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.shared.delete_on(&*self.target, key, Some(tombstone)).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.shared.touch_on(&*self.target, key, expires_at).await
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.shared.rotate_on(&*self.target, key, new_id).await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        self.target.load_many(keys).await
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        self.shared.save_many_on(&*self.target, items).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.target.count(namespace).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.target.stats().await
    }

    async fn health(&self) -> Health {
        self.target.health().await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Replay<'_>) -> Result<Reconciled> {
        self.shared.reconcile_on(&*self.target, key, base, change).await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.target.scan(cursor, limit).await
    }

    fn keeps_tombstones(&self) -> bool {
        self.target.keeps_tombstones()
    }

    fn evicts(&self) -> bool {
        self.target.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        self.target.partition(key)
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.target.partition_health(partition).await
    }
}
