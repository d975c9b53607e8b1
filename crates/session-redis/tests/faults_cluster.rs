//! Redis Cluster under topology changes, with concurrent load and every outcome recorded: a
//! master killed, a graceful `CLUSTER FAILOVER`, a master added and rebalanced onto then
//! drained and removed, and a slot migration held open for seconds with large sessions.
//!
//! Every session is owned by one load task, which writes a counter into it (`save`, `update`)
//! and reads it back (`load`, checking the reply names this session and no newer counter than
//! was sent). Afterwards every session is read back through a fresh store and compared with
//! the last acknowledged counter. Each scenario prints a `FIGURES cluster-…` line:
//!
//! * `lost`: sessions holding less than their last acknowledged write (or nothing);
//! * `wrong`: replies that belonged to another command (another session's payload, a counter
//!   never sent, a `Corrupt` or "unexpected reply" error);
//! * `errors_healthy` / `errors_affected`: failed calls on keys of shards the scenario did not
//!   touch, and on those it did (by kind);
//! * `redirects`: `MOVED` and `ASK` answered by the servers (`INFO errorstats`);
//! * in `cluster-reshard`, `count_during` / `exact` / `min` / `max` / `of`: `count` of a
//!   namespace nothing writes, called over and over while slots migrate; every answer must
//!   be `of` (`count_is_exact_while_a_slot_migrates` asserts the same while one slot holding
//!   all the sessions moves key by key, and prints `FIGURES cluster-count-migrating`).
//!
//! Pass: 0 lost, 0 wrong, no error on a key of a healthy shard. Run only with
//! `SESSION_TEST_FAULTS=1` (the `faults` cell of `cargo xtask test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_redis::fred::util::redis_keyslot;
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::{self, info_field, Reply};
use testkit_redis::{faults_enabled, Cluster, RedisServer, TopologyOptions};

/// Per-command timeout: six servers and the load share two cores.
const TIMEOUT_MS: u64 = 1_000;
const TASKS: usize = 16;
const HOUR_MS: u64 = 3_600_000;
/// Sessions of the namespace nothing writes during the resharding, for `count`.
const UNTOUCHED: usize = 500;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster of 3 masters and 3 replicas whose healthy shards keep serving while another has
/// no master (`cluster-require-full-coverage no`: by default every node refuses every key
/// with `CLUSTERDOWN` until a failed master's slots are served again). `node_timeout_ms`: how
/// long a node may be silent before it is failed over (short for the failover scenarios; long
/// where a loaded two-core machine must not fail nodes by accident).
fn start_cluster(node_timeout_ms: u64) -> Cluster {
    let options = TopologyOptions::new()
        .arg("--cluster-require-full-coverage")
        .arg("no")
        .arg("--cluster-node-timeout")
        .arg(node_timeout_ms.to_string());
    Cluster::start_with(&options).expect("cluster starts")
}

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = TIMEOUT_MS;
    c.connect_timeout_ms = 5_000;
    c.unresponsive_timeout_ms = 5_000;
    c
}

async fn connect(config: RedisConfig, prefix: &str) -> session_core::Result<RedisStore> {
    let options = StoreOptions::new(KeyPrefix::new(prefix).unwrap());
    RedisStore::builder(config).options(options).connect().await
}

fn random_prefix() -> String {
    let id = SessionId::generate().unwrap();
    let short: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("c{short}:")
}

/// A session's payload: its index, its counter, padding to `size` bytes.
fn payload(index: usize, counter: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{index}:{counter}:").into_bytes();
    p.resize(size.max(p.len()), b'.');
    p
}

fn parse(payload: &[u8]) -> Option<(usize, u64)> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(40))?).ok()?;
    let mut parts = text.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn record(index: usize, counter: u64, size: usize) -> Record {
    Record::new(CodecId::RAW, payload(index, counter, size), now_ms() + HOUR_MS)
}

/// The sessions of one scenario.
struct Sessions {
    prefix: KeyPrefix,
    keys: Vec<SessionKey>,
    full: Vec<String>,
    size: usize,
}

impl Sessions {
    async fn create(store: &RedisStore, n: usize, size: usize) -> Sessions {
        let ns = Namespace::new("shard").unwrap();
        let keys: Vec<SessionKey> = (0..n)
            .map(|_| SessionKey::new(ns.clone(), SessionId::generate().unwrap()))
            .collect();
        Sessions::write(store, keys, size).await
    }

