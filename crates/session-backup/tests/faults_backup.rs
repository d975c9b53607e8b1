//! The backup under faults, on real servers: a Redis primary (no persistence) backed up into a
//! PostgreSQL started for the test.
//!
//! * Redis killed under load and restarted **empty**: `restore_all` brings back every session
//!   whose write was acknowledged; what a crash of the application itself at the kill would
//!   have lost is reported as the queue's length and lag at that instant.
//! * PostgreSQL killed under load for a while: the primary path's latency beside the healthy
//!   phase's, the queue stays within its bound, and once PostgreSQL is back the backup catches
//!   up to the primary's latest state of every key (nothing older over newer).
//! * Two instances with their own queues updating and logging out the same sessions: the
//!   backup ends as Redis holds each key, and a restore after Redis lost everything brings back
//!   no logout.
//!
//! Only with `SESSION_TEST_FAULTS=1` (the `faults` cell). Each prints one `FIGURES backup-…`
//! line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_backup::{BackupConfig, BackupStore};
use session_core::backend::{now_ms, CodecId, Record};
use session_core::testing::random_prefix;
use session_core::{HealthStatus, Namespace, SessionId, SessionKey, SessionStore, StoreOptions, Version};
use session_redis::fred::interfaces::ClientLike;
use session_redis::{RedisConfig, RedisStore};
use session_sql::{SqlConfig, SqlStore};
use testkit_redis::{faults_enabled, Postgres, Standalone};

const HOUR_MS: u64 = 3_600_000;
const WRITERS: usize = 8;
const KEYS_PER_WRITER: usize = 500;

/// The scenarios measure latency: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Store = BackupStore<RedisStore, SqlStore>;

async fn open(redis_url: String, pg_url: String, options: &StoreOptions, config: BackupConfig) -> Arc<Store> {
    let mut redis = RedisConfig::new(redis_url);
    redis.timeout_ms = 250;
    redis.reconnect.min_delay_ms = 20;
    redis.reconnect.max_delay_ms = 200;
    let primary = RedisStore::builder(redis)
        .options(options.clone())
        .connect()
        .await
        .unwrap();
    let backup = SqlStore::connect(
        SqlConfig::new(pg_url).with_timeout(Duration::from_millis(500)),
        options.clone(),
    )
    .await
    .unwrap();
    Arc::new(BackupStore::new(primary, backup, config).unwrap())
}

fn keys() -> Vec<SessionKey> {
    (0..WRITERS * KEYS_PER_WRITER)
        .map(|_| SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap()))
        .collect()
}

/// What the writers saw: per key, the version of its last acknowledged write; per phase, the
/// latencies of acknowledged saves.
#[derive(Default)]
struct History {
    acked: HashMap<usize, Version>,
    latencies: HashMap<u8, Vec<Duration>>,
    errors: u64,
}

