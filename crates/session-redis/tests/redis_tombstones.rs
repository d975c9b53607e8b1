//! Tombstones on real Redis, beyond the conformance suite: what one costs in Redis memory,
//! that `update` of a store that keeps them never revives a deleted session (also racing the
//! delete), the deadline a tombstone gets, and that every mode reads one as absent.
//!
//! Runs against the topology under test (`SESSION_TEST_TOPOLOGY`, see `testkit_redis::env`);
//! skips when none is configured. Prints `FIGURES …` lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use std::time::Duration;

use common::{config_for, RawRedis};
use session_core::backend::{decode_entry, now_ms, Change, CodecId, Entry, Record, Tombstone, HEADER_LEN};
use session_core::{
    Bytes, Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions, Version,
};
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::{ClusterHash, CustomCommand, Value};
use session_redis::RedisStore;
use testkit_redis::{topology_url, Topology};

const HOUR_MS: u64 = 3_600_000;
const TOMBSTONE_TTL_MS: u64 = 600_000;

/// A store on the topology under test with a random key prefix (`tombstone_ttl_ms` as given),
/// raw access to it, and its key prefix.
async fn open(tombstone_ttl_ms: u64) -> Option<(RedisStore, RawRedis, KeyPrefix)> {
    let target = Topology::ALL.into_iter().find_map(topology_url)?;
    let mut config = config_for(&target);
    let prefix = session_core::testing::random_prefix();
    config.tombstone_ttl_ms = tombstone_ttl_ms;
    let store = RedisStore::builder(config.clone())
        .options(StoreOptions::new(prefix.clone()))
        .connect()
        .await
        .expect("store connects");
    let raw = RawRedis::connect(&config).await;
    Some((store, raw, prefix))
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR_MS)
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

fn full_key(prefix: &KeyPrefix, key: &SessionKey) -> String {
    prefix.render(key)
}

/// What Redis holds under `key`, read around the store.
async fn entry(raw: &RawRedis, prefix: &KeyPrefix, key: &SessionKey) -> Option<Entry> {
    let bytes = raw.get(&full_key(prefix, key)).await?;
    Some(decode_entry(&bytes, "task").expect("an envelope"))
}

/// `MEMORY USAGE key` (routed to the key's slot on a cluster).
async fn memory_usage(store: &RedisStore, full: &str) -> i64 {
    let slot = session_redis::fred::util::redis_keyslot(full.as_bytes());
    let client = store.clients().remove(0);
    let reply: Value = client
        .custom(
            CustomCommand::new_static("MEMORY", ClusterHash::Custom(slot), false),
            vec![Value::from("USAGE"), Value::from(full.to_owned())],
        )
        .await
        .expect("MEMORY USAGE");
    reply.as_i64().expect("an integer")
}

/// What a logout costs in Redis memory with tombstones on: `MEMORY USAGE` of a tombstone key
/// against a session key with a 1 KiB payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_costs_a_header_and_a_key() {
    let Some((store, raw, prefix)) = open(TOMBSTONE_TTL_MS).await else {
        return;
    };
    let session = new_key();
    store.save(&session, &rec(&[7u8; 1024])).await.unwrap();
    let deleted = new_key();
    store.save(&deleted, &rec(&[7u8; 1024])).await.unwrap();
    let before = memory_usage(&store, &full_key(&prefix, &deleted)).await;
    assert!(store.delete(&deleted).await.unwrap());
    let unknown = new_key();
    assert!(!store.delete(&unknown).await.unwrap());

    let session_bytes = memory_usage(&store, &full_key(&prefix, &session)).await;
    let tombstone_bytes = memory_usage(&store, &full_key(&prefix, &deleted)).await;
    let unknown_bytes = memory_usage(&store, &full_key(&prefix, &unknown)).await;
    let value_len = raw.get(&full_key(&prefix, &deleted)).await.unwrap().len();
    println!(
        "FIGURES tombstone-memory: topology={} key_len={} tombstone_value_bytes={value_len} \
         tombstone_memory_usage={tombstone_bytes} unknown_id_tombstone_memory_usage={unknown_bytes} \
         session_1kib_memory_usage={session_bytes} same_session_before_delete={before} ratio={:.3}",
        store.topology(),
        full_key(&prefix, &deleted).len(),
        tombstone_bytes as f64 / session_bytes as f64,
    );
    assert_eq!(value_len, HEADER_LEN, "a tombstone is the header alone");
    assert!(matches!(
        entry(&raw, &prefix, &deleted).await,
        Some(Entry::Tombstone(_))
    ));
    assert_eq!(before, session_bytes);
    assert!(
        tombstone_bytes < session_bytes / 4,
        "a tombstone ({tombstone_bytes} B) should cost far less than a 1 KiB session ({session_bytes} B)"
    );
    assert_eq!(unknown_bytes, tombstone_bytes);
}