    /// `n` sessions whose keys all hash to one slot (random ids, kept when they land there).
    async fn create_in_one_slot(store: &RedisStore, n: usize, size: usize) -> Sessions {
        let ns = Namespace::new("shard").unwrap();
        let prefix = store.key_prefix();
        let first = SessionKey::new(ns.clone(), SessionId::generate().unwrap());
        let slot = redis_keyslot(prefix.render(&first).as_bytes());
        let mut keys = vec![first];
        while keys.len() < n {
            let key = SessionKey::new(ns.clone(), SessionId::generate().unwrap());
            if redis_keyslot(prefix.render(&key).as_bytes()) == slot {
                keys.push(key);
            }
        }
        Sessions::write(store, keys, size).await
    }

    async fn write(store: &RedisStore, keys: Vec<SessionKey>, size: usize) -> Sessions {
        let prefix = store.key_prefix().clone();
        let full = keys.iter().map(|k| prefix.render(k)).collect();
        let items: Vec<(SessionKey, Record)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), record(i, 0, size)))
            .collect();
        for chunk in items.chunks(200) {
            store.save_many(chunk).await.expect("sessions written");
        }
        Sessions {
            prefix,
            keys,
            full,
            size,
        }
    }

    fn slot(&self, index: usize) -> u16 {
        redis_keyslot(self.full[index].as_bytes())
    }
}

/// What one call did.
#[derive(Debug)]
struct Outcome {
    index: usize,
    error: Option<Error>,
}

/// Per task: outcomes, and per owned session the last counter acknowledged and the highest sent.
struct TaskLog {
    outcomes: Vec<Outcome>,
    acked: BTreeMap<usize, u64>,
    sent: BTreeMap<usize, u64>,
    wrong: Vec<String>,
}

struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<TaskLog>>,
}

impl Load {
    fn start(store: &RedisStore, sessions: &Arc<Sessions>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..TASKS)
            .map(|t| {
                let (store, sessions, stop) = (store.clone(), Arc::clone(sessions), Arc::clone(&stop));
                tokio::spawn(async move { run_task(t, &store, &sessions, &stop).await })
            })
            .collect();
        Load { stop, handles }
    }

    async fn stop(self) -> Vec<TaskLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for h in self.handles {
            logs.push(h.await.unwrap());
        }
        logs
    }
}

