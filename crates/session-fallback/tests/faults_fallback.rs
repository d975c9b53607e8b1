//! Fault scenarios, Jepsen's method in small: a real `redis-server` (started
//! by testkit-redis on a free port of 127.0.0.1, stopped by pid by its guard)
//! is the primary (`RedisStore::connect_lazy`), a `MemoryStore` the
//! secondary. Sixteen tasks create, update, save and delete their own
//! sessions while the fault is injected, recording every operation and its
//! result (acknowledged, refused, or unknown outcome). After recovery and a
//! drained journal, Redis is read directly with a separate plain client and
//! every session is compared with its history.
//!
//! Each scenario prints one `SCENARIO name: …` line. Runs only with
//! `SESSION_TEST_FAULTS=1` (`cargo xtask test --only faults`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed unwrap is a failed test; the SCENARIO line is the output"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Bytes, Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::{Connection, Reply};
use testkit_redis::{faults_enabled, find_free_port, RedisServer, ServerOptions};

type Store = FallbackStore<RedisStore, MemoryStore>;

const TASKS: usize = 16;
const KEYS_PER_TASK: usize = 8;
const PRIMARY_TIMEOUT_MS: u64 = 300;
const REDIS_TIMEOUT_MS: u64 = 200;
const HOUR: u64 = 3_600_000;

// ---------------------------------------------------------------- the rig

fn prefix() -> KeyPrefix {
    session_core::testing::random_prefix()
}

fn redis_config(port: u16) -> RedisConfig {
    let mut c = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    c.timeout_ms = REDIS_TIMEOUT_MS;
    c.tombstone_ttl_ms = 600_000;
    c.connect_timeout_ms = 500;
    c.unresponsive_timeout_ms = 1_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c
}

async fn build(port: u16, prefix: &KeyPrefix, max_journal_keys: usize) -> Arc<Store> {
    let redis = RedisStore::builder(redis_config(port))
        .options(StoreOptions::new(prefix.clone()))
        .connect_lazy()
        .unwrap();
    // Give a live server a moment to accept the lazy connections.
    redis.wait_connected(Duration::from_millis(500)).await;
    let memory = MemoryStore::with_options(
        MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
        StoreOptions::new(prefix.clone()),
    )
    .unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(PRIMARY_TIMEOUT_MS))
        .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .with_max_journal_keys(max_journal_keys);
    Arc::new(FallbackStore::new(redis, memory, config).await.unwrap())
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------- history

/// A session's state: absent, or a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Absent,
    Value(Vec<u8>),
}

fn show(state: &State) -> String {
    match state {
        State::Absent => "absent".to_owned(),
        State::Value(v) => String::from_utf8_lossy(v).into_owned(),
    }
}

/// What the history allows for one session.
struct KeyLog {
    key: SessionKey,
    /// States the session may be in now: the last acknowledged one, plus
    /// the targets of later operations whose outcome is unknown.
    possible: Vec<State>,
    /// The state set by the last acknowledged operation, if any.
    last_acked: Option<State>,
    /// Whether the worker believes the session exists (picks the next op).
    exists: bool,
    /// Every operation on this session, printed when the check fails for it.
    trace: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Result3 {
    Acked,
    /// Refused or definitely not applied (NotFound, AlreadyExists, journal full).
    NotApplied,
    /// May or may not have been applied (a temporary error).
    Unknown,
}

struct OpRecord {
    took: Duration,
    /// The circuit was open when the call started.
    open: bool,
    write: bool,
    result: Result3,
    error: Option<&'static str>,
}

fn record(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR)
}

fn classify(e: &Error) -> (Result3, &'static str) {
    match e {
        Error::NotFound { .. } | Error::AlreadyExists { .. } | Error::Conflict { .. } => {
            (Result3::NotApplied, e.kind().as_str())
        }
        Error::Unavailable { message, .. } if message.starts_with("fallback journal full") => {
            (Result3::NotApplied, "journal_full")
        }
        _ => (Result3::Unknown, e.kind().as_str()),
    }
}

