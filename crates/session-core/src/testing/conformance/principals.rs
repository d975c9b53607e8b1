//! The conformance suite's part on principals: binding sessions to a user, listing them and
//! ending them all ([`Sessions::bind`](crate::Sessions::bind), [`Sessions::list`](crate::Sessions::list),
//! [`Sessions::revoke_all`](crate::Sessions::revoke_all)).

use std::collections::BTreeSet;

use crate::backend::is_principal_index;
use crate::codec::CodecKind;
use crate::id::SessionId;
use crate::key::SessionKey;
use crate::principal::Principal;
use crate::testing::Harness;

use super::{ns, open, typed, TestSession};

fn principal(name: &str) -> Principal {
    Principal::new(name).unwrap()
}

fn ids<T>(sessions: &[crate::typed::Session<T>]) -> BTreeSet<SessionId> {
    sessions.iter().map(|s| s.id.clone()).collect()
}

/// Sessions bound to a principal are listed and revoked together; another principal's, and
/// unbound ones, are left alone; a principal's index is not counted as a session.
pub async fn revoke_all_ends_every_session_of_a_principal(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let (alice, bob) = (principal("alice@example.com"), principal("bob"));
    let mut alices = Vec::new();
    for n in 0..3 {
        let mut session = s.create(TestSession::sample(n)).await.unwrap();
        s.bind(&mut session, &alice).await.unwrap();
        assert_eq!(session.principal(), Some(&alice));
        alices.push(session);
    }
    let mut bobs = s.create(TestSession::sample(9)).await.unwrap();
    s.bind(&mut bobs, &bob).await.unwrap();
    let anonymous = s.create(TestSession::sample(10)).await.unwrap();
    assert_eq!(s.count().await.unwrap(), 5, "indexes are not sessions");

    let listed = s.list(&alice).await.unwrap();
    assert_eq!(ids(&listed), ids(&alices));
    assert!(listed.iter().all(|l| l.principal() == Some(&alice)));
    assert_eq!(
        s.load(&alices[0].id).await.unwrap().unwrap().principal().cloned(),
        Some(alice.clone())
    );

    let revoked = s.revoke_all(&alice).await.unwrap();
    assert_eq!(
        (revoked.ended, revoked.pending),
        (3, false),
        "a store that reaches the index ends them now"
    );
    for session in &alices {
        assert!(
            s.load(&session.id).await.unwrap().is_none(),
            "a revoked session loads"
        );
    }
    assert!(s.list(&alice).await.unwrap().is_empty());
    assert_eq!(
        ids(&s.list(&bob).await.unwrap()),
        ids(std::slice::from_ref(&bobs))
    );
    assert!(s.load(&anonymous.id).await.unwrap().is_some());
    assert_eq!(s.revoke_all(&alice).await.unwrap().ended, 0, "nothing left");
    assert_eq!(s.revoke_all(&principal("nobody")).await.unwrap().ended, 0);
    assert_eq!(s.count().await.unwrap(), 2);
}

/// The binding is kept by every write and moves with `rotate`: the new id is listed and
/// revoked, the old one is gone from the index.
pub async fn a_binding_survives_writes_and_moves_with_rotate(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Bincode);
    let carol = principal("carol");
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    s.bind(&mut session, &carol).await.unwrap();
    session.value.n = 2;
    s.save_if(&mut session).await.unwrap();
    s.update(&mut session).await.unwrap();
    s.save(&mut session).await.unwrap();
    let old = session.id.clone();
    let new = s.rotate(&old).await.unwrap();
    let moved = s.load(&new).await.unwrap().unwrap();
    assert_eq!(moved.principal(), Some(&carol));
    assert_eq!(moved.value.n, 2);
    let listed = s.list(&carol).await.unwrap();
    assert_eq!(ids(&listed), BTreeSet::from([new.clone()]));
    assert_eq!(s.revoke_all(&carol).await.unwrap().ended, 1);
    assert!(s.load(&new).await.unwrap().is_none());
    assert!(s.load(&old).await.unwrap().is_none());
}

/// A session bound after a revoke (a new login) is not ended by it and can be rotated at
/// once; binding gives a session without one a lifetime cap; binding to another principal
/// moves it.
pub async fn a_login_after_a_revoke_survives_it(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let dave = principal("dave");
    let mut before = s.create(TestSession::sample(1)).await.unwrap();
    assert_eq!(before.meta.max_expires_at, 0, "the suite's policy has no cap");
    s.bind(&mut before, &dave).await.unwrap();
    assert!(
        before.meta.max_expires_at > 0,
        "a bound session gets a lifetime cap"
    );
    assert_eq!(s.revoke_all(&dave).await.unwrap().ended, 1);
    let mut after = s.create(TestSession::sample(2)).await.unwrap();
    s.bind(&mut after, &dave).await.unwrap();
    assert_eq!(
        ids(&s.list(&dave).await.unwrap()),
        BTreeSet::from([after.id.clone()])
    );
    // It can be rotated at once (a revoke blocks the rotation of what it ends, only).
    let rotated = s.rotate(&after.id).await.unwrap();
    after = s.load(&rotated).await.unwrap().unwrap();
    assert_eq!(
        ids(&s.list(&dave).await.unwrap()),
        BTreeSet::from([after.id.clone()])
    );
    let erin = principal("erin");
    s.bind(&mut after, &erin).await.unwrap();
    assert!(s.list(&dave).await.unwrap().is_empty(), "rebound elsewhere");
    assert_eq!(s.revoke_all(&dave).await.unwrap().ended, 0);
    assert!(s.load(&after.id).await.unwrap().is_some());
    assert_eq!(s.revoke_all(&erin).await.unwrap().ended, 1);
}

/// A principal's index is one key, listed by `scan` (so that copies carry it) where the
/// store lists; a session of another handle's namespace is not in it.
pub async fn a_principal_index_is_one_key_that_scans_list(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let other = crate::typed::Sessions::<TestSession>::new(t.store.clone(), ns("orchestrator"));
    let frank = principal("frank");
    let mut a = s.create(TestSession::sample(1)).await.unwrap();
    s.bind(&mut a, &frank).await.unwrap();
    let mut b = other.create(TestSession::sample(2)).await.unwrap();
    other.bind(&mut b, &frank).await.unwrap();
    assert_eq!(
        ids(&s.list(&frank).await.unwrap()),
        BTreeSet::from([a.id.clone()])
    );
    assert_eq!(s.revoke_all(&frank).await.unwrap().ended, 1);
    assert!(
        other.load(&b.id).await.unwrap().is_some(),
        "namespaces have their own indexes"
    );
    if !h.can_list() {
        return;
    }
    let listed = super::listing::scan_all(t.store.as_ref(), 1000).await;
    let indexes: Vec<&SessionKey> = listed.keys().filter(|k| is_principal_index(k)).collect();
    assert_eq!(indexes.len(), 1, "orchestrator's index of frank");
    assert_eq!(indexes[0].ns(), "orchestrator");
}
