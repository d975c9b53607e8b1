//! Calls on the store as a whole rather than on a key: `count`, `stats` and `health`. The
//! first two come from the secondary while [`Partition::WHOLE`] is open and from the primary
//! otherwise; `health` reports both stores and the circuits.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Instant;

use session_core::backend::{now_ms, Partition};
use session_core::{Health, HealthStatus, Namespace, Result, SessionStore, StoreStats};

use crate::state::{CircuitState, Field};
use crate::store::{is_answering, Inner, BACKEND};

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// `count`: from the secondary while the whole primary's circuit is open (only sessions
    /// written during the outage), else from the primary, failed over when it fails.
    pub(crate) async fn count(&self, namespace: &Namespace) -> Result<u64> {
        if self.circuits.is_open(Partition::WHOLE) {
            self.counters.inc(Field::SecondaryCalls);
            return self.secondary.count(namespace).await;
        }
        match self.on_primary("count", self.primary.count(namespace)).await {
            Err(e) if e.is_temporary() => {
                self.failed_over("count", None, Some(Partition::WHOLE), &e);
                self.secondary.count(namespace).await
            }
            other => {
                self.primary_answered_whole();
                other
            }
        }
    }

    /// `stats`: the serving store's, with the fallback's own figures as extras.
    pub(crate) async fn stats(&self) -> Result<StoreStats> {
        let base = if self.circuits.is_open(Partition::WHOLE) {
            self.secondary.stats().await?
        } else {
            match self.on_primary("stats", self.primary.stats()).await {
                Err(e) if e.is_temporary() => {
                    self.failed_over("stats", None, Some(Partition::WHOLE), &e);
                    self.secondary.stats().await?
                }
                other => {
                    self.primary_answered_whole();
                    other?
                }
            }
        };
        let mut stats = StoreStats::new(BACKEND);
        stats.entries = base.entries;
        stats.bytes = base.bytes;
        stats.evicted = base.evicted;
        stats.rejected = base
            .rejected
            .saturating_add(self.counters.journal_rejected.load(Ordering::Relaxed));
        stats.expired = base.expired;
        stats.extra = base.extra;
        stats.extra.extend(self.extras());
        Ok(stats)
    }

    /// `health`: up when every circuit is closed with an empty journal and the primary is
    /// up; degraded while either store answers; down otherwise. While the whole primary's
    /// circuit is open it reports the last probe instead of waiting on the primary.
    pub(crate) async fn health(&self) -> Health {
        let started = Instant::now();
        let state = self.circuits.aggregate();
        let primary = if self.circuits.is_open(Partition::WHOLE) {
            // No wait on a primary known to be down: report the last probe.
            self.circuits
                .last_probe(Partition::WHOLE)
                .unwrap_or_else(|| Health::new(self.primary.backend(), HealthStatus::Down))
        } else {
            self.primary_health().await
        };
        let secondary = match tokio::time::timeout(self.timeout, self.secondary.health()).await {
            Ok(h) => h,
            Err(_) => Health::new(self.secondary.backend(), HealthStatus::Down)
                .with_detail(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let journal = self.journal.len();
        let status = if state == CircuitState::Closed && journal == 0 && primary.status == HealthStatus::Up {
            HealthStatus::Up
        } else if is_answering(&secondary) || is_answering(&primary) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Down
        };
        let last_error = *self.last_error.lock().unwrap_or_else(PoisonError::into_inner);
        let open_ms = now_ms().saturating_sub(self.circuits.open_since().unwrap_or_else(now_ms));
        let detail = match state {
            CircuitState::Closed if journal == 0 => {
                format!("circuit closed; primary {}", primary.status.as_str())
            }
            CircuitState::Closed | CircuitState::Replaying => {
                format!("replaying {journal} journaled sessions into the primary")
            }
            CircuitState::Open | CircuitState::Probing if self.circuits.only_whole_open() => format!(
                "circuit open for {open_ms} ms (last primary error: {last_error}); serving from the secondary, \
                 {journal} sessions journaled"
            ),
            CircuitState::Open | CircuitState::Probing => format!(
                "circuit open on {} partitions of the primary for up to {open_ms} ms (last primary error: \
                 {last_error}); their sessions are served from the secondary, the others by the primary; \
                 {journal} sessions journaled",
                self.circuits.open_count()
            ),
        };
        let mut health = Health::new(BACKEND, status)
            .with_latency(started.elapsed())
            .with_detail(detail);
        health.extra = self.extras();
        health.components = vec![("primary", primary), ("secondary", secondary)];
        health
    }

    /// The fallback's figures in `stats` and `health`.
    fn extras(&self) -> Vec<(&'static str, u64)> {
        let c = self.counters.snapshot();
        vec![
            ("journal", self.journal.len() as u64),
            ("state", u64::from(self.circuits.aggregate().code())),
            ("open_partitions", self.circuits.open_count() as u64),
            ("failovers", c.failovers),
            ("replayed", c.replayed),
            ("conflicts", c.conflicts),
            ("journal_rejected", c.journal_rejected),
            ("warm", self.warm.len() as u64),
            ("warm_evicted", self.warm.evicted()),
        ]
    }
}
