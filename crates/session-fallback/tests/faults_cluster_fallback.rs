//! A fallback over a Redis Cluster with one master killed under load: the circuit opens for
//! that node's partition only. Sessions on the healthy shards keep being served by Redis —
//! not one call on their keys reaches the secondary, not one fails — while the dead shard's
//! sessions fail over to the secondary; once the replica is promoted, the journal is replayed
//! into the new master and every circuit closes.
//!
//! `FallbackStore<RedisStore (cluster 3+3, cluster-require-full-coverage no), memory>`; the
//! memory secondary (rejecting at its bound, as the fallback requires) is wrapped in a
//! recorder of every key the fallback asks it about, so "served by the secondary" is counted
//! per key rather than inferred. Every operation is recorded with its answer; afterwards every
//! session is read directly from the cluster (a fresh `RedisStore`) and compared with the
//! history: `lost` (an acknowledged write not there, or an older value), `resurrected` (an
//! acknowledged delete undone). One `FIGURES fallback-cluster-master-killed: …` line.
//!
//! Run only with `SESSION_TEST_FAULTS=1` (the `faults` cell of `cargo xtask test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, Change, CodecId, Reconciled, Record, Tombstone};
use session_core::{
    async_trait, Error, Health, KeyPrefix, Meta, Namespace, Result, SessionId, SessionKey, SessionStore,
    StoreOptions, StoreStats, Version,
};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::fred::util::redis_keyslot;
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp;
use testkit_redis::{faults_enabled, Cluster, TopologyOptions};

const TASKS: usize = 16;
/// Sessions the load writes, and sessions written by "another instance" (only read here).
const SESSIONS: usize = 3_000;
const FOREIGN: usize = 600;
const SIZE: usize = 512;
const HOUR_MS: u64 = 3_600_000;
const TOMBSTONE_TTL_MS: u64 = 600_000;
/// Per-command timeout of the Redis store (six servers and the load share two cores), and the
/// fallback's own deadline a little above it.
const REDIS_TIMEOUT_MS: u64 = 500;
const PRIMARY_TIMEOUT: Duration = Duration::from_millis(600);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Store = FallbackStore<RedisStore, Arc<Recorder>>;

// ---------------------------------------------------------------- the rig

/// The memory secondary, recording every key the fallback calls it with.
struct Recorder {
    inner: MemoryStore,
    calls: Mutex<HashMap<SessionKey, u64>>,
}

impl Recorder {
    fn new(prefix: &str) -> Arc<Recorder> {
        let inner = MemoryStore::with_options(
            MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
            StoreOptions::new(KeyPrefix::new(prefix).unwrap()),
        )
        .unwrap();
        Arc::new(Recorder {
            inner,
            calls: Mutex::new(HashMap::new()),
        })
    }

    fn saw(&self, key: &SessionKey) {
        *self.calls.lock().unwrap().entry(key.clone()).or_default() += 1;
    }

    fn calls(&self) -> HashMap<SessionKey, u64> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl SessionStore for Recorder {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.saw(key);
        self.inner.load(key).await
    }
    async fn save(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.saw(key);
        self.inner.save(key, record).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.saw(key);
        self.inner.create(key, record).await
    }
    async fn update(&self, key: &SessionKey, record: &Record) -> Result<Meta> {
        self.saw(key);
        self.inner.update(key, record).await
    }
    async fn save_if(&self, key: &SessionKey, expected: Version, record: &Record) -> Result<Meta> {
        self.saw(key);
        self.inner.save_if(key, expected, record).await
    }
    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        self.saw(key);
        self.inner.delete(key).await
    }
    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> Result<bool> {
        self.saw(key);
        self.inner.delete_leaving(key, tombstone).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: u64) -> Result<bool> {
        self.saw(key);
        self.inner.touch(key, expires_at).await
    }
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> Result<Meta> {
        self.saw(key);
        self.saw(&SessionKey::new(key.namespace.clone(), new_id.clone()));
        self.inner.rotate(key, new_id).await
    }
    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Result<Option<Record>>>> {
        keys.iter().for_each(|k| self.saw(k));
        self.inner.load_many(keys).await
    }
    async fn save_many(&self, items: &[(SessionKey, Record)]) -> Result<Vec<Meta>> {
        items.iter().for_each(|(k, _)| self.saw(k));
        self.inner.save_many(items).await
    }
    async fn count(&self, namespace: &Namespace) -> Result<u64> {
        self.inner.count(namespace).await
    }
    async fn stats(&self) -> Result<StoreStats> {
        self.inner.stats().await
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    async fn reconcile(&self, key: &SessionKey, base: Version, change: Change<'_>) -> Result<Reconciled> {
        self.saw(key);
        self.inner.reconcile(key, base, change).await
    }
    fn keeps_tombstones(&self) -> bool {
        self.inner.keeps_tombstones()
    }
    fn evicts(&self) -> bool {
        self.inner.evicts()
    }
}

