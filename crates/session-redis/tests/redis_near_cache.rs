//! The near cache on real Redis, beyond the conformance suite (which also runs with it on):
//! loads answered from memory once tracking is up, another instance's writes and deletes seen
//! after their invalidation arrives, this instance's own writes at once, no copy past its
//! deadline, `save_if` safe whatever a read returned, the bounds, and its figures in `stats()`
//! and `health()`.
//!
//! Runs against the topology under test (`SESSION_TEST_TOPOLOGY`, see `testkit_redis::env`);
//! skips when none is configured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use std::time::{Duration, Instant};

use common::config_for;
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_redis::fred::interfaces::ClientLike;
use session_redis::{NearCacheConfig, RedisConfig, RedisStore};
use testkit_redis::{topology_url, Topology};

const HOUR_MS: u64 = 3_600_000;

fn config() -> Option<RedisConfig> {
    let target = Topology::ALL.into_iter().find_map(topology_url)?;
    let mut config = config_for(&target);
    config.near_cache = NearCacheConfig::enabled();
    Some(config)
}

async fn store(config: &RedisConfig, prefix: &KeyPrefix) -> RedisStore {
    let store = RedisStore::builder(config.clone())
        .options(StoreOptions::new(prefix.clone()))
        .connect()
        .await
        .expect("store connects");
    serving(&store).await;
    store
}

/// Waits until the store's near cache serves (tracking set up on every primary).
async fn serving(store: &RedisStore) {
    let started = Instant::now();
    while !store.near_cache_stats().expect("near cache on").serving {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the near cache serves within 10 s: {:?}",
            store.near_cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR_MS)
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("near").unwrap(), SessionId::generate().unwrap())
}

async fn payload(store: &RedisStore, key: &SessionKey) -> Option<Vec<u8>> {
    store.load(key).await.unwrap().map(|r| r.payload.to_vec())
}

