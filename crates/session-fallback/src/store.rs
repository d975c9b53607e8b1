//! [`FallbackStore`]: routing of live calls between the primary and the secondary.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use session_core::backend::{now_ms, Change, Partition, Reconciled, Record, Tombstone};
use session_core::{
    Error, Health, HealthStatus, Meta, Namespace, Result, SessionId, SessionKey, SessionStore, StoreStats,
    Version,
};
use tokio::sync::Notify;

use crate::circuits::Circuits;
use crate::config::FallbackConfig;
use crate::journal::{Journal, JournalFull, KeyGuard, KeyLocks, PendingOp};
use crate::state::{CircuitState, Counters, FallbackCounters, Field};
use crate::warm::{Known, WarmCopy};

/// How often construction asks a primary that has not answered yet.
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// The backend name a fallback store reports.
pub const BACKEND: &str = "fallback";

/// A session store that serves from a primary and, while the primary is down,
/// from a secondary, then replays what happened into the primary.
///
/// See the [crate docs](crate) for the state machine, the journal and what
/// callers see in each state.
///
/// Dropping the store stops its background task.
pub struct FallbackStore<P, S> {
    inner: Arc<Inner<P, S>>,
}

/// Shared by the store handle and its background task.
pub(crate) struct Inner<P, S> {
    pub(crate) primary: P,
    pub(crate) secondary: S,
    pub(crate) config: FallbackConfig,
    pub(crate) timeout: Duration,
    /// One circuit per partition of the primary, and their aggregate state.
    pub(crate) circuits: Circuits,
    pub(crate) journal: Journal,
    /// Sessions served while healthy, for an outage.
    pub(crate) warm: WarmCopy,
    pub(crate) locks: KeyLocks,
    pub(crate) counters: Counters,
    pub(crate) worker_running: AtomicBool,
    pub(crate) shutdown: Arc<Notify>,
    /// Wakes the background task early: a circuit opened, or a session was journaled whose
    /// partition is not open (so it can be replayed now).
    pub(crate) wake: Arc<Notify>,
    /// The category of the last primary error, for logs and health.
    pub(crate) last_error: Mutex<&'static str>,
    /// A weak reference to this, for the background task.
    pub(crate) me: Weak<Inner<P, S>>,
}

