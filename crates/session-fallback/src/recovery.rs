//! The background task: probes a down primary with backoff, replays the
//! journal into it when it answers, then closes the circuit.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use session_core::backend::{now_ms, Change, Reconciled, Tombstone};
use session_core::{Error, SessionKey, SessionStore};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::journal::PendingOp;
use crate::state::{CircuitState, Field};
use crate::store::{is_answering, Inner};

/// What one replay pass achieved.
enum Pass {
    /// The journal is empty.
    Drained,
    /// Entries were added while the pass ran: run another at once.
    Again,
    /// The primary failed again; the circuit is open.
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
    /// The circuit is open (the primary failed, here or in a live call).
    PrimaryDown,
    /// A permanent error or endless contention: the entry stays.
    Failed,
}

/// Exponential backoff with jitter.
struct Backoff {
    min: u64,
    max: u64,
    next: u64,
    seed: u64,
}

impl Backoff {
    fn new(min: u64, max: u64) -> Self {
        let seed = now_ms() ^ (std::process::id() as u64).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        Backoff {
            min,
            max,
            next: min,
            seed,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay: uniform in [d/2, d] for the current step d, which then doubles.
    fn delay(&mut self) -> Duration {
        let d = self.next.max(1);
        self.next = d.saturating_mul(2).min(self.max);
        // xorshift64*: enough for jitter, no dependency.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        let r = self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let half = d / 2;
        Duration::from_millis(d - half + r % (half + 1))
    }
}

/// Sleeps, or returns true if the store was dropped meanwhile.
async fn sleep_or_shutdown(d: Duration, shutdown: &Notify) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.notified() => true,
    }
}

async fn run_worker<P: SessionStore, S: SessionStore>(weak: Weak<Inner<P, S>>, shutdown: Arc<Notify>) {
    let Some(mut backoff) = weak
        .upgrade()
        .map(|i| Backoff::new(i.config.probe_min_ms, i.config.probe_max_ms))
    else {
        return;
    };
    // Whether the delay before the next probe has been waited.
    let mut waited = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        match inner.state.get() {
            CircuitState::Open | CircuitState::Probing => {
                if !waited {
                    drop(inner);
                    if sleep_or_shutdown(backoff.delay(), &shutdown).await {
                        return;
                    }
                    waited = true;
                    continue;
                }
                waited = false;
                // The backoff is reset only once the journal drained, so a
                // primary that answers probes but fails replay is not hammered.
                inner.probe().await;
            }
            CircuitState::Replaying | CircuitState::Closed => match inner.replay_pass().await {
                Pass::Drained => {
                    backoff.reset();
                    inner.finish_recovery();
                    if inner.worker_may_exit() {
                        return;
                    }
                }
                Pass::Again => {}
                Pass::PrimaryDown if inner.state.get().is_open() => waited = false,
                Pass::PrimaryDown | Pass::Incomplete => {
                    drop(inner);
                    if sleep_or_shutdown(backoff.delay(), &shutdown).await {
                        return;
                    }
                }
            },
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
                handle.spawn(run_worker(self.me.clone(), Arc::clone(&self.shutdown)));
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

    /// Called when the task has nothing left to do: true if it may end.
    /// Re-checks after giving up the role, so work that arrived in between
    /// is not stranded.
    fn worker_may_exit(&self) -> bool {
        self.worker_running.store(false, Ordering::SeqCst);
        let work = self.state.get() != CircuitState::Closed || self.journal.len() > 0;
        !(work
            && self
                .worker_running
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok())
    }

    /// Probes the primary once; true if it answered (the circuit is then replaying).
    async fn probe(&self) -> bool {
        if !self.state.transition(CircuitState::Open, CircuitState::Probing) {
            return false;
        }
        self.counters.inc(Field::Probes);
        let health = self.primary_health().await;
        let up = is_answering(&health);
        *self.last_probe.lock().unwrap_or_else(PoisonError::into_inner) = Some(health);
        if up
            && self
                .state
                .transition(CircuitState::Probing, CircuitState::Replaying)
        {
            self.counters.inc(Field::Transitions);
            self.failures.store(0, Ordering::Relaxed);
            tracing::info!(
                primary = self.primary.backend(),
                journal = self.journal.len(),
                "session fallback: primary answered a probe, replaying the journal"
            );
            return true;
        }
        self.counters.inc(Field::ProbeFailures);
        self.state.transition(CircuitState::Probing, CircuitState::Open);
        false
    }

    /// Closes the circuit after the journal drained.
    fn finish_recovery(&self) {
        self.close_circuit();
        if self.state.get() == CircuitState::Closed && self.journal.len() == 0 {
            metrics::gauge!(crate::state::metric::ACTIVE).set(0.0);
        }
    }

    fn close_circuit(&self) {
        if self
            .state
            .transition(CircuitState::Replaying, CircuitState::Closed)
        {
            self.counters.inc(Field::Transitions);
            self.failures.store(0, Ordering::Relaxed);
            let c = self.counters.snapshot();
            tracing::warn!(
                primary = self.primary.backend(),
                outage_ms = now_ms().saturating_sub(self.opened_at.load(Ordering::Relaxed)),
                error = *self.last_error.lock().unwrap_or_else(PoisonError::into_inner),
                replayed = c.replayed,
                conflicts = c.conflicts,
                "session fallback: primary recovered, journal replayed, circuit closed"
            );
        }
    }

    /// Replays every key in the journal, `replay_concurrency` at a time.
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
        let (mut down, mut incomplete) = (false, false);
        loop {
            while !down && tasks.len() < self.config.replay_concurrency {
                let Some(key) = keys.next() else { break };
                let inner = Arc::clone(&me);
                tasks.spawn(async move { inner.replay_key(&key).await });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            match done {
                Ok(Outcome::Replayed | Outcome::Conflict | Outcome::Skipped) => {}
                Ok(Outcome::PrimaryDown) => down = true,
                Ok(Outcome::Failed) | Err(_) => incomplete = true,
            }
        }
        if down {
            Pass::PrimaryDown
        } else if incomplete {
            Pass::Incomplete
        } else if self.journal.len() == 0 {
            Pass::Drained
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
        let _guard = self.locks.lock(key).await;
        if self.state.get().is_open() {
            return Outcome::PrimaryDown;
        }
        let Some(entry) = self.journal.get(key) else {
            return Outcome::Skipped;
        };
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
                    Err(e) if e.is_temporary() => return self.replay_interrupted(&e),
                    Err(e) => return self.replay_error(key, "primary overwrite", &e),
                }
            }
            Err(e) if e.is_temporary() => return self.replay_interrupted(&e),
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

    /// The primary failed during replay. While replaying, that reopens the
    /// circuit at once; while closed (a journal left by failovers below the
    /// threshold) it counts toward the threshold like a live failure.
    fn replay_interrupted(&self, err: &Error) -> Outcome {
        if self.state.get() == CircuitState::Replaying {
            self.open_circuit(err);
        } else {
            self.primary_failed(err);
        }
        Outcome::PrimaryDown
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(100, 1000);
        let d: Vec<u64> = (0..6).map(|_| b.delay().as_millis() as u64).collect();
        assert!((50..=100).contains(&d[0]), "{d:?}");
        assert!((100..=200).contains(&d[1]), "{d:?}");
        assert!((200..=400).contains(&d[2]), "{d:?}");
        assert!(d[4] <= 1000 && d[5] >= 500, "{d:?}");
        b.reset();
        assert!(b.delay().as_millis() <= 100);
    }
}
