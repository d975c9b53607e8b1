//! Metrics and tracing for any store (feature `instrument`).
//!
//! [`Instrumented`] wraps a store — a backend of this workspace or your own —
//! and records every call through the [`metrics`] facade and a [`tracing`]
//! span. No exporter is forced on you: install any `metrics` recorder
//! **before the first operation**, because handles are registered on first
//! use. With Prometheus, give [`OPERATION_DURATION`] the buckets
//! [`LATENCY_BUCKETS`] — without buckets the exporter publishes a summary and
//! no `_bucket` series (the demo's `session_demo::metrics::install_prometheus`
//! does this; `docs/operations.md` shows it).
//!
//! One counter, [`OPERATIONS_TOTAL`], counts every call by `backend`,
//! `store`, `op` and `outcome`: `ok`, `hit` or `miss` (single loads), or the
//! error's kind. Hit ratios and error rates are ratios of its outcomes.
//!
//! Every series carries the label [`STORE_LABEL`] (`store`): the store's
//! name, [`Instrumented::with_name`], by default its backend name. Give each
//! store of a process its own name, or their series are one.
//!
//! [`Instrumented::spawn_stats_reporter`] (or [`spawn_stats_reporter`] for a
//! store without the layer) refreshes gauges (entries, bytes, per-namespace
//! session counts, health) on an interval in the background, never per request.
//!
//! Metric names and labels are listed in `docs/operations.md`. No label or
//! span field ever holds a full session id: spans carry `sid`, an 8-hex-digit
//! hash of it.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use metrics::{Counter, Histogram, SharedString};
use tracing::Instrument as _;

use crate::envelope::{Entry, Meta, Record};
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::partition::Partition;
use crate::reconcile::{Change, Reconciled, Tombstone};
use crate::store::{Health, HealthStatus, SessionStore, StoreStats};
use crate::version::Version;

/// The label naming the store on every series: [`Instrumented::name`].
pub const STORE_LABEL: &str = "store";
/// Counter: store operations, labels `backend`, `store`, `op`, `outcome` (`ok`; `hit` or
/// `miss` for `load`; or the error's [`kind`](crate::ErrorKind::as_str)). A `load_many`
/// counts once, `ok`, whatever it found.
pub const OPERATIONS_TOTAL: &str = "session_store_operations_total";
/// Histogram (seconds): operation latency, labels `backend`, `store`, `op`. Give it
/// [`LATENCY_BUCKETS`] in a Prometheus exporter.
pub const OPERATION_DURATION: &str = "session_store_operation_duration_seconds";
/// Counter: sessions created, labels `backend`, `store`, `namespace` (the only series by
/// namespace: the successful `create`s of [`OPERATIONS_TOTAL`], split by namespace).
pub const SESSIONS_CREATED_TOTAL: &str = "session_store_sessions_created_total";
/// Gauge: stored sessions as reported by `stats`, labels `backend`, `store`.
pub const ENTRIES: &str = "session_store_entries";
/// Gauge: bytes used as reported by `stats`, labels `backend`, `store`.
pub const BYTES: &str = "session_store_bytes";
/// Counter (absolute): sessions evicted at a bound, labels `backend`, `store`.
pub const EVICTED_TOTAL: &str = "session_store_evicted_total";
/// Counter (absolute): writes rejected at a bound, labels `backend`, `store`.
pub const REJECTED_TOTAL: &str = "session_store_rejected_total";
/// Counter (absolute): expired sessions reclaimed, labels `backend`, `store`.
pub const EXPIRED_TOTAL: &str = "session_store_expired_total";
/// Gauge: live sessions per namespace (SCAN on Redis), labels `backend`, `store`, `namespace`.
pub const SESSIONS: &str = "session_store_sessions";
/// Gauge: 1 when the backend's health check answers, 0 otherwise, labels `backend`, `store`.
pub const UP: &str = "session_store_up";
/// Gauge (seconds): latency of the last health check, labels `backend`, `store`.
pub const HEALTH_LATENCY: &str = "session_store_health_latency_seconds";
/// Gauge, label `stat` (one of the backend's [`StoreStats::extra`] names, for example
/// `near_cache_hits` or `fenced_connections`), labels `backend`, `store`: the backend-specific
/// figures `stats` reports, as they are at each round (running totals stay running totals).
pub const BACKEND_STAT: &str = "session_store_backend_stat";

