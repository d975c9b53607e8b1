//! The conformance suite's part on codecs: one codec's sessions read through a handle
//! configured with the other, and values of another type.

use std::sync::Arc;

use crate::codec::{CodecId, CodecKind};
use crate::error::Error;
use crate::key::SessionKey;
use crate::testing::Harness;
use crate::typed::Sessions;

use super::{ns, open, typed, TestSession};

/// A session written with one codec is read by a handle configured with the
/// other: changing the codec logs nobody out.
pub async fn cross_codec_reads(h: &dyn Harness) {
    let t = open(h).await;
    let json = typed(&t.store, CodecKind::Json);
    let bin = typed(&t.store, CodecKind::Bincode);
    let a = json.create(TestSession::sample(1)).await.unwrap().id;
    let b = bin.create(TestSession::sample(2)).await.unwrap().id;
    assert_eq!(bin.load(&a).await.unwrap().unwrap().value, TestSession::sample(1));
    assert_eq!(
        json.load(&b).await.unwrap().unwrap().value,
        TestSession::sample(2)
    );
    // A write through the other handle switches the stored codec.
    let mut session = bin.load(&a).await.unwrap().unwrap();
    session.value = TestSession::sample(3);
    bin.save_if(&mut session).await.unwrap();
    let raw = t
        .store
        .load(&SessionKey::new(ns("task"), a.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.codec, CodecId::BINCODE);
    assert_eq!(json.load(&a).await.unwrap().unwrap().value.n, 3);
}

/// A stored value of another type is a miss by default and a `Codec` error
/// on request, never a panic.
pub async fn wrong_type_is_a_miss_or_a_codec_error(h: &dyn Harness) {
    let t = open(h).await;
    let strings: Sessions<Vec<String>> =
        Sessions::new(Arc::clone(&t.store), ns("task")).with_codec(CodecKind::Json);
    let id = strings.create(vec!["a".to_string()]).await.unwrap().id;
    let s = typed(&t.store, CodecKind::Json);
    assert!(s.load(&id).await.unwrap().is_none());
    assert_eq!(s.undecodable_count(), 1);
    let e = s
        .with_undecodable(crate::typed::Undecodable::Error)
        .load(&id)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Codec { .. }), "{e}");
}
