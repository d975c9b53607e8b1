//! [`BackupStore`]: the primary serves every call; what it acknowledged is queued for the
//! backup, which a background task writes in batches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use session_core::backend::{Change as Replay, Partition, Reconciled, Record, Tombstone};
use session_core::{Result, SessionKey, SessionStore};
use tokio::sync::Notify;

use crate::config::BackupConfig;
use crate::lag::Lag;
use crate::queue::{Change, Pushed, Queue};

/// A [`SessionStore`] that serves everything from `primary` and copies each write and delete
/// it acknowledged into `backup` asynchronously (write-behind), batched, the latest state of
/// each key winning, at least once. A backup that is down or slow adds nothing to a call's
/// latency: the call only queues its change.
///
/// Misses may read through from the backup ([`BackupConfig::read_through`]);
/// [`restore_all`](Self::restore_all) repopulates the primary from the backup and
/// [`resync`](Self::resync) the backup from the primary. See the [crate docs](crate).
pub struct BackupStore<P, B> {
    pub(crate) shared: Arc<Shared<P, B>>,
    /// The flusher task (kept to tell whether one runs).
    flusher: Option<tokio::task::AbortHandle>,
}

/// What the store and its flusher share.
pub(crate) struct Shared<P, B> {
    pub(crate) primary: P,
    pub(crate) backup: B,
    pub(crate) config: BackupConfig,
    pub(crate) queue: Mutex<Queue>,
    /// Woken when a batch is waiting, or when `flush` asks.
    pub(crate) wake: Notify,
    /// Held by each flush: one batch in flight at a time, so `flush()` also waits for the
    /// flusher's.
    pub(crate) flushing: tokio::sync::Mutex<()>,
    pub(crate) counters: Counters,
    /// Some change was dropped (the queue was full): the backup misses it until a resync.
    pub(crate) incomplete: AtomicBool,
    /// Changes dropped since start: a resync clears `incomplete` only if none was dropped
    /// while it ran.
    pub(crate) drops: AtomicU64,
    /// A resync is running: the backup is being repaired, read-through stays off.
    pub(crate) resyncing: AtomicBool,
    /// Whether the last flush attempt failed.
    pub(crate) failing: AtomicBool,
    pub(crate) lag: Mutex<Lag>,
}

/// What the store counts since start.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) written: AtomicU64,
    pub(crate) deleted: AtomicU64,
    pub(crate) dropped_writes: AtomicU64,
    pub(crate) dropped_deletes: AtomicU64,
    pub(crate) failed_flushes: AtomicU64,
    pub(crate) read_through: AtomicU64,
    pub(crate) restored: AtomicU64,
    pub(crate) reread: AtomicU64,
}

/// Figures of the write-behind, from [`BackupStore::backup_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupStats {
    /// Keys with a change not yet in the backup.
    pub pending: u64,
    /// Sessions written into the backup (each flushed write counts once).
    pub written: u64,
    /// Deletes applied to the backup.
    pub deleted: u64,
    /// Writes not queued because the queue was full.
    pub dropped_writes: u64,
    /// Deletes not queued because the queue was full twice over.
    pub dropped_deletes: u64,
    /// Flush attempts that failed (each retried later).
    pub failed_flushes: u64,
    /// Misses answered from the backup (and restored into the primary).
    pub read_through: u64,
    /// Sessions restored into the primary by [`BackupStore::restore_all`].
    pub restored: u64,
    /// Written keys that the read-back after a flush found changed in the primary (another
    /// instance's change, or this one's newer), queued again to be copied as the primary holds
    /// them.
    pub reread: u64,
    /// Whether a change was dropped since the last complete resync.
    pub incomplete: bool,
    /// Median time from a change to its flush, over the last flushed changes, ms.
    pub lag_p50_ms: u64,
    /// 99th percentile of the same, ms.
    pub lag_p99_ms: u64,
}

impl<P: SessionStore, B: SessionStore> BackupStore<P, B> {
    /// Wraps `primary`, backing it up into `backup`. Inside a Tokio runtime it starts the
    /// flusher; outside one, changes wait until [`flush`](Self::flush) is called.
    ///
    /// # Errors
    /// [`Error::Config`](session_core::Error::Config) for a wrong setting, or a backup that
    /// may drop sessions on its own ([`SessionStore::evicts`]).
    pub fn new(primary: P, backup: B, config: BackupConfig) -> Result<Self> {
        config.validate()?;
        if backup.evicts() {
            return Err(session_core::Error::config(
                "backup",
                format!(
                    "the {} backup evicts sessions to stay within its bounds, so it would lose \
                     backed-up sessions; give it a policy that rejects instead",
                    backup.backend()
                ),
            ));
        }
        let shared = Arc::new(Shared {
            primary,
            backup,
            config,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            incomplete: AtomicBool::new(false),
            drops: AtomicU64::new(0),
            resyncing: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            lag: Mutex::new(Lag::default()),
        });
        let flusher = crate::flusher::start(&shared);
        Ok(BackupStore { shared, flusher })
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.shared.primary
    }