async fn run_task(t: usize, store: &RedisStore, sessions: &Sessions, stop: &AtomicBool) -> TaskLog {
    let owned: Vec<usize> = (t..sessions.keys.len()).step_by(TASKS).collect();
    let mut log = TaskLog {
        outcomes: Vec::new(),
        acked: owned.iter().map(|&i| (i, 0)).collect(),
        sent: owned.iter().map(|&i| (i, 0)).collect(),
        wrong: Vec::new(),
    };
    let mut n = t;
    while !stop.load(Ordering::Relaxed) {
        let index = owned[n % owned.len()];
        let key = &sessions.keys[index];
        let error = match n % 3 {
            0 | 1 => {
                let counter = log.sent[&index] + 1;
                log.sent.insert(index, counter);
                let rec = record(index, counter, sessions.size);
                let written = if n.is_multiple_of(3) {
                    store.save(key, &rec).await
                } else {
                    store.update(key, &rec).await
                };
                match written {
                    Ok(_) => {
                        log.acked.insert(index, counter);
                        None
                    }
                    Err(e) => Some(e),
                }
            }
            _ => match store.load(key).await {
                Ok(Some(found)) => {
                    match parse(&found.payload) {
                        Some((i, c)) if i == index && c <= log.sent[&index] && c >= log.acked[&index] => {}
                        other => log.wrong.push(format!(
                            "load of session {index} answered {other:?} (acked {}, sent {})",
                            log.acked[&index], log.sent[&index]
                        )),
                    }
                    None
                }
                Ok(None) => {
                    log.wrong.push(format!("load of session {index} found nothing"));
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
        log.outcomes.push(Outcome { index, error });
        n += 1;
        if n.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    log
}

/// The slots the node on `port` serves now (`CLUSTER SLOTS` asked of it).
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

fn redirects(ports: &[u16]) -> (u64, u64) {
    let count = |name: &str| -> u64 {
        ports
            .iter()
            .filter_map(|&port| {
                let info = resp::command(port, &["INFO", "errorstats"]).ok()?.text()?;
                info_field(&info, &format!("errorstat_{name}"))?
                    .strip_prefix("count=")?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    (count("MOVED"), count("ASK"))
}

fn reset_stats(ports: &[u16]) {
    for &port in ports {
        let _ = resp::command(port, &["CONFIG", "RESETSTAT"]);
    }
}

/// Sessions in a namespace of their own that nothing writes during the scenario: `count` of
/// that namespace must be exact whatever the load does elsewhere.
async fn create_untouched(store: &RedisStore, n: usize) -> Namespace {
    let ns = Namespace::new("untouched").unwrap();
    let items: Vec<(SessionKey, Record)> = (0..n)
        .map(|i| {
            let key = SessionKey::new(ns.clone(), SessionId::generate().unwrap());
            (key, record(i, 0, 64))
        })
        .collect();
    for chunk in items.chunks(200) {
        store.save_many(chunk).await.expect("untouched sessions written");
    }
    ns
}

/// One `count` call: when it ran and what it answered.
struct Counted {
    started: Instant,
    ended: Instant,
    result: Result<u64, Error>,
}

/// Calls `count` on `ns` over and over, `pause` apart, until stopped.
struct Counter {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Counted>>,
}

impl Counter {
    fn start(store: &RedisStore, ns: &Namespace, pause: Duration) -> Counter {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, ns, flag) = (store.clone(), ns.clone(), Arc::clone(&stop));
        let handle = tokio::spawn(async move {
            let mut calls = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = store.count(&ns).await;
                calls.push(Counted {
                    started,
                    ended: Instant::now(),
                    result,
                });
                tokio::time::sleep(pause).await;
            }
            calls
        });
        Counter { stop, handle }
    }

    async fn stop(self) -> Vec<Counted> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

/// The `count` calls that overlapped one of `windows` (slots migrating): how many, how many
/// answered exactly `of`, the smallest and largest answers, and the failures by kind.
struct CountFigures {
    calls: usize,
    exact: usize,
    min: Option<u64>,
    max: Option<u64>,
    errors: BTreeMap<&'static str, usize>,
}

fn count_figures(calls: &[Counted], windows: &[(Instant, Instant)], of: u64) -> CountFigures {
    let mut f = CountFigures {
        calls: 0,
        exact: 0,
        min: None,
        max: None,
        errors: BTreeMap::new(),
    };
    let during = calls
        .iter()
        .filter(|c| windows.iter().any(|&(a, b)| c.started <= b && c.ended >= a));
    for c in during {
        f.calls += 1;
        match &c.result {
            Ok(n) => {
                f.exact += usize::from(*n == of);
                f.min = Some(f.min.map_or(*n, |m| m.min(*n)));
                f.max = Some(f.max.map_or(*n, |m| m.max(*n)));
            }
            Err(e) => *f.errors.entry(e.kind().as_str()).or_default() += 1,
        }
    }
    f
}

/// The figures of one scenario, checked.
struct Verdict {
    calls: usize,
    errors_healthy: BTreeMap<&'static str, usize>,
    errors_affected: BTreeMap<&'static str, usize>,
    /// The first few messages of errors on healthy shards.
    healthy_messages: Vec<String>,
    lost: usize,
    wrong: Vec<String>,
}

/// Reads every session back through a fresh store and compares with the logs. `affected`:
/// whether a session's slot was touched by the scenario.
async fn verdict(
    url: &str,
    config: &RedisConfig,
    sessions: &Sessions,
    logs: Vec<TaskLog>,
    affected: impl Fn(u16) -> bool,
) -> Verdict {
    let mut fresh_config = config.clone();
    fresh_config.url = url.to_owned();
    let fresh = connect(fresh_config, sessions.prefix.as_str())
        .await
        .expect("a fresh store connects");
    let mut v = Verdict {
        calls: 0,
        errors_healthy: BTreeMap::new(),
        errors_affected: BTreeMap::new(),
        healthy_messages: Vec::new(),
        lost: 0,
        wrong: Vec::new(),
    };
    for log in logs {
        v.calls += log.outcomes.len();
        v.wrong.extend(log.wrong);
        for o in &log.outcomes {
            if let Some(e) = &o.error {
                let bucket = if affected(sessions.slot(o.index)) {
                    &mut v.errors_affected
                } else {
                    if v.healthy_messages.len() < 3 {
                        v.healthy_messages.push(e.to_string());
                    }
                    &mut v.errors_healthy
                };
                *bucket.entry(e.kind().as_str()).or_default() += 1;
            }
        }
        for (&index, &acked) in &log.acked {
            let stored = fresh.load(&sessions.keys[index]).await.expect("read back");
            let counter = stored.and_then(|r| parse(&r.payload)).map(|(i, c)| {
                assert_eq!(i, index, "session {index} holds another session's payload");
                c
            });
            match counter {
                Some(c) if c >= acked && c <= log.sent[&index] => {}
                Some(c) if c > log.sent[&index] => {
                    v.wrong.push(format!("session {index} holds {c}, never sent"))
                }
                _ => v.lost += 1,
            }
        }
    }
    v
}

fn print(name: &str, v: &Verdict, redirects: (u64, u64), extra: &str) {
    println!(
        "FIGURES cluster-{name}: calls={} lost={} wrong={} errors_healthy={:?} errors_affected={:?} moved={} ask={}{extra}",
        v.calls,
        v.lost,
        v.wrong.len(),
        v.errors_healthy,
        v.errors_affected,
        redirects.0,
        redirects.1,
    );
    for w in v.wrong.iter().take(5) {
        println!("  wrong: {w}");
    }
    for m in &v.healthy_messages {
        println!("  error on a healthy shard: {m}");
    }
}

/// Waits (up to `limit`) until every replica of `master` has acknowledged the master's whole
/// replication stream.
fn wait_replicated(master: &RedisServer, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        let info = match master.cmd(&["INFO", "replication"]) {
            Ok(Reply::Bulk(Some(bytes))) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => String::new(),
        };
        let offset: Option<u64> = info_field(&info, "master_repl_offset").and_then(|v| v.parse().ok());
        // `slave0:ip=…,port=…,state=online,offset=…,lag=…`
        let replicas: Vec<u64> = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        if !replicas.is_empty() && offset.is_some_and(|o| replicas.iter().all(|r| *r >= o)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A master is killed (`kill -9`) under load; its replica takes over. Only the keys of its
/// slots fail meanwhile; every other call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_costs_only_its_slots() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut cluster = start_cluster(1000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Arc::new(Sessions::create(&store, 3_000, 512).await);
    let master = cluster.masters().expect("masters")[0];
    // The sessions created are on the replica before the kill (a write Redis has not replicated
    // yet is lost by a kill -9 whatever the client does: not what this scenario measures).
    wait_replicated(cluster.node(master).expect("the master"), Duration::from_secs(10));
    let load = Load::start(&store, &sessions);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let down = slots_of(master);
    let killed_at = Instant::now();
    cluster.node_mut(master).unwrap().kill9().expect("kill -9");
    cluster
        .wait_for_failover(master, Duration::from_secs(20))
        .expect("replica promoted");
    let promoted_ms = killed_at.elapsed().as_millis();
    // Until the store has the new map, the old master's keys still fail: measure how long.
    let probe = sessions
        .keys
        .iter()
        .enumerate()
        .find(|(i, _)| down.iter().any(|&(a, b)| (a..=b).contains(&sessions.slot(*i))))
        .map(|(i, _)| i)
        .expect("a session on the killed master");
    let mut served_ms = None;
    while killed_at.elapsed() < Duration::from_secs(20) {
        if store.load(&sessions.keys[probe]).await.is_ok() {
            served_ms = Some(killed_at.elapsed().as_millis());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = load.stop().await;

    let url = cluster.url();
    let in_down = |slot: u16| down.iter().any(|&(a, b)| (a..=b).contains(&slot));
    let v = verdict(&url, &config, &sessions, logs, in_down).await;
    let extra = format!(
        " promoted_ms={promoted_ms} served_again_ms={}",
        served_ms.map_or("never".to_owned(), |m| m.to_string())
    );
    print("kill-master", &v, (0, 0), &extra);
    assert!(served_ms.is_some(), "the killed master's keys are served again");
    assert!(v.wrong.is_empty(), "no reply crossed commands: {:?}", v.wrong);
    assert!(
        v.errors_healthy.is_empty(),
        "keys of healthy shards kept working: {:?}",
        v.errors_healthy
    );
    assert!(
        !v.errors_affected.is_empty(),
        "the killed master's keys did fail meanwhile"
    );
    // kill -9 can lose a write the master acknowledged before its replica had it (Redis
    // replicates asynchronously): reported above, not asserted.
}

/// `CLUSTER FAILOVER` on a replica under load: the replica catches up, then takes over.
/// Nothing is lost, nothing crosses, keys of other shards never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_failover_loses_nothing() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster(1000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Arc::new(Sessions::create(&store, 3_000, 512).await);
    let ports = cluster.ports();
    reset_stats(&ports);
    let load = Load::start(&store, &sessions);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let master = cluster.masters().expect("masters")[1];
    let moving = slots_of(master);
    let replica = cluster.replica_of(master).expect("replica");
    let began = Instant::now();
    cluster
        .failover(replica, Duration::from_secs(20))
        .expect("failover completes");
    let took = began.elapsed().as_millis();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let logs = load.stop().await;

    let redirects = redirects(&ports);
    let in_moving = |slot: u16| moving.iter().any(|&(a, b)| (a..=b).contains(&slot));
    let v = verdict(&cluster.url(), &config, &sessions, logs, in_moving).await;
    print(
        "graceful-failover",
        &v,
        redirects,
        &format!(" failover_ms={took}"),
    );
    assert_eq!(v.lost, 0, "no acknowledged write lost");
    assert!(v.wrong.is_empty(), "no reply crossed commands: {:?}", v.wrong);
    assert!(
        v.errors_healthy.is_empty(),
        "keys of other shards kept working: {:?}",
        v.errors_healthy
    );
}

/// A master is added and slots are rebalanced onto it, then it is drained and removed, all
/// under load: keys move with their slots (MIGRATE, ASK, MOVED). No call fails, nothing is
/// lost or crossed, and `count` is exact afterwards. Meanwhile `count` of a namespace whose
/// sessions nothing writes is called over and over: every answer while slots migrate must be
/// exact (`count_during`: calls overlapping a migration, `exact`: those that answered `of`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resharding_under_load_fails_nothing() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut cluster = start_cluster(5000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Arc::new(Sessions::create(&store, 3_000, 512).await);
    let ns = Namespace::new("shard").unwrap();
    let untouched = create_untouched(&store, UNTOUCHED).await;
    let load = Load::start(&store, &sessions);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let added = cluster.add_master().expect("a fourth master joins");
    let ports = cluster.ports();
    reset_stats(&ports);
    // 100 ms apart: each call scans every key of every primary; more often would add load the
    // two cores cannot spare (a busy core times calls out, and slows the migration).
    let counter = Counter::start(&store, &untouched, Duration::from_millis(100));
    let rebalance_began = Instant::now();
    if let Err(e) = cluster.rebalance(Duration::from_secs(120)) {
        for port in cluster.ports() {
            println!("LOG {port}:\n{}", cluster.node(port).unwrap().log_tail(15));
        }
        panic!("rebalanced onto it: {e}");
    }
    let moved_in = slots_of(added)
        .iter()
        .map(|&(a, b)| usize::from(b - a) + 1)
        .sum::<usize>();
    let rebalanced = (rebalance_began, Instant::now());
    let count_after_add = store.count(&ns).await.expect("count after add");
    let redirects_in = redirects(&ports);
    let remove_began = Instant::now();
    cluster
        .remove_master(added, Duration::from_secs(120))
        .expect("drained and removed");
    let removed = (remove_began, Instant::now());
    let count_after_remove = store.count(&ns).await.expect("count after remove");
    let counted = counter.stop().await;
    let untouched_after = store
        .count(&untouched)
        .await
        .expect("count of the untouched namespace");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = load.stop().await;
    let during = count_figures(&counted, &[rebalanced, removed], UNTOUCHED as u64);

    let remaining: Vec<u16> = cluster.ports();
    let redirects_out = redirects(&remaining);
    let v = verdict(&cluster.url(), &config, &sessions, logs, |_| false).await;
    let extra = format!(
        " slots_moved_in={moved_in} count_after_add={count_after_add} count_after_remove={count_after_remove} \
         of={} redirects_in=({},{}) count_during={} exact={} min={} max={} of={UNTOUCHED} count_errors={:?} \
         count_untouched_after={untouched_after} rebalance_ms={} remove_ms={}",
        sessions.keys.len(),
        redirects_in.0,
        redirects_in.1,
        during.calls,
        during.exact,
        during.min.map_or("none".to_owned(), |n| n.to_string()),
        during.max.map_or("none".to_owned(), |n| n.to_string()),
        during.errors,
        (rebalanced.1 - rebalanced.0).as_millis(),
        (removed.1 - removed.0).as_millis(),
    );
    print("reshard", &v, redirects_out, &extra);
    assert!(moved_in > 0, "slots moved onto the new master");
    assert_eq!(v.lost, 0, "no acknowledged write lost");
    assert!(v.wrong.is_empty(), "no reply crossed commands: {:?}", v.wrong);
    assert!(
        v.errors_healthy.is_empty(),
        "no call failed while slots moved: {:?}",
        v.errors_healthy
    );
    assert_eq!(
        count_after_add,
        sessions.keys.len() as u64,
        "count exact after the add"
    );
    assert_eq!(
        count_after_remove,
        sessions.keys.len() as u64,
        "count exact after the removal"
    );
    assert_eq!(
        untouched_after, UNTOUCHED as u64,
        "count of the untouched namespace exact after"
    );
    assert!(during.calls > 0, "count was called while slots migrated");
    assert!(
        during.errors.is_empty(),
        "count did not fail while slots migrated: {:?}",
        during.errors
    );
    assert_eq!(
        during.exact, during.calls,
        "count exact on every call while slots migrated (min {:?}, max {:?}, of {UNTOUCHED})",
        during.min, during.max
    );
}

/// Moves `slot` key by key (`MIGRATE` of each of `keys`) from its owner to another master and
/// back, `rounds` times (an odd count leaves it on the other master).
async fn migrate_back_and_forth(
    cluster: &Cluster,
    masters: Vec<u16>,
    slot: u16,
    keys: Vec<String>,
    rounds: usize,
) {
    let first = *masters
        .iter()
        .find(|&&m| slots_of(m).iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .expect("the slot's owner");
    let second = *masters.iter().find(|&&m| m != first).expect("another master");
    let ids = (cluster.node_id(first).unwrap(), cluster.node_id(second).unwrap());
    tokio::task::spawn_blocking(move || {
        let ok = |port: u16, args: &[&str]| {
            let reply = resp::command(port, args).expect("command sent");
            assert!(!matches!(reply, Reply::Error(_)), "{args:?} on {port}: {reply:?}");
        };
        let slot = slot.to_string();
        for round in 0..rounds {
            let ((source, source_id), (target, target_id)) = if round % 2 == 0 {
                ((first, &ids.0), (second, &ids.1))
            } else {
                ((second, &ids.1), (first, &ids.0))
            };
            ok(target, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", source_id]);
            ok(source, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", target_id]);
            for key in &keys {
                ok(
                    source,
                    &["MIGRATE", "127.0.0.1", &target.to_string(), key, "0", "5000"],
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            for &m in &masters {
                ok(m, &["CLUSTER", "SETSLOT", &slot, "NODE", target_id]);
            }
        }
    })
    .await
    .unwrap();
}

/// `count` of a namespace nothing writes, called over and over while the one slot holding all
/// its 200 sessions is migrated key by key (`MIGRATE`) from its owner to another master and
/// back, several times: every answer must be 200.
///
/// Scanning each primary on its own is not enough: a key `MIGRATE`d from the source to the
/// target after the source's scan passed it and before the target's scan reached it would be
/// counted twice, one moved the other way round not at all. `count` reads the slot's keys on
/// the source, then on the target, and counts them once by name (see `count_cluster` in
/// session-redis's `ops.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn count_is_exact_while_a_slot_migrates() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster(5000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Sessions::create_in_one_slot(&store, 200, 64).await;
    let ns = Namespace::new("shard").unwrap();
    let of = sessions.keys.len() as u64;
    assert_eq!(store.count(&ns).await.expect("count before"), of);
    let slot = sessions.slot(0);
    let masters = cluster.masters().expect("masters");

    let counter = Counter::start(&store, &ns, Duration::from_millis(5));
    let began = Instant::now();
    let rounds = 6;
    migrate_back_and_forth(&cluster, masters, slot, sessions.full.clone(), rounds).await;
    let migrating = (began, Instant::now());
    let counted = counter.stop().await;
    let after = store.count(&ns).await.expect("count after");
    let during = count_figures(&counted, &[migrating], of);
    println!(
        "FIGURES cluster-count-migrating: count_during={} exact={} min={} max={} of={of} count_errors={:?} \
         count_after={after} migrations={rounds} migrating_ms={}",
        during.calls,
        during.exact,
        during.min.map_or("none".to_owned(), |n| n.to_string()),
        during.max.map_or("none".to_owned(), |n| n.to_string()),
        during.errors,
        (migrating.1 - migrating.0).as_millis(),
    );
    assert_eq!(after, of, "count exact after the migrations");
    assert!(
        during.errors.is_empty(),
        "count did not fail: {:?}",
        during.errors
    );
    assert_eq!(
        during.exact, during.calls,
        "count exact on every call while the slot migrated (min {:?}, max {:?}, of {of})",
        during.min, during.max
    );
}

/// Every session of a complete scan (`limit` per page), each once; the scan's error if a page
/// was refused.
async fn scan_all(store: &RedisStore, limit: usize) -> session_core::Result<HashSet<SessionKey>> {
    let mut listed = HashSet::new();
    let mut cursor = None;
    loop {
        let page = store.scan(cursor.as_ref(), limit).await?;
        for (key, _) in page.sessions {
            assert!(listed.insert(key), "a session listed twice by one scan");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(listed),
        }
    }
}

/// `scan` over and over while the one slot holding 200 of its 300 sessions is migrated key by
/// key (`MIGRATE`) from its owner to another master and back, several times: every scan that
/// completes lists each session exactly once; the others are refused (`Backend`: a slot began
/// to move since the previous page, start again; `Unavailable`: a slot is moving, try later),
/// never answered with a session missed or listed twice. Scanning each primary in turn is not
/// enough on its own: a key moved from a primary not scanned yet to one already scanned would
/// be missed (and the other way round listed twice), so each page checks the migration markers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_lists_each_session_once_or_refuses_while_a_slot_migrates() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster(5000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let moving = Sessions::create_in_one_slot(&store, 200, 64).await;
    let spread = Sessions::create(&store, 100, 64).await;
    let all: HashSet<SessionKey> = moving.keys.iter().chain(&spread.keys).cloned().collect();
    assert_eq!(scan_all(&store, 10).await.expect("scan before"), all);
    let slot = moving.slot(0);
    let masters = cluster.masters().expect("masters");

    let stop = Arc::new(AtomicBool::new(false));
    let scanner = tokio::spawn({
        let (store, all, stop) = (store.clone(), all.clone(), Arc::clone(&stop));
        async move {
            let (mut complete, mut restart, mut later) = (0u32, 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                match scan_all(&store, 10).await {
                    Ok(listed) => {
                        assert_eq!(listed.len(), all.len(), "a complete scan missed sessions");
                        assert_eq!(listed, all, "a complete scan listed other sessions");
                        complete += 1;
                    }
                    Err(Error::Backend { message, .. }) => {
                        assert!(message.contains("start the scan again"), "{message}");
                        restart += 1;
                    }
                    Err(Error::Unavailable { .. }) => {
                        later += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("scan failed: {e}"),
                }
            }
            (complete, restart, later)
        }
    });
    let began = Instant::now();
    let rounds = 4;
    migrate_back_and_forth(&cluster, masters, slot, moving.full.clone(), rounds).await;
    let migrating_ms = began.elapsed().as_millis();
    stop.store(true, Ordering::Relaxed);
    let (complete, restart, later) = scanner.await.expect("the scanner's scans were right");
    let after = scan_all(&store, 10).await.expect("scan after");
    println!(
        "FIGURES cluster-scan-migrating: scans_complete={complete} refused_start_again={restart} \
         refused_try_later={later} sessions={} migrations={rounds} migrating_ms={migrating_ms}",
        all.len()
    );
    assert_eq!(after, all, "a scan after the migrations lists every session once");
    assert!(restart + later > 0, "some scan met a migration");
}

/// A scan's next page, waiting out `Unavailable` (a failover being finished) with the same
/// cursor.
async fn next_page(
    store: &RedisStore,
    cursor: Option<&session_core::ScanCursor>,
    limit: usize,
) -> session_core::Result<session_core::ScanPage> {
    let began = Instant::now();
    loop {
        match store.scan(cursor, limit).await {
            Err(Error::Unavailable { .. }) if began.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// A graceful `CLUSTER FAILOVER` during a scan: of a primary the scan is not on, the scan goes
/// on (the promoted replica serves the same slots and holds the same keys) and lists every
/// session once; of the primary it is on, once the old master is a replica the next page is
/// `Error::Backend` (Redis's cursor means nothing on another server): start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_survives_the_failover_of_another_primary_only() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster(1000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Sessions::create(&store, 300, 64).await;
    let all: HashSet<SessionKey> = sessions.keys.iter().cloned().collect();
    let serving = |slot: u16| {
        *cluster
            .masters()
            .expect("masters")
            .iter()
            .find(|&&m| slots_of(m).iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .expect("the slot's owner")
    };

    // The walk begins on the primary of slot 0; the one of slot 16383 comes last.
    let mut listed = HashSet::new();
    let first = next_page(&store, None, 10).await.expect("first page");
    listed.extend(first.sessions.into_iter().map(|(k, _)| k));
    let mut cursor = first.next;
    let last = serving(16_383);
    let replica = cluster.replica_of(last).expect("replica");
    cluster
        .failover(replica, Duration::from_secs(20))
        .expect("failover completes");
    while let Some(at) = cursor {
        let page = next_page(&store, Some(&at), 10)
            .await
            .expect("a failover of another primary does not stop the scan");
        for (key, _) in page.sessions {
            assert!(listed.insert(key), "a session listed twice");
        }
        cursor = page.next;
    }
    assert_eq!(listed, all, "every session listed once across the failover");

    let first = next_page(&store, None, 10).await.expect("first page");
    let at = first.next.expect("300 sessions take several pages");
    let scanned = serving(0);
    let replica = cluster.replica_of(scanned).expect("replica");
    cluster
        .failover(replica, Duration::from_secs(20))
        .expect("failover completes");
    // Until the old master hears of its replacement it still serves its slots, from the very
    // process the cursor names: the scan may go on there. Once it is a replica it may not.
    let demoted = Instant::now();
    while resp::command(scanned, &["ROLE"])
        .ok()
        .and_then(|r| r.items().first()?.text())
        .as_deref()
        != Some("slave")
    {
        assert!(
            demoted.elapsed() < Duration::from_secs(20),
            "the old master is demoted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match next_page(&store, Some(&at), 10).await {
        Err(e @ Error::Backend { .. }) => assert!(e.to_string().contains("failover"), "{e}"),
        other => panic!("a cursor of the primary that was failed over: {other:?}"),
    }
    println!(
        "FIGURES cluster-scan-failover: sessions={} listed_across_failover={}",
        all.len(),
        listed.len()
    );
}

/// One slot is held half-migrated for two seconds (`MIGRATING` on its owner, `IMPORTING` on
/// another master, half its keys moved) with 64 KiB sessions under load, then the migration
/// finishes. Every call on its keys succeeds: moved keys through `ASK`, the rest on the owner;
/// nothing is lost or crossed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_held_open_serves_every_key() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let cluster = start_cluster(5000);
    let config = config(cluster.url());
    let store = connect(config.clone(), &random_prefix()).await.expect("connects");
    let sessions = Arc::new(Sessions::create_in_one_slot(&store, 48, 64 * 1024).await);
    let slot = sessions.slot(0);
    let masters = cluster.masters().expect("masters");
    let source = *masters
        .iter()
        .find(|&&m| slots_of(m).iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .expect("the slot's owner");
    let target = *masters.iter().find(|&&m| m != source).expect("another master");
    let (source_id, target_id) = (cluster.node_id(source).unwrap(), cluster.node_id(target).unwrap());
    let slot_arg = slot.to_string();
    let ok = |port: u16, args: &[&str]| {
        let reply = resp::command(port, args).expect("command sent");
        assert!(!matches!(reply, Reply::Error(_)), "{args:?} on {port}: {reply:?}");
    };
    reset_stats(&cluster.ports());
    ok(
        target,
        &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &source_id],
    );
    ok(
        source,
        &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &target_id],
    );
    let migrate = |keys: &[String]| {
        for key in keys {
            let reply = resp::command(
                source,
                &["MIGRATE", "127.0.0.1", &target.to_string(), key, "0", "5000"],
            )
            .expect("MIGRATE sent");
            // NOKEY: the session was just moved by a write that followed ASK.
            assert!(
                !matches!(&reply, Reply::Error(e) if !e.starts_with("NOKEY")),
                "MIGRATE {key}: {reply:?}"
            );
        }
    };
    let half = sessions.full.len() / 2;
    migrate(&sessions.full[..half]);

    let load = Load::start(&store, &sessions);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A new session and a rotate in the half-moved slot.
    let extra_key = loop {
        let key = SessionKey::new(Namespace::new("shard").unwrap(), SessionId::generate().unwrap());
        if redis_keyslot(store.key_prefix().render(&key).as_bytes()) == slot {
            break key;
        }
    };
    store
        .create(&extra_key, &record(0, 0, 1024))
        .await
        .expect("create in a migrating slot");
    let rotated = SessionId::generate().unwrap();
    store
        .rotate(&extra_key, &rotated)
        .await
        .expect("rotate in a migrating slot");

    migrate(&sessions.full[half..]);
    for &m in &masters {
        ok(m, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &target_id]);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = load.stop().await;

    let redirects = redirects(&cluster.ports());
    let v = verdict(&cluster.url(), &config, &sessions, logs, |_| false).await;
    let moved = SessionKey::new(Namespace::new("shard").unwrap(), rotated);
    let rotated_found = store.load(&moved).await.expect("load rotated").is_some();
    print(
        "migration-held",
        &v,
        redirects,
        &format!(" session_bytes={} rotated_found={rotated_found}", 64 * 1024),
    );
    assert!(rotated_found, "the rotated session is under its new id");
    assert!(
        redirects.1 > 0,
        "calls were redirected with ASK while the slot was half-moved"
    );
    assert_eq!(v.lost, 0, "no acknowledged write lost");
    assert!(v.wrong.is_empty(), "no reply crossed commands: {:?}", v.wrong);
    assert!(
        v.errors_healthy.is_empty(),
        "every call on the moving keys succeeded: {:?}",
        v.errors_healthy
    );
}
