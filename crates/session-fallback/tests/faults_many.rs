//! Several fallback instances on one Redis, Jepsen-style: each
//! `FallbackStore<RedisStore, MemoryStore>` reaches the one real `redis-server` through its
//! own [`FaultProxy`], so one instance can be cut off (its open connections become black
//! holes, new ones are refused) while the others keep working, and healed again.
//!
//! Every operation a scenario makes is recorded in a history (instance, operation, key, the
//! value written, start and end, the answer). At the end Redis is read on a raw socket
//! (`GET {prefix}task:{id}`, decoded with [`decode_entry`]: a tombstone counts as deleted) and
//! compared with the history by [`check`]: no acknowledged delete may be undone
//! (`resurrected`), and no acknowledged write may vanish unless the replay rule of
//! `session_core::backend::decide` explains it (`lost`). A background monitor samples every
//! instance's circuit and journal, so the checker knows which calls may have been journaled
//! and replayed later.
//!
//! Scenarios (each prints one `FIGURES many-<name>: …` line):
//! 1. `replay-delete-vs-healthy-update`: A, cut off, deletes K; B updates K; A's replay deletes it.
//! 2. `logout-via-healthy-instance`: A, cut off, creates/saves K; B deletes it; A's replay must
//!    not bring it back.
//! 3. `order-independence`: a full outage; both instances journal K from one state and replay in
//!    both orders: a delete always wins, two writes end in the later one.
//! 4. `skew`: B's clock is 2 s ahead; A's logout 50 ms after B's write holds in every order.
//! 5. `outage-delete-answers-true`: a delete of a session only Redis holds answers `true`.
//! 6. `cant-tell`: a load of a session the cut-off instance holds no copy of is a temporary
//!    error, never a miss.
//! 7. `held-write-after-replay`: A's timed-out writes are held in the network while B writes
//!    newer state; A replays, then the held bytes are delivered: they must not land.
//! 8. `load`: three instances, 200 sessions, random operations for 5 s, one instance cut off
//!    for 2 s in the middle.
//! 9. `long-outage`: the same load with the instance cut off for 10 s.
//! 10. `relogin-vs-later-logout`: A logs out, is cut off and creates K again; B logs out again:
//!     after A's replay K stays deleted.
//! 11. `relogin-vs-later-relogin`: the same, but B creates K again: the later login is kept.
//! 12. `rolling-restart`: three instances under load, each replaced twice by a fresh one; every
//!     existing session is found by a fresh instance at once.
//! 13. `staggered-recovery`: a full outage that ends for A first; a session B created during it
//!     is "can't tell" on A (not a miss) until B replays, a logged-out one a miss.
//! 14. `principal-revoke-cut-off`: a principal's sessions revoked by B while A is cut off; A's
//!     own revoke is a temporary error; after the heal no instance serves any of them.
//!
//! Only with `SESSION_TEST_FAULTS=1` (`cargo xtask test --only faults`); one test at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::backend::{decode_entry, now_ms, CodecId, Entry, Record};
use session_core::{Error, KeyPrefix, Meta, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::Reply;
use testkit_redis::{faults_enabled, Direction, FaultProxy, Mode, RedisServer};

type Store = FallbackStore<RedisStore, MemoryStore>;

const PREFIX: &str = "m:";
const HOUR_MS: u64 = 3_600_000;
/// Tombstones in Redis, and for deletes replayed into it: longer than any scenario.
const TOMBSTONE_TTL_MS: u64 = 600_000;
const PRIMARY_TIMEOUT: Duration = Duration::from_millis(300);
/// How long an instance may take to replay and close its circuit after healing.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
/// How often the monitor samples the instances.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// Slack for the monitor's sampling (a state seen up to this late).
const SAMPLE_SLACK: Duration = Duration::from_millis(5);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Makes every value written in this process unique.
static WRITES: AtomicU64 = AtomicU64::new(1);

// ---------------------------------------------------------------- the rig

fn redis_config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = 250;
    c.connect_timeout_ms = 500;
    c.unresponsive_timeout_ms = 1_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c.tombstone_ttl_ms = TOMBSTONE_TTL_MS;
    c
}

async fn fallback(url: String) -> Store {
    let redis = RedisStore::builder(redis_config(url))
        .options(StoreOptions::new(KeyPrefix::new(PREFIX).unwrap()))
        .connect()
        .await
        .expect("redis connects");
    let memory = MemoryStore::with_options(
        MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
        StoreOptions::new(KeyPrefix::new(PREFIX).unwrap()),
    )
    .unwrap();
    let mut config = FallbackConfig::default()
        .with_primary_timeout(PRIMARY_TIMEOUT)
        .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_startup_wait(Duration::from_millis(100));
    config.tombstone_ttl_ms = TOMBSTONE_TTL_MS;
    FallbackStore::new(redis, memory, config).await.unwrap()
}

/// One fallback instance and the proxy it reaches Redis through.
struct Node {
    name: &'static str,
    proxy: FaultProxy,
    store: Arc<Store>,
}

impl Node {
    async fn start(name: &'static str, server: &RedisServer) -> Node {
        let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
        let store = Arc::new(fallback(proxy.url()).await);
        assert_eq!(store.state(), CircuitState::Closed, "{name} starts closed");
        Node { name, proxy, store }
    }

    /// Cuts the instance off: its open connections become black holes, new ones are refused.
    fn cut(&self) {
        self.proxy.refuse_new(true);
        self.proxy.set_all_and_default(Mode::Drop(Direction::Both));
    }

    /// Heals the network: the black-holed connections are closed (the client reconnects) and
    /// new ones accepted.
    fn heal(&self) {
        self.proxy.reset_all();
        self.proxy.heal();
    }

    /// Makes a cut-off instance notice (one load of a key nobody uses times out) and waits
    /// until its circuit is open, so that later calls go straight to the secondary.
    async fn trip(&self) {
        let r = self.store.load(&new_key()).await;
        assert!(r.is_err(), "{}: a load while cut off answered {r:?}", self.name);
        let limit = Instant::now() + Duration::from_secs(2);
        while !self.store.state().is_open() {
            assert!(
                Instant::now() < limit,
                "{}: circuit not open: {:?}",
                self.name,
                self.store.state()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

/// A fresh value: `{tag}#{n}`, unique in the process.
fn fresh(tag: &str) -> String {
    format!("{tag}#{}", WRITES.fetch_add(1, Ordering::Relaxed))
}

/// A new session's record as a host whose clock is `skew_ms` off would write it.
fn record_at(value: &str, skew_ms: i64) -> Record {
    let mut r = Record::new(CodecId::RAW, value.as_bytes().to_vec(), now_ms() + HOUR_MS);
    let shift = |t: u64| t.saturating_add_signed(skew_ms);
    r.meta.created_at = shift(r.meta.created_at);
    r.meta.updated_at = shift(r.meta.updated_at);
    r.meta.expires_at = shift(r.meta.expires_at);
    r
}

fn record(value: &str) -> Record {
    record_at(value, 0)
}

/// What Redis holds under a key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Final {
    Absent,
    Tombstone,
    Live(String),
}

impl Final {
    fn deleted(&self) -> bool {
        !matches!(self, Final::Live(_))
    }

    fn value(&self) -> Option<&str> {
        match self {
            Final::Live(v) => Some(v),
            _ => None,
        }
    }
}

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Final::Absent => f.write_str("deleted(nil)"),
            Final::Tombstone => f.write_str("deleted(tombstone)"),
            Final::Live(v) => write!(f, "live({v})"),
        }
    }
}

/// The entry under `key`, read on a raw socket.
fn in_redis(server: &RedisServer, key: &SessionKey) -> Final {
    let reply = tokio::task::block_in_place(|| {
        server
            .cmd(&["GET", &format!("{PREFIX}task:{}", key.id.as_str())])
            .unwrap()
    });
    match reply {
        Reply::Bulk(Some(bytes)) => match decode_entry(&bytes.into(), "task").unwrap() {
            Entry::Live(r) => Final::Live(String::from_utf8_lossy(&r.payload).into_owned()),
            Entry::Tombstone(_) => Final::Tombstone,
        },
        Reply::Bulk(None) => Final::Absent,
        other => panic!("GET answered {other:?}"),
    }
}

// ---------------------------------------------------------------- history

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Save,
    Update,
    Delete,
    Load,
}

impl Kind {
    fn writes(self) -> bool {
        matches!(self, Kind::Create | Kind::Save | Kind::Update)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Save => "save",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Load => "load",
        }
    }
}