    /// The backup store.
    pub fn backup(&self) -> &B {
        &self.shared.backup
    }

    /// The write-behind's figures.
    pub fn backup_stats(&self) -> BackupStats {
        let c = &self.shared.counters;
        let (lag_p50_ms, lag_p99_ms) = self.shared.lag().percentiles();
        BackupStats {
            pending: self.shared.queue().len() as u64,
            written: c.written.load(Ordering::Relaxed),
            deleted: c.deleted.load(Ordering::Relaxed),
            dropped_writes: c.dropped_writes.load(Ordering::Relaxed),
            dropped_deletes: c.dropped_deletes.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            read_through: c.read_through.load(Ordering::Relaxed),
            restored: c.restored.load(Ordering::Relaxed),
            reread: c.reread.load(Ordering::Relaxed),
            incomplete: self.shared.incomplete.load(Ordering::Relaxed),
            lag_p50_ms,
            lag_p99_ms,
        }
    }

    /// Writes every queued change into the backup now (and waits for a batch the flusher has in
    /// flight), and returns once the queue is empty or a write into the backup failed (graceful
    /// shutdown: call it before the process exits).
    ///
    /// # Errors
    /// The backup's error; the changes stay queued.
    pub async fn flush(&self) -> Result<()> {
        loop {
            // Each flush waits for the batch in flight, if any (which may come back to the queue).
            crate::flusher::flush_once(&self.shared).await?;
            if self.shared.queue().len() == 0 {
                return Ok(());
            }
        }
    }
}

impl<P, B> Drop for BackupStore<P, B> {
    /// The flusher is not cut off midway: it finishes the batch in flight (and, woken, one
    /// more), then ends once it finds the store gone. Call [`flush`](Self::flush) before
    /// dropping to write everything.
    fn drop(&mut self) {
        self.flusher.take();
        self.shared.wake.notify_one();
    }
}

impl<P: SessionStore, B: SessionStore> Shared<P, B> {
    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lag(&self) -> MutexGuard<'_, Lag> {
        self.lag.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a change the primary acknowledged; wakes the flusher when a batch is waiting.
    pub(crate) fn record(&self, key: &SessionKey, change: Change) {
        let delete = change.is_delete();
        let (pushed, len) = {
            let mut q = self.queue();
            let pushed = q.push(key, change, self.config.max_pending);
            (pushed, q.len())
        };
        if pushed == Pushed::Dropped {
            let counter = if delete {
                &self.counters.dropped_deletes
            } else {
                &self.counters.dropped_writes
            };
            counter.fetch_add(1, Ordering::Relaxed);
            self.drops.fetch_add(1, Ordering::Relaxed);
            if !self.incomplete.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    max_pending = self.config.max_pending,
                    "backup: the queue is full; changes are dropped and the backup is incomplete until a resync"
                );
            }
        }
        if len >= self.config.batch_size {
            self.wake.notify_one();
        }
    }

    /// A record written by the primary, with the metadata the primary stored.
    pub(crate) fn record_put(&self, key: &SessionKey, record: &Record, meta: session_core::Meta) {
        let mut stored = record.clone();
        stored.meta = meta;
        self.record(key, Change::Put(stored));
    }

    /// A replayed change the primary applied: its effect, as far as it is known here.
    pub(crate) fn record_replay(&self, key: &SessionKey, change: &Replay<'_>, outcome: Reconciled) {
        if !outcome.stored() {
            return;
        }
        match change {
            Replay::Write(record) => self.record(key, Change::Put((*record).clone())),
            Replay::Delete(tombstone) => self.record(key, Change::Delete(Some(*tombstone))),
            Replay::Expire => self.record(key, Change::Delete(None)),
        }
    }

    /// Whether a read may look in the backup for `key`: read-through is on, the backup is
    /// complete and answering, no resync is repairing it, and `key` has no change that is not
    /// in the backup yet (queued or in flight: the backup's copy may be one a delete or a newer
    /// write is replacing).
    pub(crate) fn may_read_through(&self, key: &SessionKey) -> bool {
        self.config.read_through
            && !self.incomplete.load(Ordering::Relaxed)
            && !self.resyncing.load(Ordering::Relaxed)
            && !self.failing.load(Ordering::Relaxed)
            && !self.queue().pending(key)
    }

    /// A write on `key` failed with an outcome the primary may have applied (a timeout, a lost
    /// connection): the next flush writes the session the primary holds then, if any.
    pub(crate) fn record_unknown(&self, key: &SessionKey, error: &session_core::Error) {
        if error.is_temporary() {
            self.record(key, Change::Recheck);
        }
    }

    /// The delete a `delete_leaving` call passes on.
    pub(crate) fn record_delete(&self, key: &SessionKey, tombstone: Option<Tombstone>) {
        self.record(key, Change::Delete(tombstone));
    }

    /// The primary's partition of `key`.
    pub(crate) fn partition(&self, key: &SessionKey) -> Partition {
        self.primary.partition(key)
    }
}
