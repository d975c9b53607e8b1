//! The background task: probes each open partition of the primary with backoff, replays the
//! journal into the primary where it answers, then closes those circuits; and how live calls
//! start and wake it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use session_core::backend::{now_ms, Change, Partition, Reconciled, Tombstone};
use session_core::{Error, SessionKey, SessionStore};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::circuits::Backoff;
use crate::journal::PendingOp;
use crate::revoke::ReplayTarget;
use crate::state::{CircuitState, Field};
use crate::store::{is_answering, Inner};

/// What one replay pass achieved.
enum Pass {
    /// The journal is empty.
    Drained,
    /// Entries were added while the pass ran: run another at once.
    Again,
    /// Every entry left waits for its partition's circuit to answer a probe.
    Waiting,
    /// The primary failed again on some partition (its circuit may be open again).
    PrimaryDown,
    /// Some entries failed with permanent errors; retry after a delay.
    Incomplete,
}

/// What replaying one key did.
enum Outcome {
    /// Applied to the primary (written, deleted, or nothing to do).
    Replayed,
    /// The primary held a newer value, which was kept.
    Conflict,
    /// Not in the journal any more.
    Skipped,
    /// The key's partition is open: it waits for its probe.
    Waiting,
    /// The primary failed on this partition (here or in a live call).
    PrimaryDown(Partition),
    /// A permanent error or endless contention: the entry stays.
    Failed,
}

/// How the task sleeps: until `until`, a wake-up or the store's end (true).
async fn sleep_or_shutdown(until: Instant, wake: &Notify, shutdown: &Notify) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(until) => false,
        _ = wake.notified() => false,
        _ = shutdown.notified() => true,
    }
}