/// The answer a call got.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// A write acknowledged, with what was stored.
    Wrote(Meta),
    /// A delete acknowledged, with its answer.
    Deleted(bool),
    /// A load answered.
    Loaded(Option<String>),
    /// A definite no-op (`NotFound`, `AlreadyExists`, `Conflict`): nothing was written.
    Refused(&'static str),
    /// Any other error: the outcome is unknown (the kind, and whether it is temporary).
    Failed(&'static str, bool),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Wrote(_) => f.write_str("ok"),
            Outcome::Deleted(b) => write!(f, "ok({b})"),
            Outcome::Loaded(Some(v)) => write!(f, "ok(Some({v}))"),
            Outcome::Loaded(None) => f.write_str("ok(None)"),
            Outcome::Refused(kind) => write!(f, "refused({kind})"),
            Outcome::Failed(kind, true) => write!(f, "err({kind},temporary)"),
            Outcome::Failed(kind, false) => write!(f, "err({kind})"),
        }
    }
}

fn failed(e: &Error) -> Outcome {
    match e {
        Error::NotFound { .. } => Outcome::Refused("not_found"),
        Error::AlreadyExists { .. } => Outcome::Refused("already_exists"),
        Error::Conflict { .. } => Outcome::Refused("conflict"),
        e => Outcome::Failed(e.kind().as_str(), e.is_temporary()),
    }
}

/// One call, as recorded.
#[derive(Clone, Debug)]
struct Event {
    node: &'static str,
    kind: Kind,
    key: SessionKey,
    label: String,
    /// The value a write wrote.
    value: Option<String>,
    /// The written record's `updated_at` (0 for other calls).
    updated_at: u64,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

impl Event {
    fn ok(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Wrote(_) | Outcome::Deleted(_) | Outcome::Loaded(_)
        )
    }

    fn latency(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.1}..{:>8.1} ms {} {} {}",
            self.start.as_secs_f64() * 1e3,
            self.end.as_secs_f64() * 1e3,
            self.node,
            self.kind.name(),
            self.label
        )?;
        if let Some(v) = &self.value {
            write!(f, " {v} (updated_at {})", self.updated_at)?;
        }
        write!(f, " -> {}", self.outcome)
    }
}

/// Every call of a scenario, in the order they ended.
struct History {
    t0: Instant,
    events: Mutex<Vec<Event>>,
    labels: Mutex<HashMap<SessionKey, String>>,
}

