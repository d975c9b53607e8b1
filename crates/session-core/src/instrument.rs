//! Metrics and tracing for any store (feature `instrument`).
//!
//! [`Instrumented`] wraps a store — a backend of this workspace or your own —
//! and records every call through the [`metrics`] facade and a [`tracing`]
//! span. No exporter is forced on you: install any `metrics` recorder (the
//! demo uses Prometheus) **before the first operation**, because handles are
//! registered on first use.
//!
//! [`spawn_stats_reporter`] refreshes gauges (entries, bytes, per-namespace
//! session counts, health) on an interval in the background, never per request.
//!
//! Metric names and labels are listed in `docs/operations.md`. No label or
//! span field ever holds a full session id: spans carry `sid`, an 8-hex-digit
//! hash of it.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use tracing::Instrument as _;

use crate::envelope::{Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::partition::Partition;
use crate::reconcile::{Change, Reconciled, Tombstone};
use crate::store::{Health, HealthStatus, SessionStore, StoreStats};
use crate::version::Version;

/// Counter: store operations, labels `backend`, `op`, `outcome`.
pub const OPERATIONS_TOTAL: &str = "session_store_operations_total";
/// Histogram (seconds): operation latency, labels `backend`, `op`.
pub const OPERATION_DURATION: &str = "session_store_operation_duration_seconds";
/// Counter: loads that found a session, label `backend`.
pub const HITS_TOTAL: &str = "session_store_hits_total";
/// Counter: loads that found nothing, label `backend`.
pub const MISSES_TOTAL: &str = "session_store_misses_total";
/// Counter: failed operations, labels `backend`, `op`, `kind`.
pub const ERRORS_TOTAL: &str = "session_store_errors_total";
/// Counter: sessions created, labels `backend`, `namespace`.
pub const SESSIONS_CREATED_TOTAL: &str = "session_store_sessions_created_total";
/// Gauge: stored sessions as reported by `stats`, label `backend`.
pub const ENTRIES: &str = "session_store_entries";
/// Gauge: bytes used as reported by `stats`, label `backend`.
pub const BYTES: &str = "session_store_bytes";
/// Counter (absolute): sessions evicted at a bound, label `backend`.
pub const EVICTED_TOTAL: &str = "session_store_evicted_total";
/// Counter (absolute): writes rejected at a bound, label `backend`.
pub const REJECTED_TOTAL: &str = "session_store_rejected_total";
/// Counter (absolute): expired sessions reclaimed, label `backend`.
pub const EXPIRED_TOTAL: &str = "session_store_expired_total";
/// Gauge: live sessions per namespace (SCAN on Redis), labels `backend`, `namespace`.
pub const SESSIONS: &str = "session_store_sessions";
/// Gauge: 1 when the backend's health check answers, 0 otherwise, label `backend`.
pub const UP: &str = "session_store_up";
/// Gauge (seconds): latency of the last health check, label `backend`.
pub const HEALTH_LATENCY: &str = "session_store_health_latency_seconds";

/// Histogram buckets (seconds) fine enough for sub-millisecond calls; use
/// them when configuring an exporter.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5,
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Load,
    Save,
    Create,
    Update,
    SaveIf,
    Delete,
    Touch,
    Rotate,
    LoadMany,
    SaveMany,
    Count,
    Stats,
    Health,
    Reconcile,
}

const OPS: [Op; 14] = [
    Op::Load,
    Op::Save,
    Op::Create,
    Op::Update,
    Op::SaveIf,
    Op::Delete,
    Op::Touch,
    Op::Rotate,
    Op::LoadMany,
    Op::SaveMany,
    Op::Count,
    Op::Stats,
    Op::Health,
    Op::Reconcile,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Save => "save",
            Op::Create => "create",
            Op::Update => "update",
            Op::SaveIf => "save_if",
            Op::Delete => "delete",
            Op::Touch => "touch",
            Op::Rotate => "rotate",
            Op::LoadMany => "load_many",
            Op::SaveMany => "save_many",
            Op::Count => "count",
            Op::Stats => "stats",
            Op::Health => "health",
            Op::Reconcile => "reconcile",
        }
    }
}

/// Handles of one operation, registered once.
struct OpHandles {
    ok: Counter,
    hit: Counter,
    miss: Counter,
    duration: Histogram,
}