/// `update` of a store that keeps tombstones never writes over one: not after the delete, and
/// not while updates race it. Every update acknowledged after the delete was acknowledged would
/// be a revived session; there are none, and the key holds the tombstone afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_never_revives_a_tombstone() {
    let Some((store, raw, prefix)) = open(TOMBSTONE_TTL_MS).await else {
        return;
    };
    // After the delete, in order.
    let key = new_key();
    store.create(&key, &rec(b"v1")).await.unwrap();
    assert!(store.delete(&key).await.unwrap());
    let e = store.update(&key, &rec(b"late")).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(matches!(
        entry(&raw, &prefix, &key).await,
        Some(Entry::Tombstone(_))
    ));

    // Racing it: writers update in a loop until they see the session gone.
    let mut revived = 0u32;
    let mut updates_before = 0u64;
    let rounds = 20;
    for _ in 0..rounds {
        let key = new_key();
        store.create(&key, &rec(b"v1")).await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    let mut ok = 0u64;
                    loop {
                        match store.update(&key, &rec(format!("w{w}").as_bytes())).await {
                            Ok(_) => ok += 1,
                            Err(Error::NotFound { .. }) => return ok,
                            Err(e) => panic!("update: {e}"),
                        }
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.delete(&key).await.unwrap(), "the session was there");
        // Anything acknowledged from here on would be a resurrection.
        for _ in 0..20 {
            match store.update(&key, &rec(b"after")).await {
                Ok(_) => revived += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => panic!("update: {e}"),
            }
        }
        for w in writers {
            updates_before += w.await.unwrap();
        }
        assert!(matches!(
            entry(&raw, &prefix, &key).await,
            Some(Entry::Tombstone(_))
        ));
        assert_eq!(store.load(&key).await.unwrap(), None);
    }
    println!(
        "FIGURES tombstone-update-race: rounds={rounds} writers=4 updates_before_delete={updates_before} \
         revived_after_delete={revived}"
    );
    assert_eq!(revived, 0);
}

/// The tombstone's deadline: the deleted session's own, capped by its lifetime cap; a key
/// holding nothing (or a session past its deadline) gets `tombstone_ttl_ms` from the server's
/// clock; a second delete replaces the tombstone with its own, never shortening its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstone_deadlines() {
    let Some((store, raw, prefix)) = open(TOMBSTONE_TTL_MS).await else {
        return;
    };
    let key = new_key();
    let mut r = rec(b"capped");
    r.meta.max_expires_at = now_ms() + 120_000;
    let m = store.create(&key, &r).await.unwrap();
    assert_eq!(m.deadline(), r.meta.max_expires_at);
    assert!(store.delete(&key).await.unwrap());
    let full = full_key(&prefix, &key);
    let first = raw.get(&full).await.unwrap();
    match decode_entry(&first, "task").unwrap() {
        Entry::Tombstone(meta) => assert_eq!(meta.expires_at, r.meta.max_expires_at),
        other => panic!("{other:?}"),
    }
    let pttl = raw.pttl(&full).await;
    assert!(
        pttl > 100_000 && pttl <= 120_000,
        "PTTL {pttl}: the session's capped deadline"
    );
    assert!(!store.delete(&key).await.unwrap());
    let (first_meta, second_meta) = match (
        decode_entry(&first, "task").unwrap(),
        decode_entry(&raw.get(&full).await.unwrap(), "task").unwrap(),
    ) {
        (Entry::Tombstone(a), Entry::Tombstone(b)) => (a, b),
        other => panic!("{other:?}"),
    };
    assert_ne!(
        second_meta.version, first_meta.version,
        "named by the later delete"
    );
    // The lifetime from the server's clock is the later deadline here (10 min against 2).
    let lifetime = second_meta.updated_at + TOMBSTONE_TTL_MS;
    assert!(
        second_meta.expires_at > first_meta.expires_at
            && second_meta.expires_at + 1_000 > lifetime
            && second_meta.expires_at < lifetime + 1_000,
        "the later of the two deadlines: {} against {} and {lifetime}",
        second_meta.expires_at,
        first_meta.expires_at
    );

    let unknown = new_key();
    assert!(!store.delete(&unknown).await.unwrap());
    let pttl = raw.pttl(&full_key(&prefix, &unknown)).await;
    assert!(
        pttl > TOMBSTONE_TTL_MS as i64 - 10_000 && pttl <= TOMBSTONE_TTL_MS as i64,
        "PTTL {pttl}: tombstone_ttl_ms"
    );

    // A session Redis still holds past its header deadline (a foreign writer's clock, or the
    // last millisecond before Redis removes it) counts as nothing: the tombstone lasts
    // tombstone_ttl_ms, it does not vanish with the session.
    for replayed in [false, true] {
        let stale = new_key();
        let mut r = rec(b"stale");
        r.meta.version = Version::generate();
        r.meta.expires_at = now_ms() - 2_000;
        raw.set(&full_key(&prefix, &stale), r.encode(), 60_000).await;
        if replayed {
            let now = now_ms();
            let t = Tombstone::new(now, now + TOMBSTONE_TTL_MS);
            let got = store
                .reconcile(&stale, Version::NONE, Change::Delete(t))
                .await
                .unwrap();
            assert_eq!(
                got,
                session_core::backend::Reconciled::Applied,
                "nothing was there"
            );
        } else {
            assert!(!store.delete(&stale).await.unwrap(), "no live session was there");
        }
        let pttl = raw.pttl(&full_key(&prefix, &stale)).await;
        assert!(
            pttl > TOMBSTONE_TTL_MS as i64 - 10_000,
            "PTTL {pttl}: the tombstone must outlive a session past its deadline"
        );
        assert!(matches!(
            entry(&raw, &prefix, &stale).await,
            Some(Entry::Tombstone(_))
        ));
    }

    // Not an envelope: deleted like a session, a tombstone with the key's own deadline in
    // its place (as the memory store does).
    let foreign = new_key();
    let bytes = Bytes::from_static(b"not an envelope");
    raw.set(&full_key(&prefix, &foreign), bytes.clone(), HOUR_MS)
        .await;
    assert!(store.delete(&foreign).await.unwrap());
    assert!(matches!(
        entry(&raw, &prefix, &foreign).await,
        Some(Entry::Tombstone(_))
    ));
    let pttl = raw.pttl(&full_key(&prefix, &foreign)).await;
    assert!(
        pttl > 0 && pttl <= HOUR_MS as i64,
        "PTTL {pttl}: the key's own deadline"
    );
}