impl History {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn label(&self, key: &SessionKey) -> String {
        self.labels
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.id.short_hash())
    }

    /// Runs one call on `store` and records it. `record` is the value of a write.
    async fn run(
        &self,
        node: &'static str,
        store: &Store,
        kind: Kind,
        key: &SessionKey,
        record: Option<&Record>,
    ) -> Event {
        let start = self.now();
        let written = || record.expect("a write needs a record");
        let outcome = match kind {
            Kind::Create => store.create(key, written()).await.map(Outcome::Wrote),
            Kind::Save => store.save(key, written()).await.map(Outcome::Wrote),
            Kind::Update => store.update(key, written()).await.map(Outcome::Wrote),
            Kind::Delete => store.delete(key).await.map(Outcome::Deleted),
            Kind::Load => store
                .load(key)
                .await
                .map(|r| Outcome::Loaded(r.map(|r| String::from_utf8_lossy(&r.payload).into_owned()))),
        }
        .unwrap_or_else(|e| failed(&e));
        let end = self.now();
        let event = Event {
            node,
            kind,
            key: key.clone(),
            label: self.label(key),
            value: record.map(|r| String::from_utf8_lossy(&r.payload).into_owned()),
            updated_at: record.map_or(0, |r| r.meta.updated_at),
            start,
            end,
            outcome,
        };
        self.events.lock().unwrap().push(event.clone());
        event
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

/// When each instance was degraded (circuit not closed, or a journal waiting): the calls it
/// made then may have been journaled and replayed later.
#[derive(Clone, Default)]
struct Spans {
    closed: Vec<(Duration, Duration)>,
    open: Option<Duration>,
}

/// Samples every instance's circuit and journal until dropped.
struct Monitor {
    stop: Arc<AtomicBool>,
    spans: Arc<Mutex<Vec<Spans>>>,
}

impl Monitor {
    fn start(t0: Instant, stores: Vec<Arc<Store>>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let spans = Arc::new(Mutex::new(vec![Spans::default(); stores.len()]));
        let (stop2, spans2) = (Arc::clone(&stop), Arc::clone(&spans));
        tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let now = t0.elapsed();
                {
                    let mut spans = spans2.lock().unwrap();
                    for (s, store) in spans.iter_mut().zip(&stores) {
                        let degraded = !(store.state() == CircuitState::Closed && store.journal_len() == 0);
                        match (degraded, s.open) {
                            (true, None) => s.open = Some(now),
                            (false, Some(since)) => {
                                s.closed.push((since, now));
                                s.open = None;
                            }
                            _ => {}
                        }
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Monitor { stop, spans }
    }

    /// The degraded spans of every instance so far (one still open ends now).
    fn snapshot(&self, now: Duration) -> Vec<Vec<(Duration, Duration)>> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                let mut v = s.closed.clone();
                v.extend(s.open.map(|since| (since, now)));
                v
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One Redis, `n` instances (A, B, C), the history and the monitor.
struct Rig {
    server: RedisServer,
    nodes: Vec<Node>,
    history: Arc<History>,
    monitor: Monitor,
}

impl Rig {
    async fn start(n: usize) -> Rig {
        let server = RedisServer::start().expect("redis-server starts");
        let mut nodes = Vec::new();
        for name in ["A", "B", "C"].into_iter().take(n) {
            nodes.push(Node::start(name, &server).await);
        }
        let history = Arc::new(History {
            t0: Instant::now(),
            events: Mutex::new(Vec::new()),
            labels: Mutex::new(HashMap::new()),
        });
        let monitor = Monitor::start(history.t0, nodes.iter().map(|n| Arc::clone(&n.store)).collect());
        Rig {
            server,
            nodes,
            history,
            monitor,
        }
    }

    fn now(&self) -> Duration {
        self.history.now()
    }

    /// A new session key, shown as `label` in the history.
    fn key(&self, label: &str) -> SessionKey {
        let key = new_key();
        self.history
            .labels
            .lock()
            .unwrap()
            .insert(key.clone(), label.to_owned());
        key
    }

    async fn run(&self, node: &Node, kind: Kind, key: &SessionKey, record: Option<&Record>) -> Event {
        self.history.run(node.name, &node.store, kind, key, record).await
    }

    /// A write of `value` (stamped by a clock `skew_ms` off).
    async fn write(&self, node: &Node, kind: Kind, key: &SessionKey, value: &str, skew_ms: i64) -> Event {
        self.run(node, kind, key, Some(&record_at(value, skew_ms))).await
    }

    async fn delete(&self, node: &Node, key: &SessionKey) -> Event {
        self.run(node, Kind::Delete, key, None).await
    }

    /// Waits until `node` replayed its journal and closed its circuit; the time it did.
    async fn recover(&self, node: &Node) -> Duration {
        let limit = Instant::now() + RECOVERY_LIMIT;
        while !(node.store.state() == CircuitState::Closed && node.store.journal_len() == 0) {
            assert!(
                Instant::now() < limit,
                "{}: no recovery: {:?}, journal {}, counters {:?}\n{}",
                node.name,
                node.store.state(),
                node.store.journal_len(),
                node.store.counters(),
                self.dump()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.now()
    }

    fn read(&self, key: &SessionKey) -> Final {
        in_redis(&self.server, key)
    }

    /// The whole history, one call a line.
    fn dump(&self) -> String {
        let mut s = String::from("history:\n");
        for e in self.history.events() {
            let _ = writeln!(s, "  {e}");
        }
        s
    }

    /// Reads every key of the history from Redis and checks the history against it.
    fn verdict(&self) -> Verdict {
        let events = self.history.events();
        let mut finals = HashMap::new();
        for e in &events {
            if !finals.contains_key(&e.key) {
                finals.insert(e.key.clone(), self.read(&e.key));
            }
        }
        let spans = self.monitor.snapshot(self.now());
        let spans: HashMap<&'static str, Vec<(Duration, Duration)>> =
            self.nodes.iter().map(|n| n.name).zip(spans).collect();
        check(&events, &spans, &finals)
    }
}

// ---------------------------------------------------------------- the checker

/// When a call's effect may have reached Redis.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// The call's start.
    from: Duration,
    /// The call's end, or, if it may have been journaled, when its instance's journal drained.
    to: Duration,
    /// Whether the call overlapped a degraded span of its instance (it may have been journaled
    /// and replayed by the rule, rather than applied live).
    journaled: bool,
}

fn window(e: &Event, spans: &[(Duration, Duration)]) -> Window {
    let mut w = Window {
        from: e.start,
        to: e.end,
        journaled: false,
    };
    for &(since, until) in spans {
        if e.end + SAMPLE_SLACK >= since && e.start <= until {
            w.journaled = true;
            w.to = w.to.max(until + SAMPLE_SLACK);
        }
    }
    w
}

/// What [`check`] found.
#[derive(Debug, Default)]
struct Verdict {
    finals: HashMap<SessionKey, Final>,
    /// Keys whose final value was written before an acknowledged delete began.
    resurrected: Vec<String>,
    /// Acknowledged writes missing from Redis and not explained by the rule.
    lost: Vec<String>,
    /// Keys holding a value no call wrote (or only a refused one).
    foreign: Vec<String>,
    acked_writes: usize,
    acked_deletes: usize,
}

impl Verdict {
    fn of(&self, key: &SessionKey) -> &Final {
        &self.finals[key]
    }
}

/// Compares a history with what Redis holds at the end.
///
/// Each write or delete `X` that was not refused (acknowledged, or failed with an unknown
/// outcome) has a window `[X.from, X.to]` in which its effect may have reached Redis: from its
/// start to its end, or — when its instance was degraded during the call, so the call may
/// have been journaled — to the moment that instance's journal drained ([`window`]). Refused
/// calls (`NotFound`, `AlreadyExists`, `Conflict`) changed nothing and are ignored.
///
/// * **Resurrected**: Redis ends with the value of a write `W`, and some acknowledged delete
///   began after `W` ended (`D.start > W.end`). Under the rule nothing can bring `W` back
///   after that delete: live, a later write would have to carry `W`'s value (values are
///   unique); replayed, `W` meets the delete's tombstone (a tombstone wins over any write), or
///   the delete is replayed over it (a delete wins over any session). A timed-out `W` is
///   fenced, so it cannot land after its answer either. Must be 0.
/// * **Lost**: an acknowledged write `W` whose value is not what Redis ends with, unless
///   * Redis ends deleted and some delete `X` **explains** it: `X.to >= W.from` (the delete
///     may have reached Redis after `W` began: live, or replayed, and a replayed delete wins
///     over any session), or `W` may have been journaled and `X.from <= W.to` (its tombstone
///     may have stood when `W` was replayed: a tombstone wins over any write);
///   * Redis ends with the value of another write `Z` that **explains** it: `Z.to >= W.from`
///     (it may have landed after `W`), except when `Z` ended before `W` began with a smaller
///     `updated_at` — then `Z` could only have got there by a replay, and a replay of the
///     older of two writes loses (between two writes the greater `(updated_at, version)` wins).
///
///   Must be 0.
/// * **Foreign**: Redis holds a value no call wrote, or one only a refused call did. Must be 0.
fn check(
    events: &[Event],
    spans: &HashMap<&'static str, Vec<(Duration, Duration)>>,
    finals: &HashMap<SessionKey, Final>,
) -> Verdict {
    let mut by_key: HashMap<&SessionKey, Vec<(&Event, Window)>> = HashMap::new();
    for e in events {
        if e.kind == Kind::Load || matches!(e.outcome, Outcome::Refused(_)) {
            continue;
        }
        by_key
            .entry(&e.key)
            .or_default()
            .push((e, window(e, &spans[e.node])));
    }
    let mut v = Verdict {
        finals: finals.clone(),
        ..Verdict::default()
    };
    v.acked_writes = events
        .iter()
        .filter(|e| e.kind.writes() && matches!(e.outcome, Outcome::Wrote(_)))
        .count();
    v.acked_deletes = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Deleted(_)))
        .count();
    for (key, ops) in &by_key {
        let fin = &finals[*key];
        let writer = |value: &str| {
            ops.iter()
                .find(|(e, _)| e.kind.writes() && e.value.as_deref() == Some(value))
        };
        if let Final::Live(value) = fin {
            match writer(value) {
                None => v.foreign.push(format!("{}: {value}", key_label(ops))),
                Some((w, _)) => {
                    if let Some((d, _)) = ops
                        .iter()
                        .find(|(d, _)| matches!(d.outcome, Outcome::Deleted(_)) && d.start > w.end)
                    {
                        v.resurrected.push(format!(
                            "{}: {value} (written by {} until {:.1} ms) is back after {}'s delete acknowledged \
                             from {:.1} ms",
                            w.label,
                            w.node,
                            ms(w.end),
                            d.node,
                            ms(d.start)
                        ));
                    }
                }
            }
        }
        for (w, ww) in ops
            .iter()
            .filter(|(e, _)| e.kind.writes() && matches!(e.outcome, Outcome::Wrote(_)))
        {
            if fin.value() == w.value.as_deref() {
                continue;
            }
            let explained = match fin {
                Final::Live(value) => match writer(value) {
                    Some((z, zw)) => zw.to >= ww.from && !(z.end < w.start && z.updated_at < w.updated_at),
                    None => true, // counted as foreign
                },
                Final::Absent | Final::Tombstone => ops.iter().any(|(x, xw)| {
                    x.kind == Kind::Delete && (xw.to >= ww.from || (ww.journaled && xw.from <= ww.to))
                }),
            };
            if !explained {
                v.lost.push(format!(
                    "{}: {} {} {} ({:.1}..{:.1} ms, journaled: {}) acknowledged, Redis holds {fin}",
                    w.label,
                    w.node,
                    w.kind.name(),
                    w.value.as_deref().unwrap_or(""),
                    ms(w.start),
                    ms(w.end),
                    ww.journaled
                ));
            }
        }
    }
    v
}

fn key_label(ops: &[(&Event, Window)]) -> String {
    ops.first().map(|(e, _)| e.label.clone()).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Asserts the checker's counts are zero, with the history on failure.
fn assert_consistent(rig: &Rig, v: &Verdict) {
    assert!(
        v.resurrected.is_empty() && v.lost.is_empty() && v.foreign.is_empty(),
        "resurrected: {:#?}\nlost: {:#?}\nforeign: {:#?}\n{}",
        v.resurrected,
        v.lost,
        v.foreign,
        rig.dump()
    );
}

/// What a call answered by Redis tells about its key: the value then, or that there was none
/// (`Some(None)`); `None` for an unknown outcome.
fn observed(e: &Event) -> Option<Option<&str>> {
    match &e.outcome {
        Outcome::Loaded(v) => Some(v.as_deref()),
        Outcome::Wrote(_) => Some(e.value.as_deref()),
        Outcome::Deleted(_) | Outcome::Refused(_) => Some(None),
        Outcome::Failed(..) => None,
    }
}

/// The `p`th percentile (0 to 100) of latencies, in milliseconds.
fn percentile(latencies: Vec<Duration>, p: f64) -> f64 {
    testkit_redis::stats::percentile_ms(&latencies, p / 100.0)
}

// ---------------------------------------------------------------- scenarios

/// The checker itself, on made-up histories (no Redis): it flags what it must, and accepts
/// what the rule explains.
#[test]
fn checker_flags_what_the_rule_does_not_explain() {
    let at = Duration::from_millis;
    let labels = [
        "resurrected",
        "vanished",
        "old-replay-won",
        "replayed-delete",
        "foreign",
        "overwritten",
    ];
    let keys: Vec<SessionKey> = labels.iter().map(|_| new_key()).collect();
    let event =
        |node: &'static str, kind: Kind, i: usize, value: Option<&str>, updated_at: u64, span: (u64, u64)| {
            let outcome = match kind {
                Kind::Delete => Outcome::Deleted(true),
                _ => Outcome::Wrote(record("x").meta),
            };
            Event {
                node,
                kind,
                key: keys[i].clone(),
                label: labels[i].to_owned(),
                value: value.map(str::to_owned),
                updated_at,
                start: at(span.0),
                end: at(span.1),
                outcome,
            }
        };
    let events = vec![
        // 0: written, then deleted (acknowledged) by B, yet back.
        event("A", Kind::Save, 0, Some("w0"), 1, (0, 10)),
        event("B", Kind::Delete, 0, None, 0, (20, 30)),
        // 1: written, nothing deleted it, yet gone.
        event("A", Kind::Save, 1, Some("w1"), 1, (0, 10)),
        // 2: C (degraded, journaled) wrote first with an older stamp; A's later live write lost.
        event("C", Kind::Save, 2, Some("z2"), 1, (0, 10)),
        event("A", Kind::Save, 2, Some("w2"), 50, (50, 60)),
        // 3: C's journaled delete, replayed after A's live write: the delete wins (explained).
        event("C", Kind::Delete, 3, None, 0, (0, 10)),
        event("A", Kind::Save, 3, Some("w3"), 50, (50, 60)),
        // 4: a value nobody wrote.
        event("A", Kind::Save, 4, Some("w4"), 1, (0, 10)),
        // 5: B's later live write overwrote A's (explained).
        event("A", Kind::Save, 5, Some("w5"), 1, (0, 10)),
        event("B", Kind::Save, 5, Some("b5"), 20, (20, 30)),
    ];
    let finals: HashMap<SessionKey, Final> = [
        Final::Live("w0".into()),
        Final::Absent,
        Final::Live("z2".into()),
        Final::Tombstone,
        Final::Live("nobody".into()),
        Final::Live("b5".into()),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, f)| (keys[i].clone(), f))
    .collect();
    let spans: HashMap<&'static str, Vec<(Duration, Duration)>> =
        [("A", vec![]), ("B", vec![]), ("C", vec![(at(5), at(100))])]
            .into_iter()
            .collect();
    let v = check(&events, &spans, &finals);
    let named = |list: &[String]| -> Vec<String> {
        let mut n: Vec<String> = list
            .iter()
            .map(|s| s.split(':').next().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    assert_eq!(named(&v.resurrected), ["resurrected"]);
    assert_eq!(named(&v.lost), ["old-replay-won", "vanished"]);
    assert_eq!(named(&v.foreign), ["foreign"]);
}

/// A, cut off, deletes K (acknowledged from its journal); B, healthy, updates K in Redis; A
/// heals and replays its delete over B's newer value: the delete wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_delete_vs_healthy_update() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let k = rig.key("K");
    let setup = rig.write(b, Kind::Save, &k, &fresh("b:v0"), 0).await;
    assert!(setup.ok(), "{setup}");

    a.cut();
    let delete = rig.delete(a, &k).await;
    let update = rig.write(b, Kind::Update, &k, &fresh("b:v1"), 0).await;
    let before_replay = rig.read(&k);
    a.heal();
    let replayed_at = rig.recover(a).await;
    let v = rig.verdict();
    let after = b.store.load(&k).await;
    let c = a.store.counters();
    println!(
        "FIGURES many-replay-delete-vs-healthy-update: a_delete={} b_update={} b_update_acked_ms={} \
         a_replayed_ms={} redis_before_replay={before_replay} replayed={} conflicts={} final={} \
         b_load_after={} resurrected={} lost={}",
        delete.outcome,
        update.outcome,
        ms(update.end),
        ms(replayed_at),
        c.replayed,
        c.conflicts,
        v.of(&k),
        match &after {
            Ok(r) => format!("ok({})", r.is_some()),
            Err(e) => format!("err({})", e.kind().as_str()),
        },
        v.resurrected.len(),
        v.lost.len()
    );
    assert_eq!(delete.outcome, Outcome::Deleted(true), "{}", rig.dump());
    assert!(matches!(update.outcome, Outcome::Wrote(_)), "{}", rig.dump());
    assert!(
        delete.end < update.start && update.end < replayed_at,
        "B's update must be acknowledged between A's delete and A's replay\n{}",
        rig.dump()
    );
    assert!(
        before_replay.value().is_some_and(|s| s.starts_with("b:v1")),
        "Redis held {before_replay} before A replayed"
    );
    assert!(c.replayed >= 1, "{c:?}");
    assert!(
        v.of(&k).deleted(),
        "A's replayed delete must win: Redis holds {}\n{}",
        v.of(&k),
        rig.dump()
    );
    assert!(matches!(after, Ok(None)), "B loads {after:?} after the replay");
    assert_consistent(&rig, &v);
}

/// A, cut off, creates K and saves K2 (only in A's journal); the user logs out via B, which
/// reaches Redis; A heals and replays: neither session comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_via_healthy_instance() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let (k, k2) = (rig.key("K"), rig.key("K2"));

    a.cut();
    let create = rig.write(a, Kind::Create, &k, &fresh("a:login"), 0).await;
    let save = rig.write(a, Kind::Save, &k2, &fresh("a:login"), 0).await;
    let (logout, logout2) = (rig.delete(b, &k).await, rig.delete(b, &k2).await);
    let tombstoned = (rig.read(&k), rig.read(&k2));
    a.heal();
    let replayed_at = rig.recover(a).await;
    let v = rig.verdict();
    let c = a.store.counters();
    println!(
        "FIGURES many-logout-via-healthy-instance: a_create={} a_save={} b_delete={},{} \
         redis_after_logout={},{} a_replayed_ms={} replayed={} conflicts={} final={},{} resurrected={} lost={}",
        create.outcome,
        save.outcome,
        logout.outcome,
        logout2.outcome,
        tombstoned.0,
        tombstoned.1,
        ms(replayed_at),
        c.replayed,
        c.conflicts,
        v.of(&k),
        v.of(&k2),
        v.resurrected.len(),
        v.lost.len()
    );
    assert!(
        create.ok() && save.ok(),
        "A's outage writes are acknowledged\n{}",
        rig.dump()
    );
    assert!(
        logout.ok() && logout2.ok(),
        "B's logouts are acknowledged\n{}",
        rig.dump()
    );
    assert!(
        v.of(&k).deleted() && v.of(&k2).deleted(),
        "A's replay undid B's logout: K {}, K2 {}\n{}",
        v.of(&k),
        v.of(&k2),
        rig.dump()
    );
    assert_consistent(&rig, &v);
}

/// A creates `k` and deletes it while healthy (its warm copy knows the tombstone), then is cut
/// off and its circuit opened. Returns the create and the delete.
async fn logged_out_then_cut_off(rig: &Rig, a: &Node, k: &SessionKey) -> (Event, Event) {
    let first = rig.write(a, Kind::Create, k, &fresh("a:first"), 0).await;
    let logout = rig.delete(a, k).await;
    a.cut();
    a.trip().await;
    (first, logout)
}

/// A logs K out while healthy, is cut off, and the user logs in again under the same id via A
/// (a create based on A's own tombstone); meanwhile the user logs out via B, which reaches Redis
/// (a second tombstone, another token). A heals and replays: B's later logout wins, as a
/// logout wins over every write it could not have seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relogin_loses_to_a_later_logout() {
    if !faults_enabled() {
        return;
    }
    relogin_while_cut_off("many-relogin-vs-later-logout", false).await;
}

/// As above, but the user logs in again via B too (a create over A's tombstone, in Redis): the
/// two logins meet as writes, and the later one is what Redis keeps after A's replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relogin_meets_a_later_relogin() {
    if !faults_enabled() {
        return;
    }
    relogin_while_cut_off("many-relogin-vs-later-relogin", true).await;
}

