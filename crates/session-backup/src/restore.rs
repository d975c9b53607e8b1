//! Bulk operations between the primary and the backup: restoring the primary from the backup
//! (after Redis lost its data) and resyncing the backup from the primary (after the queue
//! overflowed).

use std::sync::atomic::Ordering;
use std::time::Instant;

use session_core::backend::{now_ms, Record};
use session_core::{Result, ScanCursor, SessionKey, SessionStore};

use crate::copy::{keep_newer, CopyProgress};
use crate::queue::{Change as QueuedChange, Queued};
use crate::store::BackupStore;

/// Sessions per page of a bulk pass.
const PAGE: usize = 1000;

impl<P: SessionStore, B: SessionStore> BackupStore<P, B> {
    /// Repopulates the primary from the backup: every live session of the backup that the
    /// primary holds nothing for is restored, with its own deadline — whatever the primary
    /// holds (a session written since it lost its data, whatever the writers' clocks say, or a
    /// tombstone) stays. Keys with a change not yet in the backup (queued or in flight: a
    /// delete, a newer write) are left alone; the queue as it stands is flushed first as far as
    /// the backup answers (changes that keep coming under load are not waited for). Safe while
    /// the store serves. After dropped changes (the backup is *incomplete*, see
    /// [`resync`](Self::resync)) the backup may still hold sessions deleted since: they come
    /// back too (a warning says so). `on_page` sees the progress after each page.
    ///
    /// # Errors
    /// The first error of either store; call it again to finish (what was restored stays).
    pub async fn restore_all(&self, mut on_page: impl FnMut(&CopyProgress) + Send) -> Result<CopyProgress> {
        let shared = &self.shared;
        // What is queued now goes first, with what its flushes queue again (a read-back that
        // finds the primary empty); changes made after this point are not waited for (their
        // keys are skipped below while they stay pending), so steady writes do not hold it up.
        let began = std::time::Instant::now();
        while shared.queue().holds_older_than(began) {
            if crate::flusher::flush_once(shared).await.is_err() {
                break;
            }
        }
        if shared.incomplete.load(Ordering::Relaxed) {
            tracing::warn!(
                "backup: restoring from an incomplete backup (changes were dropped): sessions deleted \
                 meanwhile may come back; resync first if the primary still holds its data"
            );
        }
        let started = Instant::now();
        let mut progress = CopyProgress::default();
        loop {
            let page = shared.backup.scan(progress.cursor.as_ref(), PAGE).await?;
            progress.skipped += page.skipped;
            let now = now_ms();
            let mut candidates: Vec<(SessionKey, Record)> = Vec::with_capacity(page.sessions.len());
            for (key, record) in page.sessions {
                if record.meta.is_expired(now) {
                    progress.expired += 1;
                } else if shared.queue().pending(&key) {
                    progress.kept += 1;
                } else {
                    candidates.push((key, record));
                }
            }
            // Only gaps are filled: a session the primary holds (written since it lost its
            // data) is newer than the backup by definition, whatever the clocks say; one
            // page's keys are asked at once. A tombstone there stays too: `reconcile` never
            // passes one.
            let keys: Vec<SessionKey> = candidates.iter().map(|(k, _)| k.clone()).collect();
            let held = if keys.is_empty() {
                Vec::new()
            } else {
                shared.primary.load_many(&keys).await?
            };
            for ((key, record), held) in candidates.iter().zip(held) {
                if !matches!(held, Ok(None)) {
                    progress.kept += 1;
                    continue;
                }
                keep_newer(&shared.primary, key, record, &mut progress).await?;
            }
            progress.pages += 1;
            progress.cursor = page.next;
            progress.elapsed = started.elapsed();
            on_page(&progress);
            if progress.cursor.is_none() {
                break;
            }
        }
        shared
            .counters
            .restored
            .fetch_add(progress.copied, Ordering::Relaxed);
        Ok(progress)
    }

    /// Makes the backup whole again after changes were dropped (the queue overflowed): copies
    /// every live session of the primary into the backup as the primary holds it (then reads
    /// it back: a key the primary changed meanwhile is queued to be copied again), then
    /// deletes from the backup each session the primary no longer holds. Keys with a change on its way are left to the flusher.
    /// Read-through stays off while it runs. Clears [`BackupStats::incomplete`](crate::BackupStats)
    /// unless another change was dropped meanwhile.
    ///
    /// # Errors
    /// The first error of either store; the backup stays marked incomplete.
    pub async fn resync(&self) -> Result<CopyProgress> {
        let shared = &self.shared;
        let drops_before = shared.drops.load(Ordering::Relaxed);
        shared.resyncing.store(true, Ordering::Relaxed);
        let result = self.resync_passes().await;
        shared.resyncing.store(false, Ordering::Relaxed);
        if result.is_ok() && shared.drops.load(Ordering::Relaxed) == drops_before {
            shared.incomplete.store(false, Ordering::Relaxed);
        }
        result
    }

    async fn resync_passes(&self) -> Result<CopyProgress> {
        let shared = &self.shared;
        let started = Instant::now();
        let mut progress = CopyProgress::default();
        // 1. The primary's sessions into the backup, as the primary holds them (it is the source
        //    of truth: no clock decides), then read back like a flush's writes, so that a
        //    change the flusher wrote meanwhile is copied again rather than overwritten.
        let mut cursor: Option<ScanCursor> = None;
        loop {
            let page = shared.primary.scan(cursor.as_ref(), PAGE).await?;
            progress.skipped += page.skipped;
            let items: Vec<(SessionKey, Record)> = {
                let queue = shared.queue();
                page.sessions
                    .into_iter()
                    .filter(|(key, _)| !queue.pending(key))
                    .collect()
            };
            if !items.is_empty() {
                shared.backup.save_many(&items).await?;
                progress.copied += items.len() as u64;
                let since = Instant::now();
                let written = items
                    .into_iter()
                    .map(|(key, record)| {
                        (
                            key,
                            Queued {
                                change: QueuedChange::Put(record),
                                since,
                            },
                        )
                    })
                    .collect();
                crate::flusher::verify(shared, written).await;
            }
            progress.pages += 1;
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        // 2. What the backup holds and the primary does not (deletes that were dropped), each
        //    checked against the primary right before it goes.
        loop {
            let page = shared.backup.scan(cursor.as_ref(), PAGE).await?;
            for (key, _) in &page.sessions {
                if shared.queue().pending(key) || shared.primary.load(key).await?.is_some() {
                    continue;
                }
                if shared.queue().pending(key) {
                    continue;
                }
                shared.backup.delete(key).await?;
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        progress.elapsed = started.elapsed();
        Ok(progress)
    }
}
