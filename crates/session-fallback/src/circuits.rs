//! The circuits: one per partition of the primary
//! ([`SessionStore::partition`](session_core::SessionStore::partition)), and their aggregate.
//!
//! A partition has an entry here only while its circuit is not closed, or while it counts
//! failures toward the threshold; a closed partition without failures has none. Every change
//! happens under one mutex and republishes three atomics, which the healthy path reads
//! without the lock:
//!
//! * the aggregate [`CircuitState`] (open if any partition is open, else probing if any is
//!   probing, else replaying if any is replaying, else closed): for a primary of one
//!   partition, exactly that partition's state;
//! * how many partitions are open (or probing): while it is 0, no key's partition is looked up;
//! * how many entries there are: while it is 0, a primary answer resets nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use session_core::backend::{now_ms, Partition};
use session_core::Health;
use tokio::time::Instant;

use crate::state::{CircuitState, Metrics};

/// Exponential backoff with jitter.
pub(crate) struct Backoff {
    min: u64,
    max: u64,
    next: u64,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(min: u64, max: u64) -> Self {
        let seed = now_ms() ^ (std::process::id() as u64).rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
        Backoff {
            min,
            max,
            next: min,
            seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next delay: uniform in [d/2, d] for the current step d, which then doubles.
    pub(crate) fn delay(&mut self) -> Duration {
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

/// One partition's circuit.
struct Circuit {
    state: CircuitState,
    /// Consecutive temporary failures of calls on this partition.
    failures: u32,
    /// When the last of them happened.
    failed_at: Instant,
    /// When it last opened, ms since the Unix epoch.
    opened_at: u64,
    /// Delays between probes; kept until the circuit closes (a partition that answers probes
    /// but fails replay is not hammered).
    backoff: Backoff,
    /// When an open circuit is probed next.
    next_probe: Instant,
    /// The last probe's answer, reported while open.
    last_probe: Option<Health>,
}

/// A partition's circuit just opened.
pub(crate) struct Opened {
    /// The state it opened from (closed or replaying).
    pub(crate) from: CircuitState,
}

/// A partition's circuit just closed.
pub(crate) struct Closed {
    pub(crate) partition: Partition,
    /// When it had opened, ms.
    pub(crate) opened_at: u64,
}

/// The circuits of a fallback store.
pub(crate) struct Circuits {
    aggregate: AtomicU8,
    open: AtomicUsize,
    tracked: AtomicUsize,
    map: Mutex<HashMap<Partition, Circuit>>,
    probe_min_ms: u64,
    probe_max_ms: u64,
    /// The gauges this publishes (state, active, open partitions) and the transitions.
    metrics: Arc<Metrics>,
}

impl Circuits {
    /// Every circuit closed (the gauges start so: [`Metrics::register`]).
    pub(crate) fn new(probe_min_ms: u64, probe_max_ms: u64, metrics: Arc<Metrics>) -> Self {
        Circuits {
            aggregate: AtomicU8::new(CircuitState::Closed.code()),
            open: AtomicUsize::new(0),
            tracked: AtomicUsize::new(0),
            map: Mutex::new(HashMap::new()),
            probe_min_ms,
            probe_max_ms,
            metrics,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Partition, Circuit>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The aggregate state (one atomic load).
    pub(crate) fn aggregate(&self) -> CircuitState {
        CircuitState::from_code(self.aggregate.load(Ordering::SeqCst))
    }

    /// Partitions whose circuit is open or probing (one atomic load).
    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether any partition has an entry (not closed, or failures counted).
    pub(crate) fn tracked(&self) -> bool {
        self.tracked.load(Ordering::Relaxed) != 0
    }

    /// The state of one partition's circuit.
    pub(crate) fn state_of(&self, partition: Partition) -> CircuitState {
        if self.tracked.load(Ordering::SeqCst) == 0 {
            return CircuitState::Closed;
        }
        self.map()
            .get(&partition)
            .map_or(CircuitState::Closed, |c| c.state)
    }

    /// Whether calls on `partition`'s keys skip the primary (open or probing).
    pub(crate) fn is_open(&self, partition: Partition) -> bool {
        self.open_count() != 0 && self.map().get(&partition).is_some_and(|c| c.state.is_open())
    }

    /// Whether any partition is replaying.
    pub(crate) fn any_replaying(&self) -> bool {
        self.tracked() && self.map().values().any(|c| c.state == CircuitState::Replaying)
    }

    /// A temporary failure on `partition`: counts it; true when it reaches `threshold`.
    pub(crate) fn failed(&self, partition: Partition, threshold: u32) -> bool {
        let mut map = self.map();
        let circuit = map
            .entry(partition)
            .or_insert_with(|| self.circuit(CircuitState::Closed));
        circuit.failures = circuit.failures.saturating_add(1);
        circuit.failed_at = Instant::now();
        let reached = circuit.failures >= threshold;
        self.publish(&map);
        reached
    }

    /// The primary answered a call on `partition`: its consecutive failures start over.
    ///
    /// Closed partitions whose last failure is older than the longest probe delay are
    /// forgotten too: a partition no key maps to any more (a node failed over below the
    /// threshold) gets no answer to reset it, and would otherwise keep every healthy call
    /// looking up its key's partition.
    pub(crate) fn answered(&self, partition: Partition) {
        let mut map = self.map();
        let before = map.len();
        if let Some(c) = map.get_mut(&partition) {
            c.failures = 0;
        }
        let stale = Duration::from_millis(self.probe_max_ms);
        map.retain(|p, c| {
            c.state != CircuitState::Closed || (*p != partition && c.failed_at.elapsed() < stale)
        });
        if map.len() != before {
            self.publish(&map);
        }
    }

    /// Opens `partition`'s circuit from closed or replaying; its first probe is due after the
    /// next backoff delay. `None` when it was open already.
    pub(crate) fn open(&self, partition: Partition) -> Option<Opened> {
        let mut map = self.map();
        let circuit = map
            .entry(partition)
            .or_insert_with(|| self.circuit(CircuitState::Closed));
        let from = circuit.state;
        if !matches!(from, CircuitState::Closed | CircuitState::Replaying) {
            return None;
        }
        circuit.state = CircuitState::Open;
        circuit.opened_at = now_ms();
        circuit.next_probe = Instant::now() + circuit.backoff.delay();
        self.metrics.transition(CircuitState::Open);
        self.publish(&map);
        Some(Opened { from })
    }

    /// Opens [`Partition::WHOLE`] at start-up (the primary did not answer), with that answer
    /// as its last probe. False when it was open already.
    pub(crate) fn start_open(&self, health: Health) -> bool {
        let opened = self.open(Partition::WHOLE).is_some();
        if opened {
            if let Some(c) = self.map().get_mut(&Partition::WHOLE) {
                c.last_probe = Some(health);
            }
        }
        opened
    }

    /// The open partitions whose probe is due at `now`, moved to probing.
    pub(crate) fn due(&self, now: Instant) -> Vec<Partition> {
        if self.open_count() == 0 {
            return Vec::new();
        }
        let mut map = self.map();
        let mut due = Vec::new();
        for (p, c) in map.iter_mut() {
            if c.state == CircuitState::Open && c.next_probe <= now {
                c.state = CircuitState::Probing;
                self.metrics.transition(CircuitState::Probing);
                due.push(*p);
            }
        }
        if !due.is_empty() {
            self.publish(&map);
        }
        due
    }

    /// A probe of `partition` ended: replaying if it answered (true), open again with the
    /// next delay otherwise.
    pub(crate) fn probed(&self, partition: Partition, health: Health, up: bool) -> bool {
        let mut map = self.map();
        let Some(c) = map.get_mut(&partition) else {
            return false;
        };
        c.last_probe = Some(health);
        if c.state != CircuitState::Probing {
            return false;
        }
        let replaying = if up {
            c.state = CircuitState::Replaying;
            c.failures = 0;
            self.metrics.transition(CircuitState::Replaying);
            true
        } else {
            c.state = CircuitState::Open;
            c.next_probe = Instant::now() + c.backoff.delay();
            self.metrics.transition(CircuitState::Open);
            false
        };
        self.publish(&map);
        replaying
    }

    /// When the next probe of an open partition is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        if self.open_count() == 0 {
            return None;
        }
        self.map()
            .values()
            .filter(|c| c.state == CircuitState::Open)
            .map(|c| c.next_probe)
            .min()
    }

    /// Closes every replaying partition for which `pending` says no journaled key is left.
    pub(crate) fn close_drained(&self, pending: impl Fn(Partition) -> bool) -> Vec<Closed> {
        let mut map = self.map();
        let done: Vec<Partition> = map
            .iter()
            .filter(|(p, c)| c.state == CircuitState::Replaying && !pending(**p))
            .map(|(p, _)| *p)
            .collect();
        let mut closed = Vec::with_capacity(done.len());
        for partition in done {
            if let Some(c) = map.remove(&partition) {
                self.metrics.transition(CircuitState::Closed);
                closed.push(Closed {
                    partition,
                    opened_at: c.opened_at,
                });
            }
        }
        if !closed.is_empty() {
            self.publish(&map);
        }
        closed
    }

    /// The last probe of `partition`, if it is tracked and was probed.
    pub(crate) fn last_probe(&self, partition: Partition) -> Option<Health> {
        self.map().get(&partition).and_then(|c| c.last_probe.clone())
    }

    /// When the longest open circuit opened, ms.
    pub(crate) fn open_since(&self) -> Option<u64> {
        self.map()
            .values()
            .filter(|c| c.state.is_open())
            .map(|c| c.opened_at)
            .min()
    }

    /// Whether every open partition is [`Partition::WHOLE`] (a primary of one partition, or
    /// one that failed as a whole).
    pub(crate) fn only_whole_open(&self) -> bool {
        self.map()
            .iter()
            .filter(|(_, c)| c.state.is_open())
            .all(|(p, _)| p.is_whole())
    }

    fn circuit(&self, state: CircuitState) -> Circuit {
        Circuit {
            state,
            failures: 0,
            failed_at: Instant::now(),
            opened_at: 0,
            backoff: Backoff::new(self.probe_min_ms, self.probe_max_ms),
            next_probe: Instant::now(),
            last_probe: None,
        }
    }

    /// Republishes the atomics and gauges from the map (called with its lock held).
    fn publish(&self, map: &HashMap<Partition, Circuit>) {
        let mut aggregate = CircuitState::Closed;
        let mut open = 0usize;
        for c in map.values() {
            if c.state.is_open() {
                open += 1;
            }
            aggregate = severer(aggregate, c.state);
        }
        self.tracked.store(map.len(), Ordering::SeqCst);
        if self.open.swap(open, Ordering::SeqCst) != open {
            self.metrics.open_partitions.set(open as f64);
        }
        let before = self.aggregate.swap(aggregate.code(), Ordering::SeqCst);
        if before != aggregate.code() {
            self.metrics.state.set(f64::from(aggregate.code()));
            if aggregate != CircuitState::Closed {
                self.metrics.active.set(1.0);
            }
        }
    }
}

/// The aggregate of two states: open, then probing, then replaying, then closed.
fn severer(a: CircuitState, b: CircuitState) -> CircuitState {
    let rank = |s: CircuitState| match s {
        CircuitState::Closed => 0,
        CircuitState::Replaying => 1,
        CircuitState::Probing => 2,
        CircuitState::Open => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::HealthStatus;

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

    #[tokio::test]
    async fn partitions_open_and_close_alone_and_aggregate() {
        let c = Circuits::new(10, 40, Arc::new(Metrics::register("test")));
        let (a, b) = (Partition::new(1), Partition::new(2));
        assert_eq!(c.aggregate(), CircuitState::Closed);
        assert!(!c.failed(a, 2), "below the threshold");
        assert!(c.tracked());
        c.answered(a);
        assert!(!c.tracked(), "an answer forgets a closed partition's failures");
        assert!(c.failed(a, 1));
        assert!(c.open(a).is_some());
        assert!(c.open(a).is_none(), "open already");
        assert_eq!((c.aggregate(), c.open_count()), (CircuitState::Open, 1));
        assert!(c.is_open(a) && !c.is_open(b));
        assert_eq!(c.state_of(b), CircuitState::Closed);
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(c.due(Instant::now()), vec![a]);
        assert_eq!(c.aggregate(), CircuitState::Probing);
        let up = Health::new("test", HealthStatus::Up);
        assert!(c.probed(a, up, true));
        assert_eq!((c.aggregate(), c.open_count()), (CircuitState::Replaying, 0));
        assert!(c.open(b).is_some());
        assert_eq!(c.aggregate(), CircuitState::Open, "open wins in the aggregate");
        assert!(c.close_drained(|p| p == a).is_empty(), "a key of `a` is pending");
        let closed = c.close_drained(|_| false);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].partition, a);
        assert_eq!(c.aggregate(), CircuitState::Open);
        assert!(c.only_whole_open() == b.is_whole());
    }
}