/// The two scenarios above: after A's logout and outage login, B logs out again (`b_creates`
/// false) or logs in again; figures printed as `FIGURES {label}`.
async fn relogin_while_cut_off(label: &str, b_creates: bool) {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let k = rig.key("K");

    let (first, logout) = logged_out_then_cut_off(&rig, a, &k).await;
    let relogin = rig.write(a, Kind::Create, &k, &fresh("a:again"), 0).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b_value = fresh("b:again");
    let b_call = if b_creates {
        rig.write(b, Kind::Create, &k, &b_value, 0).await
    } else {
        rig.delete(b, &k).await
    };
    let before = rig.read(&k);
    a.heal();
    let replayed_at = rig.recover(a).await;
    let v = rig.verdict();
    let c = a.store.counters();
    println!(
        "FIGURES {label}: a_create={} a_delete={} a_outage_create={} b_{}={} redis_before_replay={} \
         a_replayed_ms={} replayed={} conflicts={} final={} resurrected={} lost={}",
        first.outcome,
        logout.outcome,
        relogin.outcome,
        if b_creates { "create" } else { "delete" },
        b_call.outcome,
        before,
        ms(replayed_at),
        c.replayed,
        c.conflicts,
        v.of(&k),
        v.resurrected.len(),
        v.lost.len()
    );
    assert!(
        first.ok() && logout.ok() && relogin.ok() && b_call.ok(),
        "every call is acknowledged\n{}",
        rig.dump()
    );
    if b_creates {
        assert_eq!(
            v.of(&k).value(),
            Some(b_value.as_str()),
            "the later login (B's) is what Redis keeps\n{}",
            rig.dump()
        );
    } else {
        assert!(
            v.of(&k).deleted(),
            "A's replayed login undid B's later logout: Redis holds {}\n{}",
            v.of(&k),
            rig.dump()
        );
    }
    assert_consistent(&rig, &v);
}

/// What A does to a key in an outage round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AChange {
    Delete,
    Save,
}

