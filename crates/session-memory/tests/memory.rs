//! Behaviour specific to the memory store: bounds, the sweeper, concurrency, configuration.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use session_core::backend::{now_ms, CodecId, Record, HEADER_LEN};
use session_core::{
    Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions, StoreStats,
};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore, ENTRY_OVERHEAD_BYTES};

const HOUR_MS: u64 = 3_600_000;

fn key(namespace: &str) -> SessionKey {
    SessionKey::new(Namespace::new(namespace).unwrap(), SessionId::generate().unwrap())
}

fn rec_at(payload: &[u8], expires_at: u64) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), expires_at)
}

fn rec(payload: &[u8], ttl_ms: u64) -> Record {
    rec_at(payload, now_ms() + ttl_ms)
}

/// What the store charges for a session under `key` with `payload_len` bytes.
fn charge(store: &MemoryStore, key: &SessionKey, payload_len: usize) -> u64 {
    let key_len = store.key_prefix().as_str().len() + key.ns().len() + 1 + key.id.as_str().len();
    (key_len + HEADER_LEN + payload_len) as u64 + ENTRY_OVERHEAD_BYTES
}

async fn stats(store: &MemoryStore) -> StoreStats {
    store.stats().await.unwrap()
}

/// A current-thread runtime; a store built before `block_on` has no sweeper.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- bounds

#[test]
fn max_entries_evicts_the_soonest_expiring_of_a_sample() {
    let store = MemoryStore::new(MemoryConfig::default().with_max_entries(1000)).unwrap();
    runtime().block_on(async {
        let now = now_ms();
        let mut short = Vec::new();
        for i in 0..1000u64 {
            let k = key("task");
            // Half expire in an hour, half in ten hours.
            let deadline = if i % 2 == 0 {
                now + HOUR_MS
            } else {
                now + 10 * HOUR_MS
            };
            store.save(&k, &rec_at(b"x", deadline + i)).await.unwrap();
            if i % 2 == 0 {
                short.push(k);
            }
        }
        let mut fresh = Vec::new();
        for _ in 0..100 {
            let k = key("task");
            store.save(&k, &rec(b"new", 20 * HOUR_MS)).await.unwrap();
            fresh.push(k);
        }
        let st = stats(&store).await;
        assert_eq!(st.entries, Some(1000));
        assert_eq!(st.evicted, 100);
        assert_eq!((st.rejected, st.expired), (0, 0));
        for k in &fresh {
            assert!(store.load(k).await.unwrap().is_some(), "a new write was evicted");
        }
        let mut short_gone = 0;
        for k in &short {
            if store.load(k).await.unwrap().is_none() {
                short_gone += 1;
            }
        }
        // With 8-entry samples of a half-short population, a long-lived
        // session is picked with probability 1/256 per eviction.
        assert!(
            short_gone >= 90,
            "only {short_gone} of 100 evictions hit the soonest-expiring half"
        );
        assert_eq!(store.count(&Namespace::new("task").unwrap()).await.unwrap(), 1000);
    });
}

