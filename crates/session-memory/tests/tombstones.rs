//! Tombstones in the memory store: tombstone mode, what `reconcile` writes, their expiry and
//! their place in the bounds and the accounting.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::time::Duration;

use session_core::backend::{
    decode_entry, now_ms, Change, CodecId, Entry, Reconciled, Record, Tombstone, HEADER_LEN,
};
use session_core::testing::RawAccess;
use session_core::{
    Clock, Error, ManualClock, Meta, Namespace, SessionId, SessionKey, SessionStore, StoreOptions,
    StoreStats, Version,
};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore, ENTRY_OVERHEAD_BYTES};

const HOUR_MS: u64 = 3_600_000;
const TTL: Duration = Duration::from_secs(600);
const TTL_MS: u64 = 600_000;

fn key(namespace: &str) -> SessionKey {
    SessionKey::new(Namespace::new(namespace).unwrap(), SessionId::generate().unwrap())
}

fn rec_at(payload: &[u8], expires_at: u64) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), expires_at)
}

/// What the store charges for an entry under `key` with an envelope of `envelope_len` bytes.
fn charge(store: &MemoryStore, key: &SessionKey, envelope_len: usize) -> u64 {
    let key_len = store.key_prefix().as_str().len() + key.ns().len() + 1 + key.id.as_str().len();
    (key_len + envelope_len) as u64 + ENTRY_OVERHEAD_BYTES
}

async fn stats(store: &MemoryStore) -> StoreStats {
    store.stats().await.unwrap()
}

/// The raw entry under `key`: a session, a tombstone, or nothing.
async fn entry(store: &MemoryStore, key: &SessionKey) -> Option<Entry> {
    let bytes = store.get_raw(key).await.unwrap()?;
    Some(decode_entry(&bytes, key.ns()).unwrap())
}

async fn tombstone(store: &MemoryStore, key: &SessionKey) -> Meta {
    match entry(store, key).await {
        Some(Entry::Tombstone(meta)) => meta,
        other => panic!("expected a tombstone, got {other:?}"),
    }
}