/// A store with tombstones off reads the tombstones a replay left (`reconcile`) as absent —
/// `load`, `load_many`, `count`, `touch`, `save_if`, `rotate` — and `create` and `save` may take
/// the id again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_reads_a_tombstone_as_absent() {
    let Some((store, raw, prefix)) = open(0).await else {
        return;
    };
    assert!(!store.keeps_tombstones());
    let key = new_key();
    let base = store.create(&key, &rec(b"v1")).await.unwrap();
    let other = new_key();
    store.create(&other, &rec(b"alive")).await.unwrap();
    let now = now_ms();
    let r = store
        .reconcile(
            &key,
            base.version,
            Change::Delete(Tombstone::new(now, now + 60_000)),
        )
        .await
        .unwrap();
    assert_eq!(r, session_core::backend::Reconciled::Applied);
    assert!(matches!(
        entry(&raw, &prefix, &key).await,
        Some(Entry::Tombstone(_))
    ));
    assert_eq!(store.load(&key).await.unwrap(), None);
    let many = store.load_many(&[key.clone(), other.clone()]).await.unwrap();
    assert!(matches!(many[0], Ok(None)));
    assert!(matches!(many[1], Ok(Some(_))));
    assert_eq!(store.count(&Namespace::new("task").unwrap()).await.unwrap(), 1);
    assert!(!store.touch(&key, now_ms() + HOUR_MS).await.unwrap());
    assert!(matches!(
        store.save_if(&key, Version::generate(), &rec(b"x")).await,
        Err(Error::NotFound { .. })
    ));
    let new_id = SessionId::generate().unwrap();
    assert!(matches!(
        store.rotate(&key, &new_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        entry(&raw, &prefix, &key).await,
        Some(Entry::Tombstone(_))
    ));
    // A session rotated onto a tombstoned id replaces the tombstone.
    let m = store.rotate(&other, &key.id).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap().unwrap().meta.version, m.version);
    assert_eq!(store.load(&other).await.unwrap(), None);
    // create takes a tombstoned id; it refuses a live one.
    let fresh = new_key();
    let now = now_ms();
    store
        .reconcile(
            &fresh,
            Version::NONE,
            Change::Delete(Tombstone::new(now, now + 60_000)),
        )
        .await
        .unwrap();
    store.create(&fresh, &rec(b"again")).await.unwrap();
    assert!(matches!(
        store.create(&fresh, &rec(b"twice")).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(&store.load(&fresh).await.unwrap().unwrap().payload[..], b"again");
}
