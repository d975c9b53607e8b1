//! The conformance suite's part on `rotate`: moving a session to a new id (and `load_many`
//! given a key twice).

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::error::Error;
use crate::id::SessionId;
use crate::key::SessionKey;
use crate::testing::Harness;

use super::{new_key, ns, open, payload_of, rec, typed, TestSession, HOUR_MS};

/// `rotate` moves value and metadata to the new id; the old id is gone.
pub async fn rotate_moves_the_session(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let old = s.create(TestSession::sample(7)).await.unwrap().id;
    let before = t
        .store
        .load(&SessionKey::new(ns("task"), old.clone()))
        .await
        .unwrap()
        .unwrap();
    let new = s.rotate(&old).await.unwrap();
    assert_ne!(old, new);
    assert!(s.load(&old).await.unwrap().is_none());
    let after = s.load(&new).await.unwrap().unwrap();
    assert_eq!(after.value, TestSession::sample(7));
    assert_eq!(after.meta.created_at, before.meta.created_at);
    assert_eq!(after.meta.version, before.meta.version);
    assert_eq!(after.meta.deadline(), before.meta.deadline());
    assert_eq!(s.count().await.unwrap(), 1);
}

/// `rotate` of a missing session is `NotFound`.
pub async fn rotate_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let e = t
        .store
        .rotate(&new_key("task"), &SessionId::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

/// `rotate` onto an id that exists is `AlreadyExists`; both sessions remain.
pub async fn rotate_onto_existing_id_fails_and_keeps_both(h: &dyn Harness) {
    let t = open(h).await;
    let a = new_key("task");
    let b = new_key("task");
    t.store.create(&a, &rec(b"a", HOUR_MS)).await.unwrap();
    t.store.create(&b, &rec(b"b", HOUR_MS)).await.unwrap();
    let e = t.store.rotate(&a, &b.id).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(payload_of(&t.store, &a).await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(payload_of(&t.store, &b).await.unwrap(), Bytes::from_static(b"b"));
}

/// After `rotate`, late writes to the old id (`update`, `save_if` with the
/// version read before) are `NotFound` and do not resurrect it.
pub async fn update_of_rotated_id_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let new_id = SessionId::generate().unwrap();
    t.store.rotate(&key, &new_id).await.unwrap();
    let e = t.store.update(&key, &rec(b"late", HOUR_MS)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = t
        .store
        .save_if(&key, m.version, &rec(b"late", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
    // Rotating the old id again: it is gone.
    let e = t.store.rotate(&key, &new_id).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let moved = SessionKey::new(ns("task"), new_id);
    assert_eq!(
        payload_of(&t.store, &moved).await.unwrap(),
        Bytes::from_static(b"a")
    );
}

/// `load_many` answers every key it is given, in order: a key given twice gets its session
/// twice.
pub async fn load_many_answers_a_repeated_key_each_time(h: &dyn Harness) {
    let t = open(h).await;
    let (a, b) = (new_key("task"), new_key("task"));
    t.store.save(&a, &rec(b"a", HOUR_MS)).await.unwrap();
    let got = t
        .store
        .load_many(&[a.clone(), b.clone(), a.clone()])
        .await
        .unwrap();
    let payloads: Vec<Option<Bytes>> = got.into_iter().map(|r| r.unwrap().map(|r| r.payload)).collect();
    assert_eq!(
        payloads,
        vec![
            Some(Bytes::from_static(b"a")),
            None,
            Some(Bytes::from_static(b"a"))
        ]
    );
}

/// `rotate` to the session's own id moves nothing and loses nothing: it answers the session's
/// metadata, and the session is still there.
pub async fn rotate_to_its_own_id_changes_nothing(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"stay", HOUR_MS)).await.unwrap();
    let again = t.store.rotate(&key, &key.id).await.unwrap();
    assert_eq!(again.version, m.version);
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"stay")
    );
    let missing = new_key("task");
    assert!(matches!(
        t.store.rotate(&missing, &missing.id).await,
        Err(Error::NotFound { .. })
    ));
}

/// A move interrupted after the new id got its copy (as a timed-out rotate
/// may leave it) is finished by calling `rotate` again with the same ids.
pub async fn rotate_finishes_an_interrupted_move(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let r = rec(b"moving", HOUR_MS);
    t.store.create(&key, &r).await.unwrap();
    let stored = t.store.load(&key).await.unwrap().unwrap();
    let new_key_ = SessionKey::new(ns("task"), SessionId::generate().unwrap());
    t.raw.put_raw(&new_key_, stored.encode(), HOUR_MS).await.unwrap();
    let m = t.store.rotate(&key, &new_key_.id).await.unwrap();
    assert_eq!(m.version, stored.meta.version);
    assert!(t.store.load(&key).await.unwrap().is_none());
    assert_eq!(
        payload_of(&t.store, &new_key_).await.unwrap(),
        Bytes::from_static(b"moving")
    );
}
