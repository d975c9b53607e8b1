//! Fault scenarios against real redis-server processes this target starts itself (through
//! testkit-redis): a hung server (SIGSTOP), a killed and restarted server, a cluster master
//! killed, a sentinel master killed, and a store started while Redis is down.
//!
//! They run only with `SESSION_TEST_FAULTS=1` (the `faults` cell of `cargo xtask test`, one
//! test at a time with `--nocapture`). Each prints one `FIGURES …` line. Timing assertions are
//! only generous bounds (a call never takes more than 4× the configured timeout); the numbers
//! are measurements, not benchmarks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, ErrorKind, Namespace, SessionId, SessionKey, SessionStore};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{
    faults_enabled, find_free_port, Cluster, RedisServer, Sentinel, ServerOptions, Standalone,
};

/// The per-command timeout of the stores under test.
const TIMEOUT_MS: u64 = 250;
/// No call may take longer than this (4× the timeout).
const LATENCY_BOUND: Duration = Duration::from_millis(4 * TIMEOUT_MS);
/// Give up waiting for recovery after this long.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

/// The scenarios change shared machines' timing; run them one at a time even without
/// `--test-threads=1`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = TIMEOUT_MS;
    c
}

/// A store with a key prefix of its own.
fn builder(config: RedisConfig) -> session_redis::RedisStoreBuilder {
    let prefix = format!("f{}:", &SessionId::generate().unwrap().as_str()[..8]).replace(['-', '_'], "x");
    RedisStore::builder(config).options(session_core::StoreOptions::new(
        session_core::KeyPrefix::new(&prefix).unwrap(),
    ))
}

fn record(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + 3_600_000)
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

/// One call's outcome.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ended: Instant,
    latency: Duration,
    error: Option<ErrorKind>,
}

