//! The conformance suite: one `pub async fn` per behaviour of the
//! [`SessionStore`] contract. [`conformance_tests!`](crate::conformance_tests)
//! expands them into named tests for a backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{random_prefix, Harness, TestStore};
use crate::codec::{CodecId, CodecKind};
use crate::envelope::{Record, FORMAT_VERSION, HEADER_LEN};
use crate::error::Error;
use crate::expiry::{now_ms, ExpiryPolicy};
use crate::id::SessionId;
use crate::key::{Namespace, SessionKey};
use crate::store::{HealthStatus, SessionStore, DEFAULT_MAX_SESSION_BYTES};
use crate::typed::Sessions;

/// The session type the suite stores: shaped like the demo's task session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestSession {
    /// A task id.
    pub task_id: String,
    /// A state name.
    pub state: String,
    /// Chat messages as (role, content).
    pub messages: Vec<(String, String)>,
    /// String variables.
    pub variables: BTreeMap<String, String>,
    /// A counter.
    pub n: u64,
}

impl TestSession {
    /// A session with `n` as its counter and a few fields filled in.
    pub fn sample(n: u64) -> Self {
        TestSession {
            task_id: format!("task-{n}"),
            state: "running".into(),
            messages: vec![
                ("user".into(), "hello".into()),
                ("assistant".into(), "hi, how can I help? ✓".into()),
            ],
            variables: [("lang".to_string(), "en".to_string())].into(),
            n,
        }
    }
}

const HOUR_MS: u64 = 3_600_000;

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn new_key(namespace: &str) -> SessionKey {
    SessionKey::new(ns(namespace), SessionId::generate().unwrap())
}

/// A record with `payload`, expiring `ttl_ms` from now.
fn rec(payload: &[u8], ttl_ms: u64) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + ttl_ms)
}

async fn open(h: &dyn Harness) -> TestStore {
    h.open(random_prefix()).await
}

fn typed(store: &Arc<dyn SessionStore>, codec: CodecKind) -> Sessions<TestSession> {
    Sessions::new(Arc::clone(store), ns("task")).with_codec(codec)
}

async fn payload_of(store: &Arc<dyn SessionStore>, key: &SessionKey) -> Option<Bytes> {
    store.load(key).await.unwrap().map(|r| r.payload)
}

// ---------------------------------------------------------------- round trips

async fn round_trip(h: &dyn Harness, codec: CodecKind) {
    let t = open(h).await;
    let s = typed(&t.store, codec);
    let (id, meta) = s.create(&TestSession::sample(1)).await.unwrap();
    assert_eq!(meta.version, 1);
    let got = s.load(&id).await.unwrap().expect("created session loads");
    assert_eq!(got.value, TestSession::sample(1));
    assert_eq!(got.meta.version, 1);
    assert_eq!(got.id, id);
    let raw = t
        .store
        .load(&SessionKey::new(ns("task"), id))
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

// ---------------------------------------------------------------- load / save / delete

/// Loading a key never written is `Ok(None)`.
pub async fn load_missing_is_none(h: &dyn Harness) {
    let t = open(h).await;
    assert!(t.store.load(&new_key("task")).await.unwrap().is_none());
    let s = typed(&t.store, CodecKind::Json);
    assert!(s.load(&SessionId::generate().unwrap()).await.unwrap().is_none());
}

/// `save` of an absent key creates it with version 1.
pub async fn save_creates_when_absent(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let meta = t.store.save(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    assert_eq!(meta.version, 1);
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"a")
    );
}

/// `save` overwrites: the last value wins.
pub async fn save_overwrites(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.save(&key, &rec(b"first", HOUR_MS)).await.unwrap();
    t.store.save(&key, &rec(b"second", HOUR_MS)).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"second")
    );
}

