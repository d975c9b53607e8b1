//! One circuit per partition of the primary, driven by `PartitionedStore` (a fake primary of
//! two or three parts over one memory store, each part failing on its own, like the nodes of
//! a Redis Cluster): a failing part opens only its own circuit, keys of the healthy parts keep
//! going to the primary, probes and replay happen per partition, a key whose partition changed
//! (a failover) is replayed under its new partition, and the healthy path asks no partition.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Partition, Record};
use session_core::testing::{FaultMode, PartitionedStore};
use session_core::{Bytes, Error, HealthStatus, Meta, Namespace, SessionKey, SessionStore, Version};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};

type Primary = Arc<PartitionedStore<MemoryStore>>;
type Secondary = Arc<MemoryStore>;
type Store = FallbackStore<Primary, Secondary>;

const HOUR: u64 = 3_600_000;

fn memory() -> MemoryStore {
    MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap()
}

fn primary_memory() -> MemoryStore {
    MemoryStore::new(
        MemoryConfig::default()
            .with_at_capacity(AtCapacity::Reject)
            .with_tombstones(Duration::from_secs(3600)),
    )
    .unwrap()
}

fn fast() -> FallbackConfig {
    FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(150))
        .with_probe_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_startup_wait(Duration::from_millis(100))
}

async fn setup(parts: usize, config: FallbackConfig) -> (Primary, Secondary, Store) {
    let primary = PartitionedStore::new(primary_memory(), parts);
    let secondary = Arc::new(memory());
    let store = FallbackStore::new(Arc::clone(&primary), Arc::clone(&secondary), config)
        .await
        .unwrap();
    (primary, secondary, store)
}

fn ns() -> Namespace {
    Namespace::new("task").unwrap()
}

