//! Bulk operations between the primary and the backup: restoring the primary from the backup
//! (after Redis lost its data) and resyncing the backup from the primary (after the queue
//! overflowed).

use std::sync::atomic::Ordering;

use session_core::{Result, ScanCursor, SessionKey, SessionStore};

use crate::copy::{copy_sessions, CopyMode, CopyOptions, CopyProgress};
use crate::store::BackupStore;

impl<P: SessionStore, B: SessionStore> BackupStore<P, B> {
    /// Repopulates the primary from the backup: every live session of the backup is applied
    /// to the primary by the reconciliation rule, with its own deadline — a session the primary
    /// holds in a newer state, or a tombstone there, stays. Safe while the store serves.
    /// `on_page` sees the progress after each page.
    ///
    /// # Errors
    /// The first error of either store; call it again to finish (what was restored stays).
    pub async fn restore_all(&self, on_page: impl FnMut(&CopyProgress) + Send) -> Result<CopyProgress> {
        let options = CopyOptions::default().with_mode(CopyMode::KeepNewer);
        let progress = copy_sessions(&self.shared.backup, &self.shared.primary, &options, on_page).await?;
        self.shared
            .counters
            .restored
            .fetch_add(progress.copied, Ordering::Relaxed);
        Ok(progress)
    }

    /// Makes the backup whole again after changes were dropped (the queue overflowed): copies
    /// every live session of the primary into the backup, then deletes from the backup what
    /// the primary no longer holds. Clears [`BackupStats::incomplete`](crate::BackupStats)
    /// unless another change was dropped meanwhile.
    ///
    /// # Errors
    /// The first error of either store; the backup stays marked incomplete.
    pub async fn resync(&self) -> Result<CopyProgress> {
        let shared = &self.shared;
        shared.incomplete.store(false, Ordering::Relaxed);
        let result = self.resync_passes().await;
        if result.is_err() {
            shared.incomplete.store(true, Ordering::Relaxed);
        }
        result
    }

    async fn resync_passes(&self) -> Result<CopyProgress> {
        let shared = &self.shared;
        let progress =
            copy_sessions(&shared.primary, &shared.backup, &CopyOptions::default(), |_| {}).await?;
        // Sessions the backup holds that the primary does not (deletes that were dropped).
        let mut cursor: Option<ScanCursor> = None;
        loop {
            let page = shared.backup.scan(cursor.as_ref(), 1000).await?;
            let keys: Vec<SessionKey> = page.sessions.into_iter().map(|(k, _)| k).collect();
            if !keys.is_empty() {
                let there = shared.primary.load_many(&keys).await?;
                for (key, state) in keys.iter().zip(there) {
                    if matches!(state, Ok(None)) && shared.queue().get(key).is_none() {
                        shared.backup.delete(key).await?;
                    }
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                return Ok(progress);
            }
        }
    }
}
