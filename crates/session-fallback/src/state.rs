//! The circuit's states and the counters exposed for observability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{Counter, Gauge};

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
    /// Loads the primary answered with no session and no tombstone during the
    /// [recovery grace](crate::FallbackConfig::recovery_grace_ms), answered as "can't tell"
    /// ([`Error::Unavailable`](session_core::Error::Unavailable)): another instance may
    /// still be replaying that session from its journal.
    pub recovery_unknown: u64,
    /// Partitions of the primary whose circuit is open (or being probed) right now — a
    /// gauge, not a count since start. At most 1 for a primary of one partition; on a Redis
    /// Cluster, the nodes whose keys are served by the secondary.
    pub open_partitions: u64,
}

/// The live counters behind [`FallbackCounters`], each also counted in its metric.
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
    pub(crate) recovery_unknown: AtomicU64,
    metrics: Arc<Metrics>,
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
    RecoveryUnknown,
}

/// Metric names published through the `metrics` facade (see `docs/operations.md`).
///
/// Every series carries the label [`STORE_LABEL`](metric::STORE_LABEL) (`store`): the store's
/// [`name`](crate::FallbackConfig::name), `"fallback"` unless set, so that several fallback
/// stores in one process publish separate series. [`TRANSITIONS`](metric::TRANSITIONS) also carries `to`.
///
/// The handles are registered when the store is built: install the recorder before
/// [`FallbackStore::new`](crate::FallbackStore::new).
pub mod metric {
    /// The label naming the store on every series: [`FallbackConfig::name`](crate::FallbackConfig::name).
    pub const STORE_LABEL: &str = "store";
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
    /// Counter, label `to` (`open`, `probing`, `replaying`, `closed`): circuit transitions by
    /// new state, over all partitions.
    pub const TRANSITIONS: &str = "session_fallback_transitions_total";
    /// Counter: probes of the down primary (one per open partition).
    pub const PROBES: &str = "session_fallback_probes_total";
    /// Counter: probes that found the primary still down.
    pub const PROBE_FAILURES: &str = "session_fallback_probe_failures_total";
    /// Counter: calls made while the primary was unreachable and answered from the warm copy.
    pub const WARM_SERVED: &str = "session_fallback_warm_served_total";
    /// Counter: loads answered "can't tell" during the recovery grace
    /// ([`FallbackConfig::recovery_grace_ms`](crate::FallbackConfig::recovery_grace_ms)): the
    /// primary held neither the session nor its tombstone.
    pub const RECOVERY_UNKNOWN: &str = "session_fallback_recovery_unknown_total";
}

/// A fallback store's metric handles, registered once when it is built, each labelled
/// [`metric::STORE_LABEL`] with the store's name.
pub(crate) struct Metrics {
    pub(crate) active: Gauge,
    pub(crate) state: Gauge,
    pub(crate) open_partitions: Gauge,
    pub(crate) journal_length: Gauge,
    failovers: Counter,
    secondary_calls: Counter,
    replayed: Counter,
    conflicts: Counter,
    journal_rejected: Counter,
    replay_errors: Counter,
    probes: Counter,
    probe_failures: Counter,
    warm_served: Counter,
    recovery_unknown: Counter,
    /// By [`CircuitState::code`] of the new state.
    transitions: [Counter; 4],
}

impl Metrics {
    /// Registers the handles of a store named `store` with the installed recorder (no-ops
    /// without one), and publishes the gauges' starting values: closed, inactive, empty.
    pub(crate) fn register(store: &str) -> Self {
        let gauge = |name: &'static str| metrics::gauge!(name, metric::STORE_LABEL => store.to_owned());
        let counter = |name: &'static str| metrics::counter!(name, metric::STORE_LABEL => store.to_owned());
        let transition = |to: CircuitState| {
            metrics::counter!(
                metric::TRANSITIONS,
                metric::STORE_LABEL => store.to_owned(),
                "to" => to.as_str()
            )
        };
        let m = Metrics {
            active: gauge(metric::ACTIVE),
            state: gauge(metric::STATE),
            open_partitions: gauge(metric::OPEN_PARTITIONS),
            journal_length: gauge(metric::JOURNAL_LENGTH),
            failovers: counter(metric::FAILOVERS),
            secondary_calls: counter(metric::SECONDARY_CALLS),
            replayed: counter(metric::REPLAYED),
            conflicts: counter(metric::CONFLICTS),
            journal_rejected: counter(metric::JOURNAL_REJECTED),
            replay_errors: counter(metric::REPLAY_ERRORS),
            probes: counter(metric::PROBES),
            probe_failures: counter(metric::PROBE_FAILURES),
            warm_served: counter(metric::WARM_SERVED),
            recovery_unknown: counter(metric::RECOVERY_UNKNOWN),
            // In code order: closed 0, open 1, probing 2, replaying 3.
            transitions: [
                transition(CircuitState::Closed),
                transition(CircuitState::Open),
                transition(CircuitState::Probing),
                transition(CircuitState::Replaying),
            ],
        };
        m.state.set(f64::from(CircuitState::Closed.code()));
        m.active.set(0.0);
        m.open_partitions.set(0.0);
        m.journal_length.set(0.0);
        m
    }

    /// Counts a circuit's move to `to`.
    pub(crate) fn transition(&self, to: CircuitState) {
        self.transitions[usize::from(to.code())].increment(1);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Counters {
    /// Counters at zero, counting also in `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Counters {
            failovers: AtomicU64::new(0),
            secondary_calls: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            journal_rejected: AtomicU64::new(0),
            replay_errors: AtomicU64::new(0),
            transitions: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            probe_failures: AtomicU64::new(0),
            warm_served: AtomicU64::new(0),
            recovery_unknown: AtomicU64::new(0),
            metrics,
        }
    }

    /// Counts one event in the snapshot counters and in its metric.
    pub(crate) fn inc(&self, field: Field) {
        let m = &*self.metrics;
        let (atomic, counter): (&AtomicU64, Option<&Counter>) = match field {
            Field::Failovers => (&self.failovers, Some(&m.failovers)),
            Field::SecondaryCalls => (&self.secondary_calls, Some(&m.secondary_calls)),
            Field::Replayed => (&self.replayed, Some(&m.replayed)),
            Field::Conflicts => (&self.conflicts, Some(&m.conflicts)),
            Field::JournalRejected => (&self.journal_rejected, Some(&m.journal_rejected)),
            Field::ReplayErrors => (&self.replay_errors, Some(&m.replay_errors)),
            // Published by the circuits, by new state (`Metrics::transition`).
            Field::Transitions => (&self.transitions, None),
            Field::Opened => (&self.opened, None),
            Field::Probes => (&self.probes, Some(&m.probes)),
            Field::ProbeFailures => (&self.probe_failures, Some(&m.probe_failures)),
            Field::WarmServed => (&self.warm_served, Some(&m.warm_served)),
            Field::RecoveryUnknown => (&self.recovery_unknown, Some(&m.recovery_unknown)),
        };
        atomic.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = counter {
            counter.increment(1);
        }
    }

    /// The store's metric handles.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
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
            recovery_unknown: get(&self.recovery_unknown),
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
