//! [`SessionStore`] for [`BackupStore`]: every call is the primary's; each acknowledged write
//! or delete is queued for the backup; a miss may read through from the backup.

use std::time::Instant;

use session_core::backend::{Change as Replay, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey,
    SessionStore, StoreStats, Version,
};

use crate::store::BackupStore;

impl<P: SessionStore, B: SessionStore> BackupStore<P, B> {
    /// A miss of the primary: the backup's live copy, restored into the primary by the
    /// reconciliation rule (never over a tombstone or a newer session), else `None`.
    async fn read_through(&self, key: &SessionKey) -> Result<Option<Record>> {
        let shared = &self.shared;
        if !shared.may_read_through(key) {
            return Ok(None);
        }
        let found = match shared.backup.load(key).await {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::debug!(error = %e, "backup: read-through failed; answering the primary's miss");
                return Ok(None);
            }
        };
        self.restore(key, found).await
    }

    /// Puts a session found in the backup into the primary; answers what the primary holds.
    async fn restore(&self, key: &SessionKey, found: Record) -> Result<Option<Record>> {
        let shared = &self.shared;
        let outcome = shared
            .primary
            .reconcile(key, Version::NONE, Replay::Write(&found))
            .await?;
        if outcome.stored() {
            shared
                .counters
                .read_through
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(Some(found))
        } else {
            shared.primary.load(key).await
        }
    }
}

#[async_trait]
impl<P: SessionStore, B: SessionStore> SessionStore for BackupStore<P, B> {
    fn backend(&self) -> &'static str {
        self.shared.primary.backend()
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        match self.shared.primary.load(key).await? {
            Some(record) => Ok(Some(record)),
            None => self.read_through(key).await,
        }
    }

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.shared.primary.load_entry(key).await
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.save_on(&self.shared.primary, key, record).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.create_on(&self.shared.primary, key, record).await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.shared.update_on(&self.shared.primary, key, record).await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.shared
            .save_if_on(&self.shared.primary, key, expected_version, record)
            .await
    }

    /// Queued before the primary is asked (see `Shared::delete_on`).
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.shared.delete_on(&self.shared.primary, key, None).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.shared
            .delete_on(&self.shared.primary, key, Some(tombstone))
            .await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.shared.touch_on(&self.shared.primary, key, expires_at).await
    }

    /// The old id queued as a delete first (see `Shared::rotate_on`).
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.shared.rotate_on(&self.shared.primary, key, new_id).await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let mut found = self.shared.primary.load_many(keys).await?;
        if !self.shared.config.read_through {
            return Ok(found);
        }
        let missing: Vec<usize> = found
            .iter()
            .enumerate()
            .filter(|(i, r)| matches!(r, Ok(None)) && self.shared.may_read_through(&keys[*i]))
            .map(|(i, _)| i)
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let wanted: Vec<SessionKey> = missing.iter().map(|&i| keys[i].clone()).collect();
        let Ok(copies) = self.shared.backup.load_many(&wanted).await else {
            return Ok(found);
        };
        for (i, copy) in missing.into_iter().zip(copies) {
            if let Ok(Some(record)) = copy {
                found[i] = self.restore(&keys[i], record).await;
            }
        }
        Ok(found)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        self.shared.save_many_on(&self.shared.primary, items).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.shared.primary.count(namespace).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        let mut stats = self.shared.primary.stats().await?;
        let b = self.backup_stats();
        stats.extra.extend([
            ("backup_pending", b.pending),
            ("backup_written", b.written),
            ("backup_deleted", b.deleted),
            ("backup_dropped_writes", b.dropped_writes),
            ("backup_dropped_deletes", b.dropped_deletes),
            ("backup_failed_flushes", b.failed_flushes),
            ("backup_read_through", b.read_through),
            ("backup_reread", b.reread),
            ("backup_incomplete", u64::from(b.incomplete)),
            ("backup_lag_p50_ms", b.lag_p50_ms),
            ("backup_lag_p99_ms", b.lag_p99_ms),
        ]);
        Ok(stats)
    }

    async fn health(&self) -> Health {
        let start = Instant::now();
        let (primary, backup) = tokio::join!(self.shared.primary.health(), self.shared.backup.health());
        let b = self.backup_stats();
        let mut health = primary.clone();
        let backup_ok = backup.status != HealthStatus::Down && !b.incomplete;
        if health.status == HealthStatus::Up && !backup_ok {
            health.status = HealthStatus::Degraded;
        }
        let note = format!(
            "backup {}: {} pending, lag p99 {} ms{}",
            backup.status.as_str(),
            b.pending,
            b.lag_p99_ms,
            if b.incomplete {
                ", incomplete (changes dropped: resync)"
            } else {
                ""
            }
        );
        health.detail = Some(match &primary.detail {
            Some(d) => format!("{d}; {note}"),
            None => note,
        });
        health.extra.push(("backup_pending", b.pending));
        health.latency = Some(start.elapsed());
        health.components = vec![("primary", primary), ("backup", backup)];
        health
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Replay<'_>) -> Result<Reconciled> {
        self.shared
            .reconcile_on(&self.shared.primary, key, base, change)
            .await
    }

    /// Handed to the primary, wrapped so that applying it records its deletes and index
    /// writes for the backup like any others.
    async fn revoke_principal(
        &self,
        revocation: std::sync::Arc<dyn session_core::Revocation>,
    ) -> Result<Option<session_core::Revoked>> {
        self.keep_revocation(revocation).await
    }

    async fn scan(&self, cursor: Option<&ScanCursor>, limit: usize) -> Result<ScanPage> {
        self.shared.primary.scan(cursor, limit).await
    }

    fn keeps_tombstones(&self) -> bool {
        self.shared.primary.keeps_tombstones()
    }

    fn evicts(&self) -> bool {
        self.shared.primary.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        self.shared.partition(key)
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.shared.primary.partition_health(partition).await
    }
}
