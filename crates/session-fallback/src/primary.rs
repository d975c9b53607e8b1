//! Calls to the primary and what their answers do to the circuits: the fallback's own
//! deadline on every call, health checks, and the accounting that opens a partition's circuit
//! (a temporary failure counts toward it, any other answer starts the count over).

use std::future::Future;
use std::sync::PoisonError;
use std::time::Duration;

use session_core::backend::Partition;
use session_core::{Error, Health, HealthStatus, Result, SessionKey, SessionStore};

use crate::state::Field;
use crate::store::{is_answering, Inner};

/// How often construction asks a primary that has not answered yet.
const STARTUP_POLL: Duration = Duration::from_millis(20);

impl<P: SessionStore, S: SessionStore> Inner<P, S> {
    /// Runs a primary call under the fallback's own deadline.
    pub(crate) async fn on_primary<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.on_primary_within(op, self.timeout, call).await
    }

    /// A batch call of `keys` keys under a deadline that scales with its size.
    pub(crate) async fn on_primary_batch<T>(
        &self,
        op: &'static str,
        keys: usize,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.on_primary_within(op, self.config.batch_timeout(keys), call)
            .await
    }

    async fn on_primary_within<T>(
        &self,
        op: &'static str,
        deadline: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                backend: self.primary.backend(),
                op,
                after: deadline,
            }),
        }
    }

    /// The primary's health, or `Down` if it does not answer in time.
    pub(crate) async fn primary_health(&self) -> Health {
        match tokio::time::timeout(self.timeout, self.primary.health()).await {
            Ok(h) => h,
            Err(_) => Health::new(self.primary.backend(), HealthStatus::Down)
                .with_detail(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// The primary's health, asked again until it answers or `startup_wait_ms` has passed
    /// (a lazily connecting primary answers "down" for its first few ms).
    pub(crate) async fn first_answer(&self) -> Health {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.startup_wait_ms);
        loop {
            let health = self.primary_health().await;
            if is_answering(&health) || tokio::time::Instant::now() >= deadline {
                return health;
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// The probe of one partition: the primary's `partition_health`, or `Down` if it does not
    /// answer in time.
    pub(crate) async fn partition_health(&self, partition: Partition) -> Health {
        match tokio::time::timeout(self.timeout, self.primary.partition_health(partition)).await {
            Ok(h) => h,
            Err(_) => Health::new(self.primary.backend(), HealthStatus::Down)
                .with_detail(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// The primary answered a call on `key` (successfully or with a permanent error): its
    /// partition's consecutive failures start over. One atomic load while nothing is counted.
    pub(crate) fn primary_answered(&self, key: &SessionKey) {
        if self.circuits.tracked() {
            self.circuits.answered(self.primary.partition(key));
        }
    }

    /// [`primary_answered`](Self::primary_answered) for a call of many keys.
    pub(crate) fn primary_answered_many<'k>(&self, keys: impl IntoIterator<Item = &'k SessionKey>) {
        if self.circuits.tracked() {
            let mut seen: Vec<Partition> = Vec::new();
            for key in keys {
                let p = self.primary.partition(key);
                if !seen.contains(&p) {
                    seen.push(p);
                    self.circuits.answered(p);
                }
            }
        }
    }

    /// [`primary_answered`](Self::primary_answered) for a call with no key (`count`, `stats`):
    /// the store as a whole, [`Partition::WHOLE`].
    pub(crate) fn primary_answered_whole(&self) {
        if self.circuits.tracked() {
            self.circuits.answered(Partition::WHOLE);
        }
    }

    /// The primary failed with a temporary error on `partition`: count it, maybe open that
    /// partition's circuit. `None`: the failing call spanned partitions and the error does not
    /// say which failed (a `rotate` across two), so none is blamed.
    pub(crate) fn primary_failed(&self, partition: Option<Partition>, err: &Error) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = err.kind().as_str();
        if let Some(p) = partition {
            if self.circuits.failed(p, self.config.failure_threshold) {
                self.open_circuit(p, err);
            }
        }
    }

    /// A live call failed over: log it (no session id, a short hash) and count it.
    pub(crate) fn failed_over(
        &self,
        op: &'static str,
        key: Option<&SessionKey>,
        partition: Option<Partition>,
        err: &Error,
    ) {
        self.counters.inc(Field::Failovers);
        self.primary_failed(partition, err);
        match key {
            Some(key) => tracing::warn!(
                primary = self.primary.backend(),
                secondary = self.secondary.backend(),
                op,
                namespace = key.ns(),
                sid = %key.id.short_hash(),
                error = err.kind().as_str(),
                "session fallback: primary failed, call served by the secondary"
            ),
            None => tracing::warn!(
                primary = self.primary.backend(),
                secondary = self.secondary.backend(),
                op,
                error = err.kind().as_str(),
                "session fallback: primary failed, call served by the secondary"
            ),
        }
    }

    /// Opens `partition`'s circuit from closed or replaying.
    pub(crate) fn open_circuit(&self, partition: Partition, err: &Error) {
        let Some(opened) = self.circuits.open(partition) else {
            return;
        };
        self.counters.inc(Field::Transitions);
        self.counters.inc(Field::Opened);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = err.kind().as_str();
        tracing::warn!(
            primary = self.primary.backend(),
            partition = %partition,
            open_partitions = self.circuits.open_count(),
            from = opened.from.as_str(),
            error = err.kind().as_str(),
            journal = self.journal.len(),
            "session fallback: circuit opened, serving this partition's sessions from the secondary until \
             the primary answers"
        );
        self.ensure_worker();
        self.wake_worker();
    }

    /// Starts with the circuit of the whole primary open (it was down at start-up).
    pub(crate) fn start_open(&self, health: Health) {
        let detail = health.detail.clone();
        if self.circuits.start_open(health) {
            self.counters.inc(Field::Transitions);
            self.counters.inc(Field::Opened);
            *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = "unavailable";
            tracing::warn!(
                primary = self.primary.backend(),
                detail = detail.as_deref().unwrap_or(""),
                "session fallback: primary down at start-up, serving from the secondary and probing"
            );
            self.ensure_worker();
        }
    }
}