/// A store with one session, created and loaded once since Redis's invalidation of the create
/// arrived (a read that invalidation overtakes is not kept), so the next load is a hit.
async fn store_with_one(config: &RedisConfig) -> (RedisStore, SessionKey) {
    let prefix = session_core::testing::random_prefix();
    let a = store(config, &prefix).await;
    let key = new_key();
    a.create(&key, &rec(b"one")).await.unwrap();
    a.sync_near_cache().await;
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"one"[..]));
    (a, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_session_is_answered_from_memory() {
    let Some(config) = config() else { return };
    let (a, key) = store_with_one(&config).await;
    let before = a.near_cache_stats().unwrap();
    for _ in 0..10 {
        assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"one"[..]));
    }
    let after = a.near_cache_stats().unwrap();
    assert!(
        after.hits >= before.hits + 10,
        "ten loads answered from memory: {before:?} → {after:?}"
    );
    assert_eq!(after.entries, 1);
    assert!(after.bytes > 0);
    let stats = a.stats().await.unwrap();
    let hits = stats.extra.iter().find(|(n, _)| *n == "near_cache_hits");
    assert!(hits.is_some_and(|(_, v)| *v >= 10), "{:?}", stats.extra);
    let health = a.health().await;
    let detail = health.detail.unwrap_or_default();
    assert!(detail.contains("near cache serving, 1 sessions"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_write_and_delete_are_seen_once_their_invalidation_arrives() {
    let Some(config) = config() else { return };
    let prefix = session_core::testing::random_prefix();
    let (a, b) = (store(&config, &prefix).await, store(&config, &prefix).await);
    let key = new_key();
    a.create(&key, &rec(b"v1")).await.unwrap();
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"v1"[..]), "cached");

    b.save(&key, &rec(b"v2")).await.unwrap();
    a.sync_near_cache().await;
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        payload(&a, &key).await.as_deref(),
        Some(&b"v2"[..]),
        "cached again"
    );

    assert!(b.delete(&key).await.unwrap());
    a.sync_near_cache().await;
    assert_eq!(payload(&a, &key).await, None, "a logout on B is a logout on A");

    // Without the explicit sync, the invalidation arrives by itself, in milliseconds.
    let other = new_key();
    a.create(&other, &rec(b"w1")).await.unwrap();
    assert_eq!(payload(&a, &other).await.as_deref(), Some(&b"w1"[..]));
    b.save(&other, &rec(b"w2")).await.unwrap();
    let acked = Instant::now();
    while payload(&a, &other).await.as_deref() != Some(&b"w2"[..]) {
        assert!(
            acked.elapsed() < Duration::from_secs(2),
            "the invalidation arrives"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!(
        "FIGURES near-cache-invalidation: first_fresh_read_ms={:.2}",
        acked.elapsed().as_secs_f64() * 1e3
    );
    assert!(a.near_cache_stats().unwrap().invalidations >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_are_read_back_at_once() {
    let Some(config) = config() else { return };
    let prefix = session_core::testing::random_prefix();
    let a = store(&config, &prefix).await;
    let key = new_key();
    let new_id = SessionId::generate().unwrap();
    let moved = SessionKey::new(key.namespace.clone(), new_id.clone());
    for round in 0..50u32 {
        let value = format!("r{round}");
        a.save(&key, &rec(value.as_bytes())).await.unwrap();
        assert_eq!(
            payload(&a, &key).await.as_deref(),
            Some(value.as_bytes()),
            "round {round}"
        );
    }
    let loaded = a.load(&key).await.unwrap().unwrap();
    let mut next = rec(b"by save_if");
    next.meta.version = loaded.meta.version;
    a.save_if(&key, loaded.meta.version, &next).await.unwrap();
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"by save_if"[..]));
    a.rotate(&key, &new_id).await.unwrap();
    assert_eq!(payload(&a, &key).await, None, "the old id is gone at once");
    assert_eq!(payload(&a, &moved).await.as_deref(), Some(&b"by save_if"[..]));
    assert!(a.delete(&moved).await.unwrap());
    assert_eq!(payload(&a, &moved).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_if_from_a_stale_read_is_a_conflict_never_a_lost_update() {
    let Some(config) = config() else { return };
    let prefix = session_core::testing::random_prefix();
    let (a, b) = (store(&config, &prefix).await, store(&config, &prefix).await);
    let key = new_key();
    a.create(&key, &rec(b"v1")).await.unwrap();
    let read = a.load(&key).await.unwrap().unwrap();
    b.save(&key, &rec(b"by B")).await.unwrap();
    // Whatever A's cache says now, a write based on v1 must not replace B's.
    let stale = a.load(&key).await.unwrap().unwrap();
    let base = if stale.payload.as_ref() == b"v1" {
        stale.meta.version
    } else {
        read.meta.version
    };
    let err = a.save_if(&key, base, &rec(b"by A")).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    b.sync_near_cache().await;
    assert_eq!(payload(&b, &key).await.as_deref(), Some(&b"by B"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_is_never_served_past_its_deadline() {
    let Some(config) = config() else { return };
    let prefix = session_core::testing::random_prefix();
    let a = store(&config, &prefix).await;
    let key = new_key();
    let deadline = now_ms() + 300;
    a.create(&key, &Record::new(CodecId::RAW, b"short".to_vec(), deadline))
        .await
        .unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    assert!(a.load(&key).await.unwrap().is_some(), "cached");
    // Redis holds a key until its clock is past the deadline (not at it).
    while now_ms() <= deadline + 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(payload(&a, &key).await, None, "not past its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_hold_and_evictions_are_counted() {
    let Some(mut config) = config() else { return };
    config.near_cache.max_entries = 10;
    let prefix = session_core::testing::random_prefix();
    let a = store(&config, &prefix).await;
    let keys: Vec<SessionKey> = (0..50).map(|_| new_key()).collect();
    for key in &keys {
        a.create(key, &rec(b"x")).await.unwrap();
        // Redis's invalidation of the create itself, once here, keeps nothing out any more.
        a.sync_near_cache().await;
        assert!(a.load(key).await.unwrap().is_some());
    }
    let stats = a.near_cache_stats().unwrap();
    assert!(stats.entries <= 10, "{stats:?}");
    assert!(stats.evictions >= 40, "{stats:?}");
    // Everything still loads, from Redis when not held.
    let loaded = a.load_many(&keys).await.unwrap();
    assert!(loaded.iter().all(|r| matches!(r, Ok(Some(_)))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_store_answers_nothing_from_its_cache() {
    let Some(config) = config() else { return };
    let (a, key) = store_with_one(&config).await;
    assert!(a.load(&key).await.unwrap().is_some(), "cached");
    a.close().await;
    let stats = a.near_cache_stats().unwrap();
    assert!(!stats.serving, "{stats:?}");
    let err = a.load(&key).await.unwrap_err();
    assert!(err.is_temporary(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_with_their_key() {
    let Some(mut config) = config() else { return };
    config.near_cache.max_entries = 0;
    let err = RedisStore::connect(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("redis.near_cache.max_entries"), "{err}");
    config.near_cache.max_entries = 10;
    config.near_cache.max_stale_ms = 0;
    let err = RedisStore::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("redis.near_cache.max_stale_ms"), "{err}");
}

/// A user that may not subscribe to `__redis__:invalidate` (an ACL with `resetchannels` and no
/// `&__redis__:invalidate`): Redis refuses the listener's `SUBSCRIBE` and drops every
/// invalidation meant for it, so the cache must never serve — another instance's write is seen
/// at once, through Redis. (Standalone only: the test creates the user.)
#[tokio::test]
async fn a_user_who_may_not_subscribe_gets_no_cache_and_no_stale_read() {
    let Some(target) = topology_url(Topology::Standalone) else {
        return;
    };
    let admin = RedisStore::connect(config_for(&target)).await.unwrap();
    let user = format!("near-nochan-{}", std::process::id());
    let client = admin.clients().remove(0);
    let _: session_redis::fred::types::Value = client
        .custom(
            session_redis::fred::types::CustomCommand::new_static("ACL", None, false),
            vec![
                "SETUSER",
                user.as_str(),
                "reset",
                "on",
                ">s3cret",
                "~*",
                "resetchannels",
                "+@all",
            ],
        )
        .await
        .unwrap();
    let mut config = config_for(&target);
    config.url = target
        .url
        .replacen("redis://", &format!("redis://{user}:s3cret@"), 1);
    config.near_cache = NearCacheConfig::enabled();
    let prefix = session_core::testing::random_prefix();
    let a = RedisStore::builder(config)
        .options(StoreOptions::new(prefix.clone()))
        .connect()
        .await
        .unwrap();
    let b = RedisStore::builder(config_for(&target))
        .options(StoreOptions::new(prefix))
        .connect()
        .await
        .unwrap();
    let key = new_key();
    a.create(&key, &rec(b"one")).await.unwrap();
    // Longer than a tracker takes to set up when it may.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.sync_near_cache().await;
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"one"[..]));
    assert_eq!(payload(&a, &key).await.as_deref(), Some(&b"one"[..]));
    b.save(&key, &rec(b"two")).await.unwrap();
    a.sync_near_cache().await;
    assert_eq!(
        payload(&a, &key).await.as_deref(),
        Some(&b"two"[..]),
        "a stale read: {:?}",
        a.near_cache_stats()
    );
    let stats = a.near_cache_stats().unwrap();
    assert!(!stats.serving && stats.hits == 0, "{stats:?}");
    let _: session_redis::fred::types::Value = client
        .custom(
            session_redis::fred::types::CustomCommand::new_static("ACL", None, false),
            vec!["DELUSER", user.as_str()],
        )
        .await
        .unwrap();
}
