//! The conformance suite's part on bad input: invalid ids, records over the size limit, and
//! stored values that are not envelopes.

use bytes::Bytes;

use crate::codec::CodecKind;
use crate::envelope::{Record, FORMAT_VERSION, HEADER_LEN};
use crate::error::Error;
use crate::expiry::now_ms;
use crate::id::SessionId;
use crate::key::SessionKey;
use crate::store::DEFAULT_MAX_SESSION_BYTES;
use crate::testing::{Harness, TestStore};
use crate::version::Version;

use super::{new_key, ns, open, payload_of, rec, typed, TestSession, HOUR_MS};

/// Every class of bad id is `InvalidId` before a key exists; GUIDs pass.
pub async fn invalid_ids_are_rejected_before_io(h: &dyn Harness) {
    let t = open(h).await;
    let long = "a".repeat(129);
    for bad in [
        "",
        "short",
        &long,
        "*",
        "aaaaaaaaaaaaaaa*",
        "aaaaaaaaaaaaaaa?",
        "aaaaaaaaaaaaaaa[",
        "aaaaaaaaa]aaaaaa",
        "aaaaaaaaaaaaaaa:",
        "aaaaaaa aaaaaaaa",
        "aaaaaaaa\naaaaaaa",
        "aaaaaaaa\0aaaaaaa",
        "aaaaaa{tag}aaaaaa",
        "aaaaaaaaaaaaaaaé",
        "aaaa/aaaaaaaaaaa",
        "aaaa\\aaaaaaaaaaa",
    ] {
        let e = SessionId::parse(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{bad:?}: {e}");
        // Ids shorter than 8 characters ("short") can appear in the message's own words.
        if bad.len() >= 8 {
            assert!(!e.to_string().contains(bad), "error echoes the id");
        }
    }
    assert!(SessionId::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").is_ok());
    // Nothing reached the store.
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 0);
}

fn big_record() -> Record {
    rec(&vec![7u8; DEFAULT_MAX_SESSION_BYTES - HEADER_LEN + 1], HOUR_MS)
}

/// A record over the size limit is `TooLarge` for every write, and nothing is written.
pub async fn too_large_is_rejected_by_every_write(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let big = big_record();
    fn check<T: std::fmt::Debug>(r: Result<T, Error>) {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    }
    check(t.store.save(&key, &big).await);
    check(t.store.create(&key, &big).await);
    assert!(t.store.load(&key).await.unwrap().is_none());
    t.store.create(&key, &rec(b"small", HOUR_MS)).await.unwrap();
    check(t.store.update(&key, &big).await);
    check(t.store.save_if(&key, Version::generate(), &big).await);
    check(
        t.store
            .save_many(&[(new_key("task"), rec(b"ok", HOUR_MS)), (key.clone(), big)])
            .await,
    );
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"small")
    );
    assert_eq!(
        t.store.count(&ns("task")).await.unwrap(),
        1,
        "save_many wrote nothing"
    );
}

/// A record exactly at the size limit is accepted.
pub async fn record_at_the_limit_is_accepted(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let r = rec(&vec![1u8; DEFAULT_MAX_SESSION_BYTES - HEADER_LEN], HOUR_MS);
    t.store.save(&key, &r).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap().len(),
        DEFAULT_MAX_SESSION_BYTES - HEADER_LEN
    );
}

/// The typed handle enforces its own limit before encoding reaches the store.
pub async fn typed_handle_enforces_its_limit(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_max_bytes(200);
    let mut v = TestSession::sample(1);
    v.state = "x".repeat(500);
    let e = s.create(v).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 200, .. }), "{e}");
    assert_eq!(s.count().await.unwrap(), 0);
}

async fn planted(h: &dyn Harness, bytes: Bytes) -> (TestStore, SessionKey) {
    let t = open(h).await;
    let key = new_key("task");
    t.raw.put_raw(&key, bytes, HOUR_MS).await.unwrap();
    (t, key)
}

async fn assert_corrupt(t: &TestStore, key: &SessionKey) {
    let e = t.store.load(key).await.unwrap_err();
    match &e {
        Error::Corrupt { namespace, .. } => assert_eq!(namespace, "task"),
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(
        !e.to_string().contains(key.id.as_str()),
        "error text holds the id"
    );
    // The store keeps serving other keys.
    let other = new_key("task");
    t.store.save(&other, &rec(b"fine", HOUR_MS)).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &other).await.unwrap(),
        Bytes::from_static(b"fine")
    );
}

/// Plain text under a session key is `Corrupt` naming the namespace.
pub async fn corrupt_plain_text(h: &dyn Harness) {
    let (t, key) = planted(h, Bytes::from_static(b"hello, I am not a session")).await;
    assert_corrupt(&t, &key).await;
}

/// A truncated envelope is `Corrupt`.
pub async fn corrupt_truncated_envelope(h: &dyn Harness) {
    let full = rec(b"0123456789", HOUR_MS).encode();
    let (t, key) = planted(h, full.slice(..full.len() - 3)).await;
    assert_corrupt(&t, &key).await;
    let (t, key) = planted(h, full.slice(..20)).await;
    assert_corrupt(&t, &key).await;
}

/// An envelope of another format version is `Corrupt`.
pub async fn corrupt_unknown_format_version(h: &dyn Harness) {
    let mut v = rec(b"x", HOUR_MS).encode().to_vec();
    v[4] = FORMAT_VERSION + 1;
    let (t, key) = planted(h, Bytes::from(v)).await;
    assert_corrupt(&t, &key).await;
}

/// An envelope naming an unknown codec is `Corrupt`.
pub async fn corrupt_unknown_codec(h: &dyn Harness) {
    let mut v = rec(b"x", HOUR_MS).encode().to_vec();
    v[5] = 0xee;
    let (t, key) = planted(h, Bytes::from(v)).await;
    assert_corrupt(&t, &key).await;
}

/// Corrupt values are reported per key in `load_many`; the other keys load.
pub async fn corrupt_value_in_load_many_is_per_key(h: &dyn Harness) {
    let (t, bad) = planted(h, Bytes::from_static(b"garbage")).await;
    let good = new_key("task");
    t.store.save(&good, &rec(b"good", HOUR_MS)).await.unwrap();
    let got = t.store.load_many(&[good, bad, new_key("task")]).await.unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().as_ref().unwrap().payload,
        Bytes::from_static(b"good")
    );
    assert!(matches!(got[1], Err(Error::Corrupt { .. })));
    assert!(got[2].as_ref().unwrap().is_none());
}

/// Operations other than `load` on a corrupt value fail cleanly or replace
/// it; none panics, and `delete` removes it.
pub async fn corrupt_value_can_be_overwritten_and_deleted(h: &dyn Harness) {
    let (t, key) = planted(h, Bytes::from_static(b"garbage")).await;
    let _ = t.store.touch(&key, now_ms() + HOUR_MS).await;
    let _ = t.store.update(&key, &rec(b"u", HOUR_MS)).await;
    let _ = t
        .store
        .save_if(&key, Version::generate(), &rec(b"c", HOUR_MS))
        .await;
    t.store.save(&key, &rec(b"fresh", HOUR_MS)).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"fresh")
    );
    let (t, key) = planted(h, Bytes::from_static(b"garbage")).await;
    assert!(t.store.delete(&key).await.unwrap());
    assert!(t.store.load(&key).await.unwrap().is_none());
}
