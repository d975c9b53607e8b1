//! Session types change between deploys: what the default codec keeps
//! loadable, and what a load does with a stored value that no longer decodes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{ns, open, TestSession};
use crate::codec::{CodecId, CodecKind};
use crate::error::Error;
use crate::key::SessionKey;
use crate::testing::Harness;
use crate::typed::{Sessions, Undecodable};

/// A handle with the default codec (what an application gets without choosing one).
fn handle<T>(store: &Arc<dyn crate::SessionStore>) -> Sessions<T>
where
    T: Serialize + DeserializeOwned + Send + Sync,
{
    Sessions::new(Arc::clone(store), ns("evolve"))
}

/// Writes `value` with the default codec and loads it back as `T`.
async fn round_trip<T>(h: &dyn Harness, value: T)
where
    T: Serialize + DeserializeOwned + Send + Sync + PartialEq + Debug + Clone,
{
    let t = open(h).await;
    let s = handle::<T>(&t.store);
    let id = s.create(value.clone()).await.unwrap().id;
    let got = s
        .load(&id)
        .await
        .unwrap()
        .expect("the session just written loads");
    assert_eq!(got.value, value);
    assert_eq!(s.undecodable_count(), 0);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CartV1 {
    items: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CartV2 {
    items: Vec<String>,
    #[serde(default)]
    coupon: Option<String>,
    #[serde(default)]
    visits: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CartV3 {
    #[serde(alias = "items")]
    lines: Vec<String>,
}

/// The default codec is JSON: readable by a person, and a type can grow.
pub async fn default_codec_is_json(h: &dyn Harness) {
    let t = open(h).await;
    let s = handle::<CartV1>(&t.store);
    let id = s
        .create(CartV1 {
            items: vec!["book".into()],
        })
        .await
        .unwrap()
        .id;
    let raw = t
        .store
        .load(&SessionKey::new(ns("evolve"), id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.codec, CodecId::JSON);
    assert_eq!(&raw.payload[..], br#"{"items":["book"]}"#);
}

/// A field added with `#[serde(default)]` keeps every session written before
/// it loadable, a field removed is ignored on load, and a field renamed with
/// `#[serde(alias)]` reads the old name.
pub async fn added_field_keeps_old_sessions_loadable(h: &dyn Harness) {
    let t = open(h).await;
    let old = handle::<CartV1>(&t.store);
    let new = handle::<CartV2>(&t.store);
    let id = old
        .create(CartV1 {
            items: vec!["book".into()],
        })
        .await
        .unwrap()
        .id;
    let mut got = new
        .load(&id)
        .await
        .unwrap()
        .expect("an old session loads as the new type");
    assert_eq!(got.value.items, vec!["book".to_string()]);
    assert_eq!(got.value.coupon, None);
    // Written back by the new type, then read by an instance still on the old
    // one (a rolling deploy): the unknown fields are ignored.
    got.value.coupon = Some("SAVE10".into());
    new.save_if(&mut got).await.unwrap();
    let back = old
        .load(&id)
        .await
        .unwrap()
        .expect("a new session loads as the old type");
    assert_eq!(back.value.items, vec!["book".to_string()]);
    assert_eq!(old.undecodable_count() + new.undecodable_count(), 0);
    // A field renamed with `#[serde(alias)]` reads the old name.
    let renamed = handle::<CartV3>(&t.store);
    let got = renamed
        .load(&id)
        .await
        .unwrap()
        .expect("loads under the new field name");
    assert_eq!(got.value.lines, vec!["book".to_string()]);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Guest { cart: Vec<String> },
    User { user_id: u64, roles: Vec<String> },
}

/// `#[serde(untagged)]` enums round-trip with the default codec.
pub async fn untagged_enum_round_trips(h: &dyn Harness) {
    round_trip(
        h,
        Untagged::Guest {
            cart: vec!["pen".into()],
        },
    )
    .await;
    round_trip(
        h,
        Untagged::User {
            user_id: 7,
            roles: vec!["admin".into()],
        },
    )
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Tagged {
    Anonymous,
    SignedIn { user_id: String, mfa: bool },
}

/// Internally tagged enums (`#[serde(tag = "…")]`) round-trip.
pub async fn internally_tagged_enum_round_trips(h: &dyn Harness) {
    round_trip(h, Tagged::Anonymous).await;
    round_trip(
        h,
        Tagged::SignedIn {
            user_id: "u-1".into(),
            mfa: true,
        },
    )
    .await;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flattened {
    user_id: String,
    #[serde(flatten)]
    extra: BTreeMap<String, String>,
}

/// `#[serde(flatten)]` round-trips.
pub async fn flattened_fields_round_trip(h: &dyn Harness) {
    round_trip(
        h,
        Flattened {
            user_id: "u-2".into(),
            extra: [("theme".to_string(), "dark".to_string())].into(),
        },
    )
    .await;
}

/// The shape of a session as a bag of JSON values (`HashMap<String,
/// serde_json::Value>`) round-trips, numbers, nulls and nesting included.
pub async fn map_of_json_values_round_trips(h: &dyn Harness) {
    let mut bag: HashMap<String, serde_json::Value> = HashMap::new();
    bag.insert("user_id".into(), serde_json::json!(42));
    bag.insert("ratio".into(), serde_json::json!(0.5));
    bag.insert(
        "flags".into(),
        serde_json::json!({"beta": true, "tags": ["a", null]}),
    );
    bag.insert("nothing".into(), serde_json::Value::Null);
    round_trip(h, bag).await;
}

/// Sessions written with bincode (an earlier default) still load through a
/// handle on the default codec, and are rewritten in it.
pub async fn bincode_sessions_load_under_the_default_codec(h: &dyn Harness) {
    let t = open(h).await;
    let before = handle::<TestSession>(&t.store).with_codec(CodecKind::Bincode);
    let after = handle::<TestSession>(&t.store);
    let id = before.create(TestSession::sample(5)).await.unwrap().id;
    let mut got = after.load(&id).await.unwrap().expect("a bincode session loads");
    assert_eq!(got.value, TestSession::sample(5));
    after.save_if(&mut got).await.unwrap();
    let raw = t
        .store
        .load(&SessionKey::new(ns("evolve"), id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.codec, CodecId::JSON);
}

/// A stored value that no longer decodes into the handle's type reads as
/// absent by default: counted, left in place (a rollback can read it), and
/// the id can be written again. With [`Undecodable::Error`] the load fails
/// with [`Error::Codec`].
pub async fn undecodable_session_is_a_counted_miss(h: &dyn Harness) {
    let t = open(h).await;
    // bincode is positional: a field added in the middle breaks old sessions.
    let old = handle::<CartV1>(&t.store).with_codec(CodecKind::Bincode);
    let new = handle::<CartV2>(&t.store);
    let id = old
        .create(CartV1 {
            items: vec!["book".into()],
        })
        .await
        .unwrap()
        .id;
    let key = SessionKey::new(ns("evolve"), id.clone());

    assert!(new.load(&id).await.unwrap().is_none());
    assert_eq!(new.undecodable_count(), 1);
    let batch = new.load_many(std::slice::from_ref(&id)).await.unwrap();
    assert!(matches!(batch.as_slice(), [Ok(None)]));
    assert_eq!(new.clone().undecodable_count(), 2, "clones share the count");
    assert!(
        t.store.load(&key).await.unwrap().is_some(),
        "the stored value is left in place"
    );
    assert_eq!(
        old.load(&id).await.unwrap().unwrap().value.items,
        vec!["book".to_string()]
    );

    let strict = handle::<CartV2>(&t.store).with_undecodable(Undecodable::Error);
    let e = strict.load(&id).await.unwrap_err();
    assert!(matches!(e, Error::Codec { .. }), "{e}");
    assert_eq!(strict.undecodable_count(), 0);

    // The application's answer to a miss, a new session under the same id, works.
    let mut fresh = crate::typed::Session::new(
        id.clone(),
        CartV2 {
            items: vec![],
            coupon: None,
            visits: 1,
        },
    );
    new.save(&mut fresh).await.unwrap();
    assert_eq!(new.load(&id).await.unwrap().unwrap().value.visits, 1);
}