/// Histogram buckets (seconds) fine enough for sub-millisecond calls, for
/// [`OPERATION_DURATION`]: give them to the exporter (a Prometheus exporter
/// publishes `_bucket` series only for a histogram it has buckets for).
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
}

impl Handles {
    fn register(backend: &'static str, store: &SharedString) -> Self {
        let ops = OPS
            .iter()
            .map(|op| {
                let op = op.name();
                let ops_total = |outcome: &'static str| {
                    metrics::counter!(
                        OPERATIONS_TOTAL,
                        "backend" => backend,
                        STORE_LABEL => store.clone(),
                        "op" => op,
                        "outcome" => outcome
                    )
                };
                OpHandles {
                    ok: ops_total("ok"),
                    hit: ops_total("hit"),
                    miss: ops_total("miss"),
                    duration: metrics::histogram!(
                        OPERATION_DURATION,
                        "backend" => backend,
                        STORE_LABEL => store.clone(),
                        "op" => op
                    ),
                }
            })
            .collect();
        Handles { ops }
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
}

/// A store wearing metrics and tracing. See the [module docs](self).
pub struct Instrumented<S> {
    inner: S,
    backend: &'static str,
    name: SharedString,
    handles: OnceLock<Handles>,
}

impl<S: SessionStore> Instrumented<S> {
    /// Wraps a store; metrics carry its [`backend`](SessionStore::backend) name as `backend`
    /// and, until [`with_name`](Self::with_name), as `store` too.
    pub fn new(inner: S) -> Self {
        let backend = inner.backend();
        Instrumented {
            inner,
            backend,
            name: SharedString::const_str(backend),
            handles: OnceLock::new(),
        }
    }