struct Handles {
    ops: Vec<OpHandles>,
    hits: Counter,
    misses: Counter,
}

impl Handles {
    fn register(backend: &'static str) -> Self {
        let ops = OPS
            .iter()
            .map(|op| {
                let op = op.name();
                OpHandles {
                    ok: metrics::counter!(OPERATIONS_TOTAL, "backend" => backend, "op" => op, "outcome" => "ok"),
                    hit: metrics::counter!(OPERATIONS_TOTAL, "backend" => backend, "op" => op, "outcome" => "hit"),
                    miss: metrics::counter!(OPERATIONS_TOTAL, "backend" => backend, "op" => op, "outcome" => "miss"),
                    duration: metrics::histogram!(OPERATION_DURATION, "backend" => backend, "op" => op),
                }
            })
            .collect();
        Handles {
            ops,
            hits: metrics::counter!(HITS_TOTAL, "backend" => backend),
            misses: metrics::counter!(MISSES_TOTAL, "backend" => backend),
        }
    }

    fn op(&self, op: Op) -> &OpHandles {
        // OPS lists every variant in declaration order.
        &self.ops[op as usize]
    }
}

/// What a successful call counts as.
enum Outcome {
    Ok,
    Hit,
    Miss,
    /// A batch load: hits and misses.
    Batch {
        hits: u64,
        misses: u64,
    },
}

/// A store wearing metrics and tracing. See the [module docs](self).
pub struct Instrumented<S> {
    inner: S,
    backend: &'static str,
    handles: OnceLock<Handles>,
}

