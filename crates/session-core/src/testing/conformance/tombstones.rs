//! The conformance suite's part on tombstones and on reconciling replayed
//! changes ([`SessionStore::reconcile`]): what several instances sharing one
//! store rely on when each replays its own outage journal.

use std::time::Duration;

use crate::backend::{decode_entry, Change, Entry, Reconciled, Tombstone};
use crate::error::Error;
use crate::expiry::now_ms;
use crate::key::SessionKey;
use crate::store::SessionStore;
use crate::testing::{random_prefix, Harness, TestStore};
use crate::version::Version;

use super::{new_key, ns, rec, HOUR_MS};

/// How long a tombstone lasts in these tests when the store held no session.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);

async fn tombstoned(h: &dyn Harness) -> TestStore {
    let t = h.open_tombstoned(random_prefix(), TOMBSTONE_TTL).await;
    assert!(
        t.store.keeps_tombstones(),
        "open_tombstoned must give a store that keeps tombstones"
    );
    t
}

/// The raw entry under `key`: a session, a tombstone, or nothing.
async fn entry(t: &TestStore, key: &SessionKey) -> Option<Entry> {
    let bytes = t.raw.get_raw(key).await.unwrap()?;
    Some(decode_entry(&bytes, key.ns()).unwrap())
}

fn tombstone_now() -> Tombstone {
    let now = now_ms();
    Tombstone::new(now, now + TOMBSTONE_TTL.as_millis() as u64)
}

/// A record with a given token and updated-at, an hour to live.
fn rec_at(payload: &[u8], version: u64, updated_at: u64) -> crate::backend::Record {
    let mut r = rec(payload, HOUR_MS);
    r.meta.version = Version::from_u64(version);
    r.meta.updated_at = updated_at;
    r
}

async fn payload(store: &dyn SessionStore, key: &SessionKey) -> Option<Vec<u8>> {
    store.load(key).await.unwrap().map(|r| r.payload.to_vec())
}