/// Runs `WRITERS` tasks saving their own keys round and round until `stop`; `phase` tags each
/// latency.
fn start_writers(
    store: &Arc<Store>,
    keys: &Arc<Vec<SessionKey>>,
    stop: &Arc<AtomicBool>,
    phase: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<History>> {
    (0..WRITERS)
        .map(|w| {
            let (store, keys, stop, phase) = (store.clone(), keys.clone(), stop.clone(), phase.clone());
            tokio::spawn(async move {
                let mut history = History::default();
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let i = w * KEYS_PER_WRITER + round % KEYS_PER_WRITER;
                    round += 1;
                    let mut record = Record::new(CodecId::RAW, vec![7u8; 200], now_ms() + HOUR_MS);
                    record.meta.version = Version::generate();
                    let started = Instant::now();
                    let tag = phase.load(Ordering::Relaxed) as u8;
                    match store.save(&keys[i], &record).await {
                        Ok(meta) => {
                            history.latencies.entry(tag).or_default().push(started.elapsed());
                            history.acked.insert(i, meta.version);
                        }
                        Err(_) => {
                            history.errors += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                history
            })
        })
        .collect()
}

async fn join(handles: Vec<tokio::task::JoinHandle<History>>) -> History {
    let mut all = History::default();
    for h in handles {
        let h = h.await.unwrap();
        all.acked.extend(h.acked);
        for (tag, mut l) in h.latencies {
            all.latencies.entry(tag).or_default().append(&mut l);
        }
        all.errors += h.errors;
    }
    all
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    latencies
        .get(((latencies.len().max(1) - 1) as f64 * 0.99).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// The version each key holds in `store` (`None`: no session).
async fn versions(store: &dyn SessionStore, keys: &[SessionKey]) -> Vec<Option<Version>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        for r in store.load_many(chunk).await.unwrap() {
            out.push(r.unwrap().map(|r| r.meta.version));
        }
    }
    out
}

/// The version and deadline each key holds in `store` (`None`: no session).
async fn deadlines(store: &dyn SessionStore, keys: &[SessionKey]) -> Vec<Option<(Version, u64)>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        for r in store.load_many(chunk).await.unwrap() {
            out.push(r.unwrap().map(|r| (r.meta.version, r.meta.expires_at)));
        }
    }
    out
}

async fn wait_until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_without_persistence_is_restored_from_the_backup() {
    if !faults_enabled() {
        return;
    }
    let _one = SERIAL.lock().await;
    let mut redis = Standalone::start().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let options = StoreOptions::new(random_prefix());
    let config = BackupConfig::default().with_flush_interval(Duration::from_millis(100));
    let store = open(redis.url(), pg.url(), &options, config).await;
    let keys = Arc::new(keys());
    let (stop, phase) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writers = start_writers(&store, &keys, &stop, &phase);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // What a crash of this process right now would lose: the queue and its lag.
    let at_kill = store.backup_stats();
    redis.server_mut().kill9().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let history = join(writers).await;

    // The process lives on: what was queued before the kill still reaches the backup (the
    // writes that failed at the kill wait for Redis to say whether they landed).
    let pending_after_kill = store.backup_stats().pending;
    redis.server_mut().restart().unwrap();
    wait_until("the store reconnects", Duration::from_secs(15), async || {
        store.primary().health().await.status == HealthStatus::Up
    })
    .await;
    let empty = store
        .primary()
        .count(&Namespace::new("task").unwrap())
        .await
        .unwrap();
    assert_eq!(empty, 0, "Redis restarted empty");
    let drained = wait_until(
        "the queue drains into the backup",
        Duration::from_secs(30),
        async || store.backup_stats().pending == 0,
    )
    .await;

    let started = Instant::now();
    let progress = store.restore_all(|_| {}).await.unwrap();
    let restore_time = started.elapsed();
    let acked: Vec<usize> = {
        let mut v: Vec<usize> = history.acked.keys().copied().collect();
        v.sort_unstable();
        v
    };
    let wanted: Vec<SessionKey> = acked.iter().map(|&i| keys[i].clone()).collect();
    let now = versions(store.primary(), &wanted).await;
    let mut lost = 0;
    for (i, v) in acked.iter().zip(&now) {
        if *v != Some(history.acked[i]) {
            lost += 1;
        }
    }
    println!(
        "FIGURES backup-redis-lost: acknowledged_keys={} restored={} lost={lost} write_errors={} \
         pending_at_kill={} pending_after_kill={pending_after_kill} lag_at_kill_p50_ms={} lag_at_kill_p99_ms={} \
         drain_after_restart_ms={} restore_ms={}",
        acked.len(),
        progress.copied,
        history.errors,
        at_kill.pending,
        at_kill.lag_p50_ms,
        at_kill.lag_p99_ms,
        drained.as_millis(),
        restore_time.as_millis()
    );
    assert_eq!(
        lost, 0,
        "every acknowledged write is restored with its latest version"
    );
    assert!(!acked.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load_costs_the_primary_nothing_and_the_backup_catches_up() {
    if !faults_enabled() {
        return;
    }
    let _one = SERIAL.lock().await;
    let redis = Standalone::start().unwrap();
    let mut pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let options = StoreOptions::new(random_prefix());
    // Above the keys the writers use: the bound is never reached, so the catch-up is complete.
    let max_pending = 10_000;
    let config = BackupConfig::default()
        .with_flush_interval(Duration::from_millis(100))
        .with_max_pending(max_pending);
    let store = open(redis.url(), pg.url(), &options, config).await;
    let keys = Arc::new(keys());
    let (stop, phase) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writers = start_writers(&store, &keys, &stop, &phase);
    let max_seen = Arc::new(Mutex::new(0u64));
    let sampler = {
        let (store, stop, max_seen) = (store.clone(), stop.clone(), max_seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let pending = store.backup_stats().pending;
                {
                    let mut m = max_seen.lock().unwrap();
                    *m = (*m).max(pending);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(1, Ordering::Relaxed);
    tokio::task::block_in_place(|| pg.kill9()).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.store(2, Ordering::Relaxed);
    tokio::task::block_in_place(|| pg.restart()).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = join(writers).await;
    sampler.await.unwrap();

    let caught_up = wait_until("the backup catches up", Duration::from_secs(60), async || {
        store.backup_stats().pending == 0
    })
    .await;
    let stats = store.backup_stats();
    let all: Vec<SessionKey> = keys.iter().cloned().collect();
    let primary = versions(store.primary(), &all).await;
    let backup = versions(store.backup(), &all).await;
    let differ = primary.iter().zip(&backup).filter(|(p, b)| p != b).count();
    let healthy = p99(history.latencies.entry(0).or_default());
    let down = p99(history.latencies.entry(1).or_default());
    let max_pending_seen = *max_seen.lock().unwrap();
    println!(
        "FIGURES backup-postgres-killed: saves_healthy={} saves_backup_down={} p99_healthy_us={} \
         p99_backup_down_us={} p99_ratio={:.2} write_errors={} max_pending_seen={max_pending_seen} bound={max_pending} \
         dropped_writes={} incomplete={} catch_up_ms={} keys_differing_after={differ} failed_flushes={}",
        history.latencies.get(&0).map_or(0, Vec::len),
        history.latencies.get(&1).map_or(0, Vec::len),
        healthy.as_micros(),
        down.as_micros(),
        down.as_secs_f64() / healthy.as_secs_f64().max(1e-9),
        history.errors,
        stats.dropped_writes,
        stats.incomplete,
        caught_up.as_millis(),
        stats.failed_flushes
    );
    assert_eq!(
        history.errors, 0,
        "the primary never failed while the backup was down"
    );
    assert!(
        max_pending_seen <= max_pending as u64,
        "the queue stays within its bound"
    );
    assert!(!stats.incomplete);
    assert_eq!(
        differ, 0,
        "the backup holds the primary's latest state of every key"
    );
}

/// Two instances, each with its own write-behind queue (one flushing every 700 ms, the other
/// every 50 ms), on one Redis (with tombstones) and one PostgreSQL, updating, touching and
/// logging out the same sessions concurrently. Once both have flushed, the backup holds exactly
/// what Redis holds, key by key, whatever order their flushes ran in; then Redis loses
/// everything and a restore brings back every live session and no logged-out one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_flushing_in_any_order_leave_the_backup_as_redis_holds_it() {
    if !faults_enabled() {
        return;
    }
    let _one = SERIAL.lock().await;
    let redis = Standalone::start().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let options = StoreOptions::new(random_prefix());
    let open_one = |interval_ms: u64| {
        let (redis_url, pg_url, options) = (redis.url(), pg.url(), options.clone());
        async move {
            let mut config = RedisConfig::new(redis_url);
            config.tombstone_ttl_ms = 600_000;
            let primary = RedisStore::builder(config)
                .options(options.clone())
                .connect()
                .await
                .unwrap();
            let backup = SqlStore::connect(SqlConfig::new(pg_url), options).await.unwrap();
            let backup_config =
                BackupConfig::default().with_flush_interval(Duration::from_millis(interval_ms));
            Arc::new(BackupStore::new(primary, backup, backup_config).unwrap())
        }
    };
    let instances = [open_one(700).await, open_one(50).await];
    const SESSIONS: usize = 300;
    let keys: Arc<Vec<SessionKey>> = Arc::new(
        (0..SESSIONS)
            .map(|_| SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap()))
            .collect(),
    );
    let record = || {
        let mut r = Record::new(CodecId::RAW, vec![7u8; 200], now_ms() + HOUR_MS);
        r.meta.version = Version::generate();
        r
    };
    for k in keys.iter() {
        instances[0].create(k, &record()).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Mutex::new(HashMap::<&'static str, u64>::new()));
    let mut tasks = Vec::new();
    for (n, store) in instances.iter().enumerate() {
        for t in 0..4u64 {
            let (store, keys, stop, counts) = (store.clone(), keys.clone(), stop.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                let mut rng = testkit_redis::stats::Rng::new(now_ms() ^ (n as u64 * 131 + t + 1));
                while !stop.load(Ordering::Relaxed) {
                    let k = &keys[rng.below(SESSIONS as u64) as usize];
                    // About one call in 400 a logout: a third of the sessions end by the end.
                    let roll = rng.below(400);
                    let outcome = if roll < 300 {
                        match store.update(k, &record()).await {
                            Ok(_) => "updated",
                            Err(e) if e.kind() == session_core::ErrorKind::NotFound => "update_after_logout",
                            Err(_) => "error",
                        }
                    } else if roll < 399 {
                        match store.touch(k, now_ms() + 2 * HOUR_MS).await {
                            Ok(true) => "touched",
                            Ok(false) => "touch_after_logout",
                            Err(_) => "error",
                        }
                    } else {
                        match store.delete(k).await {
                            Ok(true) => "logged_out",
                            Ok(false) => "logout_again",
                            Err(_) => "error",
                        }
                    };
                    *counts.lock().unwrap().entry(outcome).or_default() += 1;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // The fast one first, so the slow one's older states land last.
    instances[1].flush().await.unwrap();
    instances[0].flush().await.unwrap();

    let in_redis = versions(instances[0].primary(), &keys).await;
    let differing = deadlines(instances[0].primary(), &keys)
        .await
        .iter()
        .zip(&deadlines(instances[0].backup(), &keys).await)
        .filter(|(r, b)| r != b)
        .count();
    let live = in_redis.iter().filter(|v| v.is_some()).count();
    let reread: u64 = instances.iter().map(|s| s.backup_stats().reread).sum();

    // Redis loses everything; the slow instance restores.
    let client = instances[0].primary().clients().remove(0);
    let _: session_redis::fred::types::Value = client
        .custom(
            session_redis::fred::types::CustomCommand::new_static("FLUSHALL", None, false),
            Vec::<session_redis::fred::types::Value>::new(),
        )
        .await
        .unwrap();
    let progress = instances[0].restore_all(|_| {}).await.unwrap();
    let restored = versions(instances[0].primary(), &keys).await;
    let resurrected = in_redis
        .iter()
        .zip(&restored)
        .filter(|(before, after)| before.is_none() && after.is_some())
        .count();
    let lost = in_redis
        .iter()
        .zip(&restored)
        .filter(|(before, after)| before.is_some() && before != after)
        .count();
    let counts = counts.lock().unwrap().clone();
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_unstable();
    let ops: u64 = counts.iter().map(|(_, n)| n).sum();
    let errors = counts.iter().find(|(k, _)| *k == "error").map_or(0, |(_, n)| *n);
    println!(
        "FIGURES backup-two-instances: sessions={SESSIONS} ops={ops} {} live_at_end={live} reread={reread} \
         differing={differing} restored={} resurrected={resurrected} lost={lost}",
        counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" "),
        progress.copied,
    );
    assert_eq!(errors, 0, "no call failed on healthy servers");
    assert!(
        live > 0 && live < SESSIONS,
        "both live sessions and logouts at the end"
    );
    assert_eq!(
        differing, 0,
        "the backup holds what Redis holds (version and deadline), key by key"
    );
    assert_eq!(resurrected, 0, "a restore brought a logout back");
    assert_eq!(lost, 0, "a restore lost a live session's latest state");
}
