//! The conformance suite's part on compare-and-set (`save_if`): stale versions conflict,
//! concurrent writers lose nothing, a version never matches another incarnation or store.

use crate::codec::CodecKind;
use crate::error::Error;
use crate::id::SessionId;
use crate::testing::Harness;
use crate::version::Version;

use super::{new_key, open, rec, typed, TestSession, HOUR_MS};

/// `save_if` with the stored version writes, under a new version.
pub async fn save_if_matching_version_writes(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let before = session.meta.version;
    session.value.n = 2;
    s.save_if(&mut session).await.unwrap();
    assert_ne!(session.meta.version, before);
    let got = s.load(&session.id).await.unwrap().unwrap();
    assert_eq!(got.value.n, 2);
    assert_eq!(got.meta.version, session.meta.version);
}

/// `save_if` with a stale version is `Conflict` with the stored version, and
/// the stored value is untouched.
pub async fn save_if_stale_version_conflicts(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let mut stale = session.clone();
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    stale.value.n = 3;
    let e = s.save_if(&mut stale).await.unwrap_err();
    match e {
        Error::Conflict { expected, actual, .. } => {
            assert_eq!(expected, stale.meta.version);
            assert_eq!(actual, session.meta.version);
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert_eq!(s.load(&session.id).await.unwrap().unwrap().value.n, 2);
}

/// `save_if` on a missing session is `NotFound` and writes nothing.
pub async fn save_if_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let e = t
        .store
        .save_if(&key, Version::generate(), &rec(b"x", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// `save_if` after a delete is `NotFound`: a stale compare-and-set cannot
/// resurrect a logged-out session.
pub async fn save_if_after_delete_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    t.store.delete(&key).await.unwrap();
    let e = t
        .store
        .save_if(&key, m.version, &rec(b"y", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// 64 tasks each add one to a counter with load + `save_if`, retrying on
/// conflict: no increment is lost.
pub async fn concurrent_cas_increments_lose_nothing(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let id = s.create(TestSession::sample(0)).await.unwrap().id;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let mut cur = s.load(&id).await.unwrap().unwrap();
                cur.value.n += 1;
                match s.save_if(&mut cur).await {
                    Ok(()) => return cur.meta.version,
                    Err(Error::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
                assert!(conflicts < 10_000, "no progress");
            }
        }));
    }
    let mut versions = std::collections::HashSet::new();
    for task in tasks {
        assert!(
            versions.insert(task.await.unwrap()),
            "two writes stored one version"
        );
    }
    let end = s.load(&id).await.unwrap().unwrap();
    assert_eq!(end.value.n, 64);
    assert!(versions.contains(&end.meta.version));
}

/// Delete, then create the same id again: a version read from the first
/// incarnation does not match the second (no ABA).
pub async fn no_aba_after_delete_and_recreate(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let id = SessionId::generate().unwrap();
    let first = s.create_with_id(&id, TestSession::sample(1)).await.unwrap();
    assert!(s.delete(&id).await.unwrap());
    let second = s.create_with_id(&id, TestSession::sample(2)).await.unwrap();
    assert_ne!(first.meta.version, second.meta.version);
    let mut stale = first;
    stale.value.n = 99;
    let e = s.save_if(&mut stale).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(s.load(&id).await.unwrap().unwrap().value.n, 2);
}

/// Two store instances on one backend never hand out the same version.
pub async fn versions_from_two_stores_never_match(h: &dyn Harness) {
    let a = open(h).await;
    let b = open(h).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..300u32 {
        for t in [&a, &b] {
            let key = new_key("task");
            let m = t
                .store
                .create(&key, &rec(&i.to_be_bytes(), HOUR_MS))
                .await
                .unwrap();
            let m2 = t.store.save(&key, &rec(b"again", HOUR_MS)).await.unwrap();
            assert!(
                seen.insert(m.version) && seen.insert(m2.version),
                "a version repeated"
            );
        }
    }
}