/// A store that keeps tombstones leaves one on `delete`, with the deleted
/// session's own deadline, and every live call sees it as absent.
pub async fn delete_leaves_a_tombstone_live_calls_see_as_absent(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let m = s.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert!(s.delete(&key).await.unwrap());
    match entry(&t, &key).await {
        Some(Entry::Tombstone(meta)) => assert_eq!(meta.expires_at, m.deadline(), "the session's deadline"),
        other => panic!("expected a tombstone, got {other:?}"),
    }
    assert_eq!(s.load(&key).await.unwrap(), None);
    assert!(matches!(
        s.load_many(std::slice::from_ref(&key)).await.unwrap()[0],
        Ok(None)
    ));
    assert!(matches!(
        s.update(&key, &rec(b"late", HOUR_MS)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.save_if(&key, m.version, &rec(b"late", HOUR_MS)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!s.touch(&key, now_ms() + HOUR_MS).await.unwrap());
    let other = crate::id::SessionId::generate().unwrap();
    assert!(matches!(
        s.rotate(&key, &other).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(s.count(&ns("task")).await.unwrap(), 0);
    assert!(!s.delete(&key).await.unwrap(), "a second delete finds nothing");
    assert!(
        matches!(entry(&t, &key).await, Some(Entry::Tombstone(_))),
        "the update did not revive it"
    );
    // A new session may take the id (a caller-chosen id reused after a logout).
    s.create(&key, &rec(b"again", HOUR_MS)).await.unwrap();
    assert_eq!(payload(s, &key).await.as_deref(), Some(&b"again"[..]));
}

/// `load_entry` answers what `load` does for a session and for nothing, and tells a
/// deleted session's tombstone from nothing, which `load` does not.
pub async fn load_entry_tells_a_tombstone_from_nothing(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    assert_eq!(s.load_entry(&key).await.unwrap(), None, "never written");
    s.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    let loaded = s.load(&key).await.unwrap().expect("created");
    assert_eq!(s.load_entry(&key).await.unwrap(), Some(Entry::Live(loaded)));
    assert!(s.delete(&key).await.unwrap());
    assert_eq!(s.load(&key).await.unwrap(), None);
    assert!(
        matches!(s.load_entry(&key).await.unwrap(), Some(Entry::Tombstone(_))),
        "a deleted session is known to be gone"
    );
}

/// A delete of a session the store never held leaves a tombstone too (another
/// instance may hold the session in its outage journal), lasting the store's
/// tombstone lifetime.
pub async fn delete_of_an_unknown_session_leaves_a_bounded_tombstone(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let key = new_key("task");
    let before = now_ms();
    assert!(!t.store.delete(&key).await.unwrap());
    match entry(&t, &key).await {
        Some(Entry::Tombstone(meta)) => {
            let ttl = TOMBSTONE_TTL.as_millis() as u64;
            assert!(
                meta.expires_at >= before + ttl && meta.expires_at <= now_ms() + ttl,
                "deadline {} not within the tombstone lifetime",
                meta.expires_at
            );
        }
        other => panic!("expected a tombstone, got {other:?}"),
    }
    // A replayed write of that session does not pass it.
    let r = t
        .store
        .reconcile(&key, Version::NONE, Change::Write(&rec(b"replayed", HOUR_MS)))
        .await
        .unwrap();
    assert_eq!(r, Reconciled::Kept);
    assert_eq!(t.store.load(&key).await.unwrap(), None);
}

/// `delete_leaving` stores the caller's tombstone: a replayed write based on
/// it (a session created again by one who saw the logout) applies, one based
/// on nothing does not.
pub async fn delete_leaving_names_its_tombstone(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let s = t.store.as_ref();
    for existed in [true, false] {
        let key = new_key("task");
        if existed {
            s.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
        }
        let gone = tombstone_now();
        assert_eq!(s.delete_leaving(&key, gone).await.unwrap(), existed);
        match entry(&t, &key).await {
            Some(Entry::Tombstone(meta)) => assert_eq!(meta.version, gone.version, "the caller's token"),
            other => panic!("expected a tombstone, got {other:?}"),
        }
        let blind = rec_at(b"blind", 0x4444, now_ms() + 5_000);
        assert_eq!(
            s.reconcile(&key, Version::NONE, Change::Write(&blind))
                .await
                .unwrap(),
            Reconciled::Kept,
            "a write that did not see the delete"
        );
        let again = rec_at(b"again", 0x5555, now_ms());
        assert_eq!(
            s.reconcile(&key, gone.version, Change::Write(&again))
                .await
                .unwrap(),
            Reconciled::Applied,
            "a write made after the delete"
        );
        assert_eq!(payload(s, &key).await.as_deref(), Some(&b"again"[..]));
    }
}

/// A delete that meets a tombstone (live, or replayed) replaces it with its
/// own, keeping the later deadline: a write based on the first delete now
/// loses, one based on the second applies.
pub async fn a_delete_over_a_tombstone_replaces_it(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let s = t.store.as_ref();
    for replayed in [false, true] {
        let key = new_key("task");
        let m = s.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
        let first = tombstone_now();
        assert!(s.delete_leaving(&key, first).await.unwrap());
        let second = Tombstone::new(now_ms(), now_ms() + 1_000);
        if replayed {
            let r = s
                .reconcile(&key, Version::NONE, Change::Delete(second))
                .await
                .unwrap();
            assert_eq!(r, Reconciled::Applied);
        } else {
            assert!(
                !s.delete_leaving(&key, second).await.unwrap(),
                "nothing live to delete"
            );
        }
        match entry(&t, &key).await {
            Some(Entry::Tombstone(meta)) => {
                assert_eq!(meta.version, second.version, "named by the later delete");
                assert!(meta.expires_at >= m.deadline(), "the longer deadline is kept");
            }
            other => panic!("expected a tombstone, got {other:?}"),
        }
        let stale = rec_at(b"stale", 0x6666, now_ms());
        assert_eq!(
            s.reconcile(&key, first.version, Change::Write(&stale))
                .await
                .unwrap(),
            Reconciled::Kept
        );
        let fresh = rec_at(b"fresh", 0x7777, now_ms());
        assert_eq!(
            s.reconcile(&key, second.version, Change::Write(&fresh))
                .await
                .unwrap(),
            Reconciled::Applied
        );
        assert_eq!(payload(s, &key).await.as_deref(), Some(&b"fresh"[..]));
    }
}

/// `rotate` on a store that keeps tombstones logs the old id out as a delete
/// would: it leaves a tombstone there with a token of its own and the
/// session's deadline, so a replayed write based on the session as it was
/// before the rotate (an instance cut off meanwhile) does not bring the old id
/// back; the old id may still be created again.
pub async fn rotate_leaves_a_tombstone_under_the_old_id(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let s = t.store.as_ref();
    let old = new_key("task");
    let before = s.create(&old, &rec(b"x", HOUR_MS)).await.unwrap();
    let new_id = crate::id::SessionId::generate().unwrap();
    let moved = s.rotate(&old, &new_id).await.unwrap();
    let new = SessionKey::new(old.namespace.clone(), new_id);
    assert_eq!(payload(s, &new).await.as_deref(), Some(&b"x"[..]));
    match entry(&t, &old).await {
        Some(Entry::Tombstone(meta)) => {
            assert_ne!(meta.version, before.version, "a token of its own");
            assert_eq!(meta.expires_at, moved.deadline(), "the session's deadline");
        }
        other => panic!("expected a tombstone under the old id, got {other:?}"),
    }
    let stale = rec_at(b"stale", 0x9999, now_ms() + 5_000);
    assert_eq!(
        s.reconcile(&old, before.version, Change::Write(&stale))
            .await
            .unwrap(),
        Reconciled::Kept,
        "a write based on the session before the rotate"
    );
    assert_eq!(s.load(&old).await.unwrap(), None);
    assert!(matches!(
        s.update(&old, &rec(b"late", HOUR_MS)).await,
        Err(Error::NotFound { .. })
    ));
    s.create(&old, &rec(b"again", HOUR_MS)).await.unwrap();
    assert_eq!(payload(s, &old).await.as_deref(), Some(&b"again"[..]));
    assert_eq!(payload(s, &new).await.as_deref(), Some(&b"x"[..]));
}

/// `save` (last writer wins) replaces a tombstone.
pub async fn save_replaces_a_tombstone(h: &dyn Harness) {
    let t = tombstoned(h).await;
    let key = new_key("task");
    t.store.save(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    t.store.delete(&key).await.unwrap();
    t.store.save(&key, &rec(b"y", HOUR_MS)).await.unwrap();
    assert_eq!(payload(t.store.as_ref(), &key).await.as_deref(), Some(&b"y"[..]));
}

/// A replayed write applies when the store still holds its base, or nothing.
pub async fn reconcile_applies_on_its_base(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
    let next = rec_at(b"next", 0x1111, now_ms());
    assert_eq!(
        s.reconcile(&key, base.version, Change::Write(&next))
            .await
            .unwrap(),
        Reconciled::Applied
    );
    let got = s.load(&key).await.unwrap().unwrap();
    assert_eq!(&got.payload[..], b"next");
    assert_eq!(
        got.meta.version, next.meta.version,
        "the record's own token is stored"
    );
    let fresh = new_key("task");
    assert_eq!(
        s.reconcile(&fresh, Version::NONE, Change::Write(&next))
            .await
            .unwrap(),
        Reconciled::Applied
    );
    assert_eq!(payload(s, &fresh).await.as_deref(), Some(&b"next"[..]));
}

/// A replayed delete wins over a write it could not have seen, and leaves a
/// tombstone no replayed write passes.
pub async fn reconcile_delete_wins_over_a_newer_write(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
    s.save(&key, &rec(b"newer, elsewhere", HOUR_MS)).await.unwrap();
    assert_eq!(
        s.reconcile(&key, base.version, Change::Delete(tombstone_now()))
            .await
            .unwrap(),
        Reconciled::Won
    );
    assert_eq!(s.load(&key).await.unwrap(), None);
    assert!(matches!(entry(&t, &key).await, Some(Entry::Tombstone(_))));
    // The write from before the delete, replayed later, does not bring it back, even with a
    // clock far ahead.
    let late = rec_at(b"late", 0x2222, now_ms() + 10_000);
    assert_eq!(
        s.reconcile(&key, base.version, Change::Write(&late))
            .await
            .unwrap(),
        Reconciled::Kept
    );
    assert_eq!(s.load(&key).await.unwrap(), None);
}

/// Two replayed writes from one base end in the same state in either order:
/// the greater `(updated_at, version)`.
pub async fn reconcile_writes_converge_in_either_order(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let now = now_ms();
    let a = rec_at(b"a", 0xA, now - 300);
    let b = rec_at(b"b", 0xB, now - 100);
    let mut finals = Vec::new();
    for (first, second) in [(&a, &b), (&b, &a)] {
        let key = new_key("task");
        let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
        let one = s
            .reconcile(&key, base.version, Change::Write(first))
            .await
            .unwrap();
        let two = s
            .reconcile(&key, base.version, Change::Write(second))
            .await
            .unwrap();
        assert_eq!(one, Reconciled::Applied);
        assert!(two.conflicted(), "{two:?}");
        finals.push(payload(s, &key).await);
    }
    assert_eq!(finals[0], finals[1]);
    assert_eq!(finals[0].as_deref(), Some(&b"b"[..]));
}

/// Replaying a change twice (a replay interrupted and resumed) changes nothing more.
pub async fn reconcile_is_idempotent(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
    let next = rec_at(b"next", 0x3333, now_ms());
    s.reconcile(&key, base.version, Change::Write(&next))
        .await
        .unwrap();
    assert_eq!(
        s.reconcile(&key, base.version, Change::Write(&next))
            .await
            .unwrap(),
        Reconciled::Kept
    );
    assert_eq!(
        s.load(&key).await.unwrap().unwrap().meta.version,
        next.meta.version
    );
    let gone = tombstone_now();
    s.reconcile(&key, base.version, Change::Delete(gone))
        .await
        .unwrap();
    s.reconcile(&key, base.version, Change::Delete(gone))
        .await
        .unwrap();
    assert_eq!(s.load(&key).await.unwrap(), None);
}

/// A replayed write already past its deadline changes nothing.
pub async fn reconcile_skips_an_expired_write(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
    let mut old = rec(b"old", HOUR_MS);
    old.meta.expires_at = now_ms() - 1_000;
    assert_eq!(
        s.reconcile(&key, base.version, Change::Write(&old))
            .await
            .unwrap(),
        Reconciled::Expired
    );
    assert_eq!(payload(s, &key).await.as_deref(), Some(&b"base"[..]));
}

/// Bytes that are not an envelope are `Corrupt` and left as they are; an
/// oversized record is refused before any I/O.
pub async fn reconcile_refuses_bad_input(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    t.raw
        .put_raw(&key, bytes::Bytes::from_static(b"not an envelope"), HOUR_MS)
        .await
        .unwrap();
    let r = s
        .reconcile(&key, Version::NONE, Change::Write(&rec(b"x", HOUR_MS)))
        .await;
    assert!(matches!(r, Err(Error::Corrupt { .. })), "{r:?}");
    assert_eq!(
        t.raw.get_raw(&key).await.unwrap().as_deref(),
        Some(&b"not an envelope"[..])
    );
    let huge = rec(&vec![0u8; crate::store::DEFAULT_MAX_SESSION_BYTES + 1], HOUR_MS);
    let r = s
        .reconcile(&new_key("task"), Version::NONE, Change::Write(&huge))
        .await;
    assert!(matches!(r, Err(Error::TooLarge { .. })), "{r:?}");
}

/// A write that has expired since it was journaled removes the older state it was based on,
/// and nothing that another instance wrote after it; it leaves no tombstone.
pub async fn reconcile_expire_removes_only_its_base(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    let s = t.store.as_ref();
    let key = new_key("task");
    let base = s.create(&key, &rec(b"base", HOUR_MS)).await.unwrap();
    assert_eq!(
        s.reconcile(&key, base.version, Change::Expire).await.unwrap(),
        Reconciled::Applied
    );
    assert_eq!(s.load(&key).await.unwrap(), None);
    assert_eq!(t.raw.get_raw(&key).await.unwrap(), None, "no tombstone");
    let other = new_key("task");
    let old = s.create(&other, &rec(b"old", HOUR_MS)).await.unwrap();
    s.save(&other, &rec(b"newer, elsewhere", HOUR_MS)).await.unwrap();
    assert_eq!(
        s.reconcile(&other, old.version, Change::Expire).await.unwrap(),
        Reconciled::Expired
    );
    assert_eq!(
        payload(s, &other).await.as_deref(),
        Some(&b"newer, elsewhere"[..])
    );
}
