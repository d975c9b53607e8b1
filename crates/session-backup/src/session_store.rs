//! [`SessionStore`] for [`BackupStore`]: every call is the primary's; each acknowledged write
//! or delete is queued for the backup; a miss may read through from the backup.

use std::time::Instant;

use session_core::backend::{Change as Replay, Entry, Partition, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Health, HealthStatus, Meta, Namespace, Result, ScanCursor, ScanPage, SessionId, SessionKey,
    SessionStore, StoreStats, Version,
};

use crate::queue::Change;
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
        let meta = self
            .shared
            .primary
            .save(key, record)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        self.shared.record_put(key, record, meta);
        Ok(meta)
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        let meta = self
            .shared
            .primary
            .create(key, record)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        self.shared.record_put(key, record, meta);
        Ok(meta)
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        let meta = self
            .shared
            .primary
            .update(key, record)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        self.shared.record_put(key, record, meta);
        Ok(meta)
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        let meta = self
            .shared
            .primary
            .save_if(key, expected_version, record)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        self.shared.record_put(key, record, meta);
        Ok(meta)
    }

    /// The delete is queued before the primary is asked, so that no read-through on this
    /// instance can restore the session from the backup meanwhile. It stays queued if the
    /// primary's answer is an error: a logout is never undone by the backup, at worst a session
    /// whose logout failed is missing from it until its next write.
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.shared.record_delete(key, None);
        self.shared.primary.delete(key).await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.shared.record_delete(key, Some(tombstone));
        self.shared.primary.delete_leaving(key, tombstone).await
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        let found = self
            .shared
            .primary
            .touch(key, expires_at)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        if found {
            self.shared.record(key, Change::Retime(expires_at));
        }
        Ok(found)
    }

    /// Like a delete for the old id (queued first: a read-through must not restore it), and the
    /// new id's state read from the primary at flush time.
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        if new_id != &key.id {
            self.shared.record_delete(key, None);
        }
        let moved = self.shared.primary.rotate(key, new_id).await;
        match &moved {
            Ok(_) => self.shared.record(&new_key, Change::Refresh),
            // Moved or not: the new id is backed up if the primary holds it; the old id's delete
            // stays queued (a session is never restored under an id it left).
            Err(e) => self.shared.record_unknown(&new_key, e),
        }
        moved
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
        let metas = self.shared.primary.save_many(items).await.inspect_err(|e| {
            for (key, _) in items {
                self.shared.record_unknown(key, e);
            }
        })?;
        for ((key, record), meta) in items.iter().zip(&metas) {
            self.shared.record_put(key, record, *meta);
        }
        Ok(metas)
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
        let outcome = self
            .shared
            .primary
            .reconcile(key, base, change)
            .await
            .inspect_err(|e| self.shared.record_unknown(key, e))?;
        self.shared.record_replay(key, &change, outcome);
        Ok(outcome)
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
