//! The conformance suite's part on `load`, `save` and `delete`: what each answers, and the
//! version, creation time and older envelopes a write keeps or replaces.

use std::time::Duration;

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::error::Error;
use crate::id::SessionId;
use crate::testing::Harness;
use crate::version::Version;

use super::{new_key, open, payload_of, rec, typed, TestSession, HOUR_MS};

/// Loading a key never written is `Ok(None)`.
pub async fn load_missing_is_none(h: &dyn Harness) {
    let t = open(h).await;
    assert!(t.store.load(&new_key("task")).await.unwrap().is_none());
    let s = typed(&t.store, CodecKind::Json);
    assert!(s.load(&SessionId::generate().unwrap()).await.unwrap().is_none());
}

/// `save` of an absent key creates it, with a fresh version.
pub async fn save_creates_when_absent(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let meta = t.store.save(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    assert!(!meta.version.is_none());
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"a")
    );
}

/// `save` overwrites: the last value wins.
pub async fn save_overwrites(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.save(&key, &rec(b"first", HOUR_MS)).await.unwrap();
    t.store.save(&key, &rec(b"second", HOUR_MS)).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"second")
    );
}

/// Every kind of write stores a version no earlier write of the key had.
pub async fn every_write_stores_a_new_version(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut seen = std::collections::HashSet::new();
    let v1 = t.store.create(&key, &rec(b"1", HOUR_MS)).await.unwrap().version;
    let v2 = t.store.save(&key, &rec(b"2", HOUR_MS)).await.unwrap().version;
    let v3 = t.store.update(&key, &rec(b"3", HOUR_MS)).await.unwrap().version;
    let v4 = t
        .store
        .save_if(&key, v3, &rec(b"4", HOUR_MS))
        .await
        .unwrap()
        .version;
    let v5 = t
        .store
        .save_many(&[(key.clone(), rec(b"5", HOUR_MS))])
        .await
        .unwrap()[0]
        .version;
    for v in [v1, v2, v3, v4, v5] {
        assert!(!v.is_none());
        assert!(seen.insert(v), "version {v} was stored twice");
    }
    assert_eq!(t.store.load(&key).await.unwrap().unwrap().meta.version, v5);
}

/// An envelope written before versions were tokens (a counter, `created_at` kept by the store)
/// still loads, and its counter works as the token for `save_if`: the upgrade logs no one out.
pub async fn envelopes_from_before_tokens_still_work(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut old = rec(b"from the previous release", HOUR_MS);
    old.meta.version = Version::from_u64(3);
    old.meta.created_at -= 60_000;
    t.raw.put_raw(&key, old.encode(), HOUR_MS).await.unwrap();
    let got = t.store.load(&key).await.unwrap().expect("an old envelope loads");
    assert_eq!(got.meta.version, Version::from_u64(3));
    assert_eq!(got.payload, old.payload);
    let stale = t
        .store
        .save_if(&key, Version::from_u64(2), &rec(b"stale", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale}");
    let m = t
        .store
        .save_if(&key, Version::from_u64(3), &rec(b"next", HOUR_MS))
        .await
        .unwrap();
    assert_ne!(m.version, Version::from_u64(3));
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"next")
    );
}

/// A record that names its version is stored with it: a wrapper store can
/// copy a session between stores and its version stays valid for `save_if`.
pub async fn a_records_own_version_is_kept(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut r = rec(b"1", HOUR_MS);
    r.meta.version = Version::generate();
    assert_eq!(t.store.create(&key, &r).await.unwrap().version, r.meta.version);
    assert_eq!(
        t.store.load(&key).await.unwrap().unwrap().meta.version,
        r.meta.version
    );
    let next = t
        .store
        .save_if(&key, r.meta.version, &rec(b"2", HOUR_MS))
        .await
        .unwrap();
    assert_ne!(next.version, r.meta.version);
}

/// The store keeps the caller's `created_at` and `max_expires_at` as given;
/// the typed handle carries them over from the session it loaded, so the
/// creation time of the first write survives every later write.
pub async fn created_at_is_carried_by_the_writer(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut first = rec(b"1", HOUR_MS);
    first.meta.created_at -= 10_000;
    let m = t.store.create(&key, &first).await.unwrap();
    assert_eq!(m.created_at, first.meta.created_at);
    let later = rec(b"2", HOUR_MS);
    let m = t.store.save(&key, &later).await.unwrap();
    assert_eq!(
        m.created_at, later.meta.created_at,
        "the store stores what it is given"
    );
    assert_eq!(m.updated_at, later.meta.updated_at);

    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let created = session.meta.created_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    s.update(&mut session).await.unwrap();
    s.save_if(&mut session).await.unwrap();
    let got = s.load(&session.id).await.unwrap().unwrap();
    assert_eq!(got.meta.created_at, created);
    assert!(got.meta.updated_at > created);
}

/// `delete` of a stored session returns true and removes it.
pub async fn delete_removes(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.save(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert!(t.store.delete(&key).await.unwrap());
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// `delete` of a missing session returns false and is not an error.
pub async fn delete_missing_is_false(h: &dyn Harness) {
    let t = open(h).await;
    assert!(!t.store.delete(&new_key("task")).await.unwrap());
}
