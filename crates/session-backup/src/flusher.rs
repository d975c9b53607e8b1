//! The flusher: takes a batch of queued changes every `flush_interval_ms` (at once when a
//! whole batch is waiting), writes it into the backup — the records in one `save_many`, then
//! the deletes and deadlines key by key — and puts back whatever failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use session_core::backend::Record;
use session_core::{Error, Result, SessionKey, SessionStore};

use crate::queue::{Change, Queued};
use crate::store::Shared;

/// Starts the flusher in the current Tokio runtime (none outside one).
pub(crate) fn start<P: SessionStore, B: SessionStore>(
    shared: &Arc<Shared<P, B>>,
) -> Option<tokio::task::AbortHandle> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let weak: Weak<Shared<P, B>> = Arc::downgrade(shared);
    let interval = shared.config.flush_interval();
    let max_retry = shared.config.max_retry();
    let task = runtime.spawn(async move {
        let mut pause = interval;
        loop {
            // Ends once the store is dropped (its drop wakes this wait).
            let Some(shared) = weak.upgrade() else { return };
            if shared.queue().len() < shared.config.batch_size {
                let _ = tokio::time::timeout(pause, shared.wake.notified()).await;
            }
            match flush_once(&shared).await {
                Ok(()) => pause = interval,
                Err(e) => {
                    tracing::debug!(error = %e, "backup: a flush failed; retrying");
                    pause = (pause * 2).min(max_retry);
                }
            }
        }
    });
    Some(task.abort_handle())
}

/// One flush: up to a batch of changes into the backup. Changes whose write failed go back to
/// the queue (unless a newer change of their key came meanwhile).
pub(crate) async fn flush_once<P: SessionStore, B: SessionStore>(shared: &Shared<P, B>) -> Result<()> {
    let _one = shared.flushing.lock().await;
    let batch = shared.queue().take(shared.config.batch_size);
    if batch.is_empty() {
        return Ok(());
    }
    // Kept to put back if the backup does not answer in time: writing a state twice is
    // harmless, and a newer change of the key, queued meanwhile, is never passed.
    let copy = batch.clone();
    let timeout = shared.config.write_timeout();
    let result = match tokio::time::timeout(timeout, write_batch(shared, batch)).await {
        Ok(result) => result,
        Err(_) => {
            requeue(shared, copy);
            Err(Error::Timeout {
                backend: shared.backup.backend(),
                op: "backup",
                after: timeout,
            })
        }
    };
    let failed = result.is_err();
    shared.failing.store(failed, Ordering::Relaxed);
    if failed {
        shared.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn write_batch<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    batch: Vec<(SessionKey, Queued)>,
) -> Result<()> {
    let mut puts: Vec<(SessionKey, Record)> = Vec::new();
    let mut put_queued: Vec<Queued> = Vec::new();
    let mut others: Vec<(SessionKey, Queued)> = Vec::new();
    let mut refresh: Vec<(SessionKey, Queued)> = Vec::new();
    for (key, queued) in batch {
        match &queued.change {
            Change::Put(record) => {
                puts.push((key, record.clone()));
                put_queued.push(queued);
            }
            Change::Refresh => refresh.push((key, queued)),
            Change::Delete(_) | Change::Retime(_) => others.push((key, queued)),
        }
    }

    // Keys whose state is read from the primary now.
    if !refresh.is_empty() {
        let keys: Vec<SessionKey> = refresh.iter().map(|(k, _)| k.clone()).collect();
        match shared.primary.load_many(&keys).await {
            Ok(found) => {
                for ((key, mut queued), state) in refresh.into_iter().zip(found) {
                    match state {
                        Ok(Some(record)) => {
                            queued.change = Change::Put(record.clone());
                            puts.push((key, record));
                            put_queued.push(queued);
                        }
                        Ok(None) => {
                            queued.change = Change::Delete(None);
                            others.push((key, queued));
                        }
                        // Bytes that are not a session: nothing to back up.
                        Err(_) => {}
                    }
                }
            }
            Err(e) => {
                requeue(
                    shared,
                    refresh.into_iter().chain(others).chain(rebuild(puts, put_queued)),
                );
                return Err(e);
            }
        }
    }

    let mut first_error: Option<Error> = None;
    if !puts.is_empty() {
        let n = puts.len() as u64;
        match shared.backup.save_many(&puts).await {
            Ok(_) => {
                shared.counters.written.fetch_add(n, Ordering::Relaxed);
                note_lag(shared, put_queued.iter());
            }
            Err(e) => {
                requeue(shared, rebuild(puts, put_queued));
                first_error = Some(e);
            }
        }
    }
    for (key, queued) in others {
        if first_error.is_some() {
            requeue(shared, std::iter::once((key, queued)));
            continue;
        }
        let done = match &queued.change {
            Change::Delete(Some(tombstone)) => {
                shared.backup.delete_leaving(&key, *tombstone).await.map(|_| true)
            }
            Change::Delete(None) => shared.backup.delete(&key).await.map(|_| true),
            Change::Retime(deadline) => retime(shared, &key, *deadline).await,
            Change::Put(_) | Change::Refresh => Ok(true),
        };
        match done {
            Ok(_) => {
                if queued.change.is_delete() {
                    shared.counters.deleted.fetch_add(1, Ordering::Relaxed);
                }
                note_lag(shared, std::iter::once(&queued));
            }
            Err(e) => {
                requeue(shared, std::iter::once((key, queued)));
                first_error = Some(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A new deadline: the backup's copy moves; a backup without the session gets the primary's.
async fn retime<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    key: &SessionKey,
    deadline: u64,
) -> Result<bool> {
    if shared.backup.touch(key, deadline).await? {
        return Ok(true);
    }
    match shared.primary.load(key).await? {
        Some(record) => shared.backup.save(key, &record).await.map(|_| true),
        None => Ok(true),
    }
}

fn rebuild(
    puts: Vec<(SessionKey, Record)>,
    queued: Vec<Queued>,
) -> impl Iterator<Item = (SessionKey, Queued)> {
    puts.into_iter().map(|(k, _)| k).zip(queued)
}

fn requeue<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    items: impl IntoIterator<Item = (SessionKey, Queued)>,
) {
    let mut q = shared.queue();
    for (key, queued) in items {
        q.requeue(key, queued);
    }
}

fn note_lag<'a, P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    done: impl Iterator<Item = &'a Queued>,
) {
    let now = Instant::now();
    let mut lag = shared.lag();
    for queued in done {
        lag.add(now.saturating_duration_since(queued.since));
    }
}
