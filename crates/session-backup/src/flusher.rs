//! The flusher: takes a batch of queued changes every `flush_interval_ms` (at once when a
//! whole batch is waiting), writes it into the backup — the records in one `save_many`, then
//! the deletes and deadlines key by key — and puts back whatever failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use session_core::backend::{now_ms, Entry, Record};
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
                    // However many changes wait: a failing backup is not hammered.
                    drop(shared);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    });
    Some(task.abort_handle())
}

/// One flush: up to a batch of changes into the backup. Changes whose write failed go back to
/// the queue (merged with a change of their key queued meanwhile).
pub(crate) async fn flush_once<P: SessionStore, B: SessionStore>(shared: &Shared<P, B>) -> Result<()> {
    let _one = shared.flushing.lock().await;
    let batch = shared.queue().take(shared.config.batch_size);
    if batch.is_empty() {
        return Ok(());
    }
    // Put back whole if the backup does not answer in time or the flush is cancelled (writing a
    // state twice is harmless; a newer change of the key, queued meanwhile, is merged).
    let mut guard = Unfinished {
        shared,
        batch: Some(batch.clone()),
    };
    let timeout = shared.config.write_timeout();
    let result = match tokio::time::timeout(timeout, write_batch(shared, batch)).await {
        Ok(result) => {
            guard.written();
            result
        }
        Err(_) => Err(Error::Timeout {
            backend: shared.backup.backend(),
            op: "backup",
            after: timeout,
        }),
    };
    drop(guard);
    let failed = result.is_err();
    shared.failing.store(failed, Ordering::Relaxed);
    if failed {
        shared.counters.failed_flushes.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// A taken batch until it is over: dropped unfinished (timed out, cancelled) it goes back to
/// the queue; either way its keys stop being in flight.
struct Unfinished<'a, P: SessionStore, B: SessionStore> {
    shared: &'a Shared<P, B>,
    batch: Option<Vec<(SessionKey, Queued)>>,
}

impl<P: SessionStore, B: SessionStore> Unfinished<'_, P, B> {
    /// `write_batch` ran to its end (it put back what failed itself).
    fn written(&mut self) {
        if let Some(batch) = self.batch.take() {
            self.shared.queue().landed(batch.iter().map(|(k, _)| k));
        }
    }
}

impl<P: SessionStore, B: SessionStore> Drop for Unfinished<'_, P, B> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            let mut q = self.shared.queue();
            q.landed(batch.iter().map(|(k, _)| k));
            for (key, queued) in batch {
                q.requeue(key, queued);
            }
        }
    }
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
            Change::Refresh(_) | Change::Recheck => refresh.push((key, queued)),
            Change::Delete(_) | Change::Retime(_) => others.push((key, queued)),
        }
    }

    // Keys whose state is read from the primary now.
    let mut refresh_error = None;
    if !refresh.is_empty() {
        match resolve(shared, refresh).await {
            Ok(resolved) => {
                for (key, queued) in resolved {
                    match queued.change {
                        Change::Put(ref record) => {
                            puts.push((key, record.clone()));
                            put_queued.push(queued);
                        }
                        _ => others.push((key, queued)),
                    }
                }
            }
            Err(e) => refresh_error = Some(e),
        }
    }

    let mut first_error: Option<Error> = None;
    let mut written: Vec<(SessionKey, Queued)> = Vec::new();
    if !puts.is_empty() {
        if let Err(e) = write_puts(shared, puts, put_queued, &mut written).await {
            first_error = Some(e);
        }
    }
    for (key, queued) in others {
        if first_error.is_some() {
            requeue(shared, std::iter::once((key, queued)));
            continue;
        }
        let done = match &queued.change {
            Change::Delete(Some(tombstone)) => {
                shared.backup.delete_leaving(&key, *tombstone).await.map(|_| ())
            }
            Change::Delete(None) => shared.backup.delete(&key).await.map(|_| ()),
            Change::Retime(deadline) => retime(shared, &key, *deadline).await,
            Change::Put(_) | Change::Refresh(_) | Change::Recheck => Ok(()),
        };
        match done {
            Ok(()) => {
                if queued.change.is_delete() {
                    shared.counters.deleted.fetch_add(1, Ordering::Relaxed);
                }
                note_lag(shared, std::iter::once(&queued));
                written.push((key, queued));
            }
            Err(e) => {
                requeue(shared, std::iter::once((key, queued)));
                first_error = Some(e);
            }
        }
    }
    verify(shared, written).await;
    match first_error.or(refresh_error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The records, in one `save_many`. A refusal that retrying cannot fix (a record over the
/// backup's size limit, a permission) is narrowed down record by record: the ones the backup
/// refuses are dropped (counted, the backup marked incomplete), the others written.
async fn write_puts<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    puts: Vec<(SessionKey, Record)>,
    queued: Vec<Queued>,
    written: &mut Vec<(SessionKey, Queued)>,
) -> Result<()> {
    let n = puts.len() as u64;
    match shared.backup.save_many(&puts).await {
        Ok(_) => {
            shared.counters.written.fetch_add(n, Ordering::Relaxed);
            note_lag(shared, queued.iter());
            written.extend(rebuild(puts, queued));
            Ok(())
        }
        Err(e) if e.is_temporary() => {
            requeue(shared, rebuild(puts, queued));
            Err(e)
        }
        Err(_) => {
            let mut temporary = None;
            for ((key, record), q) in puts.into_iter().zip(queued) {
                match shared.backup.save(&key, &record).await {
                    Ok(_) => {
                        shared.counters.written.fetch_add(1, Ordering::Relaxed);
                        note_lag(shared, std::iter::once(&q));
                        written.push((key, q));
                    }
                    Err(e) if e.is_temporary() => {
                        requeue(shared, std::iter::once((key, q)));
                        temporary = Some(e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "backup: the backup refuses a session; it is not backed up");
                        shared.counters.dropped_writes.fetch_add(1, Ordering::Relaxed);
                        shared.drops.fetch_add(1, Ordering::Relaxed);
                        shared.incomplete.store(true, Ordering::Relaxed);
                    }
                }
            }
            temporary.map_or(Ok(()), Err)
        }
    }
}

/// What the primary holds now for keys whose state is not known here (`Refresh`, `Recheck`):
/// a session becomes a `Put`, a tombstone a delete. Nothing at all — expired, or lost with the
/// primary's data — writes the latest write this instance queued for the key, if it had one
/// and it has not expired (an acknowledged write is not lost with the primary's data), and
/// otherwise leaves the backup's copy alone (an expired copy is not served and is reclaimed),
/// as does a value that does not decode (a rolling upgrade). A primary that keeps no
/// tombstones cannot tell a delete from lost data: there, nothing after a delete (the latest
/// change) is a delete, and after a failed write (`Recheck`) the backup keeps its copy. When
/// the primary does not answer, the keys go back to the queue.
async fn resolve<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    refresh: Vec<(SessionKey, Queued)>,
) -> Result<Vec<(SessionKey, Queued)>> {
    let keys: Vec<SessionKey> = refresh.iter().map(|(k, _)| k.clone()).collect();
    let found = match shared.primary.load_many(&keys).await {
        Ok(found) => found,
        Err(e) => {
            requeue(shared, refresh);
            return Err(e);
        }
    };
    let tombstones = shared.primary.keeps_tombstones();
    let now = now_ms();
    let mut out = Vec::with_capacity(refresh.len());
    for ((key, mut queued), state) in refresh.into_iter().zip(found) {
        let recheck = matches!(queued.change, Change::Recheck);
        // The latest write this instance queued for the key, for a primary that lost it.
        let last = match &queued.change {
            Change::Refresh(Some(record)) if !record.meta.is_expired(now) => Some(record.clone()),
            _ => None,
        };
        let change = match state {
            Ok(Some(record)) => Some(Change::Put(record)),
            Err(e) => {
                tracing::debug!(error = %e, "backup: the primary's value does not decode; the backup keeps its copy");
                None
            }
            // Nothing there: deleted, expired or lost, which only a tombstone tells apart.
            Ok(None) if tombstones => match shared.primary.load_entry(&key).await {
                Ok(Some(Entry::Tombstone(_))) => Some(Change::Delete(None)),
                Ok(Some(Entry::Live(record))) => Some(Change::Put(record)),
                Ok(None) => last.map(Change::Put),
                Err(_) => {
                    requeue(shared, std::iter::once((key, queued)));
                    continue;
                }
            },
            Ok(None) => match last {
                Some(record) => Some(Change::Put(record)),
                None if recheck => None,
                None => Some(Change::Delete(None)),
            },
        };
        if let Some(change) = change {
            queued.change = change;
            out.push((key, queued));
        }
    }
    Ok(out)
}

