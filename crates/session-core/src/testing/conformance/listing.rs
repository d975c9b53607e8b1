//! The conformance suite's part on listing a store's sessions ([`SessionStore::scan`]): what
//! copying between stores, a backup's resync and a bulk restore rely on.

use std::collections::HashMap;

use crate::backend::Record;
use crate::expiry::now_ms;
use crate::key::{KeyPrefix, SessionKey};
use crate::scan::ScanCursor;
use crate::store::SessionStore;
use crate::testing::{random_prefix, Harness};

use super::{new_key, rec, HOUR_MS};

/// Every page of a scan, with `limit` per page; panics on a scan that does not end.
pub(super) async fn scan_all(store: &dyn SessionStore, limit: usize) -> HashMap<SessionKey, Record> {
    let mut out = HashMap::new();
    let mut cursor: Option<ScanCursor> = None;
    for _ in 0..10_000 {
        let page = store.scan(cursor.as_ref(), limit).await.unwrap();
        for (key, record) in page.sessions {
            assert!(out.insert(key, record).is_none(), "a session listed twice");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("the scan did not end after 10 000 pages");
}

/// A store that cannot list (its keys do not give back the ids: hashed ids) says so with
/// [`Error::Backend`](crate::Error::Backend), with or without sessions and for any cursor.
async fn assert_cannot_list(store: &dyn SessionStore) {
    store
        .save(&new_key("task"), &rec(b"listed?", HOUR_MS))
        .await
        .unwrap();
    for limit in [1, 1000] {
        match store.scan(None, limit).await {
            Err(crate::Error::Backend { message, .. }) => assert!(message.contains("list"), "{message}"),
            other => panic!("a store that cannot list answered {other:?}"),
        }
    }
}

/// A scan lists every live session of the store once, with its record as `load` gives it,
/// whatever the page size; nothing deleted or expired, nothing of a store whose prefix
/// extends this one's.
pub async fn scan_lists_every_live_session_once(h: &dyn Harness) {
    let prefix = random_prefix();
    let t = h.open(prefix.clone()).await;
    if !h.can_list() {
        return assert_cannot_list(t.store.as_ref()).await;
    }
    let nested = h
        .open(KeyPrefix::new(&format!("{}task:", prefix.as_str())).unwrap())
        .await;
    let s = t.store.as_ref();
    let mut live = Vec::new();
    for i in 0..23u8 {
        let key = new_key(if i % 3 == 0 { "orchestrator" } else { "task" });
        s.save(&key, &rec(&[i; 40], HOUR_MS)).await.unwrap();
        live.push(key);
    }
    let deleted = new_key("task");
    s.save(&deleted, &rec(b"gone", HOUR_MS)).await.unwrap();
    s.delete(&deleted).await.unwrap();
    let mut expired = rec(b"old", HOUR_MS);
    expired.meta.expires_at = now_ms().saturating_sub(1);
    s.save(&new_key("task"), &expired).await.unwrap();
    nested
        .store
        .save(&new_key("task"), &rec(b"not ours", HOUR_MS))
        .await
        .unwrap();

    for limit in [1, 7, 1000] {
        let listed = scan_all(s, limit).await;
        assert_eq!(listed.len(), live.len(), "page size {limit}");
        for key in &live {
            let record = listed.get(key).expect("a live session is listed");
            assert_eq!(Some(record), s.load(key).await.unwrap().as_ref());
        }
    }
}

/// A scan of an empty store ends at once, with nothing.
pub async fn scan_of_an_empty_store_ends(h: &dyn Harness) {
    let t = h.open(random_prefix()).await;
    if !h.can_list() {
        return assert_cannot_list(t.store.as_ref()).await;
    }
    assert!(scan_all(t.store.as_ref(), 10).await.is_empty());
}