/// 3 masters + 3 replicas; healthy shards keep serving while one has no master.
fn start_cluster() -> Cluster {
    let options = TopologyOptions::new()
        .arg("--cluster-require-full-coverage")
        .arg("no")
        .arg("--cluster-node-timeout")
        .arg("1000");
    Cluster::start_with(&options).expect("cluster starts")
}

fn redis_config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = REDIS_TIMEOUT_MS;
    c.connect_timeout_ms = 5_000;
    c.unresponsive_timeout_ms = 5_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c.tombstone_ttl_ms = TOMBSTONE_TTL_MS;
    c
}

/// A store on `config` whose keys start with `prefix`.
async fn connect(config: &RedisConfig, prefix: &str) -> session_core::Result<RedisStore> {
    RedisStore::builder(config.clone())
        .options(StoreOptions::new(KeyPrefix::new(prefix).unwrap()))
        .connect()
        .await
}

async fn fallback(config: &RedisConfig, prefix: &str, secondary: &Arc<Recorder>) -> Store {
    let redis = connect(config, prefix).await.expect("redis connects");
    let mut fb = FallbackConfig::default()
        .with_primary_timeout(PRIMARY_TIMEOUT)
        .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_startup_wait(Duration::from_millis(1_000));
    fb.tombstone_ttl_ms = TOMBSTONE_TTL_MS;
    FallbackStore::new(redis, Arc::clone(secondary), fb)
        .await
        .expect("fallback starts")
}

fn random_prefix() -> String {
    let id = SessionId::generate().unwrap();
    let short: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("f{short}:")
}

/// A session's payload: its index, its counter, padding.
fn record(index: usize, counter: u64) -> Record {
    let mut p = format!("{index}:{counter}:").into_bytes();
    p.resize(SIZE.max(p.len()), b'.');
    Record::new(CodecId::RAW, p, now_ms() + HOUR_MS)
}

fn parse(payload: &[u8]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(40))?).ok()?;
    let mut parts = text.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The slot ranges the node on `port` serves now.
fn slots_of(port: u16) -> Vec<(u16, u16)> {
    let reply = resp::command(port, &["CLUSTER", "SLOTS"]).expect("CLUSTER SLOTS");
    reply
        .items()
        .iter()
        .filter_map(|range| {
            let items = range.items();
            let start = u16::try_from(items.first()?.integer()?).ok()?;
            let end = u16::try_from(items.get(1)?.integer()?).ok()?;
            let owner = items.get(2)?.items().get(1)?.integer()?;
            (owner == i64::from(port)).then_some((start, end))
        })
        .collect()
}

// ---------------------------------------------------------------- history

/// What the last acknowledged call left in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acked {
    /// Written with this counter.
    Live(u64),
    /// Deleted when counters up to this one had been sent.
    Deleted(u64),
}

/// One owned session's history, as far as the checker needs it.
#[derive(Clone, Copy, Debug)]
struct Model {
    acked: Acked,
    /// The highest counter sent (acknowledged or not).
    sent: u64,
    /// A delete failed after the last acknowledgement: it may have happened.
    delete_unknown: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Save,
    Update,
    Create,
    Delete,
    Load,
    LoadForeign,
}

/// One call: whose key, when, how long, and the error if any.
struct Call {
    index: usize,
    foreign: bool,
    kind: Kind,
    at: Instant,
    took: Duration,
    error: Option<Error>,
}

struct TaskLog {
    calls: Vec<Call>,
    models: BTreeMap<usize, Model>,
    wrong: Vec<String>,
}

struct Rig {
    sessions: Vec<SessionKey>,
    foreign: Vec<SessionKey>,
    prefix: session_core::KeyPrefix,
}

