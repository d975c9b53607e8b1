//! Log out everywhere on a Redis Cluster (3 masters + 3 replicas), with three instances: one
//! principal's sessions on every master, two instances loading them (one through its near
//! cache) while the third revokes them all. Every load that starts after `revoke_all`
//! returned misses on the instance without a near cache; on the one with it, only within the
//! near cache's invalidation delay (measured); another principal's sessions stay.
//!
//! Run by `cargo xtask test` (step `faults`), or by hand:
//! `SESSION_TEST_FAULTS=1 cargo test -p session-redis --test faults_principals -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "fault scenarios: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use session_core::{
    KeyPrefix, Namespace, Principal, SessionId, SessionKey, SessionStore, Sessions, StoreOptions,
};
use session_redis::{NearCacheConfig, RedisConfig, RedisStore};
use testkit_redis::{faults_enabled, Cluster};

const LIMIT: Duration = Duration::from_secs(30);
/// Sessions of the revoked principal on each master.
const PER_MASTER: usize = 4;

async fn instance(url: &str, prefix: &KeyPrefix, near: bool) -> RedisStore {
    let mut config = RedisConfig::new(url.to_owned());
    config.timeout_ms = 1_000;
    if near {
        config.near_cache = NearCacheConfig::enabled();
    }
    let store = RedisStore::builder(config)
        .options(StoreOptions::new(prefix.clone()))
        .connect()
        .await
        .expect("connects");
    let started = Instant::now();
    while near && !store.near_cache_stats().unwrap().serving {
        assert!(started.elapsed() < LIMIT, "the near cache serves");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
}

fn sessions(store: &RedisStore) -> Sessions<String> {
    Sessions::new(
        Arc::new(store.clone()) as Arc<dyn SessionStore>,
        Namespace::new("login").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_reaches_every_master_and_every_instance() {
    if !faults_enabled() {
        return;
    }
    let cluster = Cluster::start().expect("cluster starts");
    let url = cluster.url();
    let prefix = KeyPrefix::new(&format!("pr{}:", SessionId::generate().unwrap().short_hash())).unwrap();
    let a = instance(&url, &prefix, false).await;
    let b = instance(&url, &prefix, false).await;
    let c = instance(&url, &prefix, true).await;
    let (sa, sb, sc) = (sessions(&a), sessions(&b), sessions(&c));
    let (alice, bob) = (
        Principal::new("alice@example.com").unwrap(),
        Principal::new("bob").unwrap(),
    );

    // Alice's sessions until every master holds PER_MASTER of them.
    let masters = cluster.masters().unwrap().len();
    let mut per_node = std::collections::HashMap::new();
    let mut alices = Vec::new();
    let started = Instant::now();
    while per_node.len() < masters || per_node.values().any(|n: &usize| *n < PER_MASTER) {
        assert!(started.elapsed() < LIMIT, "sessions on every master");
        let mut s = sa.create("a device of alice".to_owned()).await.unwrap();
        let part = a.partition(&SessionKey::new(Namespace::new("login").unwrap(), s.id.clone()));
        let n = per_node.entry(part).or_insert(0);
        if *n >= PER_MASTER {
            sa.delete(&s.id).await.unwrap();
            continue;
        }
        *n += 1;
        sa.bind(&mut s, &alice).await.unwrap();
        alices.push(s.id);
    }
    let mut bobs = Vec::new();
    for _ in 0..6 {
        let mut s = sb.create("a device of bob".to_owned()).await.unwrap();
        sb.bind(&mut s, &bob).await.unwrap();
        bobs.push(s.id);
    }
    let listed: BTreeSet<SessionId> = sc.list(&alice).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(
        listed,
        alices.iter().cloned().collect(),
        "listed from another instance"
    );

    // Readers on B and C until well after the revoke; each load is timed.
    let stop = Arc::new(AtomicBool::new(false));
    let revoked_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    // [plain, near]: loads started after the revoke returned that found a session, and the
    // latest such start after the revoke (µs).
    let served_after = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let stale_us = Arc::new(AtomicU64::new(0));
    let loads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for (s, near) in [(sb.clone(), 0), (sc.clone(), 1), (sb.clone(), 0), (sc.clone(), 1)] {
        let (ids, stop, revoked_at, served_after, stale_us, loads) = (
            alices.clone(),
            Arc::clone(&stop),
            Arc::clone(&revoked_at),
            Arc::clone(&served_after),
            Arc::clone(&stale_us),
            Arc::clone(&loads),
        );
        readers.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let found = s.load(&ids[i % ids.len()]).await.unwrap().is_some();
                loads.fetch_add(1, Ordering::Relaxed);
                let after = *revoked_at.lock().unwrap();
                if let Some(at) = after.filter(|at| found && began >= *at) {
                    served_after[near].fetch_add(1, Ordering::Relaxed);
                    let us = u64::try_from(began.duration_since(at).as_micros()).unwrap_or(u64::MAX);
                    stale_us.fetch_max(us, Ordering::Relaxed);
                }
                i += 1;
                // A near-cache hit completes without waiting: let the revoke run too.
                tokio::task::yield_now().await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revoke_began = Instant::now();
    let revoked = sa.revoke_all(&alice).await.unwrap().ended;
    let revoke_ms = revoke_began.elapsed().as_secs_f64() * 1000.0;
    *revoked_at.lock().unwrap() = Some(Instant::now());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    let mut still = 0;
    for s in [&sa, &sb, &sc] {
        for id in &alices {
            if s.load(id).await.unwrap().is_some() {
                still += 1;
            }
        }
    }
    let mut bob_kept = 0;
    for id in &bobs {
        if sc.load(id).await.unwrap().is_some() {
            bob_kept += 1;
        }
    }
    let stale_ms = stale_us.load(Ordering::Relaxed) as f64 / 1000.0;
    println!(
        "FIGURES principals-cluster: masters={masters} sessions={} revoked={revoked} revoke_ms={revoke_ms:.1} \
         loads={} served_after_revoke={} served_after_revoke_near_cache={} near_cache_window_ms={stale_ms:.1} \
         still_loading={still} other_principal_kept={bob_kept}/{} listed_after={}",
        alices.len(),
        loads.load(Ordering::Relaxed),
        served_after[0].load(Ordering::Relaxed),
        served_after[1].load(Ordering::Relaxed),
        bobs.len(),
        sb.list(&alice).await.unwrap().len(),
    );
    assert_eq!(revoked as usize, alices.len());
    assert_eq!(
        served_after[0].load(Ordering::Relaxed),
        0,
        "a revoked session was served"
    );
    assert!(
        stale_ms <= f64::from(u32::try_from(NearCacheConfig::enabled().max_stale_ms).unwrap_or(u32::MAX)),
        "served from a near cache {stale_ms} ms after the revoke"
    );
    assert_eq!(still, 0);
    assert_eq!(bob_kept, bobs.len());
    assert!(loads.load(Ordering::Relaxed) > 100, "the readers ran");
}

/// A revoke racing rotations on two other instances (one Redis): every session of the
/// principal is rotated again and again (each chain by one task, as a web layer refreshing a
/// stolen cookie on every request would) while a third instance revokes. Once `revoke_all`
/// has returned, no rotation succeeds, and no session of the principal is left anywhere —
/// neither the chains' latest ids nor any key Redis holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_all_wins_over_rotations_racing_it() {
    if !faults_enabled() {
        return;
    }
    let server = testkit_redis::RedisServer::start().expect("redis-server starts");
    let url = server.url();
    let prefix = KeyPrefix::new(&format!("rr{}:", SessionId::generate().unwrap().short_hash())).unwrap();
    let (a, b, c) = (
        instance(&url, &prefix, false).await,
        instance(&url, &prefix, false).await,
        instance(&url, &prefix, false).await,
    );
    let (sa, sb, sc) = (sessions(&a), sessions(&b), sessions(&c));
    let alice = Principal::new("alice@example.com").unwrap();
    const CHAINS: usize = 8;
    let mut chains = Vec::new();
    for _ in 0..CHAINS {
        let mut s = sa.create("a device of alice".to_owned()).await.unwrap();
        sa.bind(&mut s, &alice).await.unwrap();
        chains.push(Arc::new(Mutex::new(s.id)));
    }
    let revoked_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let rotations = Arc::new(AtomicU64::new(0));
    let rotated_after = Arc::new(AtomicU64::new(0));
    let mut rotators = Vec::new();
    for (n, chain) in chains.iter().enumerate() {
        let s = if n % 2 == 0 { sa.clone() } else { sc.clone() };
        let (chain, revoked_at, rotations, rotated_after) = (
            Arc::clone(chain),
            Arc::clone(&revoked_at),
            Arc::clone(&rotations),
            Arc::clone(&rotated_after),
        );
        rotators.push(tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let current = chain.lock().unwrap().clone();
                let began = Instant::now();
                match s.rotate(&current).await {
                    Ok(new_id) => {
                        rotations.fetch_add(1, Ordering::Relaxed);
                        if revoked_at.lock().unwrap().is_some_and(|at| began >= at) {
                            rotated_after.fetch_add(1, Ordering::Relaxed);
                        }
                        *chain.lock().unwrap() = new_id;
                    }
                    Err(session_core::Error::NotFound { .. }) => return,
                    Err(e) => panic!("rotate: {e}"),
                }
                assert!(started.elapsed() < LIMIT, "a chain outlived the revoke");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rotations.load(Ordering::Relaxed);
    let revoked = sb.revoke_all(&alice).await.unwrap();
    *revoked_at.lock().unwrap() = Some(Instant::now());
    for r in rotators {
        r.await.unwrap();
    }
    let mut latest_alive = 0;
    for chain in &chains {
        let id = chain.lock().unwrap().clone();
        if sb.load(&id).await.unwrap().is_some() {
            latest_alive += 1;
        }
    }
    // Every key Redis holds under the prefix: none a session bound to alice.
    let mut bound_left = 0;
    let mut cursor = None;
    loop {
        let page = b.scan(cursor.as_ref(), 500).await.unwrap();
        for (key, record) in &page.sessions {
            if matches!(record.principal(key.ns()), Ok(Some(p)) if p == alice) {
                bound_left += 1;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let again = sb.revoke_all(&alice).await.unwrap().ended;
    println!(
        "FIGURES principals-rotate-race: chains={CHAINS} rotations_before_revoke={before} rotations={} \
         revoked={} rotated_after_revoke={} latest_alive={latest_alive} bound_left={bound_left} \
         revoke_again={again} listed_after={}",
        rotations.load(Ordering::Relaxed),
        revoked.ended,
        rotated_after.load(Ordering::Relaxed),
        sc.list(&alice).await.unwrap().len(),
    );
    assert!(before > CHAINS as u64, "the chains rotated before the revoke");
    assert_eq!(
        rotated_after.load(Ordering::Relaxed),
        0,
        "a rotation after the revoke succeeded"
    );
    assert_eq!(latest_alive, 0, "a rotated session escaped the revoke");
    assert_eq!(bound_left, 0, "a session of the principal is left in Redis");
    assert_eq!(again, 0);
}