/// Every kind of write bumps the version by one.
pub async fn every_write_bumps_the_version(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    assert_eq!(
        t.store.create(&key, &rec(b"1", HOUR_MS)).await.unwrap().version,
        1
    );
    assert_eq!(t.store.save(&key, &rec(b"2", HOUR_MS)).await.unwrap().version, 2);
    assert_eq!(
        t.store.update(&key, &rec(b"3", HOUR_MS)).await.unwrap().version,
        3
    );
    assert_eq!(
        t.store
            .save_if(&key, 3, &rec(b"4", HOUR_MS))
            .await
            .unwrap()
            .version,
        4
    );
    assert_eq!(
        t.store
            .save_many(&[(key.clone(), rec(b"5", HOUR_MS))])
            .await
            .unwrap()[0]
            .version,
        5
    );
    assert_eq!(t.store.load(&key).await.unwrap().unwrap().meta.version, 5);
}

/// The creation time of the first write is kept by every later write.
pub async fn created_at_is_kept_across_writes(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut first = rec(b"1", HOUR_MS);
    first.meta.created_at -= 10_000;
    let created = t.store.create(&key, &first).await.unwrap().created_at;
    let later = rec(b"2", HOUR_MS);
    let m = t.store.save(&key, &later).await.unwrap();
    assert_eq!(m.created_at, created);
    assert_eq!(m.updated_at, later.meta.updated_at);
    assert_eq!(
        t.store.load(&key).await.unwrap().unwrap().meta.created_at,
        created
    );
}

/// `delete` of a stored session returns true and removes it.
pub async fn delete_removes(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.save(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert!(t.store.delete(&key).await.unwrap());
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// `delete` of a missing session returns false and is not an error.
pub async fn delete_missing_is_false(h: &dyn Harness) {
    let t = open(h).await;
    assert!(!t.store.delete(&new_key("task")).await.unwrap());
}

// ---------------------------------------------------------------- create / update

/// `create` stores a new session with version 1.
pub async fn create_sets_version_one(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert_eq!(m.version, 1);
}

/// `create` on an existing key fails with `AlreadyExists` and changes nothing.
pub async fn create_on_existing_fails(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.create(&key, &rec(b"original", HOUR_MS)).await.unwrap();
    let e = t
        .store
        .create(&key, &rec(b"intruder", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    let got = t.store.load(&key).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"original"));
    assert_eq!(got.meta.version, 1);
}

/// Of 16 concurrent `create`s of one key exactly one wins.
pub async fn concurrent_create_has_one_winner(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = Arc::clone(&t.store);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            store.create(&key, &rec(&[i], HOUR_MS)).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
}

/// `update` of an existing session writes it.
pub async fn update_existing_writes(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let m = t.store.update(&key, &rec(b"b", HOUR_MS)).await.unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"b")
    );
}

/// `update` of a key never written is `NotFound` and writes nothing.
pub async fn update_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let e = t.store.update(&key, &rec(b"b", HOUR_MS)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
}