/// Light load: `tasks` loops, each saving and loading its own sessions every 10 ms.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    permanent: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(store: &RedisStore, tasks: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let permanent = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..tasks)
            .map(|t| {
                let store = store.clone();
                let stop = Arc::clone(&stop);
                let samples = Arc::clone(&samples);
                let permanent = Arc::clone(&permanent);
                tokio::spawn(async move {
                    let keys: Vec<SessionKey> = (0..16).map(|_| new_key()).collect();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let key = &keys[i % keys.len()];
                        let started = Instant::now();
                        let result = if i % 2 == 0 {
                            store.save(key, &record(b"load")).await.map(|_| ())
                        } else {
                            store.load(key).await.map(|_| ())
                        };
                        let sample = Sample {
                            ended: Instant::now(),
                            latency: started.elapsed(),
                            error: result.as_ref().err().map(Error::kind),
                        };
                        if let Err(e) = &result {
                            if !e.is_temporary() {
                                permanent.lock().unwrap().push(e.to_string());
                            }
                        }
                        samples.lock().unwrap().push(sample);
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            handles,
            permanent,
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Waits until calls succeed again after `since`: a success followed by `quiet` with no
    /// failure. Returns when the first success of that run ended.
    async fn wait_recovered(&self, since: Instant, quiet: Duration) -> Option<Instant> {
        let deadline = since + RECOVERY_LIMIT;
        loop {
            let samples = self.samples();
            let last_failure = samples
                .iter()
                .filter(|s| s.error.is_some())
                .map(|s| s.ended)
                .max()
                .unwrap_or(since)
                .max(since);
            let first_ok_after = samples
                .iter()
                .filter(|s| s.error.is_none() && s.ended > last_failure)
                .map(|s| s.ended)
                .min();
            if let Some(ok) = first_ok_after {
                if Instant::now().duration_since(ok) >= quiet {
                    return Some(ok);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (Vec<Sample>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        let samples = self.samples.lock().unwrap().clone();
        let permanent = self.permanent.lock().unwrap().clone();
        (samples, permanent)
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

fn max_latency(samples: &[Sample]) -> Duration {
    samples.iter().map(|s| s.latency).max().unwrap_or_default()
}

fn p99(samples: &[Sample]) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    l.sort();
    l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn failures_since(samples: &[Sample], since: Instant) -> usize {
    samples
        .iter()
        .filter(|s| s.ended >= since && s.error.is_some())
        .count()
}

fn error_kinds(samples: &[Sample]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in samples {
        if let Some(k) = s.error {
            *counts.entry(k.as_str()).or_insert(0) += 1;
        }
    }
    let parts: Vec<String> = counts.into_iter().map(|(k, n)| format!("{k}:{n}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

async fn assert_works(store: &RedisStore) {
    let key = new_key();
    store
        .save(&key, &record(b"after"))
        .await
        .expect("save after recovery");
    let got = store
        .load(&key)
        .await
        .expect("load after recovery")
        .expect("found");
    assert_eq!(&got.payload[..], b"after");
}

/// (a) A hung server (SIGSTOP): calls fail with Timeout/Unavailable within the timeout plus
/// slack; after SIGCONT the same store serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigstop_calls_time_out_then_recover() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = Standalone::start().expect("redis-server starts");
    let store = builder(config(server.url())).connect().await.expect("connects");
    assert_works(&store).await;

    let load = Load::start(&store, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen_at = Instant::now();
    server.server().sigstop().expect("SIGSTOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed_at = Instant::now();
    server.server().sigcont().expect("SIGCONT");
    let recovered = load.wait_recovered(resumed_at, Duration::from_millis(500)).await;
    let (samples, permanent) = load.stop().await;

    let during: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.ended >= frozen_at && s.ended <= resumed_at)
        .collect();
    let recovery = recovered.map(|t| t.saturating_duration_since(resumed_at));
    println!(
        "FIGURES sigstop: calls_during={} failed_during={} errors={} max_latency_ms={} p99_ms={} \
         recovery_after_sigcont_ms={}",
        during.len(),
        during.iter().filter(|s| s.error.is_some()).count(),
        error_kinds(&during),
        ms(max_latency(&during)),
        ms(p99(&during)),
        recovery.map_or("none".into(), |d| ms(d).to_string()),
    );
    assert!(
        permanent.is_empty(),
        "permanent errors during a hang: {permanent:?}"
    );
    assert!(
        during.iter().any(|s| s.error.is_some()),
        "calls failed during the hang"
    );
    assert!(
        max_latency(&during) < LATENCY_BOUND,
        "a call took {:?} (bound {LATENCY_BOUND:?})",
        max_latency(&during)
    );
    assert!(recovery.is_some(), "the store did not recover after SIGCONT");
    assert_works(&store).await;
}

/// (b) kill -9 and a restart on the same port: the same store reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_and_restart_reconnects_by_itself() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut server = Standalone::start().expect("redis-server starts");
    let store = builder(config(server.url())).connect().await.expect("connects");
    assert_works(&store).await;

    let load = Load::start(&store, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    server.server_mut().kill9().expect("kill -9");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restart_at = Instant::now();
    server.server_mut().restart().expect("restart on the same port");
    let restarted_at = Instant::now();
    let recovered = load
        .wait_recovered(restarted_at, Duration::from_millis(500))
        .await;
    let (samples, permanent) = load.stop().await;

    let down: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.ended >= killed_at && s.ended <= restart_at)
        .collect();
    let recovery = recovered.map(|t| t.saturating_duration_since(restarted_at));
    println!(
        "FIGURES kill-restart: calls_while_down={} failed={} errors={} max_latency_ms={} \
         restart_took_ms={} first_success_after_restart_ms={}",
        down.len(),
        failures_since(&down, killed_at),
        error_kinds(&down),
        ms(max_latency(&down)),
        ms(restarted_at - restart_at),
        recovery.map_or("none".into(), |d| ms(d).to_string()),
    );
    assert!(permanent.is_empty(), "permanent errors while down: {permanent:?}");
    assert!(
        max_latency(&down) < LATENCY_BOUND,
        "a call took {:?}",
        max_latency(&down)
    );
    assert!(
        recovery.is_some(),
        "the store did not reconnect after the restart"
    );
    assert_works(&store).await;
}

/// The common end of a failover scenario: waits until calls succeed again,
/// prints the `FIGURES` line and checks that no call was a permanent error or
/// took longer than the bound, and that the store works afterwards.
async fn finish_failover(
    name: &str,
    store: &RedisStore,
    load: Load,
    killed_at: Instant,
    promoted_at: Instant,
) {
    let recovered = load.wait_recovered(killed_at, Duration::from_secs(1)).await;
    let (samples, permanent) = load.stop().await;
    let recovery = recovered.map(|t| t.saturating_duration_since(killed_at));
    println!(
        "FIGURES {name}: failed_calls={} recovery_ms={} promotion_ms={} errors={} max_latency_ms={} calls={}",
        failures_since(&samples, killed_at),
        recovery.map_or("none".into(), |d| ms(d).to_string()),
        ms(promoted_at - killed_at),
        error_kinds(&samples),
        ms(max_latency(&samples)),
        samples.len(),
    );
    assert!(
        permanent.is_empty(),
        "permanent errors during failover: {permanent:?}"
    );
    assert!(
        max_latency(&samples) < LATENCY_BOUND,
        "a call took {:?}",
        max_latency(&samples)
    );
    assert!(
        recovery.is_some(),
        "calls did not succeed again after the failover"
    );
    assert_works(store).await;
}

/// (c) Cluster: a master is killed under light load; after its replica is promoted, calls
/// succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_master_killed_fails_over() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start().expect("cluster starts");
    let store = builder(config(cluster.url())).connect().await.expect("connects");
    assert_works(&store).await;

    let load = Load::start(&store, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = cluster.masters().expect("masters")[0];
    let killed_at = Instant::now();
    cluster
        .node_mut(master)
        .expect("master node")
        .kill9()
        .expect("kill -9 master");
    let promoted = cluster
        .wait_for_failover(master, Duration::from_secs(20))
        .expect("replica promoted");
    let promoted_at = Instant::now();
    let _ = promoted;
    finish_failover("cluster-failover", &store, load, killed_at, promoted_at).await;
}

/// (d) Sentinel: the master is killed; the store follows the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_master_killed_store_follows() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut sentinel = Sentinel::start().expect("sentinel topology starts");
    let store = builder(config(sentinel.url())).connect().await.expect("connects");
    assert_works(&store).await;

    let load = Load::start(&store, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let master = sentinel.current_master().expect("master");
    let killed_at = Instant::now();
    sentinel
        .data_node_mut(master)
        .expect("master node")
        .kill9()
        .expect("kill -9 master");
    let promoted = sentinel
        .wait_for_failover(master, Duration::from_secs(30))
        .expect("sentinels fail over");
    let promoted_at = Instant::now();
    assert_ne!(promoted, master);
    finish_failover("sentinel-failover", &store, load, killed_at, promoted_at).await;
}

/// (f) A scan cursor names the server process its Redis cursor belongs to (Redis seeds its
/// hash function anew at every start, so the same number points elsewhere): after a restart
/// the scan's next page is `Error::Backend` (start again), and a new scan works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_cursor_of_a_restarted_server_is_refused() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut server = Standalone::start().expect("redis-server starts");
    let store = builder(config(server.url())).connect().await.expect("connects");
    for _ in 0..60 {
        store.save(&new_key(), &record(b"s")).await.expect("save");
    }
    let first = store.scan(None, 5).await.expect("first page");
    let cursor = first.next.expect("60 sessions take several pages of 5");
    let second = store
        .scan(Some(&cursor), 5)
        .await
        .expect("same server: the scan goes on");
    let cursor = second.next.expect("60 sessions take several pages of 5");
    server.server_mut().kill9().expect("kill -9");
    server.server_mut().restart().expect("restart on the same port");
    let up_at = Instant::now();
    while store.save(&new_key(), &record(b"up")).await.is_err() {
        assert!(up_at.elapsed() < RECOVERY_LIMIT, "the store did not reconnect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match store.scan(Some(&cursor), 5).await {
        Err(e @ Error::Backend { .. }) => {
            assert!(e.to_string().contains("restarted"), "{e}");
        }
        other => panic!("a cursor of the server before its restart: {other:?}"),
    }
    let mut cursor = None;
    for _ in 0..1000 {
        cursor = store.scan(cursor.as_ref(), 5).await.expect("a new scan").next;
        if cursor.is_none() {
            return;
        }
    }
    panic!("the new scan did not end");
}

/// (e) A store started while Redis is down fails fast, then serves once Redis comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lazy_start_fails_fast_then_serves() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let port = find_free_port().expect("free port");
    let store = builder(config(format!("redis://127.0.0.1:{port}")))
        .connect_lazy()
        .expect("lazy store");
    let key = new_key();
    let mut worst = Duration::ZERO;
    let mut down_calls = 0;
    for i in 0..20 {
        let started = Instant::now();
        let result = if i % 2 == 0 {
            store.save(&key, &record(b"x")).await.map(|_| ())
        } else {
            store.load(&key).await.map(|_| ())
        };
        let took = started.elapsed();
        worst = worst.max(took);
        let e = result.expect_err("Redis is down");
        assert!(matches!(e, Error::Unavailable { .. }), "{e}");
        down_calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!store.health().await.is_up());

    let started_at = Instant::now();
    let _server = RedisServer::start_with(ServerOptions::new().port(port)).expect("redis-server starts");
    let up_at = Instant::now();
    let mut first_success = None;
    while up_at.elapsed() < RECOVERY_LIMIT {
        if store.save(&key, &record(b"up")).await.is_ok() {
            first_success = Some(up_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "FIGURES lazy-start: calls_while_down={down_calls} max_latency_ms={} server_start_ms={} \
         first_success_after_start_ms={}",
        worst.as_secs_f64() * 1000.0,
        ms(up_at - started_at),
        first_success.map_or("none".into(), |d| ms(d).to_string()),
    );
    assert!(
        worst < Duration::from_millis(50),
        "a call while down took {worst:?}"
    );
    assert!(first_success.is_some(), "the lazy store never connected");
    assert_works(&store).await;
    // Every pooled connection and the control connection come up, each on its own backoff.
    let mut health = store.health().await;
    while !health.is_up() && up_at.elapsed() < RECOVERY_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        health = store.health().await;
    }
    assert!(health.is_up(), "{health:?}");
}
