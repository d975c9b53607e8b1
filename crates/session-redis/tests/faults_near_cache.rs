//! The near cache with two instances under concurrent load, and under faults: every read
//! checked against the history of acknowledged writes.
//!
//! Instances A and B (each a `RedisStore` with the near cache on, each through its own
//! [`FaultProxy`] on a standalone server) run tasks that load one of a few hot sessions and,
//! one time in ten, write it with `save_if` based on what they read; a session's payload is a
//! counter, one more than the value the write was based on. Every call is recorded. Checks:
//!
//! * `stale_after_sync`: a checker notes the newest acknowledged counter of a session, calls
//!   `sync_near_cache()` on the other instance (every invalidation sent before it applied) and
//!   loads: an older value is a stale read after the invalidation was delivered. Must be 0.
//! * `stale_reads` / `staleness_max_ms`: reads that returned an older counter than one
//!   acknowledged before the read began, and by how much. A cached copy is served only under a
//!   lease that a heartbeat answered within `max_stale` renews, so staleness is below
//!   `heartbeat_ms + max_stale_ms` whatever the network does. Asserted.
//! * `lost_updates`: two acknowledged writes of the same counter (two `save_if`s based on the
//!   same read both succeeded), or Redis ending below the newest acknowledged counter. Must be 0:
//!   a stale read can only lead to `Conflict`.
//! * `window_ms p50/p99/max`: from the acknowledgement of a write by one instance to the end of
//!   the other instance's first read, begun after it, that returned it (or newer).
//!
//! Scenarios: steady load; the tracking connection of A held by the proxy (its invalidations
//! delayed) and released; Redis killed (`kill -9`) and restarted empty, and `FLUSHALL`; a
//! graceful sentinel failover and a graceful cluster failover under load, and a cluster master
//! killed (after recovery, every read equals what the new primary holds); A's readers dropped
//! by Redis with the close held (its cache stops within the bound). Each prints one
//! `FIGURES near-…` line. Only with `SESSION_TEST_FAULTS=1` (the `faults` cell).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_redis::{NearCacheConfig, RedisConfig, RedisStore};
use testkit_redis::resp::Reply;
use testkit_redis::{
    faults_enabled, Cluster, Direction, FaultProxy, Mode, RedisServer, Sentinel, TopologyOptions,
};

const HOUR_MS: u64 = 3_600_000;
const HEARTBEAT_MS: u64 = 100;
const MAX_STALE_MS: u64 = 200;
/// Sessions all tasks share (a hot set).
const HOT: usize = 16;
const TASKS_PER_INSTANCE: usize = 6;
const LIMIT: Duration = Duration::from_secs(30);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String, timeout_ms: u64) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = timeout_ms;
    c.unresponsive_timeout_ms = 5_000.max(timeout_ms);
    c.connect_timeout_ms = 5_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c.near_cache = NearCacheConfig::enabled();
    c.near_cache.heartbeat_ms = HEARTBEAT_MS;
    c.near_cache.max_stale_ms = MAX_STALE_MS;
    c
}