/// One round: every key starts at a value A wrote live; the instances `cut` are cut off (and
/// their circuits opened); B saves each key (stamped `skew_ms` off) at `t0`, and `gap` later A
/// deletes or saves it (a save stamped `t0 + gap`). Then the instances in `heal` are healed
/// one by one, each replaying before the next heals. Returns Redis' state of every key after
/// each heal.
async fn round(
    rig: &Rig,
    cut: &[usize],
    heal: &[usize],
    keys: &[(SessionKey, AChange)],
    skew_ms: i64,
    gap: Duration,
) -> Vec<Vec<Final>> {
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    for (k, _) in keys {
        let e = rig.write(a, Kind::Save, k, &fresh("a:v0"), 0).await;
        assert!(e.ok(), "{e}");
    }
    for &i in cut {
        rig.nodes[i].cut();
    }
    join_all(cut.iter().map(|&i| rig.nodes[i].trip())).await;
    let t0 = now_ms();
    for (k, _) in keys {
        let e = rig.write(b, Kind::Save, k, &fresh("b"), skew_ms).await;
        assert!(e.ok(), "{e}\n{}", rig.dump());
    }
    let wait = (t0 + gap.as_millis() as u64).saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    for (k, change) in keys {
        let e = match change {
            AChange::Delete => rig.delete(a, k).await,
            AChange::Save => {
                let mut r = record(&fresh("a"));
                r.meta.updated_at = t0 + gap.as_millis() as u64;
                rig.run(a, Kind::Save, k, Some(&r)).await
            }
        };
        assert!(e.ok(), "{e}\n{}", rig.dump());
    }
    let mut states = Vec::new();
    for &i in heal {
        rig.nodes[i].heal();
        rig.recover(&rig.nodes[i]).await;
        states.push(keys.iter().map(|(k, _)| rig.read(k)).collect());
    }
    states
}

/// Runs futures concurrently (`tokio::join!` takes a fixed number of them).
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut futures: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(move |cx| {
        for slot in &mut futures {
            if slot.as_mut().is_some_and(|f| f.as_mut().poll(cx).is_ready()) {
                *slot = None;
            }
        }
        if futures.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

fn states(s: &[Final]) -> String {
    s.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// A full outage: A and B both journal K from the same state (B saves at t0, A deletes at
/// t0 + 22 ms) and a second key W (B saves at t0, A at t0 + 22 ms). Replayed A first, then
/// again with fresh keys B first: both orders end with K deleted and W holding A's (later)
/// write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_independence() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let gap = Duration::from_millis(22);
    let (kd1, kw1) = (rig.key("Kdel-a-first"), rig.key("Kw-a-first"));
    let a_first = round(
        &rig,
        &[0, 1],
        &[0, 1],
        &[(kd1.clone(), AChange::Delete), (kw1.clone(), AChange::Save)],
        0,
        gap,
    )
    .await;
    let (kd2, kw2) = (rig.key("Kdel-b-first"), rig.key("Kw-b-first"));
    let b_first = round(
        &rig,
        &[0, 1],
        &[1, 0],
        &[(kd2.clone(), AChange::Delete), (kw2.clone(), AChange::Save)],
        0,
        gap,
    )
    .await;
    let v = rig.verdict();
    let events = rig.history.events();
    let a_value = |k: &SessionKey| {
        events
            .iter()
            .rfind(|e| e.node == "A" && &e.key == k && e.kind == Kind::Save)
            .and_then(|e| e.value.clone())
    };
    let (c_a, c_b) = (rig.nodes[0].store.counters(), rig.nodes[1].store.counters());
    println!(
        "FIGURES many-order-independence: gap_ms=22 a_first_after_a=[{}] a_first_final=[{}] \
         b_first_after_b=[{}] b_first_final=[{}] conflicts_a={} conflicts_b={} resurrected={} lost={}",
        states(&a_first[0]),
        states(&a_first[1]),
        states(&b_first[0]),
        states(&b_first[1]),
        c_a.conflicts,
        c_b.conflicts,
        v.resurrected.len(),
        v.lost.len()
    );
    assert!(
        v.of(&kd1).deleted(),
        "A first: the delete lost: {}\n{}",
        v.of(&kd1),
        rig.dump()
    );
    assert!(
        v.of(&kd2).deleted(),
        "B first: the delete lost: {}\n{}",
        v.of(&kd2),
        rig.dump()
    );
    assert_eq!(
        v.of(&kw1).value(),
        a_value(&kw1).as_deref(),
        "A first: the later write must win\n{}",
        rig.dump()
    );
    assert_eq!(
        v.of(&kw2).value(),
        a_value(&kw2).as_deref(),
        "B first: the later write must win\n{}",
        rig.dump()
    );
    assert_consistent(&rig, &v);
}

/// B's host clock is 2 s ahead, so its writes carry `updated_at` 2 s in the future. A logout
/// via A 50 ms after B's write must hold whatever the replay order: a full outage replayed A
/// first and B first, only B cut off (its write replayed over A's live delete), and only A cut
/// off (its delete replayed over B's live write).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skew() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (skew_ms, gap) = (2_000, Duration::from_millis(50));
    let mut results = Vec::new();
    for (name, cut, heal) in [
        ("full_a_first", &[0usize, 1][..], &[0usize, 1][..]),
        ("full_b_first", &[0, 1], &[1, 0]),
        ("b_cut_only", &[1], &[1]),
        ("a_cut_only", &[0], &[0]),
    ] {
        let k = rig.key(&format!("K-{name}"));
        let s = round(&rig, cut, heal, &[(k.clone(), AChange::Delete)], skew_ms, gap).await;
        results.push((name, k, s));
    }
    let v = rig.verdict();
    let mut line = format!("FIGURES many-skew: skew_ms={skew_ms} gap_ms=50");
    for (name, k, s) in &results {
        let steps: Vec<String> = s.iter().map(|x| states(x)).collect();
        let _ = write!(line, " {name}=[{}]->{}", steps.join(";"), v.of(k));
    }
    let _ = write!(line, " resurrected={} lost={}", v.resurrected.len(), v.lost.len());
    println!("{line}");
    for (name, k, _) in &results {
        assert!(
            v.of(k).deleted(),
            "{name}: the skewed write undid the logout: Redis holds {}\n{}",
            v.of(k),
            rig.dump()
        );
    }
    assert_consistent(&rig, &v);
}

/// K lives only in Redis; A, cut off, has no copy. `A.delete(K)` answers `Ok(true)` (the
/// logout is recorded and applied on recovery), and after healing K is deleted in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outage_delete_answers_true() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let k = rig.key("K");
    let setup = rig.write(b, Kind::Save, &k, &fresh("b:v0"), 0).await;
    assert!(setup.ok(), "{setup}");
    a.cut();
    let delete = rig.delete(a, &k).await;
    let during = rig.read(&k);
    a.heal();
    let replayed_at = rig.recover(a).await;
    let v = rig.verdict();
    let after = b.store.load(&k).await;
    println!(
        "FIGURES many-outage-delete-answers-true: a_delete={} delete_ms={} redis_during={during} \
         a_replayed_ms={} final={} b_load_after={} resurrected={} lost={}",
        delete.outcome,
        ms(delete.latency()),
        ms(replayed_at),
        v.of(&k),
        match &after {
            Ok(r) => format!("ok({})", r.is_some()),
            Err(e) => format!("err({})", e.kind().as_str()),
        },
        v.resurrected.len(),
        v.lost.len()
    );
    assert_eq!(delete.outcome, Outcome::Deleted(true), "{}", rig.dump());
    assert!(
        v.of(&k).deleted(),
        "the outage delete was not applied: {}\n{}",
        v.of(&k),
        rig.dump()
    );
    assert!(matches!(after, Ok(None)), "B loads {after:?}");
    assert_consistent(&rig, &v);
}

/// A, cut off, holds no copy of K (written before the outage via B): a load of K is a
/// temporary error ("can't tell"), never `Ok(None)` — the first one (which tried Redis) and
/// those made with the circuit open, and `load_many` too. After healing the same load returns
/// the session: nothing was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cant_tell() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let k = rig.key("K");
    let setup = rig.write(b, Kind::Save, &k, &fresh("b:v0"), 0).await;
    assert!(setup.ok(), "{setup}");
    let value = setup.value.clone().unwrap();
    a.cut();
    let first = rig.run(a, Kind::Load, &k, None).await;
    let open = rig.run(a, Kind::Load, &k, None).await;
    let state = a.store.state();
    let many = a.store.load_many(std::slice::from_ref(&k)).await;
    let many_temporary =
        matches!(&many, Ok(v) if v.len() == 1 && matches!(&v[0], Err(e) if e.is_temporary()));
    a.heal();
    rig.recover(a).await;
    let after = rig.run(a, Kind::Load, &k, None).await;
    let v = rig.verdict();
    println!(
        "FIGURES many-cant-tell: first={} first_ms={} open={} state_during={} load_many={} after_heal={} final={}",
        first.outcome,
        ms(first.latency()),
        open.outcome,
        state.as_str(),
        match &many {
            Ok(v) => v
                .iter()
                .map(|r| match r {
                    Ok(r) => format!("ok({})", r.is_some()),
                    Err(e) => format!("err({},{})", e.kind().as_str(), e.is_temporary()),
                })
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("err({})", e.kind().as_str()),
        },
        after.outcome,
        v.of(&k)
    );
    for e in [&first, &open] {
        assert!(
            matches!(e.outcome, Outcome::Failed(_, true)),
            "a load A cannot answer must be a temporary error, got {}\n{}",
            e.outcome,
            rig.dump()
        );
    }
    assert!(many_temporary, "load_many while cut off: {many:?}");
    assert_eq!(
        after.outcome,
        Outcome::Loaded(Some(value.clone())),
        "{}",
        rig.dump()
    );
    assert_eq!(v.of(&k), &Final::Live(value));
    assert_consistent(&rig, &v);
}

