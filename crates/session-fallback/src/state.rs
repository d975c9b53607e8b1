//! The circuit's states and the counters exposed for observability.

use std::sync::atomic::{AtomicU64, Ordering};

/// Where a circuit stands. See the crate docs for the transitions.
///
/// The fallback keeps one circuit per partition of the primary
/// ([`SessionStore::partition`](session_core::SessionStore::partition)), and
/// [`FallbackStore::state`](crate::FallbackStore::state) reports their aggregate: open if any
/// partition is open, else probing if any is being probed, else replaying if any is
/// replaying, else closed. For a primary of one partition (the default) that is simply its
/// circuit's state. The variant docs below describe one circuit: "the primary" is the part
/// of it serving that partition's keys.
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

    /// Whether calls skip the primary (open or probing); for the aggregate: whether some
    /// partition's calls do.
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
    /// Changes of [`CircuitState`] between closed, open and replaying, summed
    /// over the partitions' circuits (the hops through probing are counted in
    /// `probes`).
    pub transitions: u64,
    /// Times a partition's circuit opened.
    pub opened: u64,
    /// Probes of the primary made while a circuit was open (one per open partition).
    pub probes: u64,
    /// Probes that found the primary (that partition of it) still down.
    pub probe_failures: u64,
    /// Calls made while the primary was unreachable that were answered from
    /// the warm copy (or journaled against it): sessions that predate the
    /// outage, kept usable.
    pub warm_served: u64,
    /// Partitions of the primary whose circuit is open (or being probed) right now — a
    /// gauge, not a count since start. At most 1 for a primary of one partition; on a Redis
    /// Cluster, the nodes whose keys are served by the secondary.
    pub open_partitions: u64,
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
    /// Gauge: 1 while anything is served by the secondary (some circuit not
    /// closed, or journal not empty), else 0.
    pub const ACTIVE: &str = "session_fallback_active";
    /// Gauge: 0 closed, 1 open, 2 probing, 3 replaying (the aggregate over partitions: see
    /// [`CircuitState`](crate::CircuitState)).
    pub const STATE: &str = "session_fallback_state";
    /// Gauge: partitions of the primary whose circuit is open or probing (their keys are
    /// served by the secondary). 0 or 1 for a primary of one partition; on a Redis Cluster,
    /// the nodes failed over to the secondary.
    pub const OPEN_PARTITIONS: &str = "session_fallback_open_partitions";
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
    /// Counter, label `to`: circuit transitions by new state, over all partitions.
    pub const TRANSITIONS: &str = "session_fallback_transitions_total";
    /// Counter: probes of the down primary (one per open partition).
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
            open_partitions: 0,
        }
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
    }
}