async fn worker(task: usize, store: Arc<Store>, stop: Arc<AtomicBool>) -> (Vec<KeyLog>, Vec<OpRecord>) {
    let ns = Namespace::new("task").unwrap();
    let mut logs: Vec<KeyLog> = (0..KEYS_PER_TASK)
        .map(|_| KeyLog {
            key: SessionKey::new(ns.clone(), SessionId::generate().unwrap()),
            possible: vec![State::Absent],
            last_acked: None,
            exists: false,
            trace: Vec::new(),
        })
        .collect();
    let mut ops = Vec::new();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ (task as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let log = &mut logs[(rng % KEYS_PER_TASK as u64) as usize];
        seq += 1;
        let payload = format!("t{task}-s{seq}").into_bytes();
        let pick = (rng >> 20) % 100;
        let open = store.state().is_open();
        let started = Instant::now();
        let at_ms = now_ms();
        let (op, target, outcome) = if !log.exists {
            let r = store.create(&log.key, &record(&payload)).await.map(drop);
            ("create", State::Value(payload), r)
        } else if pick < 55 {
            let r = store.update(&log.key, &record(&payload)).await.map(drop);
            ("update", State::Value(payload), r)
        } else if pick < 80 {
            let r = store.save(&log.key, &record(&payload)).await.map(drop);
            ("save", State::Value(payload), r)
        } else {
            let r = store.delete(&log.key).await.map(drop);
            ("delete", State::Absent, r)
        };
        let took = started.elapsed();
        log.trace.push(format!(
            "{at_ms} {op} {} open={open} took_ms={} -> {}",
            show(&target),
            took.as_millis(),
            match &outcome {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            }
        ));
        let (result, error) = match &outcome {
            Ok(()) => (Result3::Acked, None),
            Err(e) => {
                let (r, kind) = classify(e);
                if !matches!(
                    e,
                    Error::NotFound { .. } | Error::Timeout { .. } | Error::Unavailable { .. }
                ) {
                    eprintln!("task {task}: unexpected error: {e}");
                }
                (r, Some(kind))
            }
        };
        match result {
            Result3::Acked => {
                log.exists = target != State::Absent;
                log.possible = vec![target.clone()];
                log.last_acked = Some(target);
            }
            Result3::Unknown => {
                if !log.possible.contains(&target) {
                    log.possible.push(target);
                }
            }
            Result3::NotApplied => {
                if error == Some("already_exists") {
                    log.exists = true;
                }
            }
        }
        ops.push(OpRecord {
            took,
            open,
            write: true,
            result,
            error,
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (logs, ops)
}

/// The load: workers plus a monitor of the circuit.
struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(Vec<KeyLog>, Vec<OpRecord>)>>,
    monitor: tokio::task::JoinHandle<Vec<(Instant, CircuitState, usize)>>,
}

fn start_load(store: &Arc<Store>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..TASKS)
        .map(|t| tokio::spawn(worker(t, Arc::clone(store), Arc::clone(&stop))))
        .collect();
    let monitor = {
        let store = Arc::clone(store);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = None;
            while !stop.load(Ordering::Relaxed) {
                let now = (store.state(), store.journal_len() == 0);
                if last != Some(now) {
                    seen.push((Instant::now(), now.0, store.journal_len()));
                    last = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        })
    };
    Load {
        stop,
        workers,
        monitor,
    }
}

// ---------------------------------------------------------------- checking

struct Outcome {
    logs: Vec<KeyLog>,
    ops: Vec<OpRecord>,
    states: Vec<(Instant, CircuitState, usize)>,
}

async fn finish(load: Load, store: &Arc<Store>) -> Outcome {
    load.stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    let mut ops = Vec::new();
    for w in load.workers {
        let (l, o) = w.await.unwrap();
        logs.extend(l);
        ops.extend(o);
    }
    let states = load.monitor.await.unwrap();
    let start = Instant::now();
    while !(store.state() == CircuitState::Closed && store.journal_len() == 0) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the journal did not drain: state {}, journal {}, counters {:?}",
            store.state(),
            store.journal_len(),
            store.counters()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Outcome { logs, ops, states }
}

use testkit_redis::stats::percentile_ms as percentile;

/// Reads every session directly from Redis, compares with the history,
/// prints the SCENARIO line and asserts.
fn check(name: &str, port: u16, prefix: &KeyPrefix, store: &Store, out: &Outcome, resumed: Instant) {
    let mut redis = Connection::connect(port).expect("direct connection to Redis");
    let (mut acked_writes, mut found, mut acked_deletes, mut resurrected, mut mismatched) = (0, 0, 0, 0, 0);
    for log in &out.logs {
        let full = prefix.render(&log.key);
        let actual = match redis.command(&["GET", full.as_str()]).expect("GET") {
            Reply::Bulk(None) => State::Absent,
            Reply::Bulk(Some(bytes)) => {
                match session_core::backend::decode_entry(&Bytes::from(bytes), "task")
                    .expect("an envelope in Redis")
                {
                    // A logout's tombstone: the session is gone.
                    session_core::backend::Entry::Tombstone(_) => State::Absent,
                    session_core::backend::Entry::Live(r) => {
                        assert!(r.meta.deadline() > now_ms(), "an expired value in Redis");
                        State::Value(r.payload.to_vec())
                    }
                }
            }
            other => panic!("unexpected reply {other:?}"),
        };
        let allowed = log.possible.contains(&actual);
        if !allowed {
            mismatched += 1;
            eprintln!(
                "{name}: MISMATCH {}: Redis holds {}, the history allows {:?}; its operations:",
                log.key.id.as_str(),
                show(&actual),
                log.possible.iter().map(show).collect::<Vec<_>>()
            );
            for line in &log.trace {
                eprintln!("    {line}");
            }
        }
        match &log.last_acked {
            Some(State::Value(_)) => {
                acked_writes += 1;
                if allowed && actual != State::Absent {
                    found += 1;
                }
            }
            Some(State::Absent) => {
                acked_deletes += 1;
                if !allowed && actual != State::Absent {
                    resurrected += 1;
                }
            }
            None => {}
        }
    }
    let mut open_lat: Vec<Duration> = out.ops.iter().filter(|o| o.open).map(|o| o.took).collect();
    open_lat.sort();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for e in out.ops.iter().filter_map(|o| o.error) {
        *errors.entry(e).or_default() += 1;
    }
    let errors_text = if errors.is_empty() {
        "none".to_owned()
    } else {
        errors
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let outage_acked = out
        .ops
        .iter()
        .filter(|o| o.open && o.write && o.result == Result3::Acked)
        .count();
    let unknown = out.ops.iter().filter(|o| o.result == Result3::Unknown).count();
    let drained_at = out
        .states
        .iter()
        .rev()
        .find(|(_, s, j)| *s == CircuitState::Closed && *j == 0)
        .map(|(t, ..)| *t)
        .unwrap_or_else(Instant::now);
    let drain_ms = drained_at.saturating_duration_since(resumed).as_millis();
    let c = store.counters();
    let lost = acked_writes - found;
    println!(
        "SCENARIO {name}: ops={} acked_writes={acked_writes} found={found} lost={lost} \
         acked_deletes={acked_deletes} resurrected={resurrected} mismatched={mismatched} \
         outage_acked={outage_acked} unknown={unknown} refused={} open_calls={} p50_ms={:.1} p99_ms={:.1} \
         max_ms={:.1} drain_ms={drain_ms} failovers={} replayed={} conflicts={} journal_rejected={} \
         opened={} errors={errors_text}",
        out.ops.len(),
        errors.get("journal_full").copied().unwrap_or(0),
        open_lat.len(),
        percentile(&open_lat, 0.5),
        percentile(&open_lat, 0.99),
        open_lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        c.failovers,
        c.replayed,
        c.conflicts,
        c.journal_rejected,
        c.opened,
    );
    assert!(c.opened >= 1, "{name}: the circuit never opened");
    assert!(
        outage_acked > 0,
        "{name}: no write was acknowledged during the outage"
    );
    assert_eq!(found, acked_writes, "{name}: acknowledged writes lost");
    assert_eq!(resurrected, 0, "{name}: deleted sessions came back");
    assert_eq!(mismatched, 0, "{name}: final state differs from the history");
    let p99 = percentile(&open_lat, 0.99);
    assert!(
        p99 < PRIMARY_TIMEOUT_MS as f64 / 3.0,
        "{name}: calls made while the circuit was open waited (p99 {p99:.1} ms)"
    );
    assert_eq!(
        errors.get("journal_full").copied().unwrap_or(0) as u64,
        c.journal_rejected,
        "{name}: every refusal is counted"
    );
}

async fn wait_open(store: &Store, limit: Duration) -> Duration {
    let start = Instant::now();
    while !store.state().is_open() {
        assert!(start.elapsed() < limit, "the circuit did not open");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

// ---------------------------------------------------------------- scenarios

/// Redis frozen by SIGSTOP for 3 s under load, then SIGCONT; load continues
/// through recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_sigstop() {
    if !faults_enabled() {
        return;
    }
    let server = block(RedisServer::start).unwrap();
    let prefix = prefix();
    let store = build(server.port(), &prefix, 100_000).await;
    let load = start_load(&store);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    server.sigstop().unwrap();
    let fallback = wait_open(&store, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(3000).saturating_sub(fallback)).await;
    server.sigcont().unwrap();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = finish(load, &store).await;
    check("sigstop", server.port(), &prefix, &store, &out, resumed);
}

/// Redis killed with SIGKILL under load and restarted on the same port with
/// `--appendonly yes --appendfsync always`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_kill9_restart_aof() {
    if !faults_enabled() {
        return;
    }
    let mut server = block(|| RedisServer::start_with(ServerOptions::new().aof(true))).unwrap();
    let prefix = prefix();
    let store = build(server.port(), &prefix, 100_000).await;
    let load = start_load(&store);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    block(|| server.kill9()).unwrap();
    wait_open(&store, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    block(|| server.restart()).unwrap();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = finish(load, &store).await;
    check("kill9_aof", server.port(), &prefix, &store, &out, resumed);
}

/// The service starts while Redis is down, serves and writes, then Redis starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_start_with_redis_down() {
    if !faults_enabled() {
        return;
    }
    let port = find_free_port().unwrap();
    let prefix = prefix();
    let started = Instant::now();
    let store = build(port, &prefix, 100_000).await;
    assert!(store.state().is_open(), "starts open with Redis down");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "start-up did not block"
    );
    let load = start_load(&store);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = block(|| RedisServer::start_with(ServerOptions::new().port(port))).unwrap();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = finish(load, &store).await;
    check("start_down", server.port(), &prefix, &store, &out, resumed);
}

/// Flapping: five down/up cycles within 10 s (alternately SIGSTOP and
/// SIGKILL + restart with AOF), under continuous load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_flapping() {
    if !faults_enabled() {
        return;
    }
    let mut server = block(|| RedisServer::start_with(ServerOptions::new().aof(true))).unwrap();
    let prefix = prefix();
    let store = build(server.port(), &prefix, 100_000).await;
    let load = start_load(&store);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = Instant::now();
    for cycle in 0..5 {
        if cycle % 2 == 0 {
            server.sigstop().unwrap();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            server.sigcont().unwrap();
        } else {
            block(|| server.kill9()).unwrap();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            block(|| server.restart()).unwrap();
        }
        resumed = Instant::now();
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let out = finish(load, &store).await;
    check("flapping", server.port(), &prefix, &store, &out, resumed);
}

/// Outage writes beyond a small journal bound: callers get errors for the
/// refused writes (never counted as acknowledged), and the counter agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_journal_bound() {
    if !faults_enabled() {
        return;
    }
    let mut server = block(|| RedisServer::start_with(ServerOptions::new().aof(true))).unwrap();
    let prefix = prefix();
    let store = build(server.port(), &prefix, 24).await;
    let load = start_load(&store);
    tokio::time::sleep(Duration::from_millis(800)).await;
    block(|| server.kill9()).unwrap();
    wait_open(&store, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(store.journal_len() <= 24);
    block(|| server.restart()).unwrap();
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = finish(load, &store).await;
    let refused = out.ops.iter().filter(|o| o.error == Some("journal_full")).count();
    assert!(refused > 0, "the bound was reached");
    assert!(out
        .ops
        .iter()
        .filter(|o| o.error == Some("journal_full"))
        .all(|o| o.result == Result3::NotApplied));
    check("journal_bound", server.port(), &prefix, &store, &out, resumed);
}