/// A full outage that ends for A before B: B, still cut off, holds K (created during the
/// outage) in its journal only. A, recovered, must not answer K as absent (an application
/// would take that for a logout and drop the cookie): it is a temporary error until B has
/// replayed, then the session. G, logged out before the outage, stays a miss on A (its
/// tombstone is in Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staggered_recovery() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let g = rig.key("G");
    assert!(rig.write(a, Kind::Create, &g, &fresh("a:g"), 0).await.ok());
    assert!(rig.delete(a, &g).await.ok());
    a.cut();
    b.cut();
    a.trip().await;
    b.trip().await;
    let k = rig.key("K");
    let created = rig.write(b, Kind::Create, &k, &fresh("b:k"), 0).await;
    assert!(created.ok(), "{created}");
    let value = created.value.clone().unwrap();
    a.heal();
    rig.recover(a).await;
    let during = rig.run(a, Kind::Load, &k, None).await;
    let gone = rig.run(a, Kind::Load, &g, None).await;
    b.heal();
    rig.recover(b).await;
    let after = rig.run(a, Kind::Load, &k, None).await;
    let v = rig.verdict();
    println!(
        "FIGURES many-staggered-recovery: a_loads_k_before_b_replays={} a_loads_logged_out={} \
         a_loads_k_after={} recovery_unknown={} final={} resurrected={} lost={}",
        during.outcome,
        gone.outcome,
        after.outcome,
        a.store.counters().recovery_unknown,
        v.of(&k),
        v.resurrected.len(),
        v.lost.len()
    );
    assert!(
        matches!(during.outcome, Outcome::Failed(_, true)),
        "a session B has yet to replay must be \"can't tell\" on A, got {}\n{}",
        during.outcome,
        rig.dump()
    );
    assert_eq!(gone.outcome, Outcome::Loaded(None), "{}", rig.dump());
    assert_eq!(
        after.outcome,
        Outcome::Loaded(Some(value.clone())),
        "{}",
        rig.dump()
    );
    assert_eq!(v.of(&k), &Final::Live(value));
    assert_consistent(&rig, &v);
}

/// A's writes of K and G are held in its proxy (requests to Redis held, the connection open)
/// and time out: failed over and journaled. B then writes a newer K and deletes G. A's new
/// connections are let through: it fences the held connection and replays (B's newer K wins
/// by `updated_at`, B's tombstone wins over A's G). Only then are the held bytes delivered:
/// they must not land.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_write_after_replay() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let (k, g) = (rig.key("K"), rig.key("G"));
    for key in [&k, &g] {
        let e = rig.write(a, Kind::Save, key, &fresh("a:v1"), 0).await;
        assert!(e.ok(), "{e}");
    }

    a.proxy.refuse_new(true);
    a.proxy.set_all(Mode::Hold(Direction::ToServer));
    let (held_k, held_g) = (fresh("a:held"), fresh("a:held"));
    let (ak, ag) = tokio::join!(
        rig.write(a, Kind::Save, &k, &held_k, 0),
        rig.write(a, Kind::Save, &g, &held_g, 0)
    );
    let held_bytes: u64 = a.proxy.connections().iter().map(|c| c.to_server.held).sum();
    let bk = rig.write(b, Kind::Save, &k, &fresh("b:newer"), 0).await;
    let bg = rig.delete(b, &g).await;
    // A may reconnect now; the held connection stays held.
    a.proxy.refuse_new(false);
    let replayed_at = rig.recover(a).await;
    let fenced = a.store.primary().fenced_connections();
    let before_release = (rig.read(&k), rig.read(&g));
    a.proxy.release_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = rig.verdict();
    let c = a.store.counters();
    println!(
        "FIGURES many-held-write-after-replay: a_held={},{} failed_over_ms={} held_bytes={held_bytes} \
         b_save={} b_delete={} a_replayed_ms={} fenced_connections={fenced} replayed={} conflicts={} \
         before_release={},{} final={},{} resurrected={} lost={}",
        ak.outcome,
        ag.outcome,
        ms(ak.latency().max(ag.latency())),
        bk.outcome,
        bg.outcome,
        ms(replayed_at),
        c.replayed,
        c.conflicts,
        before_release.0,
        before_release.1,
        v.of(&k),
        v.of(&g),
        v.resurrected.len(),
        v.lost.len()
    );
    assert!(
        ak.ok() && ag.ok(),
        "A's held writes are acknowledged from the secondary\n{}",
        rig.dump()
    );
    assert!(bk.ok() && bg.ok(), "{}", rig.dump());
    assert!(held_bytes > 0, "nothing was held");
    assert_eq!(
        v.of(&k).value(),
        bk.value.as_deref(),
        "K must hold B's newer write (the greater updated_at), not A's\n{}",
        rig.dump()
    );
    assert!(
        v.of(&g).deleted(),
        "B's delete of G was undone: {}\n{}",
        v.of(&g),
        rig.dump()
    );
    assert_consistent(&rig, &v);
}

/// The operation mix on testkit's generator.
struct Rng(testkit_redis::stats::Rng);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// One call of the mixed load: 10 % create, 25 % save, 25 % update, 15 % delete, 25 % load;
    /// a write gets a fresh value tagged `name`.
    fn mixed_op(&mut self, name: &str) -> (Kind, Option<Record>) {
        let kind = match self.below(100) {
            0..=9 => Kind::Create,
            10..=34 => Kind::Save,
            35..=59 => Kind::Update,
            60..=74 => Kind::Delete,
            _ => Kind::Load,
        };
        (kind, kind.writes().then(|| record(&fresh(name))))
    }
}

const LOAD_KEYS: usize = 200;
const WORKERS_PER_NODE: usize = 4;

/// Three instances, 200 sessions (created first, via A), four workers per instance making
/// random calls (create 10 %, save 25 %, update 25 %, delete 15 %, load 25 %) on random
/// sessions for 5 s; B is cut off from 1.5 s to 3.5 s. From the heal on only the first 100
/// sessions are called, so the other 100 end as the outage and the replay left them (later
/// writes would hide a wrong replay). Afterwards the history is checked ([`check`]:
/// resurrected, lost and foreign must be 0), and so are B's loads during the outage of
/// sessions B made no call on since the cut (none in its journal): each must be a temporary
/// error ("can't tell") or the value B itself last heard from Redis before the cut (its warm
/// copy of sessions it served while healthy) — never a miss or another error (`false_miss`),
/// nor a value B did not last see (`false_hit`). The figures give the p99 and maximum latency
/// of the calls that overlapped the outage, on B and on the healthy A and C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_generator() {
    if !faults_enabled() {
        return;
    }
    load_with_one_instance_cut_off("many-load", Duration::from_millis(2_000)).await;
}

/// The same load with B cut off for ten seconds: a long outage, its journal and warm copy
/// serving five times as many calls, and a replay of all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_outage() {
    if !faults_enabled() {
        return;
    }
    load_with_one_instance_cut_off("many-long-outage", Duration::from_secs(10)).await;
}