/// Reads back from the primary the keys just written into the backup, and queues again (to be
/// read from the primary at the next flush) each whose state there is no longer the one
/// written: another instance's change of the key may have reached the backup first, and this
/// write, made from an older state, must not stay. So the backup converges on the primary's
/// state whatever order the instances' flushes run in (with a primary that keeps tombstones;
/// without them, a key the primary no longer holds keeps the backup's copy, as a delete and
/// lost data look alike). When the primary does not answer, the keys are rechecked later (a
/// session there is written, none leaves the backup as it is).
pub(crate) async fn verify<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    written: Vec<(SessionKey, Queued)>,
) {
    if written.is_empty() {
        return;
    }
    // Read again at the next flush as after a failed write: a session there is copied, a
    // tombstone deleted, and nothing at all (the primary lost its data meanwhile, or a primary
    // without tombstones that cannot tell a delete from that) leaves the backup's copy — the
    // last state acknowledged here — as it is.
    let recheck = |(key, queued): (SessionKey, Queued)| {
        (
            key,
            Queued {
                change: Change::Recheck,
                ..queued
            },
        )
    };
    let keys: Vec<SessionKey> = written.iter().map(|(k, _)| k.clone()).collect();
    let found = match shared.primary.load_many(&keys).await {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(error = %e, "backup: the primary does not answer the read-back; rechecking later");
            requeue(shared, written.into_iter().map(recheck));
            return;
        }
    };
    let again: Vec<(SessionKey, Queued)> = written
        .into_iter()
        .zip(found)
        .filter(|((_, queued), state)| {
            let same = match (&queued.change, state) {
                // Cannot tell (a value that does not decode): left as written.
                (_, Err(_)) => true,
                (Change::Put(record), Ok(Some(now))) => now.meta.version == record.meta.version,
                (Change::Retime(deadline), Ok(Some(now))) => now.meta.expires_at == *deadline,
                (Change::Delete(_), Ok(None)) => true,
                _ => false,
            };
            !same
        })
        .map(|(written, _)| recheck(written))
        .collect();
    if !again.is_empty() {
        shared
            .counters
            .reread
            .fetch_add(again.len() as u64, Ordering::Relaxed);
        requeue(shared, again);
    }
}

/// A new deadline: the backup's copy moves; a backup without the session gets the primary's.
async fn retime<P: SessionStore, B: SessionStore>(
    shared: &Shared<P, B>,
    key: &SessionKey,
    deadline: u64,
) -> Result<()> {
    if shared.backup.touch(key, deadline).await? {
        return Ok(());
    }
    match shared.primary.load(key).await? {
        Some(record) => shared.backup.save(key, &record).await.map(|_| ()),
        None => Ok(()),
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
