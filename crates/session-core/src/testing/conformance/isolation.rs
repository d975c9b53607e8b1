//! The conformance suite's part on isolation: namespaces and key prefixes never see each
//! other's sessions.

use bytes::Bytes;

use crate::id::SessionId;
use crate::key::SessionKey;
use crate::testing::{random_prefix, Harness};

use super::{new_key, ns, open, payload_of, rec, HOUR_MS};

/// The same id in two namespaces is two sessions.
pub async fn namespaces_are_isolated(h: &dyn Harness) {
    let t = open(h).await;
    let id = SessionId::generate().unwrap();
    let a = SessionKey::new(ns("task"), id.clone());
    let b = SessionKey::new(ns("orchestrator"), id);
    t.store.save(&a, &rec(b"task", HOUR_MS)).await.unwrap();
    assert!(t.store.load(&b).await.unwrap().is_none());
    t.store.save(&b, &rec(b"orch", HOUR_MS)).await.unwrap();
    t.store.delete(&a).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &b).await.unwrap(),
        Bytes::from_static(b"orch")
    );
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 0);
    assert_eq!(t.store.count(&ns("orchestrator")).await.unwrap(), 1);
}

/// Two stores with different key prefixes on one backend do not see each
/// other's sessions, in loads or counts.
pub async fn key_prefixes_are_isolated(h: &dyn Harness) {
    let a = open(h).await;
    let b = open(h).await;
    let key = new_key("task");
    a.store.save(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    assert!(b.store.load(&key).await.unwrap().is_none());
    assert_eq!(b.store.count(&ns("task")).await.unwrap(), 0);
    assert!(!b.store.delete(&key).await.unwrap());
    assert_eq!(a.store.count(&ns("task")).await.unwrap(), 1);
}

/// A prefix that is another store's prefix plus a namespace (`p:` and
/// `p:task:`) shares nothing with it: neither counts nor loads the other's keys.
pub async fn nested_key_prefixes_are_isolated(h: &dyn Harness) {
    let outer_prefix = random_prefix();
    let inner_prefix = crate::key::KeyPrefix::new(&format!("{}task:", outer_prefix.as_str())).unwrap();
    let outer = h.open(outer_prefix).await;
    let inner = h.open(inner_prefix).await;
    let inner_keys: Vec<SessionKey> = (0..3).map(|_| new_key("task")).collect();
    for k in &inner_keys {
        inner.store.save(k, &rec(b"inner", HOUR_MS)).await.unwrap();
    }
    assert_eq!(outer.store.count(&ns("task")).await.unwrap(), 0);
    let mine = new_key("task");
    outer.store.save(&mine, &rec(b"outer", HOUR_MS)).await.unwrap();
    assert_eq!(outer.store.count(&ns("task")).await.unwrap(), 1);
    assert_eq!(inner.store.count(&ns("task")).await.unwrap(), 3);
    for k in &inner_keys {
        assert!(outer.store.load(k).await.unwrap().is_none());
    }
    assert!(inner.store.load(&mine).await.unwrap().is_none());
}