/// A store judged by a manual clock, built outside a runtime (no sweeper: `sweep_now` reclaims).
fn manual(config: MemoryConfig) -> (MemoryStore, ManualClock) {
    let (clock, hand) = Clock::manual(now_ms());
    (
        MemoryStore::with_clock(config, StoreOptions::default(), clock).unwrap(),
        hand,
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- expiry and accounting

#[test]
fn a_tombstone_expires_at_its_deadline_and_is_reclaimed() {
    let (store, hand) = manual(MemoryConfig::default().with_tombstones(TTL));
    assert!(!store.has_sweeper());
    runtime().block_on(async {
        let now = hand.get();
        // A deleted session's tombstone lasts as long as the session would have.
        let a = key("task");
        store.create(&a, &rec_at(b"x", now + 5_000)).await.unwrap();
        assert!(store.delete(&a).await.unwrap());
        assert_eq!(tombstone(&store, &a).await.expires_at, now + 5_000);
        // A delete of a key holding nothing: the store's tombstone lifetime, by its clock.
        let b = key("task");
        assert!(!store.delete(&b).await.unwrap());
        assert_eq!(tombstone(&store, &b).await.expires_at, now + TTL_MS);
        assert_eq!(stats(&store).await.entries, Some(2));

        hand.set(now + 5_000);
        assert_eq!(entry(&store, &a).await, None, "past its deadline");
        assert_eq!(store.sweep_now(), 1);
        let st = stats(&store).await;
        assert_eq!((st.entries, st.expired), (Some(1), 1));
        assert_eq!(st.bytes, Some(charge(&store, &b, HEADER_LEN)));

        hand.set(now + TTL_MS - 1);
        assert!(matches!(entry(&store, &b).await, Some(Entry::Tombstone(_))));
        hand.set(now + TTL_MS);
        assert_eq!(store.sweep_now(), 1);
        let st = stats(&store).await;
        assert_eq!((st.entries, st.bytes, st.expired), (Some(0), Some(0), 2));
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_reclaims_tombstones() {
    let store = MemoryStore::new(
        MemoryConfig::default()
            .with_tombstones(Duration::from_millis(30))
            .with_sweep_interval(Duration::from_millis(10)),
    )
    .unwrap();
    assert!(store.has_sweeper());
    for _ in 0..20 {
        store.delete(&key("task")).await.unwrap();
    }
    assert_eq!(stats(&store).await.entries, Some(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while stats(&store).await.entries != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweeper reclaimed {:?}",
            stats(&store).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = stats(&store).await;
    assert_eq!((st.bytes, st.expired), (Some(0), 20));
}

#[tokio::test]
async fn tombstones_are_charged_as_header_only_envelopes() {
    let store = MemoryStore::new(MemoryConfig::default().with_tombstones(TTL)).unwrap();
    let k = key("task");
    store
        .create(&k, &rec_at(&[7u8; 100], now_ms() + HOUR_MS))
        .await
        .unwrap();
    assert_eq!(
        stats(&store).await.bytes,
        Some(charge(&store, &k, HEADER_LEN + 100))
    );
    // The session's room is given back but for the header; still one entry.
    store.delete(&k).await.unwrap();
    let st = stats(&store).await;
    assert_eq!(
        (st.entries, st.bytes),
        (Some(1), Some(charge(&store, &k, HEADER_LEN)))
    );
    // A new session takes the id: one entry, charged as a session again.
    store
        .create(&k, &rec_at(&[7u8; 10], now_ms() + HOUR_MS))
        .await
        .unwrap();
    let st = stats(&store).await;
    assert_eq!(
        (st.entries, st.bytes),
        (Some(1), Some(charge(&store, &k, HEADER_LEN + 10)))
    );
    // A tombstone for a key never held: one more entry.
    let other = key("task");
    store.delete(&other).await.unwrap();
    let st = stats(&store).await;
    assert_eq!(st.entries, Some(2));
    assert_eq!(
        st.bytes,
        Some(charge(&store, &k, HEADER_LEN + 10) + charge(&store, &other, HEADER_LEN))
    );
    assert_eq!(
        store.count(&Namespace::new("task").unwrap()).await.unwrap(),
        1,
        "count skips tombstones"
    );
}

// ---------------------------------------------------------------- tombstone mode

#[tokio::test]
async fn a_delete_of_a_tombstone_replaces_it_keeping_the_later_deadline() {
    let (store, hand) = manual(MemoryConfig::default().with_tombstones(TTL));
    assert!(store.keeps_tombstones());
    let now = hand.get();
    let k = key("task");
    store.create(&k, &rec_at(b"x", now + 1_000)).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    let first = tombstone(&store, &k).await;
    assert_eq!(first.expires_at, now + 1_000);
    assert_eq!((first.created_at, first.updated_at), (now, now), "deleted_at");
    assert_ne!(first.version, Version::NONE, "a fresh token");
    hand.advance(Duration::from_millis(500));
    assert!(!store.delete(&k).await.unwrap(), "no session to delete");
    let second = tombstone(&store, &k).await;
    assert_ne!(second.version, first.version, "named by the later delete");
    assert_eq!(second.updated_at, now + 500);
    assert_eq!(
        second.expires_at,
        now + 500 + TTL_MS,
        "extended to the tombstone lifetime"
    );
    // A delete that would not lengthen it keeps the deadline.
    hand.set(now);
    assert!(!store.delete(&k).await.unwrap());
    let third = tombstone(&store, &k).await;
    assert_ne!(third.version, second.version);
    assert_eq!(third.expires_at, second.expires_at);
}

#[tokio::test]
async fn without_tombstone_mode_delete_removes_but_keeps_a_replayed_tombstone() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    assert!(!store.keeps_tombstones());
    let k = key("task");
    store.create(&k, &rec_at(b"x", now_ms() + HOUR_MS)).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    assert_eq!(entry(&store, &k).await, None, "removed, no tombstone");
    assert!(!store.delete(&k).await.unwrap());
    assert_eq!(entry(&store, &k).await, None);
    // A tombstone written by a replay stays: a later replayed write must not pass it.
    let now = now_ms();
    let r = store
        .reconcile(
            &k,
            Version::NONE,
            Change::Delete(Tombstone::new(now, now + TTL_MS)),
        )
        .await
        .unwrap();
    assert_eq!(r, Reconciled::Applied);
    assert!(!store.delete(&k).await.unwrap());
    assert!(matches!(entry(&store, &k).await, Some(Entry::Tombstone(_))));
    let replayed = rec_at(b"replayed", now_ms() + HOUR_MS);
    assert_eq!(
        store
            .reconcile(&k, Version::NONE, Change::Write(&replayed))
            .await
            .unwrap(),
        Reconciled::Kept
    );
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(stats(&store).await.entries, Some(1));
}

#[tokio::test]
async fn rotate_treats_a_tombstone_as_absent() {
    let store = MemoryStore::new(MemoryConfig::default().with_tombstones(TTL)).unwrap();
    let (deleted, live) = (key("task"), key("task"));
    store
        .create(&deleted, &rec_at(b"old", now_ms() + HOUR_MS))
        .await
        .unwrap();
    store.delete(&deleted).await.unwrap();
    let m = store
        .create(&live, &rec_at(b"live", now_ms() + HOUR_MS))
        .await
        .unwrap();
    // From a tombstoned id: NotFound, and the tombstone stays.
    let fresh = SessionId::generate().unwrap();
    assert!(matches!(
        store.rotate(&deleted, &fresh).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(entry(&store, &deleted).await, Some(Entry::Tombstone(_))));
    // Onto a tombstoned id: the id is free, the session replaces the tombstone.
    let moved = store.rotate(&live, &deleted.id).await.unwrap();
    assert_eq!(moved.version, m.version);
    assert_eq!(&store.load(&deleted).await.unwrap().unwrap().payload[..], b"live");
    assert_eq!(store.load(&live).await.unwrap(), None);
    // The old id keeps a tombstone of its own, as after a logout.
    assert!(matches!(entry(&store, &live).await, Some(Entry::Tombstone(_))));
    let st = stats(&store).await;
    assert_eq!(st.entries, Some(2));
    assert_eq!(
        st.bytes,
        Some(charge(&store, &deleted, HEADER_LEN + 4) + charge(&store, &live, HEADER_LEN))
    );
}

#[tokio::test]
async fn touch_and_writes_see_a_tombstone_as_absent() {
    let store = MemoryStore::new(MemoryConfig::default().with_tombstones(TTL)).unwrap();
    let k = key("task");
    let m = store.save(&k, &rec_at(b"x", now_ms() + HOUR_MS)).await.unwrap();
    store.delete(&k).await.unwrap();
    let before = tombstone(&store, &k).await;
    assert!(!store.touch(&k, now_ms() + 2 * HOUR_MS).await.unwrap());
    assert!(matches!(
        store.update(&k, &rec_at(b"y", now_ms() + HOUR_MS)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store
            .save_if(&k, m.version, &rec_at(b"y", now_ms() + HOUR_MS))
            .await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(tombstone(&store, &k).await, before, "untouched");
    assert!(matches!(
        store.load_many(std::slice::from_ref(&k)).await.unwrap()[0],
        Ok(None)
    ));
    // save_many (last writer wins) replaces it.
    let items = vec![(k.clone(), rec_at(b"z", now_ms() + HOUR_MS))];
    store.save_many(&items).await.unwrap();
    assert_eq!(&store.load(&k).await.unwrap().unwrap().payload[..], b"z");
}

// ---------------------------------------------------------------- reconcile

#[tokio::test]
async fn reconcile_extends_a_tombstone_to_the_write_it_blocked() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    let k = key("task");
    let now = now_ms();
    let gone = Tombstone::new(now, now + 1_000);
    store
        .reconcile(&k, Version::NONE, Change::Delete(gone))
        .await
        .unwrap();
    assert_eq!(tombstone(&store, &k).await, gone.meta(now + 1_000));
    let blocked = rec_at(b"late", now + HOUR_MS);
    assert_eq!(
        store
            .reconcile(&k, Version::NONE, Change::Write(&blocked))
            .await
            .unwrap(),
        Reconciled::Kept
    );
    assert_eq!(
        tombstone(&store, &k).await,
        gone.meta(now + HOUR_MS),
        "same tombstone, later deadline"
    );
}

#[tokio::test]
async fn a_reconciled_write_is_stamped_like_a_save() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    let k = key("task");
    let mut r = rec_at(b"x", now_ms() + 2 * HOUR_MS);
    r.meta.max_expires_at = now_ms() + HOUR_MS;
    assert_eq!(
        store
            .reconcile(&k, Version::NONE, Change::Write(&r))
            .await
            .unwrap(),
        Reconciled::Applied
    );
    let got = store.load(&k).await.unwrap().unwrap();
    assert_ne!(got.meta.version, Version::NONE, "a fresh token for Version::NONE");
    assert_eq!(got.meta.expires_at, r.meta.max_expires_at, "the deadline capped");
    // A delete of a live session takes its (capped) deadline.
    let now = now_ms();
    assert_eq!(
        store
            .reconcile(
                &k,
                got.meta.version,
                Change::Delete(Tombstone::new(now, now + TTL_MS))
            )
            .await
            .unwrap(),
        Reconciled::Applied
    );
    assert_eq!(tombstone(&store, &k).await.expires_at, r.meta.max_expires_at);
    // An oversized write is refused before anything, even where a tombstone would keep it out.
    let options = StoreOptions::default()
        .with_max_session_bytes(HEADER_LEN + 10)
        .unwrap();
    let small = MemoryStore::with_options(MemoryConfig::default(), options).unwrap();
    let big = rec_at(&[0u8; 11], now_ms() + HOUR_MS);
    assert!(matches!(
        small.reconcile(&k, Version::NONE, Change::Write(&big)).await,
        Err(Error::TooLarge { .. })
    ));
}

#[tokio::test]
async fn reconcile_of_bytes_that_are_not_an_envelope_is_corrupt_and_changes_nothing() {
    let store = MemoryStore::new(MemoryConfig::default()).unwrap();
    let k = key("task");
    store.put_raw(&k, "garbage".into(), HOUR_MS).await.unwrap();
    let now = now_ms();
    for change in [
        Change::Delete(Tombstone::new(now, now + TTL_MS)),
        Change::Write(&rec_at(b"x", now + HOUR_MS)),
    ] {
        let r = store.reconcile(&k, Version::NONE, change).await;
        assert!(
            matches!(r, Err(Error::Corrupt { ref namespace, .. }) if namespace == "task"),
            "{r:?}"
        );
        assert_eq!(store.get_raw(&k).await.unwrap().as_deref(), Some(&b"garbage"[..]));
    }
    // A delete in tombstone mode replaces such bytes, as a plain delete removes them.
    let tombstoned = MemoryStore::new(MemoryConfig::default().with_tombstones(TTL)).unwrap();
    tombstoned.put_raw(&k, "garbage".into(), HOUR_MS).await.unwrap();
    assert!(tombstoned.delete(&k).await.unwrap());
    assert!(matches!(entry(&tombstoned, &k).await, Some(Entry::Tombstone(_))));
}

// ---------------------------------------------------------------- bounds

#[tokio::test]
async fn tombstones_count_against_the_bounds() {
    // Rejecting: a tombstone for a key never held needs an entry of its own.
    let config = MemoryConfig::default()
        .with_max_entries(1)
        .with_at_capacity(AtCapacity::Reject)
        .with_tombstones(TTL);
    let store = MemoryStore::new(config).unwrap();
    let (a, b) = (key("task"), key("task"));
    store.create(&a, &rec_at(b"x", now_ms() + HOUR_MS)).await.unwrap();
    assert!(matches!(store.delete(&b).await, Err(Error::Full { .. })));
    let now = now_ms();
    assert!(matches!(
        store
            .reconcile(
                &b,
                Version::NONE,
                Change::Delete(Tombstone::new(now, now + TTL_MS))
            )
            .await,
        Err(Error::Full { .. })
    ));
    assert!(matches!(
        store
            .reconcile(&b, Version::NONE, Change::Write(&rec_at(b"y", now + HOUR_MS)))
            .await,
        Err(Error::Full { .. })
    ));
    assert_eq!(stats(&store).await.rejected, 3);
    // Replacing a session with its tombstone takes no new room.
    assert!(store.delete(&a).await.unwrap());
    assert!(matches!(entry(&store, &a).await, Some(Entry::Tombstone(_))));
    // ... and the tombstone holds the room: a new session under another id is refused.
    assert!(matches!(
        store.create(&b, &rec_at(b"y", now_ms() + HOUR_MS)).await,
        Err(Error::Full { .. })
    ));

    // Evicting: a tombstone may be evicted like a session.
    let config = MemoryConfig::default().with_max_entries(2).with_tombstones(TTL);
    let store = MemoryStore::new(config).unwrap();
    assert!(store.evicts());
    let (one, two, new) = (key("task"), key("task"), key("task"));
    store.delete(&one).await.unwrap();
    store.delete(&two).await.unwrap();
    store
        .create(&new, &rec_at(b"x", now_ms() + HOUR_MS))
        .await
        .unwrap();
    let st = stats(&store).await;
    assert_eq!((st.entries, st.evicted), (Some(2), 1));
    let left = [entry(&store, &one).await, entry(&store, &two).await];
    assert_eq!(
        left.iter().filter(|e| e.is_none()).count(),
        1,
        "one tombstone was evicted"
    );
    assert!(store.load(&new).await.unwrap().is_some());
}