impl Rig {
    fn slot(&self, key: &SessionKey) -> u16 {
        redis_keyslot(self.prefix.render(key).as_bytes())
    }
}

async fn run_task(t: usize, store: Arc<Store>, rig: Arc<Rig>, stop: Arc<AtomicBool>) -> TaskLog {
    let owned: Vec<usize> = (t..rig.sessions.len()).step_by(TASKS).collect();
    let mut log = TaskLog {
        calls: Vec::new(),
        models: owned
            .iter()
            .map(|&i| {
                (
                    i,
                    Model {
                        acked: Acked::Live(0),
                        sent: 0,
                        delete_unknown: false,
                    },
                )
            })
            .collect(),
        wrong: Vec::new(),
    };
    let mut n = t;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
        if n.is_multiple_of(7) {
            // A session this instance never wrote: Redis serves it on a healthy shard.
            let index = (n * 31 + t) % rig.foreign.len();
            let key = &rig.foreign[index];
            let at = Instant::now();
            let got = store.load(key).await;
            let took = at.elapsed();
            let error = match got {
                Ok(Some(r)) if parse(&r.payload) == Some((index, 0)) => None,
                Ok(other) => {
                    log.wrong.push(format!(
                        "foreign session {index} answered {:?}",
                        other.map(|r| parse(&r.payload))
                    ));
                    None
                }
                Err(e) => Some(e),
            };
            log.calls.push(Call {
                index,
                foreign: true,
                kind: Kind::LoadForeign,
                at,
                took,
                error,
            });
            continue;
        }
        let index = owned[(n / 2) % owned.len()];
        let key = &rig.sessions[index];
        let model = log.models[&index];
        let kind = match model.acked {
            _ if model.delete_unknown => Kind::Save,
            Acked::Deleted(_) => {
                if n.is_multiple_of(3) {
                    Kind::Load
                } else {
                    Kind::Create
                }
            }
            Acked::Live(_) => match n % 12 {
                0 => Kind::Delete,
                1..=4 => Kind::Save,
                5..=7 => Kind::Update,
                _ => Kind::Load,
            },
        };
        let at = Instant::now();
        let mut m = model;
        let error = match kind {
            Kind::Save | Kind::Update | Kind::Create => {
                let counter = m.sent + 1;
                m.sent = counter;
                let rec = record(index, counter);
                let written = match kind {
                    Kind::Save => store.save(key, &rec).await,
                    Kind::Update => store.update(key, &rec).await,
                    _ => store.create(key, &rec).await,
                };
                match written {
                    Ok(_) => {
                        m.acked = Acked::Live(counter);
                        m.delete_unknown = false;
                        None
                    }
                    Err(e) => Some(e),
                }
            }
            Kind::Delete => match store.delete(key).await {
                Ok(_) => {
                    m.acked = Acked::Deleted(m.sent);
                    m.delete_unknown = false;
                    None
                }
                Err(e) => {
                    m.delete_unknown = true;
                    Some(e)
                }
            },
            Kind::Load | Kind::LoadForeign => match store.load(key).await {
                Ok(found) => {
                    let counter = found.as_ref().and_then(|r| parse(&r.payload));
                    let fits = match (m.acked, counter) {
                        (_, Some((i, _))) if i != index => false,
                        (Acked::Live(a), Some((_, c))) => c >= a && c <= m.sent,
                        (Acked::Deleted(d), Some((_, c))) => c > d && c <= m.sent,
                        (Acked::Deleted(_), None) => true,
                        (Acked::Live(_), None) => m.delete_unknown,
                    };
                    if !fits {
                        log.wrong.push(format!(
                            "load of session {index} answered {counter:?} (acked {:?}, sent {})",
                            m.acked, m.sent
                        ));
                    }
                    None
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = &error {
            if matches!(e, Error::Corrupt { .. } | Error::Backend { .. }) {
                log.wrong.push(format!("session {index}: {e}"));
            }
        }
        log.models.insert(index, m);
        log.calls.push(Call {
            index,
            foreign: false,
            kind,
            at,
            took: at.elapsed(),
            error,
        });
    }
    log
}

// ---------------------------------------------------------------- the scenario

/// A master is killed (`kill -9`) under load; its replica is promoted. Only that node's
/// partition opens: healthy shards' sessions are served by Redis throughout (no call on their
/// keys reaches the secondary or fails), the dead shard's sessions are served by the
/// secondary (the warm copy, and journaled writes), and after the promotion the journal is
/// replayed into the new master. Redis then holds every acknowledged write and no
/// acknowledged delete is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_fails_over_only_its_own_sessions() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut cluster = start_cluster();
    let prefix = random_prefix();
    let config = redis_config(cluster.url());
    let secondary = Recorder::new(&prefix);
    let store = Arc::new(fallback(&config, &prefix, &secondary).await);
    assert_eq!(store.state(), CircuitState::Closed);

    // The sessions: written through the fallback (so this instance has a warm copy), and
    // foreign ones written by another instance straight into Redis.
    let ns = Namespace::new("shard").unwrap();
    let sessions: Vec<SessionKey> = (0..SESSIONS)
        .map(|_| SessionKey::new(ns.clone(), SessionId::generate().unwrap()))
        .collect();
    for (i, key) in sessions.iter().enumerate() {
        store.create(key, &record(i, 0)).await.expect("session written");
    }
    let other = connect(&config, &prefix).await.expect("other instance");
    let foreign: Vec<SessionKey> = (0..FOREIGN)
        .map(|_| SessionKey::new(ns.clone(), SessionId::generate().unwrap()))
        .collect();
    let items: Vec<(SessionKey, Record)> = foreign
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), record(i, 0)))
        .collect();
    other.save_many(&items).await.expect("foreign sessions written");
    let rig = Arc::new(Rig {
        sessions,
        foreign,
        prefix: KeyPrefix::new(&prefix).unwrap(),
    });
    assert!(
        secondary.calls().is_empty(),
        "nothing touched the secondary while healthy"
    );

    // A monitor: the most partitions open at once, and when the journal drained.
    let open_max = Arc::new(AtomicUsize::new(0));
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (store, open_max, stop) = (
            Arc::clone(&store),
            Arc::clone(&open_max),
            Arc::clone(&stop_monitor),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                open_max.fetch_max(store.open_partitions(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (store, rig, stop) = (Arc::clone(&store), Arc::clone(&rig), Arc::clone(&stop));
            tokio::spawn(run_task(t, store, rig, stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let master = cluster.masters().expect("masters")[0];
    let down = slots_of(master);
    let killed_at = Instant::now();
    cluster.node_mut(master).unwrap().kill9().expect("kill -9");
    let promoted = tokio::task::block_in_place(|| cluster.wait_for_failover(master, Duration::from_secs(20)));
    let promoted_ms = killed_at.elapsed().as_millis();
    promoted.expect("replica promoted");
    let opened_seen = open_max.load(Ordering::Relaxed);
    // Replay into the new master, with the load still running.
    let limit = Instant::now() + Duration::from_secs(30);
    while !(store.state() == CircuitState::Closed && store.journal_len() == 0) {
        assert!(
            Instant::now() < limit,
            "not recovered: state {:?}, journal {}, counters {:?}",
            store.state(),
            store.journal_len(),
            store.counters()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered_ms = killed_at.elapsed().as_millis();
    let window_end = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for t in tasks {
        logs.push(t.await.unwrap());
    }
    stop_monitor.store(true, Ordering::Relaxed);
    monitor.await.unwrap();
    let counters = store.counters();

    // ------------------------------------------------------------ the verdict
    let in_down = |slot: u16| down.iter().any(|&(a, b)| (a..=b).contains(&slot));
    let affected_key = |key: &SessionKey| in_down(rig.slot(key));

    let secondary_calls = secondary.calls();
    let healthy_shard_secondary: u64 = secondary_calls
        .iter()
        .filter(|(k, _)| !affected_key(k))
        .map(|(_, n)| *n)
        .sum();
    let affected_secondary: u64 = secondary_calls
        .iter()
        .filter(|(k, _)| affected_key(k))
        .map(|(_, n)| *n)
        .sum();

    let mut calls = 0usize;
    let mut errors_healthy: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut errors_affected: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut healthy_messages = Vec::new();
    let mut healthy_latencies = Vec::new();
    let mut wrong = Vec::new();
    let mut models = BTreeMap::new();
    for log in logs {
        calls += log.calls.len();
        wrong.extend(log.wrong);
        models.extend(log.models);
        for c in &log.calls {
            let key = if c.foreign {
                &rig.foreign[c.index]
            } else {
                &rig.sessions[c.index]
            };
            let affected = affected_key(key);
            if !affected && c.at >= killed_at && c.at <= window_end {
                healthy_latencies.push(c.took);
            }
            if let Some(e) = &c.error {
                if affected {
                    *errors_affected.entry(e.kind().as_str()).or_default() += 1;
                } else {
                    if healthy_messages.len() < 3 {
                        healthy_messages.push(format!("{:?} of {}: {e}", c.kind, c.index));
                    }
                    *errors_healthy.entry(e.kind().as_str()).or_default() += 1;
                }
            }
        }
    }
    healthy_latencies.sort_unstable();
    let p99_healthy_ms = testkit_redis::stats::percentile_ms(&healthy_latencies, 0.99);

    // Every session read directly from the cluster, through a fresh store.
    let fresh = connect(&config, &prefix).await.expect("a fresh store connects");
    let (mut lost, mut resurrected) = (0usize, 0usize);
    let mut lost_affected = 0usize;
    let mut samples = Vec::new();
    for (&index, m) in &models {
        let key = &rig.sessions[index];
        let stored = fresh.load(key).await.expect("read back");
        let counter = stored.and_then(|r| parse(&r.payload)).map(|(i, c)| {
            assert_eq!(i, index, "session {index} holds another session's payload");
            c
        });
        let verdict = match (m.acked, counter) {
            (Acked::Live(a), Some(c)) if c >= a && c <= m.sent => None,
            (Acked::Live(_), None) if m.delete_unknown => None,
            (Acked::Live(_), _) => Some("lost"),
            (Acked::Deleted(_), None) => None,
            (Acked::Deleted(d), Some(c)) if c > d && c <= m.sent => None,
            (Acked::Deleted(_), Some(_)) => Some("resurrected"),
        };
        match verdict {
            Some("lost") => {
                lost += 1;
                if affected_key(key) {
                    lost_affected += 1;
                }
            }
            Some(_) => resurrected += 1,
            None => {}
        }
        if verdict.is_some() && samples.len() < 5 {
            samples.push(format!(
                "session {index} ({}): {m:?}, Redis holds {counter:?}",
                if affected_key(key) { "affected" } else { "healthy" }
            ));
        }
    }

    println!(
        "FIGURES fallback-cluster-master-killed: calls={calls} healthy_shard_secondary={healthy_shard_secondary} \
         affected_failovers={} open_partitions_max={} replayed={} lost={lost} resurrected={resurrected} \
         p99_healthy_ms={p99_healthy_ms:.1} affected_secondary={affected_secondary} \
         errors_healthy={errors_healthy:?} errors_affected={errors_affected:?} wrong={} promoted_ms={promoted_ms} \
         recovered_ms={recovered_ms} opened={} probes={} conflicts={}",
        counters.failovers,
        open_max.load(Ordering::Relaxed),
        counters.replayed,
        wrong.len(),
        counters.opened,
        counters.probes,
        counters.conflicts,
    );
    for w in wrong.iter().take(5) {
        println!("  wrong: {w}");
    }
    for m in &healthy_messages {
        println!("  error on a healthy shard: {m}");
    }
    for s in &samples {
        println!("  {s}");
    }

    assert_eq!(
        healthy_shard_secondary, 0,
        "no call on a healthy shard's session reached the secondary"
    );
    assert!(
        errors_healthy.is_empty(),
        "healthy shards' sessions kept being served: {errors_healthy:?}"
    );
    assert!(
        opened_seen >= 1 && affected_secondary > 0,
        "the dead shard's sessions failed over"
    );
    assert_eq!(
        open_max.load(Ordering::Relaxed),
        1,
        "only the dead node's partition opened"
    );
    assert!(
        counters.replayed > 0,
        "the journal was replayed after the promotion"
    );
    assert!(wrong.is_empty(), "no answer contradicted the history: {wrong:?}");
    assert_eq!(resurrected, 0, "no acknowledged delete undone");
    assert_eq!(
        lost, 0,
        "every acknowledged write is in Redis ({lost_affected} of the lost on the killed shard)"
    );
}