/// The background task. Each round: probe the open partitions whose delay has passed (all at
/// once), replay every journaled session whose partition answers, close the replaying
/// circuits with nothing left to replay, then sleep until the next probe is due (or a retry
/// delay, or a wake-up). Ends when every circuit is closed and the journal is empty, or with
/// the store.
async fn run_worker<P: SessionStore, S: SessionStore>(
    weak: Weak<Inner<P, S>>,
    shutdown: Arc<Notify>,
    wake: Arc<Notify>,
) {
    let Some(mut retry) = weak
        .upgrade()
        .map(|i| Backoff::new(i.config.probe_min_ms, i.config.probe_max_ms))
    else {
        return;
    };
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let due = inner.circuits.due(Instant::now());
        if !due.is_empty() {
            let mut probes = JoinSet::new();
            for partition in due {
                let inner = Arc::clone(&inner);
                probes.spawn(async move { inner.probe(partition).await });
            }
            while probes.join_next().await.is_some() {}
        }
        let mut delay = None;
        let pass = inner.replay_pass().await;
        inner.finish_recovery();
        match pass {
            Pass::Drained => retry.reset(),
            Pass::Again => continue,
            Pass::Waiting => {}
            Pass::PrimaryDown | Pass::Incomplete => delay = Some(retry.delay()),
        }
        if inner.circuits.aggregate() == CircuitState::Closed && inner.journal.len() == 0 {
            if inner.worker_may_exit() {
                return;
            }
            continue;
        }
        let now = Instant::now();
        let until = match (inner.circuits.next_due(), delay.map(|d| now + d)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(t), None) | (None, Some(t)) => t,
            // Nothing scheduled (a circuit replaying entries that wait): look again soon.
            (None, None) => now + Duration::from_millis(inner.config.probe_min_ms.max(1)),
        };
        drop(inner);
        if sleep_or_shutdown(until, &wake, &shutdown).await {
            return;
        }
    }
}

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// Starts the background task unless it runs already.
    pub(crate) fn ensure_worker(&self) {
        if self
            .worker_running
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(run_worker(
                    self.me.clone(),
                    Arc::clone(&self.shutdown),
                    Arc::clone(&self.wake),
                ));
            }
            Err(_) => {
                self.worker_running.store(false, Ordering::SeqCst);
                tracing::error!(
                    "session fallback: no tokio runtime to run the probe on; the primary will not be \
                     probed until a call is made inside a runtime"
                );
            }
        }
    }

    /// A session entered the journal: the background task replays it — at once if its
    /// partition answers, else once that partition's probe does.
    pub(crate) fn journaled(&self, key: &SessionKey) {
        self.ensure_worker();
        if !self.open_for(key) {
            self.wake_worker();
        }
    }

    /// Wakes the background task if it runs (it sleeps until the next probe otherwise).
    pub(crate) fn wake_worker(&self) {
        if self.worker_running.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Called when the task has nothing left to do: true if it may end.
    /// Re-checks after giving up the role, so work that arrived in between
    /// is not stranded.
    fn worker_may_exit(&self) -> bool {
        self.worker_running.store(false, Ordering::SeqCst);
        let work = self.circuits.aggregate() != CircuitState::Closed || self.journal.len() > 0;
        !(work
            && self
                .worker_running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok())
    }

    /// Probes one open partition (moved to probing by [`Circuits::due`](crate::circuits::Circuits::due)):
    /// replaying if it answered, open again with the next delay otherwise.
    async fn probe(&self, partition: Partition) {
        self.counters.inc(Field::Probes);
        let health = self.partition_health(partition).await;
        let up = is_answering(&health);
        if self.circuits.probed(partition, health, up) {
            self.counters.inc(Field::Transitions);
            tracing::info!(
                primary = self.primary.backend(),
                partition = %partition,
                journal = self.journal.len(),
                "session fallback: primary answered a probe, replaying the journal"
            );
            return;
        }
        self.counters.inc(Field::ProbeFailures);
    }

    /// Closes the circuit of every replaying partition no journaled session belongs to any
    /// more (by its current partition).
    fn finish_recovery(&self) {
        if self.circuits.any_replaying() {
            let mut pending: Vec<Partition> = Vec::new();
            self.journal.for_each_key(|key| {
                let p = self.primary.partition(key);
                if !pending.contains(&p) {
                    pending.push(p);
                }
            });
            for closed in self.circuits.close_drained(|p| pending.contains(&p)) {
                self.counters.inc(Field::Transitions);
                self.grace.start();
                let c = self.counters.snapshot();
                tracing::warn!(
                    primary = self.primary.backend(),
                    partition = %closed.partition,
                    open_partitions = self.circuits.open_count(),
                    outage_ms = now_ms().saturating_sub(closed.opened_at),
                    error = *self.last_error.lock().unwrap_or_else(PoisonError::into_inner),
                    // Counts since the store started (the metrics' totals), not of this outage.
                    replayed_since_start = c.replayed,
                    conflicts_since_start = c.conflicts,
                    "session fallback: primary recovered, journal replayed, circuit closed"
                );
            }
        }
        if self.circuits.aggregate() == CircuitState::Closed && self.journal.len() == 0 {
            self.counters.metrics().active.set(0.0);
        }
    }

    /// Replays every journaled key whose partition answers, `replay_concurrency` at a time;
    /// keys of open partitions wait (they stay in the journal, served by the secondary).
    async fn replay_pass(&self) -> Pass {
        let keys = self.journal.keys();
        if keys.is_empty() {
            return Pass::Drained;
        }
        let Some(me) = self.me.upgrade() else {
            return Pass::Incomplete;
        };
        let mut tasks = JoinSet::new();
        let mut keys = keys.into_iter();
        // Partitions that failed during this pass: their other keys wait for the next.
        let mut down: Vec<Partition> = Vec::new();
        let (mut waiting, mut incomplete) = (false, false);
        loop {
            while tasks.len() < self.config.replay_concurrency {
                let Some(key) = keys.next() else { break };
                let p = self.primary.partition(&key);
                if down.contains(&p) || self.circuits.is_open(p) {
                    waiting = true;
                    continue;
                }
                let inner = Arc::clone(&me);
                tasks.spawn(async move { inner.replay_key(&key).await });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            match done {
                Ok(Outcome::Replayed | Outcome::Conflict | Outcome::Skipped) => {}
                Ok(Outcome::Waiting) => waiting = true,
                Ok(Outcome::PrimaryDown(p)) => {
                    if !down.contains(&p) {
                        down.push(p);
                    }
                }
                Ok(Outcome::Failed) | Err(_) => incomplete = true,
            }
        }
        if !down.is_empty() {
            Pass::PrimaryDown
        } else if incomplete {
            Pass::Incomplete
        } else if self.journal.len() == 0 {
            Pass::Drained
        } else if waiting {
            Pass::Waiting
        } else {
            Pass::Again
        }
    }

    /// Replays one key under its lock, as one atomic [`SessionStore::reconcile`] on the
    /// primary: the change applies if the primary still holds what it was based on; a delete
    /// wins over any session and a tombstone over any write; of two writes the later wins. So
    /// any number of instances replaying in any order end in one state. Idempotent: the entry
    /// leaves the journal only after the primary answered.
    async fn replay_key(&self, key: &SessionKey) -> Outcome {
        let guard = self.locks.lock(key).await;
        // Its partition now: a failover may have moved it since it was journaled.
        let partition = self.primary.partition(key);
        if self.circuits.is_open(partition) {
            return Outcome::Waiting;
        }
        let Some(entry) = self.journal.get(key) else {
            return Outcome::Skipped;
        };
        if entry.op == PendingOp::Revoke {
            // Applied without the key's lock: applying it takes the locks of the sessions it
            // ends, which may share the index key's stripe.
            drop(guard);
            return self.replay_revocation(key, partition, entry.generation).await;
        }
        let record;
        let change = match entry.op {
            // The value to replay is the secondary's now: the last acknowledged state.
            PendingOp::Write => match self.secondary.load(key).await {
                Ok(Some(r)) => {
                    record = r;
                    Change::Write(&record)
                }
                // Expired during the outage: the session is gone — and so is the older state the
                // primary may hold, unless another instance wrote it since.
                Ok(None) => Change::Expire,
                Err(e) => return self.replay_error(key, "secondary load", &e),
            },
            PendingOp::Tombstone => Change::Delete(Tombstone::new(
                entry.at,
                entry.at.saturating_add(self.config.tombstone_ttl_ms),
            )),
            PendingOp::Revoke => return Outcome::Skipped,
        };
        let reconciled = match self
            .on_primary("reconcile", self.primary.reconcile(key, entry.base, change))
            .await
        {
            Ok(r) => r,
            // Bytes that are not a session: the journal's state replaces them.
            Err(Error::Corrupt { .. }) => {
                let fixed = match change {
                    Change::Write(r) => self.on_primary("save", self.primary.save(key, r)).await.map(drop),
                    Change::Delete(t) => self
                        .on_primary("delete", self.primary.delete_leaving(key, t))
                        .await
                        .map(drop),
                    Change::Expire => Ok(()),
                };
                match fixed {
                    Ok(()) => Reconciled::Applied,
                    Err(e) if e.is_temporary() => return self.replay_interrupted(partition, &e),
                    Err(e) => return self.replay_error(key, "primary overwrite", &e),
                }
            }
            Err(e) if e.is_temporary() => return self.replay_interrupted(partition, &e),
            Err(e) => return self.replay_error(key, "primary reconcile", &e),
        };
        // The primary's state is now known when the replayed write is what it holds, or the
        // replayed delete's tombstone (a delete always leaves its own).
        match change {
            Change::Write(r) if reconciled.stored() => self.warm.put(key, r),
            Change::Delete(t) => self.warm.put_gone(key, t.version, t.until),
            _ => self.warm.remove(key),
        }
        self.replayed(key, entry.generation).await;
        if reconciled.conflicted() {
            self.counters.inc(Field::Conflicts);
            tracing::info!(
                primary = self.primary.backend(),
                namespace = key.ns(),
                sid = %key.id.short_hash(),
                outcome = if reconciled.stored() { "replayed state won" } else { "primary state kept" },
                "session fallback: the primary changed since this instance's outage copy; resolved by the replay rule"
            );
            return Outcome::Conflict;
        }
        Outcome::Replayed
    }

    /// Applies the revocation journaled under the principal index `key` to the primary: every
    /// session bound by the time it was asked for ends there, and those rotated from them. The
    /// index is read and changed on the primary directly (each call under the primary
    /// timeout), the sessions are ended through this store's own routing ([`ReplayTarget`]).
    /// The entry leaves the journal once the primary has answered, unless a later revocation
    /// of the same principal replaced it meanwhile (then that one is applied next). Only a
    /// failure of the primary on the index's calls reopens the index's partition; a session
    /// that could not be ended here (its partition open and the journal full) leaves the
    /// entry waiting. A permanent error (an index that does not parse, say) drops it, logged
    /// and counted: retrying would not change the answer, and the principal's calls on this
    /// instance would wait on it forever; the sessions this instance had ended locally are
    /// then deleted as ordinary logouts.
    async fn replay_revocation(&self, key: &SessionKey, partition: Partition, generation: u64) -> Outcome {
        let Some(revocation) = self.revocations.get(key) else {
            self.journal.remove(key, generation);
            return Outcome::Skipped;
        };
        let Some(me) = self.me.upgrade() else {
            return Outcome::Failed;
        };
        let target = Arc::new(ReplayTarget::new(me));
        let applied = revocation
            .apply(Arc::clone(&target) as Arc<dyn SessionStore>, true)
            .await;
        match applied {
            Ok(ended) => {
                let _guard = self.locks.lock(key).await;
                if !self.revocations.applied(key, &revocation) {
                    // Replaced by a later revocation while this one ran: that one is next.
                    return Outcome::Waiting;
                }
                self.journal.remove(key, generation);
                self.counters.inc(Field::Replayed);
                tracing::info!(
                    primary = self.primary.backend(),
                    namespace = key.ns(),
                    ended,
                    "session fallback: a revocation journaled during the outage was applied"
                );
                Outcome::Replayed
            }
            Err(e) if e.is_temporary() && target.primary_failed() => self.replay_interrupted(partition, &e),
            Err(e) if e.is_temporary() => {
                tracing::warn!(
                    primary = self.primary.backend(),
                    namespace = key.ns(),
                    error = e.kind().as_str(),
                    "session fallback: a revocation could not end every session yet; it stays in the journal"
                );
                Outcome::Failed
            }
            Err(e) => {
                let marked = {
                    let _guard = self.locks.lock(key).await;
                    let Some(marked) = self.revocations.drop_kept(key, &revocation) else {
                        return Outcome::Waiting;
                    };
                    self.journal.remove(key, generation);
                    marked
                };
                self.counters.inc(Field::ReplayErrors);
                tracing::error!(
                    primary = self.primary.backend(),
                    namespace = key.ns(),
                    error = e.kind().as_str(),
                    local = marked.len(),
                    "session fallback: a revocation journaled during the outage could not be applied and \
                     was dropped (the sessions this instance had ended are deleted as logouts); call \
                     revoke_all again"
                );
                self.end_marked(&marked).await;
                Outcome::Failed
            }
        }
    }

    /// The primary acknowledged a key: it leaves the journal and the secondary.
    async fn replayed(&self, key: &SessionKey, generation: u64) {
        self.journal.remove(key, generation);
        self.counters.inc(Field::Replayed);
        // The secondary holds only journaled sessions, so a later outage
        // never serves this (by then stale) copy.
        if let Err(e) = self.secondary.delete(key).await {
            tracing::warn!(
                secondary = self.secondary.backend(),
                error = e.kind().as_str(),
                "session fallback: could not remove a replayed session from the secondary (it is ignored there)"
            );
        }
    }

    /// The primary failed during replay of a key of `partition`. While that partition
    /// replays, its circuit opens again at once; while closed (a journal left by failovers
    /// below the threshold, or a key whose partition changed) it counts toward the threshold
    /// like a live failure.
    fn replay_interrupted(&self, partition: Partition, err: &Error) -> Outcome {
        if self.circuits.state_of(partition) == CircuitState::Replaying {
            self.open_circuit(partition, err);
        } else {
            self.primary_failed(Some(partition), err);
        }
        Outcome::PrimaryDown(partition)
    }

    fn replay_error(&self, key: &SessionKey, step: &'static str, err: &Error) -> Outcome {
        self.counters.inc(Field::ReplayErrors);
        tracing::error!(
            primary = self.primary.backend(),
            step,
            namespace = key.ns(),
            sid = %key.id.short_hash(),
            error = err.kind().as_str(),
            "session fallback: replay of a session failed; it stays in the journal and is retried"
        );
        Outcome::Failed
    }
}