/// A write finishing after a logout does not bring the session back.
pub async fn update_after_delete_leaves_nothing(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let (id, _) = s.create(&TestSession::sample(1)).await.unwrap();
    assert!(s.delete(&id).await.unwrap());
    let e = s.update(&id, &TestSession::sample(2)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(s.load(&id).await.unwrap().is_none());
    assert_eq!(s.count().await.unwrap(), 0);
}

// ---------------------------------------------------------------- compare-and-set

/// `save_if` with the stored version writes and bumps it.
pub async fn save_if_matching_version_writes(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let (id, m) = s.create(&TestSession::sample(1)).await.unwrap();
    let m2 = s.save_if(&id, m.version, &TestSession::sample(2)).await.unwrap();
    assert_eq!(m2.version, m.version + 1);
    assert_eq!(s.load(&id).await.unwrap().unwrap().value.n, 2);
}

/// `save_if` with a stale version is `Conflict` with the stored version, and
/// the stored value is untouched.
pub async fn save_if_stale_version_conflicts(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let (id, m) = s.create(&TestSession::sample(1)).await.unwrap();
    s.save(&id, &TestSession::sample(2)).await.unwrap();
    let e = s
        .save_if(&id, m.version, &TestSession::sample(3))
        .await
        .unwrap_err();
    match e {
        Error::Conflict { expected, actual, .. } => {
            assert_eq!(expected, 1);
            assert_eq!(actual, 2);
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert_eq!(s.load(&id).await.unwrap().unwrap().value.n, 2);
}

/// `save_if` on a missing session is `NotFound` and writes nothing.
pub async fn save_if_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let e = t.store.save_if(&key, 1, &rec(b"x", HOUR_MS)).await.unwrap_err();
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
    let (id, _) = s.create(&TestSession::sample(0)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let cur = s.load(&id).await.unwrap().unwrap();
                let mut next = cur.value.clone();
                next.n += 1;
                match s.save_if(&id, cur.meta.version, &next).await {
                    Ok(_) => return conflicts,
                    Err(Error::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
                assert!(conflicts < 10_000, "no progress");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = s.load(&id).await.unwrap().unwrap();
    assert_eq!(end.value.n, 64);
    assert_eq!(end.meta.version, 65);
}

// ---------------------------------------------------------------- rotate

/// `rotate` moves value and metadata to the new id; the old id is gone.
pub async fn rotate_moves_the_session(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let (old, _) = s.create(&TestSession::sample(7)).await.unwrap();
    let before = t
        .store
        .load(&SessionKey::new(ns("task"), old.clone()))
        .await
        .unwrap()
        .unwrap();
    let new = s.rotate(&old).await.unwrap();
    assert_ne!(old, new);
    assert!(s.load(&old).await.unwrap().is_none());
    let after = s.load(&new).await.unwrap().unwrap();
    assert_eq!(after.value, TestSession::sample(7));
    assert_eq!(after.meta.created_at, before.meta.created_at);
    assert_eq!(after.meta.deadline(), before.meta.deadline());
    assert_eq!(s.count().await.unwrap(), 1);
}

/// `rotate` of a missing session is `NotFound`.
pub async fn rotate_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let e = t
        .store
        .rotate(&new_key("task"), &SessionId::generate().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}

/// `rotate` onto an id that exists is `AlreadyExists`; both sessions remain.
pub async fn rotate_onto_existing_id_fails_and_keeps_both(h: &dyn Harness) {
    let t = open(h).await;
    let a = new_key("task");
    let b = new_key("task");
    t.store.create(&a, &rec(b"a", HOUR_MS)).await.unwrap();
    t.store.create(&b, &rec(b"b", HOUR_MS)).await.unwrap();
    let e = t.store.rotate(&a, &b.id).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(payload_of(&t.store, &a).await.unwrap(), Bytes::from_static(b"a"));
    assert_eq!(payload_of(&t.store, &b).await.unwrap(), Bytes::from_static(b"b"));
}

/// After `rotate`, a late `update` on the old id is `NotFound` and does not
/// resurrect it.
pub async fn update_of_rotated_id_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let new_id = SessionId::generate().unwrap();
    t.store.rotate(&key, &new_id).await.unwrap();
    let e = t.store.update(&key, &rec(b"late", HOUR_MS)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
}

// ---------------------------------------------------------------- expiry

/// A session past its absolute deadline is never returned.
pub async fn absolute_expiry(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::absolute(Duration::from_millis(600)));
    let (id, _) = s.create(&TestSession::sample(1)).await.unwrap();
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
    let (id, _) = s.create(&TestSession::sample(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.save(&id, &TestSession::sample(2)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.load(&id).await.unwrap().unwrap().value.n, 2);
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

/// Sliding expiry: loads keep a session alive past its first idle deadline.
pub async fn sliding_expiry_extends_on_load(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json).with_policy(ExpiryPolicy::sliding(
        Duration::from_millis(1000),
        Duration::from_secs(60),
    ));
    let (id, _) = s.create(&TestSession::sample(1)).await.unwrap();
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
    let (id, m) = s.create(&TestSession::sample(1)).await.unwrap();
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

/// Neither `touch` nor a later write moves a deadline past `max_expires_at`.
pub async fn deadline_never_passes_max_lifetime(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut r = rec(b"x", HOUR_MS);
    r.meta.max_expires_at = now_ms() + 700;
    let m = t.store.create(&key, &r).await.unwrap();
    assert_eq!(m.expires_at, r.meta.max_expires_at);
    t.store.touch(&key, now_ms() + HOUR_MS).await.unwrap();
    let m2 = t.store.save(&key, &rec(b"y", HOUR_MS)).await.unwrap();
    assert_eq!(m2.max_expires_at, r.meta.max_expires_at);
    assert!(m2.deadline() <= r.meta.max_expires_at);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(t.store.load(&key).await.unwrap().is_none());
}

// ---------------------------------------------------------------- isolation

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

// ---------------------------------------------------------------- bad input

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
    check(t.store.save_if(&key, 1, &big).await);
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
    let e = s.create(&v).await.unwrap_err();
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
    let _ = t.store.save_if(&key, 1, &rec(b"c", HOUR_MS)).await;
    t.store.save(&key, &rec(b"fresh", HOUR_MS)).await.unwrap();
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"fresh")
    );
    let (t, key) = planted(h, Bytes::from_static(b"garbage")).await;
    assert!(t.store.delete(&key).await.unwrap());
    assert!(t.store.load(&key).await.unwrap().is_none());
}

// ---------------------------------------------------------------- codecs

/// A session written with one codec is read by a handle configured with the
/// other: changing the codec logs nobody out.
pub async fn cross_codec_reads(h: &dyn Harness) {
    let t = open(h).await;
    let json = typed(&t.store, CodecKind::Json);
    let bin = typed(&t.store, CodecKind::Bincode);
    let (a, _) = json.create(&TestSession::sample(1)).await.unwrap();
    let (b, _) = bin.create(&TestSession::sample(2)).await.unwrap();
    assert_eq!(bin.load(&a).await.unwrap().unwrap().value, TestSession::sample(1));
    assert_eq!(
        json.load(&b).await.unwrap().unwrap().value,
        TestSession::sample(2)
    );
    // A write through the other handle switches the stored codec.
    let m = bin.load(&a).await.unwrap().unwrap().meta;
    bin.save_if(&a, m.version, &TestSession::sample(3)).await.unwrap();
    let raw = t
        .store
        .load(&SessionKey::new(ns("task"), a.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.codec, CodecId::BINCODE);
    assert_eq!(json.load(&a).await.unwrap().unwrap().value.n, 3);
}

/// A stored value of another type is a `Codec` error, not a panic.
pub async fn wrong_type_is_a_codec_error(h: &dyn Harness) {
    let t = open(h).await;
    let strings: Sessions<Vec<String>> =
        Sessions::new(Arc::clone(&t.store), ns("task")).with_codec(CodecKind::Json);
    let (id, _) = strings.create(&vec!["a".to_string()]).await.unwrap();
    let s = typed(&t.store, CodecKind::Json);
    let e = s.load(&id).await.unwrap_err();
    assert!(matches!(e, Error::Codec { .. }), "{e}");
}

// ---------------------------------------------------------------- batches

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
    assert!(metas.iter().all(|m| m.version == 1));
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
    let items: Vec<(SessionId, TestSession)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), TestSession::sample(i as u64)))
        .collect();
    s.save_many(&items).await.unwrap();
    let got = s.load_many(&ids).await.unwrap();
    for (i, g) in got.into_iter().enumerate() {
        assert_eq!(g.unwrap().unwrap().value.n, i as u64);
    }
}

// ---------------------------------------------------------------- count / stats / health

/// `count` counts live sessions of one namespace: not deleted, not expired.
pub async fn count_counts_live_sessions(h: &dyn Harness) {
    let t = open(h).await;
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 0);
    let keys: Vec<SessionKey> = (0..25).map(|_| new_key("task")).collect();
    for k in &keys {
        t.store.save(k, &rec(b"x", HOUR_MS)).await.unwrap();
    }
    t.store.save(&new_key("task"), &rec(b"short", 200)).await.unwrap();
    t.store
        .save(&new_key("other"), &rec(b"x", HOUR_MS))
        .await
        .unwrap();
    t.store.delete(&keys[0]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.store.count(&ns("task")).await.unwrap(), 24);
    assert_eq!(t.store.count(&ns("other")).await.unwrap(), 1);
}

