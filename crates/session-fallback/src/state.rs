//! The circuit's states and the counters exposed for observability.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Where the circuit stands. See the crate docs for the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// The primary serves every call; sessions still in the journal (if any)
    /// are served by the secondary.
    Closed,
    /// The primary is considered down: calls go straight to the secondary,
    /// writes and deletes are journaled. The background task probes the
    /// primary with backoff.
    Open,
    /// As [`Open`](Self::Open), while a probe of the primary is in flight.
    Probing,
    /// The primary answered a probe: the journal is being replayed into it.
    /// Sessions still in the journal are served by the secondary, all others
    /// by the primary.
    Replaying,
}

impl CircuitState {
    /// `"closed"`, `"open"`, `"probing"` or `"replaying"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::Probing => "probing",
            CircuitState::Replaying => "replaying",
        }
    }

    /// A stable number for gauges: closed 0, open 1, probing 2, replaying 3.
    pub fn code(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::Probing => 2,
            CircuitState::Replaying => 3,
        }
    }

    /// Whether calls skip the primary (open or probing).
    pub fn is_open(self) -> bool {
        matches!(self, CircuitState::Open | CircuitState::Probing)
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => CircuitState::Open,
            2 => CircuitState::Probing,
            3 => CircuitState::Replaying,
            _ => CircuitState::Closed,
        }
    }
}

impl std::fmt::Display for CircuitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of a fallback store's counters, all since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackCounters {
    /// Calls that tried the primary, got a temporary error or timed out, and
    /// were served by the secondary instead.
    pub failovers: u64,
    /// Calls served by the secondary without trying the primary (circuit open).
    pub secondary_calls: u64,
    /// Journal entries applied to the primary (written, deleted, or found
    /// already newer there).
    pub replayed: u64,
    /// Replayed entries where the primary held a newer value (by
    /// `updated_at`), which was kept: last writer wins.
    pub conflicts: u64,
    /// Writes and deletes refused because the journal was full.
    pub journal_rejected: u64,
    /// Replay attempts of one entry that failed with a permanent error (the
    /// entry stays in the journal and is retried).
    pub replay_errors: u64,
    /// Changes of [`CircuitState`] between closed, open and replaying (the
    /// hops through probing are counted in `probes`).
    pub transitions: u64,
    /// Times the circuit opened.
    pub opened: u64,
    /// Probes of the primary made while the circuit was open.
    pub probes: u64,
    /// Probes that found the primary still down.
    pub probe_failures: u64,
    /// Calls made while the primary was unreachable that were answered from
    /// the warm copy (or journaled against it): sessions that predate the
    /// outage, kept usable.
    pub warm_served: u64,
}

/// The live counters behind [`FallbackCounters`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) failovers: AtomicU64,
    pub(crate) secondary_calls: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) journal_rejected: AtomicU64,
    pub(crate) replay_errors: AtomicU64,
    pub(crate) transitions: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) probes: AtomicU64,
    pub(crate) probe_failures: AtomicU64,
    pub(crate) warm_served: AtomicU64,
}

/// One of the [`Counters`], with its metric name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Failovers,
    SecondaryCalls,
    Replayed,
    Conflicts,
    JournalRejected,
    ReplayErrors,
    Transitions,
    Opened,
    Probes,
    ProbeFailures,
    WarmServed,
}

/// Metric names published through the `metrics` facade (see `docs/operations.md`).
pub mod metric {
    /// Gauge: 1 while anything is served by the secondary (circuit not
    /// closed, or journal not empty), else 0.
    pub const ACTIVE: &str = "session_fallback_active";
    /// Gauge: 0 closed, 1 open, 2 probing, 3 replaying.
    pub const STATE: &str = "session_fallback_state";
    /// Gauge: sessions waiting to be replayed.
    pub const JOURNAL_LENGTH: &str = "session_fallback_journal_length";
    /// Counter: primary calls that failed and were served by the secondary.
    pub const FAILOVERS: &str = "session_fallback_failovers_total";
    /// Counter: calls served by the secondary without trying the primary.
    pub const SECONDARY_CALLS: &str = "session_fallback_secondary_calls_total";
    /// Counter: journal entries applied to the primary.
    pub const REPLAYED: &str = "session_fallback_replayed_total";
    /// Counter: replayed entries where the primary held a newer value.
    pub const CONFLICTS: &str = "session_fallback_conflicts_total";
    /// Counter: writes refused because the journal was full.
    pub const JOURNAL_REJECTED: &str = "session_fallback_journal_rejected_total";
    /// Counter: replay attempts that failed and will be retried.
    pub const REPLAY_ERRORS: &str = "session_fallback_replay_errors_total";
    /// Counter, label `to`: circuit transitions by new state.
    pub const TRANSITIONS: &str = "session_fallback_transitions_total";
    /// Counter: probes of the down primary.
    pub const PROBES: &str = "session_fallback_probes_total";
    /// Counter: probes that found the primary still down.
    pub const PROBE_FAILURES: &str = "session_fallback_probe_failures_total";
    /// Counter: calls made while the primary was unreachable and answered from the warm copy.
    pub const WARM_SERVED: &str = "session_fallback_warm_served_total";
}