    /// Names the store in its metrics: the value of the label [`STORE_LABEL`] (`store`) on
    /// every series, so that several stores of one process (two memory stores, two
    /// fallbacks) publish separate series. Use a short fixed name, never a secret or
    /// anything per request; an empty name keeps the default (the backend name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !name.is_empty() {
            self.name = SharedString::from(Arc::<str>::from(name));
            // Handles registered under the old name (none before the first call) go.
            self.handles = OnceLock::new();
        }
        self
    }

    /// The store's name in its metrics: the `store` label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Publishes one round of gauges for this store, labelled with its
    /// [`name`](Self::name): see [`report_stats_once`].
    ///
    /// # Errors
    /// The first error from `stats` or `count`; health never fails.
    pub async fn report_stats_once(&self, namespaces: &[Namespace]) -> Result<()> {
        report(self, self.backend, &self.name, namespaces).await
    }

    /// Refreshes the gauges of [`report_stats_once`](Self::report_stats_once) every
    /// `interval` on the current tokio runtime, until the store is dropped. Needs a tokio
    /// runtime.
    pub fn spawn_stats_reporter(
        self: &Arc<Self>,
        namespaces: Vec<Namespace>,
        interval: Duration,
    ) -> tokio::task::JoinHandle<()>
    where
        S: 'static,
    {
        let store: Arc<dyn SessionStore> = Arc::clone(self) as Arc<dyn SessionStore>;
        spawn_reporter(Arc::downgrade(&store), self.name.clone(), namespaces, interval)
    }

    fn handles(&self) -> &Handles {
        self.handles
            .get_or_init(|| Handles::register(self.backend, &self.name))
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
            store = &*self.name,
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
                    "hit"
                }
                Outcome::Miss => {
                    oh.miss.increment(1);
                    "miss"
                }
            },
            Err(e) => {
                let kind = e.kind().as_str();
                metrics::counter!(
                    OPERATIONS_TOTAL,
                    "backend" => self.backend,
                    STORE_LABEL => self.name.clone(),
                    "op" => op.name(),
                    "outcome" => kind
                )
                .increment(1);
                if e.is_temporary() {
                    tracing::debug!(parent: &span, backend = self.backend, op = op.name(), error.kind = kind, "backend unavailable");
                }
                kind
            }
        };
        if op == Op::Create && result.is_ok() {
            if let Some(k) = key {
                metrics::counter!(
                    SESSIONS_CREATED_TOTAL,
                    "backend" => self.backend,
                    STORE_LABEL => self.name.clone(),
                    "namespace" => k.namespace.shared()
                )
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

    async fn load_entry(&self, key: &SessionKey) -> Result<Option<Entry>> {
        self.observe(Op::Load, Some(key), self.inner.load_entry(key), |r| {
            if matches!(r, Some(Entry::Live(_))) {
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

    async fn scan(&self, cursor: Option<&crate::ScanCursor>, limit: usize) -> Result<crate::ScanPage> {
        self.inner.scan(cursor, limit).await
    }

    async fn revoke_principal(
        &self,
        revocation: std::sync::Arc<dyn crate::Revocation>,
    ) -> Result<Option<crate::Revoked>> {
        self.inner.revoke_principal(revocation).await
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
        self.observe(Op::LoadMany, None, self.inner.load_many(keys), ok)
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
/// sessions per namespace in `namespaces`, and health, labelled `backend` and
/// `store`, both the store's backend name. For an [`Instrumented`] store with
/// a [name](Instrumented::with_name), use [`Instrumented::report_stats_once`].
///
/// # Errors
/// The first error from `stats` or `count`; health never fails.
pub async fn report_stats_once(store: &dyn SessionStore, namespaces: &[Namespace]) -> Result<()> {
    let backend = store.backend();
    report(store, backend, &SharedString::const_str(backend), namespaces).await
}

/// Refreshes the gauges of [`report_stats_once`] every `interval` on the
/// current tokio runtime, until the store is dropped. Needs a tokio runtime.
/// For an [`Instrumented`] store with a [name](Instrumented::with_name), use
/// [`Instrumented::spawn_stats_reporter`].
pub fn spawn_stats_reporter(
    store: &Arc<dyn SessionStore>,
    namespaces: Vec<Namespace>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    let name = SharedString::const_str(store.backend());
    spawn_reporter(Arc::downgrade(store), name, namespaces, interval)
}

/// One round of gauges for `store`, labelled `backend` and `store` (`name`).
async fn report(
    store: &dyn SessionStore,
    backend: &'static str,
    name: &SharedString,
    namespaces: &[Namespace],
) -> Result<()> {
    let health = store.health().await;
    metrics::gauge!(UP, "backend" => backend, STORE_LABEL => name.clone()).set(
        if health.status == HealthStatus::Down {
            0.0
        } else {
            1.0
        },
    );
    if let Some(latency) = health.latency {
        metrics::gauge!(HEALTH_LATENCY, "backend" => backend, STORE_LABEL => name.clone())
            .set(latency.as_secs_f64());
    }
    if health.status == HealthStatus::Down {
        return Err(Error::unavailable(
            backend,
            "health check failed; gauges not refreshed",
        ));
    }
    let stats = store.stats().await?;
    if let Some(entries) = stats.entries {
        metrics::gauge!(ENTRIES, "backend" => backend, STORE_LABEL => name.clone()).set(entries as f64);
    }
    if let Some(bytes) = stats.bytes {
        metrics::gauge!(BYTES, "backend" => backend, STORE_LABEL => name.clone()).set(bytes as f64);
    }
    metrics::counter!(EVICTED_TOTAL, "backend" => backend, STORE_LABEL => name.clone())
        .absolute(stats.evicted);
    metrics::counter!(REJECTED_TOTAL, "backend" => backend, STORE_LABEL => name.clone())
        .absolute(stats.rejected);
    metrics::counter!(EXPIRED_TOTAL, "backend" => backend, STORE_LABEL => name.clone())
        .absolute(stats.expired);
    for (stat, value) in &stats.extra {
        metrics::gauge!(
            BACKEND_STAT,
            "backend" => backend,
            STORE_LABEL => name.clone(),
            "stat" => *stat
        )
        .set(*value as f64);
    }
    for ns in namespaces {
        let n = store.count(ns).await?;
        metrics::gauge!(
            SESSIONS,
            "backend" => backend,
            STORE_LABEL => name.clone(),
            "namespace" => ns.shared()
        )
        .set(n as f64);
    }
    Ok(())
}

/// The task of [`spawn_stats_reporter`]: a round every `interval` while the store lives.
fn spawn_reporter(
    weak: Weak<dyn SessionStore>,
    name: SharedString,
    namespaces: Vec<Namespace>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(store) = weak.upgrade() else { return };
            if let Err(e) = report(&*store, store.backend(), &name, &namespaces).await {
                tracing::debug!(
                    backend = store.backend(),
                    store = &*name,
                    error.kind = e.kind().as_str(),
                    "stats refresh failed"
                );
            }
        }
    })
}