impl<S: SessionStore> Instrumented<S> {
    /// Wraps a store; metrics carry its [`backend`](SessionStore::backend) name.
    pub fn new(inner: S) -> Self {
        let backend = inner.backend();
        Instrumented {
            inner,
            backend,
            handles: OnceLock::new(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles::register(self.backend))
    }

    async fn observe<T, F>(
        &self,
        op: Op,
        key: Option<&SessionKey>,
        fut: F,
        outcome: fn(&T) -> Outcome,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send,
    {
        let span = tracing::debug_span!(
            "session_store",
            backend = self.backend,
            op = op.name(),
            namespace = key.map(SessionKey::ns),
            sid = key.map(|k| k.id.short_hash()),
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        let start = Instant::now();
        let result = fut.instrument(span.clone()).await;
        let elapsed = start.elapsed();
        let h = self.handles();
        let oh = h.op(op);
        oh.duration.record(elapsed.as_secs_f64());
        let label = match &result {
            Ok(v) => match outcome(v) {
                Outcome::Ok => {
                    oh.ok.increment(1);
                    "ok"
                }
                Outcome::Hit => {
                    oh.hit.increment(1);
                    h.hits.increment(1);
                    "hit"
                }
                Outcome::Miss => {
                    oh.miss.increment(1);
                    h.misses.increment(1);
                    "miss"
                }
                Outcome::Batch { hits, misses } => {
                    oh.ok.increment(1);
                    h.hits.increment(hits);
                    h.misses.increment(misses);
                    "ok"
                }
            },
            Err(e) => {
                let kind = e.kind().as_str();
                metrics::counter!(OPERATIONS_TOTAL, "backend" => self.backend, "op" => op.name(), "outcome" => kind)
                    .increment(1);
                metrics::counter!(ERRORS_TOTAL, "backend" => self.backend, "op" => op.name(), "kind" => kind)
                    .increment(1);
                if e.is_temporary() {
                    tracing::debug!(parent: &span, backend = self.backend, op = op.name(), error.kind = kind, "backend unavailable");
                }
                kind
            }
        };
        if op == Op::Create && result.is_ok() {
            if let Some(k) = key {
                metrics::counter!(SESSIONS_CREATED_TOTAL, "backend" => self.backend, "namespace" => k.namespace.shared())
                    .increment(1);
            }
        }
        span.record("outcome", label);
        span.record(
            "duration_us",
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        result
    }
}

fn ok<T>(_: &T) -> Outcome {
    Outcome::Ok
}

#[async_trait]
impl<S: SessionStore> SessionStore for Instrumented<S> {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.observe(Op::Load, Some(key), self.inner.load(key), |r| {
            if r.is_some() {
                Outcome::Hit
            } else {
                Outcome::Miss
            }
        })
        .await
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.observe(Op::Save, Some(key), self.inner.save(key, record), ok)
            .await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.observe(Op::Create, Some(key), self.inner.create(key, record), ok)
            .await
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.observe(Op::Update, Some(key), self.inner.update(key, record), ok)
            .await
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.observe(
            Op::SaveIf,
            Some(key),
            self.inner.save_if(key, expected_version, record),
            ok,
        )
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.observe(Op::Delete, Some(key), self.inner.delete(key), ok)
            .await
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.observe(
            Op::Delete,
            Some(key),
            self.inner.delete_leaving(key, tombstone),
            ok,
        )
        .await
    }

    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.observe(
            Op::Reconcile,
            Some(key),
            self.inner.reconcile(key, base, change),
            ok,
        )
        .await
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.observe(Op::Touch, Some(key), self.inner.touch(key, expires_at), ok)
            .await
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.observe(Op::Rotate, Some(key), self.inner.rotate(key, new_id), ok)
            .await
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        self.observe(Op::LoadMany, None, self.inner.load_many(keys), |v| {
            let hits = v.iter().filter(|r| matches!(r, Ok(Some(_)))).count() as u64;
            let misses = v.iter().filter(|r| matches!(r, Ok(None))).count() as u64;
            Outcome::Batch { hits, misses }
        })
        .await
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        self.observe(Op::SaveMany, None, self.inner.save_many(items), ok)
            .await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.observe(Op::Count, None, self.inner.count(namespace), ok)
            .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.observe(Op::Stats, None, self.inner.stats(), ok).await
    }

    async fn health(&self) -> Health {
        let health = self
            .observe(Op::Health, None, async { Ok(self.inner.health().await) }, ok)
            .await;
        match health {
            Ok(h) => h,
            Err(_) => Health::new(self.backend, HealthStatus::Down),
        }
    }

    fn evicts(&self) -> bool {
        self.inner.evicts()
    }

    fn partition(&self, key: &SessionKey) -> Partition {
        self.inner.partition(key)
    }

    async fn partition_health(&self, partition: Partition) -> Health {
        self.inner.partition_health(partition).await
    }
}

/// Publishes one round of gauges for `store`: entries, bytes, bound counters,
/// sessions per namespace in `namespaces`, and health.
///
/// # Errors
/// The first error from `stats` or `count`; health never fails.
pub async fn report_stats_once(store: &dyn SessionStore, namespaces: &[Namespace]) -> Result<()> {
    let backend = store.backend();
    let health = store.health().await;
    metrics::gauge!(UP, "backend" => backend).set(if health.status == HealthStatus::Down {
        0.0
    } else {
        1.0
    });
    if let Some(latency) = health.latency {
        metrics::gauge!(HEALTH_LATENCY, "backend" => backend).set(latency.as_secs_f64());
    }
    if health.status == HealthStatus::Down {
        return Err(Error::unavailable(
            backend,
            "health check failed; gauges not refreshed",
        ));
    }
    let stats = store.stats().await?;
    if let Some(entries) = stats.entries {
        metrics::gauge!(ENTRIES, "backend" => backend).set(entries as f64);
    }
    if let Some(bytes) = stats.bytes {
        metrics::gauge!(BYTES, "backend" => backend).set(bytes as f64);
    }
    metrics::counter!(EVICTED_TOTAL, "backend" => backend).absolute(stats.evicted);
    metrics::counter!(REJECTED_TOTAL, "backend" => backend).absolute(stats.rejected);
    metrics::counter!(EXPIRED_TOTAL, "backend" => backend).absolute(stats.expired);
    for ns in namespaces {
        let n = store.count(ns).await?;
        metrics::gauge!(SESSIONS, "backend" => backend, "namespace" => ns.shared()).set(n as f64);
    }
    Ok(())
}

/// Refreshes the gauges of [`report_stats_once`] every `interval` on the
/// current tokio runtime, until the store is dropped. Needs a tokio runtime.
pub fn spawn_stats_reporter(
    store: &Arc<dyn SessionStore>,
    namespaces: Vec<Namespace>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let weak: Weak<dyn SessionStore> = Arc::downgrade(store);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if let Err(e) = report_stats_once(&*store, &namespaces).await {
                tracing::debug!(
                    backend = store.backend(),
                    error.kind = e.kind().as_str(),
                    "stats refresh failed"
                );
            }
        }
    })
}