/// [`load_generator`]'s scenario, B cut off for `cut_for`; figures printed as `FIGURES {label}`.
async fn load_with_one_instance_cut_off(label: &str, cut_for: Duration) {
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(3).await;
    let keys: Arc<Vec<SessionKey>> = Arc::new((0..LOAD_KEYS).map(|i| rig.key(&format!("s{i}"))).collect());
    for k in keys.iter() {
        let e = rig
            .write(&rig.nodes[0], Kind::Create, k, &fresh("A:init"), 0)
            .await;
        assert!(e.ok(), "{e}");
    }
    let seed = now_ms() ^ 0x9e37_79b9_7f4a_7c15;
    let stop = Arc::new(AtomicBool::new(false));
    // From the heal on, calls go to the first half of the sessions only: the other half ends
    // as the outage and the replay left it, so a wrong replay is not hidden by later writes.
    let frozen = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (n, node) in rig.nodes.iter().enumerate() {
        for w in 0..WORKERS_PER_NODE {
            let (history, store, keys, stop, frozen) = (
                Arc::clone(&rig.history),
                Arc::clone(&node.store),
                Arc::clone(&keys),
                Arc::clone(&stop),
                Arc::clone(&frozen),
            );
            let name = node.name;
            let mut rng = Rng(testkit_redis::stats::Rng::new(
                seed ^ ((n * WORKERS_PER_NODE + w + 1) as u64).wrapping_mul(0x9e37_79b9),
            ));
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let live = if frozen.load(Ordering::Relaxed) {
                        keys.len() / 2
                    } else {
                        keys.len()
                    };
                    let key = &keys[rng.below(live as u64) as usize];
                    let (kind, r) = rng.mixed_op(name);
                    history.run(name, &store, kind, key, r.as_ref()).await;
                    tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
                }
            }));
        }
    }
    let cut_node = &rig.nodes[1];
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cut_at = rig.now();
    cut_node.cut();
    tokio::time::sleep(cut_for).await;
    let heal_at = rig.now();
    frozen.store(true, Ordering::Relaxed);
    cut_node.heal();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    for node in &rig.nodes {
        rig.recover(node).await;
    }
    let v = rig.verdict();
    // When B was degraded (circuit not closed or journal waiting), by the monitor.
    let b_spans: Vec<String> = rig.monitor.snapshot(rig.now())[1]
        .iter()
        .map(|(since, until)| format!("{:.0}..{:.0}", ms(*since), ms(*until)))
        .collect();
    let events = rig.history.events();

    // B's loads while it was cut off, of sessions it made no call on since shortly before the
    // cut: a value B itself last saw from Redis (its warm copy), a miss for one B itself deleted
    // last, or a temporary error.
    let (mut false_miss, mut false_hit, mut warm_hits, mut cant_tell, mut known_gone) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    let near_cut = cut_at + Duration::from_millis(20);
    for e in events.iter().filter(|e| {
        e.node == cut_node.name && e.kind == Kind::Load && e.start >= near_cut && e.end <= heal_at
    }) {
        let mine = |x: &&Event| x.node == e.node && x.key == e.key;
        if events
            .iter()
            .filter(mine)
            .any(|x| x.kind != Kind::Load && x.start < e.start && x.end + Duration::from_millis(20) >= cut_at)
        {
            continue; // B wrote or deleted it around or after the cut: its journal answers
        }
        // What B heard from Redis about the key before the cut.
        let seen: Vec<(&Event, Option<&str>)> = events
            .iter()
            .filter(mine)
            .filter(|x| x.end < near_cut)
            .filter_map(|x| observed(x).map(|o| (x, o)))
            .collect();
        match &e.outcome {
            Outcome::Loaded(Some(v)) => {
                // Some call saw `v`, and no call B made after it saw anything else.
                let current = seen.iter().any(|(x, o)| {
                    *o == Some(v.as_str())
                        && !seen
                            .iter()
                            .any(|(y, p)| y.start > x.end && *p != Some(v.as_str()))
                });
                if current {
                    warm_hits += 1;
                } else {
                    false_hit.push(e.to_string());
                }
            }
            Outcome::Failed(_, true) => cant_tell += 1,
            // B's own last word on it was a delete, and every load since found nothing: known
            // gone, a miss. (A load of a session B deleted reads the delete's tombstone, or the
            // delete's journal entry during an earlier failover: a miss that keeps it gone.)
            Outcome::Loaded(None)
                if seen
                    .iter()
                    .filter(|(x, _)| !matches!(x.outcome, Outcome::Loaded(None)))
                    .max_by_key(|(x, _)| x.end)
                    .is_some_and(|(x, _)| matches!(x.outcome, Outcome::Deleted(_))) =>
            {
                known_gone += 1
            }
            _ => false_miss.push(e.to_string()),
        }
    }
    let during = |cut: bool| -> Vec<Duration> {
        events
            .iter()
            .filter(|e| e.end >= cut_at && e.start <= heal_at && (e.node == cut_node.name) == cut)
            .map(Event::latency)
            .collect()
    };
    let (cut_lat, healthy_lat) = (during(true), during(false));
    let (ok, refused, failed) = events.iter().fold((0, 0, 0), |(o, r, f), e| match e.outcome {
        Outcome::Refused(_) => (o, r + 1, f),
        Outcome::Failed(..) => (o, r, f + 1),
        _ => (o + 1, r, f),
    });
    let deleted = v.finals.values().filter(|f| f.deleted()).count();
    let c = cut_node.store.counters();
    println!(
        "FIGURES {label}: seed={seed} instances=3 sessions={LOAD_KEYS} ops={} ok={ok} refused={refused} \
         unknown={failed} acked_writes={} acked_deletes={} final_live={} final_deleted={deleted} \
         cut_ms={:.0}..{:.0} b_failovers={} b_replayed={} b_conflicts={} b_warm_served={} b_degraded_ms=[{}] \
         outage_calls_cut={} p99_cut_ms={} max_cut_ms={} outage_calls_healthy={} p99_healthy_ms={} \
         warm_hits={warm_hits} cant_tell={cant_tell} known_gone={known_gone} false_miss={} false_hit={} resurrected={} lost={} foreign={}",
        events.len(),
        v.acked_writes,
        v.acked_deletes,
        v.finals.len() - deleted,
        ms(cut_at),
        ms(heal_at),
        c.failovers,
        c.replayed,
        c.conflicts,
        c.warm_served,
        b_spans.join(","),
        cut_lat.len(),
        percentile(cut_lat.clone(), 99.0),
        percentile(cut_lat, 100.0),
        healthy_lat.len(),
        percentile(healthy_lat, 99.0),
        false_miss.len(),
        false_hit.len(),
        v.resurrected.len(),
        v.lost.len(),
        v.foreign.len()
    );
    assert!(
        c.warm_served >= warm_hits,
        "B answered {warm_hits} loads from its warm copy but counted {}",
        c.warm_served
    );
    assert!(
        false_miss.is_empty() && false_hit.is_empty(),
        "B's loads while cut off, of sessions not in its journal:\nmisses or errors: {false_miss:#?}\n\
         values B did not last see: {false_hit:#?}"
    );
    if !(v.resurrected.is_empty() && v.lost.is_empty() && v.foreign.is_empty()) {
        // The whole history is long: show only the keys involved.
        let bad: Vec<&str> = v
            .resurrected
            .iter()
            .chain(&v.lost)
            .chain(&v.foreign)
            .filter_map(|s| s.split(':').next())
            .collect();
        let mut detail = String::new();
        for e in events.iter().filter(|e| bad.contains(&e.label.as_str())) {
            let _ = writeln!(detail, "  {e}");
        }
        let spans = rig.monitor.snapshot(rig.now());
        panic!(
            "resurrected: {:#?}\nlost: {:#?}\nforeign: {:#?}\ndegraded spans: {spans:?}\nhistory of those keys:\n{detail}",
            v.resurrected, v.lost, v.foreign
        );
    }
}

