//! The conformance suite's part on round trips: a typed session comes back equal under
//! each codec, a raw record byte for byte.

use bytes::Bytes;

use crate::codec::{CodecId, CodecKind};
use crate::key::SessionKey;
use crate::testing::Harness;

use super::{new_key, ns, open, payload_of, rec, typed, TestSession, HOUR_MS};

async fn round_trip(h: &dyn Harness, codec: CodecKind) {
    let t = open(h).await;
    let s = typed(&t.store, codec);
    let created = s.create(TestSession::sample(1)).await.unwrap();
    assert!(!created.meta.version.is_none());
    let got = s.load(&created.id).await.unwrap().expect("created session loads");
    assert_eq!(got.value, TestSession::sample(1));
    assert_eq!(got.meta, created.meta);
    assert_eq!(got.id, created.id);
    let raw = t
        .store
        .load(&SessionKey::new(ns("task"), created.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.codec, codec.id());
}

/// A value written with the JSON codec reads back equal.
pub async fn round_trip_json(h: &dyn Harness) {
    round_trip(h, CodecKind::Json).await;
}

/// A value written with the bincode codec reads back equal.
pub async fn round_trip_bincode(h: &dyn Harness) {
    round_trip(h, CodecKind::Bincode).await;
}

/// A record with the raw codec and arbitrary bytes reads back byte for byte,
/// metadata included (what a wrapper store relies on to copy records).
pub async fn raw_record_round_trips_exactly(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let payload: Vec<u8> = (0..=255u8).collect();
    let r = rec(&payload, HOUR_MS);
    let meta = t.store.save(&key, &r).await.unwrap();
    let got = t.store.load(&key).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from(payload));
    assert_eq!(got.codec, CodecId::RAW);
    assert_eq!(got.meta, meta);
    assert_eq!(meta.created_at, r.meta.created_at);
    assert_eq!(meta.updated_at, r.meta.updated_at);
    assert_eq!(meta.expires_at, r.meta.expires_at);
}

/// An empty payload is a valid session.
pub async fn empty_payload_is_stored(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.create(&key, &rec(b"", HOUR_MS)).await.unwrap();
    assert_eq!(payload_of(&t.store, &key).await, Some(Bytes::new()));
}
