//! The conformance suite's part on expiry: absolute and sliding deadlines, `touch`, the max
//! lifetime, and writes whose deadline has already passed.

use std::time::Duration;

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::expiry::{now_ms, ExpiryPolicy};
use crate::key::SessionKey;
use crate::testing::Harness;

use super::{new_key, ns, open, payload_of, rec, typed, TestSession, HOUR_MS};

/// A session past its absolute deadline is never returned.
pub async fn absolute_expiry(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::absolute(Duration::from_millis(600)));
    let id = s.create(TestSession::sample(1)).await.unwrap().id;
    assert!(s.load(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(s.load(&id).await.unwrap().is_none());
    assert!(t
        .store
        .load(&SessionKey::new(ns("task"), id))
        .await
        .unwrap()
        .is_none());
}

/// A save resets an absolute deadline to now + TTL.
pub async fn save_resets_absolute_deadline(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::absolute(Duration::from_millis(800)));
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.load(&session.id).await.unwrap().unwrap().value.n, 2);
}

/// Expired sessions are misses in `load_many` too.
pub async fn expired_is_missing_in_load_many(h: &dyn Harness) {
    let t = open(h).await;
    let short = new_key("task");
    let long = new_key("task");
    t.store.save(&short, &rec(b"s", 300)).await.unwrap();
    t.store.save(&long, &rec(b"l", HOUR_MS)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = t.store.load_many(&[short, long]).await.unwrap();
    assert!(got[0].as_ref().unwrap().is_none());
    assert!(got[1].as_ref().unwrap().is_some());
}

/// A record whose deadline is already past is not returned after being written.
pub async fn write_with_past_deadline_is_not_visible(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut r = rec(b"x", HOUR_MS);
    r.meta.expires_at = now_ms().saturating_sub(1000);
    // A store may refuse or accept the write; either way the session is not visible.
    let _ = t.store.save(&key, &r).await;
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// Every write with a deadline already past over a live session leaves no
/// session and no key behind: loads miss, `create` works again, and the
/// stored bytes are gone (not a husk that is `Corrupt` forever).
pub async fn past_deadline_write_over_a_live_session_removes_it(h: &dyn Harness) {
    let t = open(h).await;
    let past = || {
        let mut r = rec(b"late", HOUR_MS);
        r.meta.expires_at = now_ms().saturating_sub(5_000);
        r
    };
    for write in ["save", "update", "save_if", "save_many", "touch", "capped"] {
        let key = new_key("task");
        let live = t.store.create(&key, &rec(b"live", HOUR_MS)).await.unwrap();
        let outcome = match write {
            "save" => t.store.save(&key, &past()).await.map(drop),
            "update" => t.store.update(&key, &past()).await.map(drop),
            "save_if" => t.store.save_if(&key, live.version, &past()).await.map(drop),
            "save_many" => t.store.save_many(&[(key.clone(), past())]).await.map(drop),
            "touch" => t
                .store
                .touch(&key, now_ms().saturating_sub(5_000))
                .await
                .map(drop),
            _ => {
                // A deadline in the future, but a lifetime cap already passed.
                let mut r = rec(b"late", HOUR_MS);
                r.meta.max_expires_at = now_ms().saturating_sub(5_000);
                t.store.save(&key, &r).await.map(drop)
            }
        };
        if let Err(e) = outcome {
            assert!(!e.is_temporary(), "{write}: {e}");
        }
        assert!(
            t.store.load(&key).await.unwrap().is_none(),
            "{write}: still loads"
        );
        assert!(
            t.raw.get_raw(&key).await.unwrap().is_none(),
            "{write}: a key is left behind"
        );
        assert_eq!(t.store.count(&ns("task")).await.unwrap(), 0, "{write}");
        t.store.create(&key, &rec(b"again", HOUR_MS)).await.unwrap();
        assert_eq!(
            payload_of(&t.store, &key).await.unwrap(),
            Bytes::from_static(b"again")
        );
        assert!(t.store.delete(&key).await.unwrap());
    }
}

/// Sliding expiry: loads keep a session alive past its first idle deadline.
pub async fn sliding_expiry_extends_on_load(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::sliding(
        Duration::from_millis(1000),
        Duration::from_secs(60),
    ));
    let id = s.create(TestSession::sample(1)).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(s.load(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(700)).await;
    // 1.4 s after creation: alive only because the load at 0.7 s slid it.
    assert!(s.load(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(s.load(&id).await.unwrap().is_none(), "idle past the timeout");
}

/// Sliding expiry stops at created-at + max lifetime however often the session is read.
pub async fn sliding_expiry_stops_at_max_lifetime(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::sliding(
        Duration::from_millis(1000),
        Duration::from_millis(2000),
    ));
    let created = s.create(TestSession::sample(1)).await.unwrap();
    let (id, m) = (created.id, created.meta);
    assert_eq!(m.max_expires_at, m.created_at + 2000);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let got = s
            .load(&id)
            .await
            .unwrap()
            .expect("alive while read within the idle timeout");
        assert!(got.meta.deadline() <= m.created_at + 2000);
    }
    // 1.8 s: alive. Without the cap the last load would keep it until ~2.8 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(s.load(&id).await.unwrap().is_none(), "past max lifetime");
}

/// `touch` moves the deadline without changing value or version.
pub async fn touch_extends_the_deadline(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.save(&key, &rec(b"x", 500)).await.unwrap();
    assert!(t.store.touch(&key, now_ms() + HOUR_MS).await.unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = t.store.load(&key).await.unwrap().expect("touched session alive");
    assert_eq!(got.meta.version, m.version);
    assert_eq!(got.payload, Bytes::from_static(b"x"));
    assert!(got.meta.expires_at > now_ms() + HOUR_MS / 2);
}

/// `touch` of a missing session is false and creates nothing.
pub async fn touch_missing_is_false(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    assert!(!t.store.touch(&key, now_ms() + HOUR_MS).await.unwrap());
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// Neither `touch` nor a later write moves a deadline past `max_expires_at`;
/// the typed handle carries the cap through every write.
pub async fn deadline_never_passes_max_lifetime(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut r = rec(b"x", HOUR_MS);
    r.meta.max_expires_at = now_ms() + 700;
    let m = t.store.create(&key, &r).await.unwrap();
    assert_eq!(m.expires_at, r.meta.max_expires_at);
    t.store.touch(&key, now_ms() + HOUR_MS).await.unwrap();
    assert!(t.store.load(&key).await.unwrap().unwrap().meta.deadline() <= r.meta.max_expires_at);

    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::sliding(
        Duration::from_secs(60),
        Duration::from_millis(700),
    ));
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let cap = session.meta.max_expires_at;
    assert!(cap > 0);
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    s.update(&mut session).await.unwrap();
    assert_eq!(session.meta.max_expires_at, cap);
    assert!(session.meta.deadline() <= cap);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(t.store.load(&key).await.unwrap().is_none());
    assert!(s.load(&session.id).await.unwrap().is_none(), "past max lifetime");
    // A write of the loaded-then-expired session after its cap leaves nothing.
    let _ = s.save(&mut session).await;
    assert!(
        s.load(&session.id).await.unwrap().is_none(),
        "a write revived it past its cap"
    );
}