/// A rolling restart under load, Redis healthy throughout: three instances serve a mixed load
/// on half of the sessions while each instance in turn is replaced by a fresh one (a deploy),
/// twice. The moment each fresh instance is up it loads every session of the other half (live,
/// never touched by the load): each must be found in Redis — a fresh instance never answers a
/// miss (or an error) for a session that exists. At the end Redis is read directly and compared
/// with the history: nothing lost, nothing resurrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(3).await;
    let keys: Arc<Vec<SessionKey>> = Arc::new((0..LOAD_KEYS).map(|i| rig.key(&format!("s{i}"))).collect());
    for k in keys.iter() {
        let e = rig
            .write(&rig.nodes[0], Kind::Create, k, &fresh("A:init"), 0)
            .await;
        assert!(e.ok(), "{e}");
    }
    let (busy, quiet) = keys.split_at(LOAD_KEYS / 2);
    let busy: Arc<Vec<SessionKey>> = Arc::new(busy.to_vec());
    // Each instance's current store: a restart swaps it; calls in flight finish on the old one.
    let slots: Vec<Arc<std::sync::RwLock<Arc<Store>>>> = rig
        .nodes
        .iter()
        .map(|n| Arc::new(std::sync::RwLock::new(Arc::clone(&n.store))))
        .collect();
    let seed = now_ms() ^ 0x5851_f42d_4c95_7f2d;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (n, node) in rig.nodes.iter().enumerate() {
        for w in 0..WORKERS_PER_NODE {
            let (history, slot, busy, stop) = (
                Arc::clone(&rig.history),
                Arc::clone(&slots[n]),
                Arc::clone(&busy),
                Arc::clone(&stop),
            );
            let name = node.name;
            let mut rng = Rng(testkit_redis::stats::Rng::new(
                seed ^ ((n * WORKERS_PER_NODE + w + 1) as u64).wrapping_mul(0x9e37_79b9),
            ));
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let key = &busy[rng.below(busy.len() as u64) as usize];
                    let (kind, r) = rng.mixed_op(name);
                    let store = Arc::clone(&slot.read().unwrap());
                    history.run(name, &store, kind, key, r.as_ref()).await;
                    tokio::time::sleep(Duration::from_millis(1 + rng.below(4))).await;
                }
            }));
        }
    }
    let (mut restarts, mut started_closed, mut quiet_loads, mut quiet_found) = (0, 0, 0, 0);
    let mut quiet_bad: Vec<String> = Vec::new();
    let mut startup_ms: Vec<Duration> = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        for (n, node) in rig.nodes.iter().enumerate() {
            let t = Instant::now();
            let fresh_store = Arc::new(fallback(node.proxy.url()).await);
            startup_ms.push(t.elapsed());
            restarts += 1;
            started_closed += usize::from(fresh_store.state() == CircuitState::Closed);
            let old = std::mem::replace(&mut *slots[n].write().unwrap(), Arc::clone(&fresh_store));
            drop(old);
            for k in quiet {
                let e = rig
                    .history
                    .run(node.name, &fresh_store, Kind::Load, k, None)
                    .await;
                quiet_loads += 1;
                match &e.outcome {
                    Outcome::Loaded(Some(_)) => quiet_found += 1,
                    _ => quiet_bad.push(e.to_string()),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let v = rig.verdict();
    let events = rig.history.events();
    let failed = events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Failed(..)))
        .count();
    let all_lat: Vec<Duration> = events.iter().map(Event::latency).collect();
    println!(
        "FIGURES many-rolling-restart: instances=3 sessions={LOAD_KEYS} restarts={restarts} \
         started_closed={started_closed} startup_ms_max={:.1} ops={} unknown={failed} acked_writes={} \
         acked_deletes={} quiet_loads={quiet_loads} quiet_found={quiet_found} quiet_bad={} p99_ms={} \
         resurrected={} lost={} foreign={}",
        startup_ms.iter().map(|d| ms(*d)).fold(0.0, f64::max),
        events.len(),
        v.acked_writes,
        v.acked_deletes,
        quiet_bad.len(),
        percentile(all_lat, 99.0),
        v.resurrected.len(),
        v.lost.len(),
        v.foreign.len()
    );
    assert_eq!(
        started_closed, restarts,
        "a fresh instance started with the circuit open"
    );
    assert!(
        quiet_bad.is_empty(),
        "a fresh instance's loads of existing sessions: {quiet_bad:#?}"
    );
    assert!(
        v.resurrected.is_empty() && v.lost.is_empty() && v.foreign.is_empty(),
        "resurrected: {:#?}\nlost: {:#?}\nforeign: {:#?}",
        v.resurrected,
        v.lost,
        v.foreign
    );
    assert_consistent(&rig, &v);
}

/// 14. `principal-revoke-cut-off`: B binds five sessions to a principal, A has read them; A is
/// cut off (B stays healthy). A's `revoke_all` is kept (journaled: `pending`) and ends A's own
/// copies at once, so A serves none of them while cut off; B cannot know until A's replay
/// reaches Redis. A login bound through B after the revoke survives it. Once A has healed and
/// replayed, neither instance serves a revoked session, Redis holds none, and the principal's
/// index lists only the later login. Meanwhile B (healthy) revokes another principal: A serves
/// its copies while cut off (it cannot know) and none once healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principal_revoke_cut_off() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let rig = Rig::start(2).await;
    let (a, b) = (&rig.nodes[0], &rig.nodes[1]);
    let typed = |node: &Node| {
        session_core::Sessions::<String>::new(
            Arc::clone(&node.store) as Arc<dyn SessionStore>,
            Namespace::new("task").unwrap(),
        )
    };
    let (sa, sb) = (typed(a), typed(b));
    let alice = session_core::Principal::new("alice").unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut s = sb.create(format!("device {n}")).await.unwrap();
        sb.bind(&mut s, &alice).await.unwrap();
        ids.push(s.id);
    }
    // Bob's too, bound through B and read by A; B (healthy) revokes Bob while A is cut off.
    let bob = session_core::Principal::new("bob").unwrap();
    let mut bobs = Vec::new();
    for n in 0..3 {
        let mut s = sb.create(format!("bob's device {n}")).await.unwrap();
        sb.bind(&mut s, &bob).await.unwrap();
        bobs.push(s.id);
    }
    for id in ids.iter().chain(&bobs) {
        assert!(sa.load(id).await.unwrap().is_some(), "A reads them while healthy");
    }
    a.cut();
    a.trip().await;
    let revoked = sa.revoke_all(&alice).await.unwrap();
    let revoked_bob = sb.revoke_all(&bob).await.unwrap();
    // Loads that answered a session; an error is not "not served": it fails the test.
    let count = |store: &session_core::Sessions<String>, ids: &[session_core::SessionId]| {
        let (store, ids) = (store.clone(), ids.to_vec());
        async move {
            let mut served = 0;
            for id in &ids {
                if store.load(id).await.unwrap().is_some() {
                    served += 1;
                }
            }
            served
        }
    };
    let served_cut_off = count(&sa, &ids).await;
    // A cannot know of B's revoke of Bob until it reaches Redis again.
    let bob_served_cut_off = count(&sa, &bobs).await;
    let served_by_healthy_before_heal = count(&sb, &ids).await;
    // A login after the revoke, through the healthy instance (its handle five seconds ahead:
    // a login within `REVOKE_SKEW_MS` of a kept revocation ends with it).
    let sb_later = sb.clone().with_clock(session_core::Clock::offset(5_000));
    let mut later = sb_later
        .create("a login after the revoke".to_owned())
        .await
        .unwrap();
    sb_later.bind(&mut later, &alice).await.unwrap();
    a.heal();
    let healed = Instant::now();
    rig.recover(a).await;
    let recovered = healed.elapsed();
    let served_after = count(&sa, &ids).await + count(&sb, &ids).await;
    let bob_served_after = count(&sa, &bobs).await + count(&sb, &bobs).await;
    let mut in_redis = 0;
    for id in &ids {
        if !rig
            .read(&SessionKey::new(Namespace::new("task").unwrap(), id.clone()))
            .deleted()
        {
            in_redis += 1;
        }
    }
    let later_kept =
        count(&sa, std::slice::from_ref(&later.id)).await + count(&sb, std::slice::from_ref(&later.id)).await;
    let listed: Vec<_> = sb.list(&alice).await.unwrap().into_iter().map(|s| s.id).collect();
    println!(
        "FIGURES many-principal-revoke-cut-off: sessions={} revoke_cut_off=pending:{},ended:{} \
         served_while_cut_off={served_cut_off} served_by_healthy_before_heal={served_by_healthy_before_heal} \
         recovered_ms={} served_after_heal={served_after} in_redis_after_heal={in_redis} \
         later_login_served={later_kept}/2 listed_after={} revoked_by_healthy={} \
         its_sessions_served_by_cut_off={bob_served_cut_off} its_sessions_served_after_heal={bob_served_after}",
        ids.len(),
        revoked.pending,
        revoked.ended,
        recovered.as_millis(),
        listed.len(),
        revoked_bob.ended,
    );
    assert!(revoked.pending, "the cut-off instance keeps the revocation");
    assert_eq!(
        (revoked_bob.ended as usize, revoked_bob.pending),
        (bobs.len(), false)
    );
    assert_eq!(
        bob_served_after, 0,
        "a session revoked by the healthy instance served after the heal"
    );
    assert_eq!(revoked.ended as usize, ids.len(), "its warm copies end at once");
    assert_eq!(
        served_cut_off, 0,
        "the revoking instance served a revoked session"
    );
    assert_eq!(
        served_by_healthy_before_heal,
        ids.len(),
        "the healthy instance cannot know before the replay (if this changes, the docs must)"
    );
    assert_eq!(served_after, 0, "a revoked session served after the heal");
    assert_eq!(in_redis, 0, "a revoked session is in Redis after the replay");
    assert_eq!(
        later_kept, 2,
        "the login after the revoke was ended by its replay"
    );
    assert_eq!(listed, vec![later.id.clone()]);
}