async fn connect(config: RedisConfig, prefix: &str) -> RedisStore {
    let store = RedisStore::builder(config)
        .options(StoreOptions::new(KeyPrefix::new(prefix).unwrap()))
        .connect()
        .await
        .expect("store connects");
    let started = Instant::now();
    while !store.near_cache_stats().unwrap().serving {
        assert!(started.elapsed() < LIMIT, "the near cache serves");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}

fn random_prefix() -> String {
    let id = SessionId::generate().unwrap();
    let short: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("n{short}:")
}

fn counter_record(counter: u64) -> Record {
    Record::new(CodecId::RAW, counter.to_string().into_bytes(), now_ms() + HOUR_MS)
}

fn counter_of(record: &Record) -> u64 {
    std::str::from_utf8(&record.payload).unwrap().parse().unwrap()
}

fn keys() -> Vec<SessionKey> {
    let ns = Namespace::new("near").unwrap();
    (0..HOT)
        .map(|_| SessionKey::new(ns.clone(), SessionId::generate().unwrap()))
        .collect()
}

#[derive(Clone, Copy)]
struct Read {
    instance: usize,
    key: usize,
    counter: u64,
    invoked: Instant,
    done: Instant,
}

#[derive(Clone, Copy)]
struct Write {
    instance: usize,
    key: usize,
    counter: u64,
    acked: Instant,
}

#[derive(Default)]
struct Log {
    reads: Vec<Read>,
    writes: Vec<Write>,
    conflicts: u64,
    failed: u64,
}

/// The newest acknowledged counter of each session (for the sync checker).
struct Newest(Vec<AtomicU64>);

async fn task(
    instance: usize,
    seed: u64,
    store: RedisStore,
    keys: Arc<Vec<SessionKey>>,
    newest: Arc<Newest>,
    stop: Arc<AtomicBool>,
) -> Log {
    let mut log = Log::default();
    let mut x = seed | 1;
    while !stop.load(Ordering::Relaxed) {
        // xorshift: which session, and whether to write.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let key = (x % HOT as u64) as usize;
        let invoked = Instant::now();
        let loaded = store.load(&keys[key]).await;
        let done = Instant::now();
        let record = match loaded {
            Ok(Some(record)) => record,
            Ok(None) => panic!("session {key} is missing"),
            Err(_) => {
                log.failed += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let counter = counter_of(&record);
        log.reads.push(Read {
            instance,
            key,
            counter,
            invoked,
            done,
        });
        if !x.is_multiple_of(10) {
            continue;
        }
        match store
            .save_if(&keys[key], record.meta.version, &counter_record(counter + 1))
            .await
        {
            Ok(_) => {
                let acked = Instant::now();
                newest.0[key].fetch_max(counter + 1, Ordering::SeqCst);
                log.writes.push(Write {
                    instance,
                    key,
                    counter: counter + 1,
                    acked,
                });
            }
            Err(Error::Conflict { .. }) => log.conflicts += 1,
            Err(_) => log.failed += 1,
        }
    }
    log
}

/// Notes the newest acknowledged counter, syncs the instance's near cache, loads: never older.
async fn checker(
    stores: [RedisStore; 2],
    keys: Arc<Vec<SessionKey>>,
    newest: Arc<Newest>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut checks, mut stale) = (0u64, 0u64);
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = i % HOT;
        let store = &stores[i % 2];
        let floor = newest.0[key].load(Ordering::SeqCst);
        store.sync_near_cache().await;
        if let Ok(Some(record)) = store.load(&keys[key]).await {
            checks += 1;
            if counter_of(&record) < floor {
                stale += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    (checks, stale)
}

struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Log>>,
    checker: tokio::task::JoinHandle<(u64, u64)>,
}

impl Workload {
    async fn start(stores: [RedisStore; 2], keys: &Arc<Vec<SessionKey>>) -> Workload {
        for key in keys.iter() {
            stores[0].create(key, &counter_record(0)).await.unwrap();
        }
        let newest = Arc::new(Newest((0..HOT).map(|_| AtomicU64::new(0)).collect()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (instance, store) in stores.iter().enumerate() {
            for t in 0..TASKS_PER_INSTANCE {
                tasks.push(tokio::spawn(task(
                    instance,
                    0x9E37_79B9_7F4A_7C15 ^ ((instance * 100 + t) as u64).wrapping_mul(0x1000_0000_01B3),
                    store.clone(),
                    Arc::clone(keys),
                    Arc::clone(&newest),
                    Arc::clone(&stop),
                )));
            }
        }
        let checker = tokio::spawn(checker(stores, Arc::clone(keys), newest, Arc::clone(&stop)));
        Workload { stop, tasks, checker }
    }

    async fn stop(self) -> (Log, (u64, u64)) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Log::default();
        for t in self.tasks {
            let log = t.await.expect("a task panicked");
            all.reads.extend(log.reads);
            all.writes.extend(log.writes);
            all.conflicts += log.conflicts;
            all.failed += log.failed;
        }
        (all, self.checker.await.unwrap())
    }
}

struct Verdict {
    reads: usize,
    writes: usize,
    stale_reads: usize,
    staleness_max_ms: f64,
    lost_updates: usize,
    window: [f64; 3],
    hit_ratio: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Compares the history with itself and with the final values (`finals`: the counter Redis
/// holds for each session, read directly).
fn verdict(log: &Log, finals: &[u64], hit_ratio: f64) -> Verdict {
    let mut by_key: Vec<Vec<Write>> = vec![Vec::new(); HOT];
    for w in &log.writes {
        by_key[w.key].push(*w);
    }
    let mut lost_updates = 0;
    for (key, writes) in by_key.iter_mut().enumerate() {
        writes.sort_by_key(|w| w.counter);
        lost_updates += writes.windows(2).filter(|p| p[0].counter == p[1].counter).count();
        if writes.last().is_some_and(|w| finals[key] < w.counter) {
            lost_updates += 1;
        }
    }
    // Staleness: a read older than a write acknowledged before it began.
    let mut stale_reads = 0;
    let mut staleness_max = Duration::ZERO;
    for r in &log.reads {
        let first_newer_acked = by_key[r.key]
            .iter()
            .filter(|w| w.counter > r.counter && w.acked < r.invoked)
            .map(|w| w.acked)
            .min();
        if let Some(acked) = first_newer_acked {
            stale_reads += 1;
            staleness_max = staleness_max.max(r.invoked - acked);
        }
    }
    // Window: a write by one instance until the other's first read that returned it.
    let mut reads_by_key: Vec<Vec<Read>> = vec![Vec::new(); HOT];
    for r in &log.reads {
        reads_by_key[r.key].push(*r);
    }
    for reads in &mut reads_by_key {
        reads.sort_by_key(|r| r.invoked);
    }
    let mut windows: Vec<f64> = log
        .writes
        .iter()
        .filter_map(|w| {
            reads_by_key[w.key]
                .iter()
                .find(|r| r.instance != w.instance && r.invoked >= w.acked && r.counter >= w.counter)
                .map(|r| (r.done - w.acked).as_secs_f64() * 1e3)
        })
        .collect();
    windows.sort_by(f64::total_cmp);
    Verdict {
        reads: log.reads.len(),
        writes: log.writes.len(),
        stale_reads,
        staleness_max_ms: staleness_max.as_secs_f64() * 1e3,
        lost_updates,
        window: [
            percentile(&windows, 0.5),
            percentile(&windows, 0.99),
            windows.last().copied().unwrap_or(0.0),
        ],
        hit_ratio,
    }
}

fn hit_ratio(stores: &[RedisStore]) -> f64 {
    let (mut hits, mut misses) = (0u64, 0u64);
    for s in stores {
        let n = s.near_cache_stats().unwrap();
        hits += n.hits;
        misses += n.misses;
    }
    hits as f64 / (hits + misses).max(1) as f64
}

/// Prints the line and asserts what must hold in every scenario.
fn report(name: &str, v: &Verdict, checks: (u64, u64), log: &Log, extra: &str) {
    println!(
        "FIGURES near-{name}: reads={} writes={} conflicts={} failed={} sync_checks={} stale_after_sync={} \
         stale_reads={} staleness_max_ms={:.1} lost_updates={} window_ms p50={:.2} p99={:.2} max={:.2} \
         hit_ratio={:.3}{extra}",
        v.reads,
        v.writes,
        log.conflicts,
        log.failed,
        checks.0,
        checks.1,
        v.stale_reads,
        v.staleness_max_ms,
        v.lost_updates,
        v.window[0],
        v.window[1],
        v.window[2],
        v.hit_ratio,
    );
    assert!(v.reads > 1_000 && v.writes > 50, "{name}: the load ran");
    assert!(checks.0 > 50, "{name}: the checker ran");
    assert_eq!(
        checks.1, 0,
        "{name}: a stale read after the invalidation was delivered"
    );
    assert_eq!(v.lost_updates, 0, "{name}: a lost update");
    let bound = (HEARTBEAT_MS + MAX_STALE_MS + 2) as f64;
    assert!(
        v.staleness_max_ms < bound,
        "{name}: a read {:.1} ms stale (bound {bound} ms)",
        v.staleness_max_ms
    );
}

/// The counters a standalone server holds for `keys`, read directly.
fn finals_standalone(server: &RedisServer, prefix: &str, keys: &[SessionKey]) -> Vec<u64> {
    keys.iter()
        .map(|k| {
            match server
                .cmd(&["GET", &format!("{prefix}near:{}", k.id.as_str())])
                .unwrap()
            {
                Reply::Bulk(Some(bytes)) => counter_of(&Record::decode(&bytes.into(), "near").unwrap()),
                other => panic!("GET answered {other:?}"),
            }
        })
        .collect()
}

/// The proxy connection of the store's near-cache tracker (found by its client name).
fn tracker_connection(server: &RedisServer, proxy: &FaultProxy) -> u64 {
    let list = match server.cmd(&["CLIENT", "LIST"]).unwrap() {
        Reply::Bulk(Some(bytes)) => String::from_utf8(bytes).unwrap(),
        Reply::Status(s) => s,
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    let addrs: Vec<String> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "name=session-near-cache"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("addr="))
                .map(str::to_owned)
        })
        .collect();
    proxy
        .connections()
        .into_iter()
        .find(|c| c.upstream_local.is_some_and(|a| addrs.contains(&a.to_string())))
        .map(|c| c.id)
        .expect("the tracker's connection goes through this proxy")
}

struct Standalone {
    server: RedisServer,
    proxies: [FaultProxy; 2],
    stores: [RedisStore; 2],
    prefix: String,
}

async fn standalone() -> Standalone {
    let server = RedisServer::start().expect("redis-server starts");
    let upstream = ([127, 0, 0, 1], server.port()).into();
    let proxies = [
        FaultProxy::start(upstream).unwrap(),
        FaultProxy::start(upstream).unwrap(),
    ];
    let prefix = random_prefix();
    let a = connect(config(proxies[0].url(), 250), &prefix).await;
    let b = connect(config(proxies[1].url(), 250), &prefix).await;
    Standalone {
        server,
        proxies,
        stores: [a, b],
        prefix,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_under_load_never_read_what_was_replaced() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = standalone().await;
    let keys = Arc::new(keys());
    let load = Workload::start(s.stores.clone(), &keys).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (log, checks) = load.stop().await;
    let v = verdict(
        &log,
        &finals_standalone(&s.server, &s.prefix, &keys),
        hit_ratio(&s.stores),
    );
    report("steady", &v, checks, &log, "");
    assert!(
        v.hit_ratio > 0.3,
        "the cache answers most reads: {:.3}",
        v.hit_ratio
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_tracking_connection_stops_the_cache_within_its_bound() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = standalone().await;
    let keys = Arc::new(keys());
    let load = Workload::start(s.stores.clone(), &keys).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resets_before = s.stores[0].near_cache_stats().unwrap().resets;
    let held = tracker_connection(&s.server, &s.proxies[0]);
    s.proxies[0].set_mode(held, Mode::Hold(Direction::Both)).unwrap();
    let held_at = Instant::now();
    let mut stopped_ms = None;
    while held_at.elapsed() < Duration::from_millis(1_500) {
        if stopped_ms.is_none() && !s.stores[0].near_cache_stats().unwrap().serving {
            stopped_ms = Some(held_at.elapsed().as_millis());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.proxies[0].set_mode(held, Mode::Pass).unwrap();
    let released = Instant::now();
    while !s.stores[0].near_cache_stats().unwrap().serving {
        assert!(released.elapsed() < LIMIT, "the cache serves again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let serving_again_ms = released.elapsed().as_millis();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (log, checks) = load.stop().await;
    let v = verdict(
        &log,
        &finals_standalone(&s.server, &s.prefix, &keys),
        hit_ratio(&s.stores),
    );
    let resets = s.stores[0].near_cache_stats().unwrap().resets - resets_before;
    let stopped_ms = stopped_ms.expect("the cache stopped serving while its stream was held");
    report(
        "held-tracker",
        &v,
        checks,
        &log,
        &format!(" stopped_serving_ms={stopped_ms} serving_again_ms={serving_again_ms} resets={resets}"),
    );
    assert!(
        stopped_ms <= u128::from(HEARTBEAT_MS + MAX_STALE_MS) + 50,
        "stopped serving {stopped_ms} ms after the hold"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_empty_redis_and_a_flush_leave_nothing_cached() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut s = standalone().await;
    let keys = keys();
    let [a, b] = &s.stores;
    for key in &keys {
        b.create(key, &counter_record(1)).await.unwrap();
    }
    a.sync_near_cache().await;
    for key in &keys {
        assert!(a.load(key).await.unwrap().is_some());
    }
    let cached = a.near_cache_stats().unwrap().entries;
    assert_eq!(cached as usize, keys.len(), "all cached before the kill");

    s.server.kill9().expect("kill -9");
    let killed = Instant::now();
    // While Redis is down: nothing is served past the lease.
    let mut served_while_down = 0;
    let mut served_late = 0;
    while killed.elapsed() < Duration::from_millis(800) {
        for key in &keys {
            if let Ok(Some(_)) = a.load(key).await {
                served_while_down += 1;
                if killed.elapsed() > Duration::from_millis(HEARTBEAT_MS + MAX_STALE_MS + 2) {
                    served_late += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.server.restart().expect("redis-server restarts");
    let restarted = Instant::now();
    while !a.near_cache_stats().unwrap().serving {
        assert!(restarted.elapsed() < LIMIT, "the cache serves again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let serving_again_ms = restarted.elapsed().as_millis();
    let mut served_after_restart = 0;
    for key in &keys {
        loop {
            match a.load(key).await {
                Ok(Some(_)) => {
                    served_after_restart += 1;
                    break;
                }
                Ok(None) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    // A flush: everything cached goes. (A's tracker may be back before its pooled
    // connections, whose reconnection backs off up to 2 s: a miss needs them.)
    assert!(b.wait_connected(LIMIT).await, "B reconnects");
    assert!(a.wait_connected(LIMIT).await, "A reconnects");
    for key in &keys {
        b.create(key, &counter_record(2)).await.unwrap();
    }
    a.sync_near_cache().await;
    for key in &keys {
        assert!(a.load(key).await.unwrap().is_some());
    }
    let Reply::Status(ok) = s.server.cmd(&["FLUSHALL"]).unwrap() else {
        panic!("FLUSHALL failed")
    };
    assert_eq!(ok, "OK");
    a.sync_near_cache().await;
    let mut served_after_flush = 0;
    for key in &keys {
        if a.load(key).await.unwrap().is_some() {
            served_after_flush += 1;
        }
    }
    println!(
        "FIGURES near-restart-and-flush: cached={cached} served_while_down={served_while_down} \
         served_past_lease={served_late} serving_again_ms={serving_again_ms} \
         served_after_restart={served_after_restart} served_after_flush={served_after_flush}"
    );
    assert_eq!(served_late, 0, "served past the lease while Redis was down");
    assert_eq!(
        served_after_restart, 0,
        "served sessions a restarted empty Redis lost"
    );
    assert_eq!(served_after_flush, 0, "served sessions FLUSHALL removed");
}

/// Reads through `a` after `b` wrote every session once more (recovery over), each compared
/// with `b`'s acknowledged value: the stale reads after recovery.
async fn stale_after_recovery(a: &RedisStore, b: &RedisStore, keys: &[SessionKey]) -> (usize, u128) {
    let mut written = Vec::new();
    for key in keys {
        let started = Instant::now();
        loop {
            let current = b.load(key).await;
            let next = match current {
                Ok(Some(r)) => counter_of(&r) + 1_000,
                Ok(None) => 1_000_000,
                Err(_) => {
                    assert!(started.elapsed() < LIMIT, "B writes again");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if b.save(key, &counter_record(next)).await.is_ok() {
                written.push(next);
                break;
            }
            assert!(started.elapsed() < LIMIT, "B writes again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let acked = Instant::now();
    // Without a sync: the first fresh read of each, by the invalidation alone.
    let mut fresh_ms = 0;
    for (key, &value) in keys.iter().zip(&written) {
        loop {
            if let Ok(Some(r)) = a.load(key).await {
                if counter_of(&r) >= value {
                    break;
                }
            }
            assert!(acked.elapsed() < LIMIT, "A reads B's writes");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    fresh_ms = fresh_ms.max(acked.elapsed().as_millis());
    a.sync_near_cache().await;
    let mut stale = 0;
    for (key, &value) in keys.iter().zip(&written) {
        match a.load(key).await {
            Ok(Some(r)) if counter_of(&r) >= value => {}
            _ => stale += 1,
        }
    }
    (stale, fresh_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_sentinel_failover_under_load() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut sentinel = Sentinel::start_with(&TopologyOptions::new()).expect("sentinel topology starts");
    let prefix = random_prefix();
    let a = connect(config(sentinel.url(), 1_000), &prefix).await;
    let b = connect(config(sentinel.url(), 1_000), &prefix).await;
    let keys = Arc::new(keys());
    let load = Workload::start([a.clone(), b.clone()], &keys).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = sentinel.current_master().unwrap();
    let failover_at = Instant::now();
    let new = sentinel.failover(LIMIT).expect("the sentinels fail over");
    sentinel
        .wait_replica_of(old, new, LIMIT)
        .expect("the old master follows");
    let failover_ms = failover_at.elapsed().as_millis();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (log, checks) = load.stop().await;
    let master = sentinel.data_node_mut(new).expect("the new master");
    let finals = finals_standalone(master, &prefix, &keys);
    let v = verdict(&log, &finals, hit_ratio(&[a.clone(), b.clone()]));
    let (stale, fresh_ms) = stale_after_recovery(&a, &b, &keys).await;
    report(
        "sentinel-failover",
        &v,
        checks,
        &log,
        &format!(
            " failover_ms={failover_ms} stale_after_recovery={stale} fresh_after_recovery_ms={fresh_ms}"
        ),
    );
    assert_eq!(stale, 0, "stale reads after recovery");
}

fn cluster_config(url: String) -> RedisConfig {
    config(url, 1_000)
}

/// The counters a cluster holds for `keys`, each read from the primary serving its slot.
async fn finals_cluster(store_without_cache: &RedisStore, keys: &[SessionKey]) -> Vec<u64> {
    let mut out = Vec::new();
    for key in keys {
        let record = store_without_cache.load(key).await.unwrap().expect("a session");
        out.push(counter_of(&record));
    }
    out
}

async fn cluster_scenario(name: &str, kill: bool) {
    let options = TopologyOptions::new()
        .arg("--cluster-require-full-coverage")
        .arg("no")
        .arg("--cluster-node-timeout")
        .arg("1000");
    let mut cluster = Cluster::start_with(&options).expect("cluster starts");
    let prefix = random_prefix();
    let a = connect(cluster_config(cluster.url()), &prefix).await;
    let b = connect(cluster_config(cluster.url()), &prefix).await;
    let mut plain_config = cluster_config(cluster.url());
    plain_config.near_cache.enabled = false;
    let plain = RedisStore::builder(plain_config)
        .options(StoreOptions::new(KeyPrefix::new(&prefix).unwrap()))
        .connect()
        .await
        .unwrap();
    let keys = Arc::new(keys());
    let master = *cluster.masters().unwrap().first().unwrap();
    let replica = cluster.replica_of(master).unwrap();
    let fault_at;
    let mut extra = String::new();
    if kill {
        for key in keys.iter() {
            b.create(key, &counter_record(1)).await.unwrap();
        }
        a.sync_near_cache().await;
        for key in keys.iter() {
            a.load(key).await.unwrap();
        }
        fault_at = Instant::now();
        cluster.node_mut(master).unwrap().kill9().expect("kill -9");
        cluster
            .wait_for_failover(master, LIMIT)
            .expect("the replica takes over");
        let failover_ms = fault_at.elapsed().as_millis();
        let (stale, fresh_ms) = stale_after_recovery(&a, &b, &keys).await;
        println!(
            "FIGURES near-{name}: failover_ms={failover_ms} stale_after_recovery={stale} \
             fresh_after_recovery_ms={fresh_ms} resets={}",
            a.near_cache_stats().unwrap().resets
        );
        assert_eq!(stale, 0, "stale reads after recovery");
        return;
    }
    let load = Workload::start([a.clone(), b.clone()], &keys).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fault_at = Instant::now();
    cluster.failover(replica, LIMIT).expect("graceful failover");
    let failover_ms = fault_at.elapsed().as_millis();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (log, checks) = load.stop().await;
    let finals = finals_cluster(&plain, &keys).await;
    let v = verdict(&log, &finals, hit_ratio(&[a.clone(), b.clone()]));
    let (stale, fresh_ms) = stale_after_recovery(&a, &b, &keys).await;
    extra.push_str(&format!(
        " failover_ms={failover_ms} stale_after_recovery={stale} fresh_after_recovery_ms={fresh_ms}"
    ));
    report(name, &v, checks, &log, &extra);
    assert_eq!(stale, 0, "stale reads after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_cluster_failover_under_load() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    cluster_scenario("cluster-failover", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    cluster_scenario("cluster-kill", true).await;
}

/// The proxy connections and Redis client ids of the store's near-cache readers.
fn reader_connections(server: &RedisServer, proxy: &FaultProxy) -> Vec<(u64, String)> {
    let list = match server.cmd(&["CLIENT", "LIST"]).unwrap() {
        Reply::Bulk(Some(bytes)) => String::from_utf8(bytes).unwrap(),
        Reply::Status(s) => s,
        other => panic!("CLIENT LIST answered {other:?}"),
    };
    let field = |line: &str, name: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name))
            .map(str::to_owned)
    };
    let readers: Vec<(String, String)> = list
        .lines()
        .filter(|l| l.split(' ').any(|f| f == "name=session-near-cache-reader"))
        .filter_map(|l| Some((field(l, "addr=")?, field(l, "id=")?)))
        .collect();
    let connections = proxy.connections();
    readers
        .into_iter()
        .filter_map(|(addr, id)| {
            connections
                .iter()
                .find(|c| c.upstream_local.is_some_and(|a| a.to_string() == addr))
                .map(|c| (c.id, id))
        })
        .collect()
}

/// Redis drops A's reading connections and the close never reaches A (held by the proxy, as a
/// NAT or firewall that forgot an idle connection would lose it): Redis forgets the keys they
/// read, so B's write of a session A holds sends A no invalidation. A's heartbeat pings every
/// reader, so its cache stops serving within `heartbeat_ms + max_stale_ms` and A reads B's
/// write from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_dropped_without_a_close_stops_the_cache_within_its_bound() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let s = standalone().await;
    let [a, b] = &s.stores;
    let key = keys().remove(0);
    a.create(&key, &counter_record(1)).await.unwrap();
    a.sync_near_cache().await;
    for _ in 0..2 {
        assert_eq!(a.load(&key).await.unwrap().map(|r| counter_of(&r)), Some(1));
    }
    assert!(a.near_cache_stats().unwrap().hits >= 1, "cached");
    let readers = reader_connections(&s.server, &s.proxies[0]);
    assert!(!readers.is_empty(), "A's readers go through its proxy");
    for (connection, id) in &readers {
        s.proxies[0]
            .set_mode(*connection, Mode::Hold(Direction::ToClient))
            .unwrap();
        s.server.cmd(&["CLIENT", "KILL", "ID", id]).unwrap();
    }
    b.save(&key, &counter_record(2)).await.unwrap();
    let written = Instant::now();
    let mut stale_loads = 0u64;
    loop {
        match a.load(&key).await {
            Ok(Some(r)) if counter_of(&r) == 2 => break,
            Ok(_) => stale_loads += 1,
            Err(e) => panic!("A's load failed: {e}"),
        }
        assert!(
            written.elapsed() < Duration::from_secs(3),
            "A served the replaced session for 3 s ({stale_loads} loads): {:?}",
            a.near_cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stale_ms = written.elapsed().as_secs_f64() * 1000.0;
    println!(
        "FIGURES near-reader-dropped: readers={} stale_loads={stale_loads} stale_for_ms={stale_ms:.0} bound_ms={}",
        readers.len(),
        HEARTBEAT_MS + MAX_STALE_MS
    );
    assert!(
        stale_ms < (HEARTBEAT_MS + MAX_STALE_MS + 500) as f64,
        "stale for {stale_ms:.0} ms"
    );
    s.proxies[0].release_all();
}