fn rec(payload: &[u8]) -> Record {
    let now = now_ms();
    Record {
        meta: Meta {
            version: Version::NONE,
            created_at: now,
            updated_at: now,
            expires_at: now + HOUR,
            max_expires_at: 0,
        },
        codec: CodecId::RAW,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn b(s: &'static [u8]) -> Option<Bytes> {
    Some(Bytes::from_static(s))
}

async fn in_primary(p: &Primary, k: &SessionKey) -> Option<Bytes> {
    p.inner().load(k).await.unwrap().map(|r| r.payload)
}

async fn in_secondary(s: &Secondary, k: &SessionKey) -> Option<Bytes> {
    s.load(k).await.unwrap().map(|r| r.payload)
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_closed(store: &Store) {
    wait_for(
        "every circuit to close with an empty journal",
        Duration::from_secs(10),
        || store.state() == CircuitState::Closed && store.journal_len() == 0,
    )
    .await;
}

fn part(i: usize) -> Partition {
    PartitionedStore::<MemoryStore>::partition_at(i)
}

/// The heart of it: one part fails, its circuit opens alone. Keys of the healthy part —
/// including sessions this instance never saw, which an open circuit could only answer with
/// "can't tell" — keep being served by the primary, with no secondary call; keys of the failed
/// part are served by the secondary as with one circuit.
#[tokio::test]
async fn a_failing_partition_opens_alone_and_the_others_keep_the_primary() {
    let (p, s, store) = setup(
        2,
        fast().with_probe_backoff(Duration::from_secs(5), Duration::from_secs(5)),
    )
    .await;
    let ns = ns();
    let healthy: Vec<SessionKey> = (0..10).map(|_| p.key_in(&ns, 0)).collect();
    let failing: Vec<SessionKey> = (0..10).map(|_| p.key_in(&ns, 1)).collect();
    for k in healthy.iter().chain(&failing) {
        store.create(k, &rec(b"before")).await.unwrap();
    }
    // Written by another instance: this one holds no copy.
    let unseen_healthy = p.key_in(&ns, 0);
    let unseen_failing = p.key_in(&ns, 1);
    p.inner()
        .create(&unseen_healthy, &rec(b"elsewhere"))
        .await
        .unwrap();
    p.inner()
        .create(&unseen_failing, &rec(b"elsewhere"))
        .await
        .unwrap();

    p.set_mode(1, FaultMode::Fail);
    store
        .save(&failing[0], &rec(b"outage"))
        .await
        .expect("the failing call fails over");
    assert_eq!(store.state(), CircuitState::Open, "the aggregate is open");
    assert_eq!(store.open_partitions(), 1);
    assert_eq!(store.partition_state(part(1)), CircuitState::Open);
    assert_eq!(store.partition_state(part(0)), CircuitState::Closed);
    assert_eq!(store.counters().open_partitions, 1);

    let secondary_calls = store.counters().secondary_calls;
    let healthy_passed = p.part(0).passed();
    for (i, k) in healthy.iter().enumerate() {
        store.save(k, &rec(format!("live{i}").as_bytes())).await.unwrap();
        assert_eq!(
            store.load(k).await.unwrap().unwrap().payload,
            Bytes::from(format!("live{i}"))
        );
        store.update(k, &rec(b"updated")).await.unwrap();
    }
    assert_eq!(
        store.load(&unseen_healthy).await.unwrap().map(|r| r.payload),
        b(b"elsewhere"),
        "a session of a healthy partition this instance never saw is served, not 'can't tell'"
    );
    assert_eq!(
        store.counters().secondary_calls,
        secondary_calls,
        "no call on a healthy partition's key went to the secondary"
    );
    assert_eq!(p.part(0).passed(), healthy_passed + 10 * 3 + 1);
    for k in &healthy {
        assert_eq!(in_primary(&p, k).await, b(b"updated"));
        assert_eq!(in_secondary(&s, k).await, None);
    }

    // The failed part's keys: no primary call, warm copies and journal as with one circuit.
    let refused = p.part(1).refused();
    assert_eq!(
        store.load(&failing[1]).await.unwrap().map(|r| r.payload),
        b(b"before")
    );
    store.save(&failing[2], &rec(b"outage")).await.unwrap();
    let e = store.load(&unseen_failing).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert_eq!(p.part(1).refused(), refused, "no call reached the failed part");
    assert_eq!(store.journal_len(), 2);

    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.extra.contains(&("open_partitions", 1)), "{:?}", h.extra);
    assert!(
        h.detail.as_deref().unwrap_or("").contains("1 partitions"),
        "{:?}",
        h.detail
    );
}

/// Both parts fail; one recovers. Its journaled keys are replayed and its circuit closes,
/// while the other's keys stay journaled and served by the secondary (read-your-writes) until
/// its own probe answers.
#[tokio::test]
async fn probes_and_replay_happen_per_partition() {
    let (p, s, store) = setup(2, fast()).await;
    let ns = ns();
    let a: Vec<SessionKey> = (0..8).map(|_| p.key_in(&ns, 0)).collect();
    let b_keys: Vec<SessionKey> = (0..8).map(|_| p.key_in(&ns, 1)).collect();
    p.set_mode(0, FaultMode::Fail);
    p.set_mode(1, FaultMode::Fail);
    for k in a.iter().chain(&b_keys) {
        store.save(k, &rec(b"outage")).await.unwrap();
    }
    assert_eq!(store.open_partitions(), 2);
    assert_eq!(store.journal_len(), 16);

    p.set_mode(0, FaultMode::Pass);
    wait_for("partition 0 to close", Duration::from_secs(5), || {
        store.partition_state(part(0)) == CircuitState::Closed && store.journal_len() == 8
    })
    .await;
    assert!(store.partition_state(part(1)).is_open());
    assert_eq!(store.state(), CircuitState::Open);
    assert_eq!(store.open_partitions(), 1);
    for k in &a {
        assert_eq!(in_primary(&p, k).await, b(b"outage"), "replayed");
        assert_eq!(
            in_secondary(&s, k).await,
            None,
            "replayed keys leave the secondary"
        );
    }
    for k in &b_keys {
        assert_eq!(in_primary(&p, k).await, None, "waits for its partition");
        assert_eq!(
            store.load(k).await.unwrap().map(|r| r.payload),
            b(b"outage"),
            "read-your-writes"
        );
    }
    assert_eq!(store.counters().replayed, 8);

    p.set_mode(1, FaultMode::Pass);
    wait_closed(&store).await;
    for k in &b_keys {
        assert_eq!(in_primary(&p, k).await, b(b"outage"));
    }
    let c = store.counters();
    assert_eq!(c.replayed, 16);
    assert_eq!(c.opened, 2);
    assert_eq!(
        c.transitions, 6,
        "per partition: closed -> open -> replaying -> closed"
    );
    assert_eq!(c.open_partitions, 0);
    assert_eq!(store.health().await.status, HealthStatus::Up);
}

/// A failover: the failed part's keys move to another part (on a cluster, the promoted
/// replica is another node), and the failed part serves no key any more. Live calls on those
/// keys go to their new part at once, journaled ones are replayed there, and the old part's
/// circuit ends — while the old part itself never answers again.
#[tokio::test]
async fn keys_whose_partition_changed_replay_under_their_current_partition() {
    let (p, _s, store) = setup(3, fast()).await;
    let ns = ns();
    let moved: Vec<SessionKey> = (0..8).map(|_| p.key_in(&ns, 1)).collect();
    for k in &moved {
        store.create(k, &rec(b"before")).await.unwrap();
    }
    p.set_mode(1, FaultMode::Fail);
    let dead_passed = p.part(1).passed();
    for k in &moved[..4] {
        store.save(k, &rec(b"outage")).await.unwrap();
    }
    assert_eq!(store.partition_state(part(1)), CircuitState::Open);
    assert_eq!(store.journal_len(), 4);

    // Part 2 takes over part 1's keys; part 1 stays dead.
    p.fail_over(1, 2);
    wait_closed(&store).await;
    for k in &moved[..4] {
        assert_eq!(in_primary(&p, k).await, b(b"outage"), "replayed through part 2");
    }
    assert_eq!(p.part(1).passed(), dead_passed, "nothing reached the dead part");
    // Not journaled: served by the new part.
    store.save(&moved[5], &rec(b"after")).await.unwrap();
    assert_eq!(in_primary(&p, &moved[5]).await, b(b"after"));
    assert_eq!(store.partition_state(part(1)), CircuitState::Closed);
    assert_eq!(store.open_partitions(), 0);
}

/// Failures count per partition: answers on a healthy part do not reset a failing part's
/// count, so a threshold above one is still reached.
#[tokio::test]
async fn the_failure_threshold_counts_per_partition() {
    let (p, _s, store) = setup(2, fast().with_failure_threshold(3)).await;
    let ns = ns();
    p.set_mode(1, FaultMode::Fail);
    for i in 0..3 {
        store.save(&p.key_in(&ns, 1), &rec(b"x")).await.unwrap();
        store.save(&p.key_in(&ns, 0), &rec(b"ok")).await.unwrap();
        if i < 2 {
            assert_eq!(store.partition_state(part(1)), CircuitState::Closed, "{i}");
        }
    }
    assert!(store.partition_state(part(1)).is_open());
    assert_eq!(store.partition_state(part(0)), CircuitState::Closed);
    p.set_mode(1, FaultMode::Pass);
    wait_closed(&store).await;
}

/// A batch spanning partitions with one failing is sent again per partition: the healthy
/// part's keys are served by the primary, the failing part's are failed over.
#[tokio::test]
async fn batches_fail_over_only_the_failing_partitions_keys() {
    let (p, s, store) = setup(
        2,
        fast().with_probe_backoff(Duration::from_secs(5), Duration::from_secs(5)),
    )
    .await;
    let ns = ns();
    let healthy: Vec<SessionKey> = (0..4).map(|_| p.key_in(&ns, 0)).collect();
    let failing: Vec<SessionKey> = (0..4).map(|_| p.key_in(&ns, 1)).collect();
    let mut keys = Vec::new();
    for (h, f) in healthy.iter().zip(&failing) {
        keys.push(h.clone());
        keys.push(f.clone());
    }
    // Written elsewhere: only the primary knows them.
    for k in &keys {
        p.inner().create(k, &rec(b"stored")).await.unwrap();
    }
    p.set_mode(1, FaultMode::Fail);
    let got = store.load_many(&keys).await.unwrap();
    for (k, r) in keys.iter().zip(&got) {
        if healthy.contains(k) {
            assert_eq!(
                r.as_ref().unwrap().as_ref().map(|r| r.payload.clone()),
                b(b"stored")
            );
        } else {
            assert!(r.as_ref().is_err_and(Error::is_temporary), "{r:?}");
        }
    }
    assert_eq!(store.open_partitions(), 1);
    assert_eq!(store.counters().failovers, 1, "one failing group");
    // With the circuit open, a mixed batch: healthy keys from the primary, no new failover.
    let got = store.load_many(&keys).await.unwrap();
    assert_eq!(got.iter().filter(|r| matches!(r, Ok(Some(_)))).count(), 4);
    assert_eq!(store.counters().failovers, 1);
    // A save_many of healthy keys only goes to the primary.
    let items: Vec<(SessionKey, Record)> = healthy.iter().map(|k| (k.clone(), rec(b"batch"))).collect();
    store.save_many(&items).await.unwrap();
    for k in &healthy {
        assert_eq!(in_primary(&p, k).await, b(b"batch"));
        assert_eq!(in_secondary(&s, k).await, None);
    }
    assert_eq!(store.journal_len(), 0);
}

/// While no partition is open, calls never ask the primary which partition a key is on (the
/// healthy path reads the aggregate state and the journal length only). A failure looks it up.
#[tokio::test]
async fn the_healthy_path_looks_up_no_partition() {
    let (p, _s, store) = setup(2, fast()).await;
    let ns = ns();
    let keys: Vec<SessionKey> = (0..20).map(|i| p.key_in(&ns, i % 2)).collect();
    let before = p.lookups();
    for k in &keys {
        store.create(k, &rec(b"a")).await.unwrap();
        store.load(k).await.unwrap();
        store.touch(k, now_ms() + HOUR).await.unwrap();
    }
    store.load_many(&keys).await.unwrap();
    assert_eq!(p.lookups(), before, "no lookup while every circuit is closed");
    p.set_mode(0, FaultMode::Fail);
    store.load(&keys[0]).await.unwrap();
    assert!(
        p.lookups() > before,
        "a failure is attributed to its key's partition"
    );
    assert_eq!(store.open_partitions(), 1);
}