/// One single-key operation, routed as a unit.
#[derive(Clone, Copy)]
enum Op<'a> {
    Load,
    Save(&'a Record),
    Create(&'a Record),
    Update(&'a Record),
    SaveIf(Version, &'a Record),
    /// Leaving this tombstone (its version is what the warm copy remembers).
    Delete(Tombstone),
    Touch(u64),
}

impl Op<'_> {
    fn name(&self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Save(_) => "save",
            Op::Create(_) => "create",
            Op::Update(_) => "update",
            Op::SaveIf(..) => "save_if",
            Op::Delete(_) => "delete",
            Op::Touch(_) => "touch",
        }
    }
}

/// The answer of an [`Op`].
enum Out {
    Record(Option<Record>),
    Meta(Meta),
    Flag(bool),
}

impl Out {
    fn record(self) -> Result<Option<Record>> {
        match self {
            Out::Record(r) => Ok(r),
            _ => Err(mismatch()),
        }
    }
    fn meta(self) -> Result<Meta> {
        match self {
            Out::Meta(m) => Ok(m),
            _ => Err(mismatch()),
        }
    }
    fn flag(self) -> Result<bool> {
        match self {
            Out::Flag(b) => Ok(b),
            _ => Err(mismatch()),
        }
    }
}

fn mismatch() -> Error {
    Error::Backend {
        backend: BACKEND,
        message: "internal error: an operation answered with the wrong kind of result".into(),
        source: None,
    }
}

async fn apply<St: SessionStore>(store: &St, key: &SessionKey, op: Op<'_>) -> Result<Out> {
    Ok(match op {
        Op::Load => Out::Record(store.load(key).await?),
        Op::Save(r) => Out::Meta(store.save(key, r).await?),
        Op::Create(r) => Out::Meta(store.create(key, r).await?),
        Op::Update(r) => Out::Meta(store.update(key, r).await?),
        Op::SaveIf(v, r) => Out::Meta(store.save_if(key, v, r).await?),
        Op::Delete(t) => Out::Flag(store.delete_leaving(key, t).await?),
        Op::Touch(at) => Out::Flag(store.touch(key, at).await?),
    })
}

/// Where a call goes.
enum Route<'a> {
    /// To the primary, without a key lock.
    Primary,
    /// To the secondary, under the key's lock.
    Secondary(KeyGuard<'a>),
}

impl<P: SessionStore, S: SessionStore> FallbackStore<P, S> {
    /// Builds a fallback store and checks the primary's health once, waiting
    /// at most `primary_timeout_ms`. If the primary is down the store starts
    /// with the circuit open (serving from the secondary) and probes the
    /// primary in the background until it answers.
    ///
    /// Call it inside a tokio runtime: the background task is spawned on it.
    ///
    /// The secondary must not evict sessions to stay within a bound (a
    /// memory secondary should reject at its bound instead): an evicted
    /// session would be an acknowledged outage write lost by the secondary
    /// itself.
    ///
    /// # Errors
    /// [`Error::Config`] naming `fallback.<key>` for a bad setting.
    pub async fn new(primary: P, secondary: S, config: FallbackConfig) -> Result<Self> {
        config.validate()?;
        if !primary.keeps_tombstones() {
            return Err(Error::config(
                "fallback.primary",
                format!(
                    "the primary ({}) does not keep tombstones, so a logout made while another instance \
                     was cut off could be undone by that instance's replay; enable them (Redis: \
                     redis.tombstone_ttl_ms, memory: memory.tombstone_ttl_ms)",
                    primary.backend()
                ),
            ));
        }
        if secondary.evicts() {
            return Err(Error::config(
                "fallback.secondary",
                format!(
                    "the secondary ({}) evicts sessions at its bound, which would drop writes acknowledged \
                     during an outage; configure it to refuse at its bound instead (memory: \
                     at_capacity = \"reject\")",
                    secondary.backend()
                ),
            ));
        }
        let timeout = config.primary_timeout();
        let inner = Arc::new_cyclic(|me| Inner {
            primary,
            secondary,
            timeout,
            circuits: Circuits::new(config.probe_min_ms, config.probe_max_ms),
            journal: Journal::new(config.max_journal_keys),
            warm: WarmCopy::new(config.warm_entries, config.warm_bytes),
            locks: KeyLocks::new(),
            counters: Counters::default(),
            worker_running: AtomicBool::new(false),
            shutdown: Arc::new(Notify::new()),
            wake: Arc::new(Notify::new()),
            last_error: Mutex::new("none"),
            me: me.clone(),
            config,
        });
        let health = inner.first_answer().await;
        if !is_answering(&health) {
            inner.start_open(health);
        }
        Ok(FallbackStore { inner })
    }

    /// The circuits' aggregate state: open if the circuit of any partition of the primary is
    /// open, else probing, replaying or closed likewise (see [`CircuitState`]). For a primary
    /// of one partition, that circuit's state.
    pub fn state(&self) -> CircuitState {
        self.inner.circuits.aggregate()
    }

    /// The state of one partition's circuit ([`SessionStore::partition`] of the primary names
    /// a key's partition). Closed for a partition the store has seen no failure of.
    pub fn partition_state(&self, partition: Partition) -> CircuitState {
        self.inner.circuits.state_of(partition)
    }

    /// Partitions of the primary whose circuit is open or probing now: their keys are served
    /// by the secondary. At most 1 for a primary of one partition.
    pub fn open_partitions(&self) -> usize {
        self.inner.circuits.open_count()
    }

    /// Sessions waiting in the journal for replay into the primary.
    pub fn journal_len(&self) -> usize {
        self.inner.journal.len()
    }

    /// A snapshot of the counters (and of the partitions open now).
    pub fn counters(&self) -> FallbackCounters {
        self.inner.counters()
    }

    /// The configuration in force.
    pub fn config(&self) -> &FallbackConfig {
        &self.inner.config
    }

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The secondary store.
    pub fn secondary(&self) -> &S {
        &self.inner.secondary
    }
}

impl<P, S> Drop for FallbackStore<P, S> {
    fn drop(&mut self) {
        self.inner.shutdown.notify_one();
    }
}

impl<P, S> std::fmt::Debug for FallbackStore<P, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackStore")
            .field("state", &self.inner.circuits.aggregate())
            .field("open_partitions", &self.inner.circuits.open_count())
            .field("journal", &self.inner.journal.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

pub(crate) fn is_answering(health: &Health) -> bool {
    matches!(health.status, HealthStatus::Up | HealthStatus::Degraded)
}

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
    async fn on_primary_batch<T>(
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
    async fn first_answer(&self) -> Health {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.startup_wait_ms);
        loop {
            let health = self.primary_health().await;
            if is_answering(&health) || tokio::time::Instant::now() >= deadline {
                return health;
            }
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// A snapshot of the counters, with the partitions open now.
    pub(crate) fn counters(&self) -> FallbackCounters {
        let mut c = self.counters.snapshot();
        c.open_partitions = self.circuits.open_count() as u64;
        c
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

    /// True when every call may go straight to the primary without a lock: every circuit
    /// closed and the journal empty (two atomic loads, as with one circuit).
    fn fast_path(&self) -> bool {
        self.circuits.aggregate() == CircuitState::Closed && self.journal.len() == 0
    }

    /// Whether `key`'s partition has its circuit open (calls on it skip the primary). The
    /// key's partition is looked up only while some partition is open.
    pub(crate) fn open_for(&self, key: &SessionKey) -> bool {
        self.circuits.open_count() != 0 && self.circuits.is_open(self.primary.partition(key))
    }

    async fn route(&self, key: &SessionKey) -> Route<'_> {
        if self.fast_path() {
            return Route::Primary;
        }
        let guard = self.locks.lock(key).await;
        if self.journal.get(key).is_some() || self.open_for(key) {
            self.counters.inc(Field::SecondaryCalls);
            Route::Secondary(guard)
        } else {
            Route::Primary
        }
    }

    /// The primary answered a call on `key` (successfully or with a permanent error): its
    /// partition's consecutive failures start over. One atomic load while nothing is counted.
    fn primary_answered(&self, key: &SessionKey) {
        if self.circuits.tracked() {
            self.circuits.answered(self.primary.partition(key));
        }
    }

    /// [`primary_answered`](Self::primary_answered) for a call of many keys.
    fn primary_answered_many<'k>(&self, keys: impl IntoIterator<Item = &'k SessionKey>) {
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
    fn primary_answered_whole(&self) {
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
    fn failed_over(
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
    fn start_open(&self, health: Health) {
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

    /// A session entered the journal: the background task replays it — at once if its
    /// partition answers, else once that partition's probe does.
    fn journaled(&self, key: &SessionKey) {
        self.ensure_worker();
        if !self.open_for(key) {
            self.wake_worker();
        }
    }

    /// Wakes the background task if it runs (it sleeps until the next probe otherwise).
    fn wake_worker(&self) {
        if self.worker_running.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    fn journal_full(&self, key: &SessionKey, op: &'static str, full: JournalFull) -> Error {
        self.counters.inc(Field::JournalRejected);
        tracing::warn!(
            primary = self.primary.backend(),
            op,
            namespace = key.ns(),
            sid = %key.id.short_hash(),
            max_journal_keys = full.max,
            "session fallback: journal full, write refused"
        );
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "fallback journal full: {} sessions are waiting for replay into the {} primary, so this {op} \
                 of a new session was refused and nothing was stored; restore the primary or raise \
                 fallback.max_journal_keys",
                full.max,
                self.primary.backend()
            ),
            source: None,
        }
    }

    /// Runs one single-key operation wherever it belongs.
    async fn exec(&self, key: &SessionKey, op: Op<'_>) -> Result<Out> {
        match self.route(key).await {
            // Boxed: the outage path is the larger future, and the healthy path should not
            // carry (and copy) its size on every call.
            Route::Secondary(guard) => Box::pin(self.on_secondary(key, op, None, guard)).await,
            Route::Primary => match self.on_primary(op.name(), apply(&self.primary, key, op)).await {
                Err(e) if e.is_temporary() => {
                    self.failed_over(op.name(), Some(key), Some(self.primary.partition(key)), &e);
                    let guard = self.locks.lock(key).await;
                    Box::pin(self.on_secondary(key, op, Some(e), guard)).await
                }
                other => {
                    self.primary_answered(key);
                    self.keep_warm(key, op, &other);
                    other
                }
            },
        }
    }

    /// Keeps the warm copy in step with what the primary answered.
    fn keep_warm(&self, key: &SessionKey, op: Op<'_>, answer: &Result<Out>) {
        if !self.warm.enabled() {
            return;
        }
        match (op, answer) {
            (Op::Load, Ok(Out::Record(Some(r)))) => self.warm.put(key, r),
            (Op::Save(r) | Op::Create(r) | Op::Update(r) | Op::SaveIf(_, r), Ok(Out::Meta(meta))) => {
                self.warm.put_written(key, *meta, r)
            }
            (Op::Touch(at), Ok(Out::Flag(true))) => self.warm.retime(key, at),
            // Deleted here: the primary holds this delete's tombstone.
            (Op::Delete(t), Ok(Out::Flag(_))) => self.warm.put_gone(key, t.version, t.until),
            // A miss, a refusal (`NotFound`, `Conflict`): the copy is no longer current.
            _ => self.warm.remove(key),
        }
    }

    /// [`keep_warm`](Self::keep_warm) for a batch of loads.
    fn keep_warm_many(&self, keys: &[SessionKey], found: &[Result<Option<Record>>]) {
        if !self.warm.enabled() {
            return;
        }
        for (k, r) in keys.iter().zip(found) {
            match r {
                Ok(Some(r)) => self.warm.put(k, r),
                _ => self.warm.remove(k),
            }
        }
    }

    /// Runs an operation on the secondary, under the key's lock, keeping the
    /// journal. `primary_err` is the primary's error when this call tried it.
    ///
    /// The secondary is authoritative for keys in the journal. A key that is
    /// not there but in the warm copy is served from that copy, and a change of
    /// it is journaled against the copy's version. For any other key the
    /// answer is unknown: a temporary error (the primary's own, when this call
    /// tried it), never a miss.
    async fn on_secondary(
        &self,
        key: &SessionKey,
        op: Op<'_>,
        primary_err: Option<Error>,
        _guard: KeyGuard<'_>,
    ) -> Result<Out> {
        let mut entry = self.journal.get(key);
        let known = match entry {
            None => self.warm.known(key, now_ms()),
            Some(_) => None,
        };
        // What a change journaled now is based on (kept only by a new journal residency).
        let base = known.as_ref().map_or(Version::NONE, Known::version);
        // Deleted by this instance in the primary: known to be gone.
        let gone = matches!(known, Some(Known::Gone { .. }));
        let warm = match known {
            Some(Known::Live(r)) => Some(r),
            _ => None,
        };
        if warm.is_some() {
            self.counters.inc(Field::WarmServed);
        }
        if let (Some(w), Op::Update(_) | Op::SaveIf(..) | Op::Touch(_)) = (&warm, op) {
            self.materialize(key, w, op.name()).await?;
            entry = self.journal.get(key);
        }
        // No copy here and the primary unreachable: whether the session exists is unknown,
        // unless this instance deleted it.
        let unknown = move || {
            if gone {
                return Err(Error::not_found(key.ns()));
            }
            Err(primary_err.unwrap_or_else(|| self.cannot_tell(key)))
        };
        match op {
            Op::Load => match (entry, warm) {
                (Some(_), _) => Ok(Out::Record(self.secondary.load(key).await?)),
                (None, Some(w)) => Ok(Out::Record(Some(w))),
                (None, None) if gone => Ok(Out::Record(None)),
                (None, None) => unknown(),
            },
            Op::Create(_) if warm.is_some() => Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            }),
            Op::Save(record) | Op::Create(record) => {
                let res = self
                    .journal
                    .admit(key, PendingOp::Write, record.meta.updated_at, base)
                    .map_err(|full| self.journal_full(key, op.name(), full))?;
                if res.is_new() {
                    // The secondary may hold a leftover from before; it is not this session.
                    self.secondary.delete(key).await?;
                }
                let meta = apply(&self.secondary, key, op).await?.meta()?;
                let new = res.is_new();
                res.commit(PendingOp::Write, meta.updated_at);
                self.warm.remove(key);
                if new {
                    self.journaled(key);
                }
                Ok(Out::Meta(meta))
            }
            Op::Update(record) => {
                if entry.is_none() {
                    return unknown();
                }
                let res = self
                    .journal
                    .admit(key, PendingOp::Write, record.meta.updated_at, base)
                    .map_err(|full| self.journal_full(key, op.name(), full))?;
                let meta = self.secondary.update(key, record).await?;
                res.commit(PendingOp::Write, meta.updated_at);
                Ok(Out::Meta(meta))
            }
            Op::SaveIf(expected, record) => {
                if entry.is_none() {
                    return unknown();
                }
                // Versions are unique tokens: one the secondary never stored matches nothing there.
                let res = self
                    .journal
                    .admit(key, PendingOp::Write, record.meta.updated_at, base)
                    .map_err(|full| self.journal_full(key, op.name(), full))?;
                let meta = self.secondary.save_if(key, expected, record).await?;
                res.commit(PendingOp::Write, meta.updated_at);
                Ok(Out::Meta(meta))
            }
            Op::Touch(at) => match entry {
                // The entry stays as it is: replay copies whatever deadline the secondary holds.
                Some(_) => Ok(Out::Flag(self.secondary.touch(key, at).await?)),
                None if gone => Ok(Out::Flag(false)),
                None => unknown(),
            },
            Op::Delete(_) => {
                let at = now_ms();
                let res = self
                    .journal
                    .admit(key, PendingOp::Tombstone, at, base)
                    .map_err(|full| self.journal_full(key, op.name(), full))?;
                let existed = self.secondary.delete(key).await?;
                let new = res.is_new();
                res.commit(PendingOp::Tombstone, at);
                self.warm.remove(key);
                if new {
                    self.journaled(key);
                }
                // A session this instance holds no copy of may well live in the primary: the
                // delete is recorded and applied on recovery, so the logout happens.
                Ok(Out::Flag(existed || (entry.is_none() && !gone)))
            }
        }
    }

    /// A change of a session known from healthy traffic, during an outage: the warm copy
    /// becomes the secondary's state, journaled against the copy's version. The caller holds
    /// the key's lock.
    async fn materialize(&self, key: &SessionKey, warm: &Record, op: &'static str) -> Result<()> {
        let res = self
            .journal
            .admit(key, PendingOp::Write, warm.meta.updated_at, warm.meta.version)
            .map_err(|full| self.journal_full(key, op, full))?;
        if res.is_new() {
            self.secondary.delete(key).await?;
        }
        self.secondary.save(key, warm).await?;
        res.commit(PendingOp::Write, warm.meta.updated_at);
        self.warm.remove(key);
        self.journaled(key);
        Ok(())
    }

    /// The primary version a change of `key` made here now would be based on.
    /// That is the warm copy's version (a session's, or the tombstone of this
    /// instance's delete), or none when this instance knows nothing of it.
    fn base_of(&self, key: &SessionKey) -> Version {
        self.warm
            .known(key, now_ms())
            .map_or(Version::NONE, |k| k.version())
    }

    /// The answer for a session this instance holds no copy of while the primary is
    /// unreachable: not a miss (the session may exist), a temporary error.
    fn cannot_tell(&self, key: &SessionKey) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            message: format!(
                "the {} primary is unreachable and this instance holds no copy of this {} session, so \
                 whether it exists is unknown; retry later (nothing is lost)",
                self.primary.backend(),
                key.ns()
            ),
            source: None,
        }
    }

    /// `rotate` on the secondary, with both keys' locks held by the caller.
    async fn rotate_on_secondary(
        &self,
        key: &SessionKey,
        new_key: &SessionKey,
        primary_err: Option<Error>,
    ) -> Result<Meta> {
        if self.journal.get(key).is_none() {
            match self.warm.known(key, now_ms()) {
                Some(Known::Live(w)) => self.materialize(key, &w, "rotate").await?,
                Some(Known::Gone { .. }) => return Err(Error::not_found(key.ns())),
                None => return Err(primary_err.unwrap_or_else(|| self.cannot_tell(key))),
            }
        }
        if key == new_key {
            return Err(Error::AlreadyExists {
                namespace: key.ns().to_owned(),
            });
        }
        let now = now_ms();
        let new_res = self
            .journal
            .admit(new_key, PendingOp::Write, now, self.base_of(new_key))
            .map_err(|full| self.journal_full(new_key, "rotate", full))?;
        let old_res = self
            .journal
            .admit(key, PendingOp::Tombstone, now, self.base_of(key))
            .map_err(|full| self.journal_full(key, "rotate", full))?;
        if new_res.is_new() {
            self.secondary.delete(new_key).await?;
        }
        let meta = self.secondary.rotate(key, &new_key.id).await?;
        old_res.commit(PendingOp::Tombstone, now);
        new_res.commit(PendingOp::Write, meta.updated_at);
        self.journaled(key);
        self.journaled(new_key);
        Ok(meta)
    }

    /// Reads keys as the secondary's view (journaled keys from the secondary,
    /// others are misses). The caller holds the keys' locks.
    async fn secondary_view(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let mut out: Vec<Result<Option<Record>>> = Vec::with_capacity(keys.len());
        let mut pending = Vec::new();
        let mut slots = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            if self.journal.get(k).is_some() {
                out.push(Ok(None));
                pending.push(k.clone());
                slots.push(i);
            } else if let Some(known) = self.warm.known(k, now_ms()) {
                out.push(Ok(match known {
                    Known::Live(w) => Some(w),
                    Known::Gone { .. } => None,
                }));
            } else {
                out.push(Err(self.cannot_tell(k)));
            }
        }
        if !pending.is_empty() {
            let got = self.secondary.load_many(&pending).await?;
            for (i, r) in slots.into_iter().zip(got) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// `save_many` on the secondary, with every key's lock held by the
    /// caller: every key is admitted to the journal first (all or none).
    async fn save_many_on_secondary(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let mut reservations = Vec::with_capacity(items.len());
        for (k, r) in items {
            let res = self
                .journal
                .admit(k, PendingOp::Write, r.meta.updated_at, self.base_of(k))
                .map_err(|full| self.journal_full(k, "save_many", full))?;
            if res.is_new() {
                self.secondary.delete(k).await?;
            }
            reservations.push(res);
        }
        let metas = self.secondary.save_many(items).await?;
        let mut out = Vec::with_capacity(metas.len());
        for (res, meta) in reservations.into_iter().zip(metas) {
            res.commit(PendingOp::Write, meta.updated_at);
            out.push(meta);
        }
        self.ensure_worker();
        if items.iter().any(|(k, _)| !self.open_for(k)) {
            self.wake_worker();
        }
        Ok(out)
    }

    /// The indexes of `keys` by the partition serving each now, in first-seen order.
    fn by_partition<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k SessionKey>,
    ) -> Vec<(Partition, Vec<usize>)> {
        let mut groups: Vec<(Partition, Vec<usize>)> = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            let p = self.primary.partition(key);
            match groups.iter_mut().find(|(q, _)| *q == p) {
                Some((_, members)) => members.push(i),
                None => groups.push((p, vec![i])),
            }
        }
        groups
    }

    /// `load_many` on the primary, failed over when it fails. A batch spanning partitions that
    /// fails is sent again per partition, so that only the failing partitions' keys are
    /// served by the secondary (one failing node must not cost the others' keys).
    async fn load_many_on_primary(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let e = match self
            .on_primary_batch("load_many", keys.len(), self.primary.load_many(keys))
            .await
        {
            Err(e) if e.is_temporary() => e,
            other => {
                self.primary_answered_many(keys);
                if let Ok(found) = &other {
                    self.keep_warm_many(keys, found);
                }
                return other;
            }
        };
        let groups = self.by_partition(keys);
        if groups.len() <= 1 {
            let p = groups.first().map_or(Partition::WHOLE, |(p, _)| *p);
            self.failed_over("load_many", None, Some(p), &e);
            let _guards = self.locks.lock_many(keys).await;
            return self.secondary_view(keys).await;
        }
        let mut out: Vec<Result<Option<Record>>> = Vec::with_capacity(keys.len());
        out.resize_with(keys.len(), || Ok(None));
        for (p, members) in groups {
            let group: Vec<SessionKey> = members.iter().map(|&i| keys[i].clone()).collect();
            let got = match self
                .on_primary_batch("load_many", group.len(), self.primary.load_many(&group))
                .await
            {
                Err(e) if e.is_temporary() => {
                    self.failed_over("load_many", None, Some(p), &e);
                    let _guards = self.locks.lock_many(&group).await;
                    self.secondary_view(&group).await?
                }
                other => {
                    self.primary_answered_many(&group);
                    let got = other?;
                    self.keep_warm_many(&group, &got);
                    got
                }
            };
            for (i, r) in members.into_iter().zip(got) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// `save_many` on the primary, failed over when it fails; a failed batch spanning
    /// partitions is sent again per partition, as for [`load_many_on_primary`](Self::load_many_on_primary).
    async fn save_many_on_primary(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let e = match self
            .on_primary_batch("save_many", items.len(), self.primary.save_many(items))
            .await
        {
            Err(e) if e.is_temporary() => e,
            other => {
                self.primary_answered_many(items.iter().map(|(k, _)| k));
                if let Ok(metas) = &other {
                    self.keep_warm_saved(items, metas);
                }
                return other;
            }
        };
        let groups = self.by_partition(items.iter().map(|(k, _)| k));
        if groups.len() <= 1 {
            let p = groups.first().map_or(Partition::WHOLE, |(p, _)| *p);
            self.failed_over("save_many", None, Some(p), &e);
            let _guards = self.locks.lock_many(items.iter().map(|(k, _)| k)).await;
            return self.save_many_on_secondary(items).await;
        }
        let mut out: Vec<Option<Meta>> = vec![None; items.len()];
        for (p, members) in groups {
            let group: Vec<(SessionKey, Record)> = members.iter().map(|&i| items[i].clone()).collect();
            let metas = match self
                .on_primary_batch("save_many", group.len(), self.primary.save_many(&group))
                .await
            {
                Err(e) if e.is_temporary() => {
                    self.failed_over("save_many", None, Some(p), &e);
                    let _guards = self.locks.lock_many(group.iter().map(|(k, _)| k)).await;
                    self.save_many_on_secondary(&group).await?
                }
                other => {
                    self.primary_answered_many(group.iter().map(|(k, _)| k));
                    let metas = other?;
                    self.keep_warm_saved(&group, &metas);
                    metas
                }
            };
            for (i, meta) in members.into_iter().zip(metas) {
                out[i] = Some(meta);
            }
        }
        out.into_iter().map(|m| m.ok_or_else(mismatch)).collect()
    }

    /// The warm copy after the primary stored `items` with `metas`.
    fn keep_warm_saved(&self, items: &[(SessionKey, Record)], metas: &[Meta]) {
        for ((k, r), meta) in items.iter().zip(metas) {
            self.warm.put(
                k,
                &Record {
                    meta: *meta,
                    codec: r.codec,
                    payload: r.payload.clone(),
                },
            );
        }
    }

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

#[async_trait]
impl<P: SessionStore, S: SessionStore> SessionStore for FallbackStore<P, S> {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.inner.exec(key, Op::Load).await?.record()
    }

    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.inner.exec(key, Op::Save(record)).await?.meta()
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.inner.exec(key, Op::Create(record)).await?.meta()
    }

    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.inner.exec(key, Op::Update(record)).await?.meta()
    }

    async fn save_if(&self, key: &SessionKey, expected_version: Version, record: &Record) -> Result<Meta> {
        self.inner
            .exec(key, Op::SaveIf(expected_version, record))
            .await?
            .meta()
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = now_ms();
        let tombstone = Tombstone::new(now, now.saturating_add(self.inner.config.tombstone_ttl_ms));
        self.inner.exec(key, Op::Delete(tombstone)).await?.flag()
    }

    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.inner.exec(key, Op::Delete(tombstone)).await?.flag()
    }

    /// A change replayed into this store (a fallback stacked on a fallback): applied by the
    /// primary while it answers; otherwise a temporary error, so the caller keeps it.
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        let inner = &*self.inner;
        if !inner.fast_path() {
            let _guard = inner.locks.lock(key).await;
            if inner.open_for(key) || inner.journal.get(key).is_some() {
                return Err(inner.cannot_tell(key));
            }
        }
        match inner
            .on_primary("reconcile", inner.primary.reconcile(key, base, change))
            .await
        {
            Err(e) if e.is_temporary() => {
                inner.primary_failed(Some(inner.primary.partition(key)), &e);
                Err(e)
            }
            other => {
                inner.primary_answered(key);
                other
            }
        }
    }

    fn keeps_tombstones(&self) -> bool {
        self.inner.primary.keeps_tombstones()
    }

    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.inner.exec(key, Op::Touch(expires_at)).await?.flag()
    }

    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        let inner = &*self.inner;
        let new_key = SessionKey::new(key.namespace.clone(), new_id.clone());
        if !inner.fast_path() {
            let guards = inner.locks.lock_many([key, &new_key]).await;
            if inner.journal.get(key).is_some() || inner.open_for(key) || inner.open_for(&new_key) {
                inner.counters.inc(Field::SecondaryCalls);
                return inner.rotate_on_secondary(key, &new_key, None).await;
            }
            if inner.journal.get(&new_key).is_some() {
                // The new id has an outage write or delete waiting for
                // replay: refuse rather than race it.
                return Err(Error::AlreadyExists {
                    namespace: key.ns().to_owned(),
                });
            }
            drop(guards);
        }
        match inner
            .on_primary("rotate", inner.primary.rotate(key, new_id))
            .await
        {
            Err(e) if e.is_temporary() => {
                // Two keys: the failure is a partition's only when both are on it.
                let p = inner.primary.partition(key);
                let blamed = (inner.primary.partition(&new_key) == p).then_some(p);
                inner.failed_over("rotate", Some(key), blamed, &e);
                let _guards = inner.locks.lock_many([key, &new_key]).await;
                inner.rotate_on_secondary(key, &new_key, Some(e)).await
            }
            other => {
                inner.primary_answered(key);
                // The copy moves with the session.
                let moved = inner.warm.get(key, 0);
                inner.warm.remove(key);
                match (&other, moved) {
                    (Ok(meta), Some(w)) => inner.warm.put(&new_key, &Record { meta: *meta, ..w }),
                    _ => inner.warm.remove(&new_key),
                }
                other
            }
        }
    }

    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        let inner = &*self.inner;
        if inner.fast_path() {
            return inner.load_many_on_primary(keys).await;
        }
        let mut out;
        let primary_slots: Vec<usize>;
        {
            let _guards = inner.locks.lock_many(keys).await;
            // Keys of open partitions and journaled keys from the secondary, the others from
            // the primary.
            let mut open = false;
            let mut slots = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                if inner.journal.get(k).is_some() {
                    continue;
                }
                if inner.open_for(k) {
                    open = true;
                } else {
                    slots.push(i);
                }
            }
            if open {
                inner.counters.inc(Field::SecondaryCalls);
            }
            out = inner.secondary_view(keys).await?;
            primary_slots = slots;
        }
        if primary_slots.is_empty() {
            return Ok(out);
        }
        let primary_keys: Vec<SessionKey> = primary_slots.iter().map(|&i| keys[i].clone()).collect();
        let got = inner.load_many_on_primary(&primary_keys).await?;
        for (i, r) in primary_slots.into_iter().zip(got) {
            out[i] = r;
        }
        Ok(out)
    }

    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        let inner = &*self.inner;
        if items.is_empty() {
            return Ok(Vec::new());
        }
        if !inner.fast_path() {
            let guards = inner.locks.lock_many(items.iter().map(|(k, _)| k)).await;
            if items
                .iter()
                .any(|(k, _)| inner.journal.get(k).is_some() || inner.open_for(k))
            {
                // The whole batch goes to the secondary, so a record over the
                // size limit is refused before anything is written.
                inner.counters.inc(Field::SecondaryCalls);
                return inner.save_many_on_secondary(items).await;
            }
            drop(guards);
        }
        inner.save_many_on_primary(items).await
    }

    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        let inner = &*self.inner;
        if inner.circuits.is_open(Partition::WHOLE) {
            inner.counters.inc(Field::SecondaryCalls);
            return inner.secondary.count(namespace).await;
        }
        match inner.on_primary("count", inner.primary.count(namespace)).await {
            Err(e) if e.is_temporary() => {
                inner.failed_over("count", None, Some(Partition::WHOLE), &e);
                inner.secondary.count(namespace).await
            }
            other => {
                inner.primary_answered_whole();
                other
            }
        }
    }

    async fn stats(&self) -> Result<StoreStats> {
        let inner = &*self.inner;
        let base = if inner.circuits.is_open(Partition::WHOLE) {
            inner.secondary.stats().await?
        } else {
            match inner.on_primary("stats", inner.primary.stats()).await {
                Err(e) if e.is_temporary() => {
                    inner.failed_over("stats", None, Some(Partition::WHOLE), &e);
                    inner.secondary.stats().await?
                }
                other => {
                    inner.primary_answered_whole();
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
            .saturating_add(inner.counters.journal_rejected.load(Ordering::Relaxed));
        stats.expired = base.expired;
        stats.extra = base.extra;
        stats.extra.extend(inner.extras());
        Ok(stats)
    }

    async fn health(&self) -> Health {
        let inner = &*self.inner;
        let started = Instant::now();
        let state = inner.circuits.aggregate();
        let primary = if inner.circuits.is_open(Partition::WHOLE) {
            // No wait on a primary known to be down: report the last probe.
            inner
                .circuits
                .last_probe(Partition::WHOLE)
                .unwrap_or_else(|| Health::new(inner.primary.backend(), HealthStatus::Down))
        } else {
            inner.primary_health().await
        };
        let secondary = match tokio::time::timeout(inner.timeout, inner.secondary.health()).await {
            Ok(h) => h,
            Err(_) => Health::new(inner.secondary.backend(), HealthStatus::Down)
                .with_detail(format!("no answer within {} ms", inner.timeout.as_millis())),
        };
        let journal = inner.journal.len();
        let status = if state == CircuitState::Closed && journal == 0 && primary.status == HealthStatus::Up {
            HealthStatus::Up
        } else if is_answering(&secondary) || is_answering(&primary) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Down
        };
        let last_error = *inner.last_error.lock().unwrap_or_else(PoisonError::into_inner);
        let open_ms = now_ms().saturating_sub(inner.circuits.open_since().unwrap_or_else(now_ms));
        let detail = match state {
            CircuitState::Closed if journal == 0 => {
                format!("circuit closed; primary {}", primary.status.as_str())
            }
            CircuitState::Closed | CircuitState::Replaying => {
                format!("replaying {journal} journaled sessions into the primary")
            }
            CircuitState::Open | CircuitState::Probing if inner.circuits.only_whole_open() => format!(
                "circuit open for {open_ms} ms (last primary error: {last_error}); serving from the secondary, \
                 {journal} sessions journaled"
            ),
            CircuitState::Open | CircuitState::Probing => format!(
                "circuit open on {} partitions of the primary for up to {open_ms} ms (last primary error: \
                 {last_error}); their sessions are served from the secondary, the others by the primary; \
                 {journal} sessions journaled",
                inner.circuits.open_count()
            ),
        };
        let mut health = Health::new(BACKEND, status)
            .with_latency(started.elapsed())
            .with_detail(detail);
        health.extra = inner.extras();
        health.components = vec![("primary", primary), ("secondary", secondary)];
        health
    }
}
