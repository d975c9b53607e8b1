//! The conformance suite's part on `create` (only when absent) and `update` (only when
//! present), alone and racing.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::error::Error;
use crate::testing::Harness;

use super::{new_key, open, payload_of, rec, typed, TestSession, HOUR_MS};

/// `create` stores a new session with a fresh version when the record has none.
pub async fn create_assigns_a_version(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert!(!m.version.is_none());
    assert_eq!(t.store.load(&key).await.unwrap().unwrap().meta.version, m.version);
}

/// `create` on an existing key fails with `AlreadyExists` and changes nothing.
pub async fn create_on_existing_fails(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let first = t.store.create(&key, &rec(b"original", HOUR_MS)).await.unwrap();
    let e = t
        .store
        .create(&key, &rec(b"intruder", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    let got = t.store.load(&key).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"original"));
    assert_eq!(got.meta.version, first.version);
}

/// Of 16 concurrent `create`s of one key exactly one wins.
pub async fn concurrent_create_has_one_winner(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = Arc::clone(&t.store);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.create(&key, &rec(&[i], HOUR_MS)).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

/// `update` of an existing session writes it.
pub async fn update_existing_writes(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let first = t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let m = t.store.update(&key, &rec(b"b", HOUR_MS)).await.unwrap();
    assert_ne!(m.version, first.version);
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"b")
    );
}

/// `update` of a key never written is `NotFound` and writes nothing.
pub async fn update_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let e = t.store.update(&key, &rec(b"b", HOUR_MS)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// A write finishing after a logout does not bring the session back.
pub async fn update_after_delete_leaves_nothing(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    assert!(s.delete(&session.id).await.unwrap());
    session.value.n = 2;
    let e = s.update(&mut session).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(s.load(&session.id).await.unwrap().is_none());
    assert_eq!(s.count().await.unwrap(), 0);
}