impl Counters {
    /// Counts one event in the snapshot counters and in its metric.
    pub(crate) fn inc(&self, field: Field) {
        let (atomic, name): (&AtomicU64, Option<&'static str>) = match field {
            Field::Failovers => (&self.failovers, Some(metric::FAILOVERS)),
            Field::SecondaryCalls => (&self.secondary_calls, Some(metric::SECONDARY_CALLS)),
            Field::Replayed => (&self.replayed, Some(metric::REPLAYED)),
            Field::Conflicts => (&self.conflicts, Some(metric::CONFLICTS)),
            Field::JournalRejected => (&self.journal_rejected, Some(metric::JOURNAL_REJECTED)),
            Field::ReplayErrors => (&self.replay_errors, Some(metric::REPLAY_ERRORS)),
            // Published with their labels where they happen.
            Field::Transitions | Field::Opened => (
                if field == Field::Opened {
                    &self.opened
                } else {
                    &self.transitions
                },
                None,
            ),
            Field::Probes => (&self.probes, Some(metric::PROBES)),
            Field::ProbeFailures => (&self.probe_failures, Some(metric::PROBE_FAILURES)),
            Field::WarmServed => (&self.warm_served, Some(metric::WARM_SERVED)),
        };
        atomic.fetch_add(1, Ordering::Relaxed);
        if let Some(name) = name {
            metrics::counter!(name).increment(1);
        }
    }

    pub(crate) fn snapshot(&self) -> FallbackCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FallbackCounters {
            failovers: get(&self.failovers),
            secondary_calls: get(&self.secondary_calls),
            replayed: get(&self.replayed),
            conflicts: get(&self.conflicts),
            journal_rejected: get(&self.journal_rejected),
            replay_errors: get(&self.replay_errors),
            transitions: get(&self.transitions),
            opened: get(&self.opened),
            probes: get(&self.probes),
            probe_failures: get(&self.probe_failures),
            warm_served: get(&self.warm_served),
        }
    }
}

/// The circuit state as an atomic.
#[derive(Debug)]
pub(crate) struct AtomicState(AtomicU8);

impl AtomicState {
    pub(crate) fn new(state: CircuitState) -> Self {
        metrics::gauge!(metric::STATE).set(f64::from(state.code()));
        metrics::gauge!(metric::ACTIVE).set(if state == CircuitState::Closed { 0.0 } else { 1.0 });
        AtomicState(AtomicU8::new(state.code()))
    }

    pub(crate) fn get(&self) -> CircuitState {
        CircuitState::from_code(self.0.load(Ordering::SeqCst))
    }

    /// Moves from `from` to `to`; false if the state was not `from`.
    /// Publishes the new state and counts the transition.
    pub(crate) fn transition(&self, from: CircuitState, to: CircuitState) -> bool {
        let moved = self
            .0
            .compare_exchange(from.code(), to.code(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if moved {
            metrics::gauge!(metric::STATE).set(f64::from(to.code()));
            if to != CircuitState::Closed {
                metrics::gauge!(metric::ACTIVE).set(1.0);
            }
            metrics::counter!(metric::TRANSITIONS, "to" => to.as_str()).increment(1);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in [
            CircuitState::Closed,
            CircuitState::Open,
            CircuitState::Probing,
            CircuitState::Replaying,
        ] {
            assert_eq!(CircuitState::from_code(s.code()), s);
        }
        let a = AtomicState::new(CircuitState::Closed);
        assert!(a.transition(CircuitState::Closed, CircuitState::Open));
        assert!(!a.transition(CircuitState::Closed, CircuitState::Open));
        assert_eq!(a.get(), CircuitState::Open);
    }
}