#[test]
fn max_entries_rejects_with_the_reject_policy() {
    let config = MemoryConfig::default()
        .with_max_entries(10)
        .with_at_capacity(AtCapacity::Reject);
    let store = MemoryStore::new(config).unwrap();
    runtime().block_on(async {
        let keys: Vec<SessionKey> = (0..10).map(|_| key("task")).collect();
        for k in &keys {
            store.create(k, &rec(b"x", HOUR_MS)).await.unwrap();
        }
        let extra = key("task");
        let e = store.create(&extra, &rec(b"x", HOUR_MS)).await.unwrap_err();
        assert!(
            matches!(
                e,
                Error::Full {
                    backend: "memory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("max_entries"), "{e}");
        assert!(!e.is_temporary());
        let e = store.save(&extra, &rec(b"x", HOUR_MS)).await.unwrap_err();
        assert!(matches!(e, Error::Full { .. }), "{e}");
        let st = stats(&store).await;
        assert_eq!((st.entries, st.rejected, st.evicted), (Some(10), 2, 0));
        // Writes to stored sessions still work; every session is kept.
        store.save(&keys[0], &rec(b"y", HOUR_MS)).await.unwrap();
        store.update(&keys[1], &rec(b"z", HOUR_MS)).await.unwrap();
        for k in &keys {
            assert!(store.load(k).await.unwrap().is_some());
        }
        // A delete makes room.
        assert!(store.delete(&keys[2]).await.unwrap());
        store.create(&extra, &rec(b"x", HOUR_MS)).await.unwrap();
        assert_eq!(stats(&store).await.entries, Some(10));
    });
}

#[test]
fn expired_entries_are_reclaimed_before_rejecting() {
    let config = MemoryConfig::default()
        .with_max_entries(10)
        .with_at_capacity(AtCapacity::Reject);
    let store = MemoryStore::new(config).unwrap();
    assert!(!store.has_sweeper());
    runtime().block_on(async {
        for _ in 0..5 {
            store.save(&key("task"), &rec(b"short", 100)).await.unwrap();
        }
        for _ in 0..5 {
            store.save(&key("task"), &rec(b"long", HOUR_MS)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        // No sweeper: the five expired entries still take room...
        assert_eq!(stats(&store).await.entries, Some(10));
        // ...until writes need it.
        for _ in 0..5 {
            store.create(&key("task"), &rec(b"new", HOUR_MS)).await.unwrap();
        }
        let st = stats(&store).await;
        assert_eq!(
            (st.entries, st.expired, st.rejected, st.evicted),
            (Some(10), 5, 0, 0)
        );
        let e = store.create(&key("task"), &rec(b"x", HOUR_MS)).await.unwrap_err();
        assert!(matches!(e, Error::Full { .. }), "{e}");
    });
}

#[test]
fn max_bytes_counts_keys_envelopes_and_overhead() {
    let small = MemoryConfig::default();
    let options = StoreOptions::default().with_max_session_bytes(1000).unwrap();
    let probe = MemoryStore::with_options(small.clone(), options.clone()).unwrap();
    let per_entry = charge(&probe, &key("task"), 500);
    for policy in [AtCapacity::EvictSoonestExpiring, AtCapacity::Reject] {
        let config = small
            .clone()
            .with_max_bytes(3 * per_entry)
            .with_at_capacity(policy);
        let store = MemoryStore::with_options(config, options.clone()).unwrap();
        runtime().block_on(async {
            let keys: Vec<SessionKey> = (0..3).map(|_| key("task")).collect();
            for k in &keys {
                store.save(k, &rec(&[0; 500], HOUR_MS)).await.unwrap();
            }
            let st = stats(&store).await;
            assert_eq!((st.entries, st.bytes), (Some(3), Some(3 * per_entry)));
            let fourth = key("task");
            let r = store.save(&fourth, &rec(&[0; 500], HOUR_MS)).await;
            let st = stats(&store).await;
            match policy {
                AtCapacity::EvictSoonestExpiring => {
                    r.unwrap();
                    assert_eq!((st.evicted, st.rejected), (1, 0));
                    assert_eq!((st.entries, st.bytes), (Some(3), Some(3 * per_entry)));
                }
                _ => {
                    assert!(matches!(r, Err(Error::Full { .. })), "{r:?}");
                    assert!(r.unwrap_err().to_string().contains("max_bytes"));
                    assert_eq!((st.evicted, st.rejected), (0, 1));
                    // Growing a stored session past the bound is refused too...
                    let e = store.save(&keys[0], &rec(&[0; 600], HOUR_MS)).await.unwrap_err();
                    assert!(matches!(e, Error::Full { .. }), "{e}");
                    // ...shrinking one frees bytes.
                    store.save(&keys[0], &rec(&[0; 100], HOUR_MS)).await.unwrap();
                    assert_eq!(stats(&store).await.bytes, Some(3 * per_entry - 400));
                    assert_eq!(stats(&store).await.rejected, 2);
                }
            }
            // Deleting everything brings the gauges back to zero.
            for k in keys.iter().chain([&fourth]) {
                store.delete(k).await.unwrap();
            }
            let st = stats(&store).await;
            assert_eq!((st.entries, st.bytes), (Some(0), Some(0)));
        });
    }
}

#[test]
fn a_write_never_evicts_its_own_session() {
    let options = StoreOptions::default().with_max_session_bytes(1000).unwrap();
    // Room for one session of 900 bytes, not for two of 100.
    let config = MemoryConfig::default().with_max_bytes(MemoryConfig::min_max_bytes(&options));
    let store = MemoryStore::with_options(config, options).unwrap();
    runtime().block_on(async {
        let k = key("task");
        let j = key("task");
        store.save(&k, &rec(&[1; 100], HOUR_MS)).await.unwrap();
        store.save(&j, &rec(&[1; 100], 10 * HOUR_MS)).await.unwrap();
        // Growing k needs j's room: j goes although k expires sooner.
        let before = store.load(&k).await.unwrap().unwrap().meta.version;
        let m = store.update(&k, &rec(&[2; 900], HOUR_MS)).await.unwrap();
        assert_ne!(m.version, before);
        assert!(store.load(&j).await.unwrap().is_none());
        assert_eq!(store.load(&k).await.unwrap().unwrap().payload.len(), 900);
        // A newcomer evicts k, the only other session.
        let other = key("task");
        store.save(&other, &rec(&[3; 100], HOUR_MS)).await.unwrap();
        assert!(store.load(&k).await.unwrap().is_none());
        assert!(store.load(&other).await.unwrap().is_some());
        let st = stats(&store).await;
        assert_eq!((st.evicted, st.entries), (2, Some(1)));
    });
}

#[test]
fn rotate_keeps_the_gauges() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    runtime().block_on(async {
        let k = key("task");
        store.save(&k, &rec(b"x", HOUR_MS)).await.unwrap();
        let before = stats(&store).await;
        let longer = SessionId::parse(&"a".repeat(40)).unwrap();
        store.rotate(&k, &longer).await.unwrap();
        let after = stats(&store).await;
        assert_eq!(after.entries, Some(1));
        assert_eq!(after.bytes, Some(before.bytes.unwrap() + 40 - 22));
        let moved = SessionKey::new(k.namespace.clone(), longer);
        let other = key("task");
        store.save(&other, &rec(b"y", HOUR_MS)).await.unwrap();
        let e = store.rotate(&moved, &other.id).await.unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
        let st = stats(&store).await;
        assert_eq!(st.entries, Some(2));
        assert_eq!(st.bytes, Some(after.bytes.unwrap() + charge(&store, &other, 1)));
    });
}

// ---------------------------------------------------------------- expiry and the sweeper

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_reclaims_expired_entries() {
    let config = MemoryConfig::default().with_sweep_interval(Duration::from_millis(50));
    let store = MemoryStore::new(config).unwrap();
    assert!(store.has_sweeper());
    let long: Vec<SessionKey> = (0..5).map(|_| key("task")).collect();
    for k in &long {
        store.save(k, &rec(b"long", HOUR_MS)).await.unwrap();
    }
    let kept = stats(&store).await.bytes.unwrap();
    for _ in 0..20 {
        store.save(&key("task"), &rec(b"short", 150)).await.unwrap();
    }
    let st = stats(&store).await;
    assert_eq!(st.entries, Some(25));
    assert!(st.bytes.unwrap() > kept);
    // Nothing reads the short sessions: only the sweeper can reclaim them.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = stats(&store).await;
        if st.entries == Some(5) {
            assert_eq!(st.bytes, Some(kept));
            assert_eq!(st.expired, 20);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reclaimed: {st:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for k in &long {
        assert!(store.load(k).await.unwrap().is_some());
    }
}

#[test]
fn sweeper_task_ends_when_the_store_is_dropped() {
    let rt = runtime();
    let alive = || rt.metrics().num_alive_tasks();
    rt.block_on(async {
        assert_eq!(alive(), 0);
        let config = MemoryConfig::default().with_sweep_interval(Duration::from_millis(10));
        let store = MemoryStore::new(config).unwrap();
        assert!(store.has_sweeper());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(alive(), 1, "the sweeper runs");
        drop(store);
        for _ in 0..100 {
            if alive() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(alive(), 0, "the sweeper outlived its store");
    });
}

#[test]
fn without_a_runtime_sweep_now_reclaims() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    assert!(!store.has_sweeper());
    runtime().block_on(async {
        for _ in 0..10 {
            store.save(&key("task"), &rec(b"x", 50)).await.unwrap();
        }
        store.save(&key("task"), &rec(b"x", HOUR_MS)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        // Invisible at once...
        assert_eq!(store.count(&Namespace::new("task").unwrap()).await.unwrap(), 1);
        // ...and reclaimed on demand.
        assert_eq!(stats(&store).await.entries, Some(11));
        assert_eq!(store.sweep_now(), 10);
        let st = stats(&store).await;
        assert_eq!((st.entries, st.expired), (Some(1), 10));
        assert_eq!(store.sweep_now(), 0);
    });
}

#[test]
fn a_load_that_meets_an_expired_entry_reclaims_it() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    runtime().block_on(async {
        let k = key("task");
        store.save(&k, &rec(b"x", 50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.load(&k).await.unwrap().is_none());
        let st = stats(&store).await;
        assert_eq!((st.entries, st.bytes, st.expired), (Some(0), Some(0), 1));
    });
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_readers_and_writers_on_different_keys() {
    let store = Arc::new(MemoryStore::new(MemoryConfig::default()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..32u8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let keys: Vec<SessionKey> = (0..40).map(|_| key("task")).collect();
            for k in &keys {
                store.create(k, &rec(&[t, 0], HOUR_MS)).await.unwrap();
            }
            for round in 1..=20u8 {
                for k in &keys {
                    let got = store.load(k).await.unwrap().unwrap();
                    assert_eq!(got.payload[..], [t, round - 1]);
                    let m = match round % 3 {
                        0 => store.save(k, &rec(&[t, round], HOUR_MS)).await.unwrap(),
                        1 => store.update(k, &rec(&[t, round], HOUR_MS)).await.unwrap(),
                        _ => store
                            .save_if(k, got.meta.version, &rec(&[t, round], HOUR_MS))
                            .await
                            .unwrap(),
                    };
                    assert_ne!(m.version, got.meta.version);
                }
                tokio::task::yield_now().await;
            }
            for k in &keys[..10] {
                assert!(store.delete(k).await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.count(&Namespace::new("task").unwrap()).await.unwrap(),
        32 * 30
    );
    let st = stats(&store).await;
    assert_eq!(st.entries, Some(32 * 30));
    assert_eq!((st.evicted, st.rejected, st.expired), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_pass_the_bound() {
    let store = Arc::new(MemoryStore::new(MemoryConfig::default().with_max_entries(100)).unwrap());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..200 {
                store.save(&key("task"), &rec(b"x", HOUR_MS)).await.unwrap();
                let st = store.stats().await.unwrap();
                assert!(st.entries.unwrap() <= 100, "{st:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let st = stats(&store).await;
    assert_eq!(st.entries, Some(100));
    assert_eq!(st.evicted, 16 * 200 - 100);
    assert_eq!(store.count(&Namespace::new("task").unwrap()).await.unwrap(), 100);
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_errors_name_their_keys() {
    let bad = [
        (MemoryConfig::default().with_max_entries(0), "memory.max_entries"),
        (MemoryConfig::default().with_max_bytes(10), "memory.max_bytes"),
        (
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            "memory.sweep_interval_ms",
        ),
    ];
    for (config, name) in bad {
        match MemoryStore::new(config) {
            Err(Error::Config { key, message, .. }) => {
                assert_eq!(key, name);
                assert!(!message.is_empty());
            }
            other => panic!("expected a Config error for {name}, got {other:?}"),
        }
    }
}

#[test]
fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
    let c: MemoryConfig = serde_json::from_str(r#"{"max_entries": 5000, "at_capacity": "reject"}"#).unwrap();
    assert_eq!(c.max_entries, 5000);
    assert_eq!(c.at_capacity, AtCapacity::Reject);
    assert_eq!(c.max_bytes, MemoryConfig::default().max_bytes);
    let options = StoreOptions::new(KeyPrefix::new("omnia:session:").unwrap());
    let store = MemoryStore::with_options(c, options).unwrap();
    assert_eq!(store.key_prefix().as_str(), "omnia:session:");
    // The key prefix and the size limit are shared settings, not the memory section's.
    assert!(serde_json::from_str::<MemoryConfig>(r#"{"key_prefix": "a:"}"#).is_err());
    assert!(serde_json::from_str::<MemoryConfig>(r#"{"max_session_bytes": 100}"#).is_err());
    let empty: MemoryConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, MemoryConfig::default());
    assert!(serde_json::from_str::<MemoryConfig>(r#"{"max_entires": 5}"#).is_err());
    assert!(serde_json::from_str::<MemoryConfig>(r#"{"at_capacity": "lru"}"#).is_err());
    let evict: MemoryConfig = serde_json::from_str(r#"{"at_capacity": "evict_soonest_expiring"}"#).unwrap();
    assert_eq!(evict.at_capacity, AtCapacity::EvictSoonestExpiring);
}

#[tokio::test]
async fn stats_and_health_report_the_memory_backend() {
    let store = MemoryStore::default();
    let h = store.health().await;
    assert!(h.is_up());
    assert_eq!(h.backend, "memory");
    let st = stats(&store).await;
    assert_eq!(st.backend, "memory");
    assert!(st
        .extra
        .contains(&("max_entries", session_memory::DEFAULT_MAX_ENTRIES)));
    assert!(st.extra.contains(&("shards", store.shard_count() as u64)));
    assert!(store.shard_count().is_power_of_two() && store.shard_count() >= 32);
}
