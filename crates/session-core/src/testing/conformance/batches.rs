//! The conformance suite's part on batches: `load_many` and `save_many`, raw and typed.

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::envelope::Record;
use crate::id::SessionId;
use crate::key::SessionKey;
use crate::testing::Harness;
use crate::typed::Session;
use crate::version::Version;

use super::{new_key, ns, open, rec, typed, TestSession, HOUR_MS};

/// `load_many` answers in key order with hits and misses.
pub async fn load_many_keeps_order(h: &dyn Harness) {
    let t = open(h).await;
    let keys: Vec<SessionKey> = (0..10).map(|_| new_key("task")).collect();
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        t.store.save(k, &rec(&[i as u8], HOUR_MS)).await.unwrap();
    }
    let got = t.store.load_many(&keys).await.unwrap();
    assert_eq!(got.len(), 10);
    for (i, r) in got.iter().enumerate() {
        let r = r.as_ref().unwrap();
        if i % 2 == 0 {
            assert_eq!(r.as_ref().unwrap().payload, Bytes::from(vec![i as u8]));
        } else {
            assert!(r.is_none());
        }
    }
}

/// `load_many` and `save_many` of nothing are empty and fine.
pub async fn empty_batches(h: &dyn Harness) {
    let t = open(h).await;
    assert!(t.store.load_many(&[]).await.unwrap().is_empty());
    assert!(t.store.save_many(&[]).await.unwrap().is_empty());
}

/// 200 sessions written by `save_many` load back by `load_many` across namespaces.
pub async fn save_many_then_load_many(h: &dyn Harness) {
    let t = open(h).await;
    let items: Vec<(SessionKey, Record)> = (0..200u32)
        .map(|i| {
            let key = new_key(if i % 2 == 0 { "task" } else { "orchestrator" });
            (key, rec(&i.to_be_bytes(), HOUR_MS))
        })
        .collect();
    let metas = t.store.save_many(&items).await.unwrap();
    assert_eq!(metas.len(), 200);
    let versions: std::collections::HashSet<Version> = metas.iter().map(|m| m.version).collect();
    assert_eq!(versions.len(), 200, "every write got its own version");
    let keys: Vec<SessionKey> = items.iter().map(|(k, _)| k.clone()).collect();
    let got = t.store.load_many(&keys).await.unwrap();
    for ((_, r), g) in items.iter().zip(got) {
        assert_eq!(g.unwrap().unwrap().payload, r.payload);
    }
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 100);
}

/// The typed batch calls decode each session.
pub async fn typed_batches(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Bincode);
    let ids: Vec<SessionId> = (0..5).map(|_| SessionId::generate().unwrap()).collect();
    let mut items: Vec<Session<TestSession>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Session::new(id.clone(), TestSession::sample(i as u64)))
        .collect();
    s.save_many(&mut items).await.unwrap();
    assert!(items.iter().all(|s| !s.meta.version.is_none()));
    let got = s.load_many(&ids).await.unwrap();
    for (i, g) in got.into_iter().enumerate() {
        let g = g.unwrap().unwrap();
        assert_eq!(g.value.n, i as u64);
        assert_eq!(g.meta, items[i].meta);
    }
}