/// `stats` names the backend and, where it knows them, counts entries and bytes.
pub async fn stats_report(h: &dyn Harness) {
    let t = open(h).await;
    for _ in 0..3 {
        t.store
            .save(&new_key("task"), &rec(&[0u8; 100], HOUR_MS))
            .await
            .unwrap();
    }
    let st = t.store.stats().await.unwrap();
    assert_eq!(st.backend, t.store.backend());
    if let Some(n) = st.entries {
        assert!(n >= 3, "entries {n}");
    }
    if let Some(b) = st.bytes {
        assert!(b >= 300, "bytes {b}");
    }
}

/// `health` of a working store is up.
pub async fn health_is_up(h: &dyn Harness) {
    let t = open(h).await;
    let health = t.store.health().await;
    assert_eq!(health.backend, t.store.backend());
    assert!(matches!(health.status, HealthStatus::Up), "{health:?}");
}

/// Expands the conformance suite into one `#[tokio::test]` per behaviour.
///
/// `$make` is an `async fn() -> Option<H>` where `H:`[`Harness`]; `None`
/// skips (for a server that is not configured — make it panic instead when
/// the run requires the server). The calling crate needs `tokio` with the
/// `macros` and `rt-multi-thread` features as a dev-dependency.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@expand $make;
            round_trip_json, round_trip_bincode, raw_record_round_trips_exactly, empty_payload_is_stored,
            load_missing_is_none, save_creates_when_absent, save_overwrites, every_write_bumps_the_version,
            created_at_is_kept_across_writes, delete_removes, delete_missing_is_false,
            create_sets_version_one, create_on_existing_fails, concurrent_create_has_one_winner,
            update_existing_writes, update_missing_is_not_found, update_after_delete_leaves_nothing,
            save_if_matching_version_writes, save_if_stale_version_conflicts, save_if_missing_is_not_found,
            save_if_after_delete_is_not_found, concurrent_cas_increments_lose_nothing,
            rotate_moves_the_session, rotate_missing_is_not_found, rotate_onto_existing_id_fails_and_keeps_both,
            update_of_rotated_id_is_not_found,
            absolute_expiry, save_resets_absolute_deadline, expired_is_missing_in_load_many,
            write_with_past_deadline_is_not_visible, sliding_expiry_extends_on_load,
            sliding_expiry_stops_at_max_lifetime, touch_extends_the_deadline, touch_missing_is_false,
            deadline_never_passes_max_lifetime,
            namespaces_are_isolated, key_prefixes_are_isolated,
            invalid_ids_are_rejected_before_io, too_large_is_rejected_by_every_write,
            record_at_the_limit_is_accepted, typed_handle_enforces_its_limit,
            corrupt_plain_text, corrupt_truncated_envelope, corrupt_unknown_format_version, corrupt_unknown_codec,
            corrupt_value_in_load_many_is_per_key, corrupt_value_can_be_overwritten_and_deleted,
            cross_codec_reads, wrong_type_is_a_codec_error,
            load_many_keeps_order, empty_batches, save_many_then_load_many, typed_batches,
            count_counts_live_sessions, stats_report, health_is_up,
        );
    };
    (@expand $make:path; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(harness) = $make().await else {
                    eprintln!("skipped: backend not configured");
                    return;
                };
                $crate::testing::conformance::$name(&harness).await;
            }
        )*
    };
}
