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
use crate::typed::{Session, Sessions};
use crate::version::Version;

mod evolution;
mod listing;
mod principals;
mod tombstones;
pub use evolution::*;
pub use listing::*;
pub use principals::*;
pub use tombstones::*;

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

// ---------------------------------------------------------------- load / save / delete

/// Loading a key never written is `Ok(None)`.
pub async fn load_missing_is_none(h: &dyn Harness) {
    let t = open(h).await;
    assert!(t.store.load(&new_key("task")).await.unwrap().is_none());
    let s = typed(&t.store, CodecKind::Json);
    assert!(s.load(&SessionId::generate().unwrap()).await.unwrap().is_none());
}

/// `save` of an absent key creates it, with a fresh version.
pub async fn save_creates_when_absent(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let meta = t.store.save(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    assert!(!meta.version.is_none());
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

/// Every kind of write stores a version no earlier write of the key had.
pub async fn every_write_stores_a_new_version(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut seen = std::collections::HashSet::new();
    let v1 = t.store.create(&key, &rec(b"1", HOUR_MS)).await.unwrap().version;
    let v2 = t.store.save(&key, &rec(b"2", HOUR_MS)).await.unwrap().version;
    let v3 = t.store.update(&key, &rec(b"3", HOUR_MS)).await.unwrap().version;
    let v4 = t
        .store
        .save_if(&key, v3, &rec(b"4", HOUR_MS))
        .await
        .unwrap()
        .version;
    let v5 = t
        .store
        .save_many(&[(key.clone(), rec(b"5", HOUR_MS))])
        .await
        .unwrap()[0]
        .version;
    for v in [v1, v2, v3, v4, v5] {
        assert!(!v.is_none());
        assert!(seen.insert(v), "version {v} was stored twice");
    }
    assert_eq!(t.store.load(&key).await.unwrap().unwrap().meta.version, v5);
}

/// An envelope written before versions were tokens (a counter, `created_at` kept by the store)
/// still loads, and its counter works as the token for `save_if`: the upgrade logs no one out.
pub async fn envelopes_from_before_tokens_still_work(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut old = rec(b"from the previous release", HOUR_MS);
    old.meta.version = Version::from_u64(3);
    old.meta.created_at -= 60_000;
    t.raw.put_raw(&key, old.encode(), HOUR_MS).await.unwrap();
    let got = t.store.load(&key).await.unwrap().expect("an old envelope loads");
    assert_eq!(got.meta.version, Version::from_u64(3));
    assert_eq!(got.payload, old.payload);
    let stale = t
        .store
        .save_if(&key, Version::from_u64(2), &rec(b"stale", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale}");
    let m = t
        .store
        .save_if(&key, Version::from_u64(3), &rec(b"next", HOUR_MS))
        .await
        .unwrap();
    assert_ne!(m.version, Version::from_u64(3));
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"next")
    );
}

/// A record that names its version is stored with it: a wrapper store can
/// copy a session between stores and its version stays valid for `save_if`.
pub async fn a_records_own_version_is_kept(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut r = rec(b"1", HOUR_MS);
    r.meta.version = Version::generate();
    assert_eq!(t.store.create(&key, &r).await.unwrap().version, r.meta.version);
    assert_eq!(
        t.store.load(&key).await.unwrap().unwrap().meta.version,
        r.meta.version
    );
    let next = t
        .store
        .save_if(&key, r.meta.version, &rec(b"2", HOUR_MS))
        .await
        .unwrap();
    assert_ne!(next.version, r.meta.version);
}

/// The store keeps the caller's `created_at` and `max_expires_at` as given;
/// the typed handle carries them over from the session it loaded, so the
/// creation time of the first write survives every later write.
pub async fn created_at_is_carried_by_the_writer(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let mut first = rec(b"1", HOUR_MS);
    first.meta.created_at -= 10_000;
    let m = t.store.create(&key, &first).await.unwrap();
    assert_eq!(m.created_at, first.meta.created_at);
    let later = rec(b"2", HOUR_MS);
    let m = t.store.save(&key, &later).await.unwrap();
    assert_eq!(
        m.created_at, later.meta.created_at,
        "the store stores what it is given"
    );
    assert_eq!(m.updated_at, later.meta.updated_at);

    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let created = session.meta.created_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    s.update(&mut session).await.unwrap();
    s.save_if(&mut session).await.unwrap();
    let got = s.load(&session.id).await.unwrap().unwrap();
    assert_eq!(got.meta.created_at, created);
    assert!(got.meta.updated_at > created);
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

/// `create` stores a new session with a fresh version when the record has none.
pub async fn create_assigns_a_version(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"x", HOUR_MS)).await.unwrap();
    assert!(!m.version.is_none());
    assert_eq!(t.store.load(&key).await.unwrap().unwrap().meta.version, m.version);
}

/// `create` on an existing key fails with `AlreadyExists` and changes nothing.
pub async fn create_on_existing_fails(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let first = t.store.create(&key, &rec(b"original", HOUR_MS)).await.unwrap();
    let e = t
        .store
        .create(&key, &rec(b"intruder", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    let got = t.store.load(&key).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"original"));
    assert_eq!(got.meta.version, first.version);
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
    let first = t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let m = t.store.update(&key, &rec(b"b", HOUR_MS)).await.unwrap();
    assert_ne!(m.version, first.version);
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
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    assert!(s.delete(&session.id).await.unwrap());
    session.value.n = 2;
    let e = s.update(&mut session).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(s.load(&session.id).await.unwrap().is_none());
    assert_eq!(s.count().await.unwrap(), 0);
}

// ---------------------------------------------------------------- compare-and-set

/// `save_if` with the stored version writes, under a new version.
pub async fn save_if_matching_version_writes(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let before = session.meta.version;
    session.value.n = 2;
    s.save_if(&mut session).await.unwrap();
    assert_ne!(session.meta.version, before);
    let got = s.load(&session.id).await.unwrap().unwrap();
    assert_eq!(got.value.n, 2);
    assert_eq!(got.meta.version, session.meta.version);
}

/// `save_if` with a stale version is `Conflict` with the stored version, and
/// the stored value is untouched.
pub async fn save_if_stale_version_conflicts(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let mut session = s.create(TestSession::sample(1)).await.unwrap();
    let mut stale = session.clone();
    session.value.n = 2;
    s.save(&mut session).await.unwrap();
    stale.value.n = 3;
    let e = s.save_if(&mut stale).await.unwrap_err();
    match e {
        Error::Conflict { expected, actual, .. } => {
            assert_eq!(expected, stale.meta.version);
            assert_eq!(actual, session.meta.version);
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert_eq!(s.load(&session.id).await.unwrap().unwrap().value.n, 2);
}

/// `save_if` on a missing session is `NotFound` and writes nothing.
pub async fn save_if_missing_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let e = t
        .store
        .save_if(&key, Version::generate(), &rec(b"x", HOUR_MS))
        .await
        .unwrap_err();
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
    let id = s.create(TestSession::sample(0)).await.unwrap().id;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            loop {
                let mut cur = s.load(&id).await.unwrap().unwrap();
                cur.value.n += 1;
                match s.save_if(&mut cur).await {
                    Ok(()) => return cur.meta.version,
                    Err(Error::Conflict { .. }) => conflicts += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
                assert!(conflicts < 10_000, "no progress");
            }
        }));
    }
    let mut versions = std::collections::HashSet::new();
    for task in tasks {
        assert!(
            versions.insert(task.await.unwrap()),
            "two writes stored one version"
        );
    }
    let end = s.load(&id).await.unwrap().unwrap();
    assert_eq!(end.value.n, 64);
    assert!(versions.contains(&end.meta.version));
}

/// Delete, then create the same id again: a version read from the first
/// incarnation does not match the second (no ABA).
pub async fn no_aba_after_delete_and_recreate(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let id = SessionId::generate().unwrap();
    let first = s.create_with_id(&id, TestSession::sample(1)).await.unwrap();
    assert!(s.delete(&id).await.unwrap());
    let second = s.create_with_id(&id, TestSession::sample(2)).await.unwrap();
    assert_ne!(first.meta.version, second.meta.version);
    let mut stale = first;
    stale.value.n = 99;
    let e = s.save_if(&mut stale).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(s.load(&id).await.unwrap().unwrap().value.n, 2);
}

/// Two store instances on one backend never hand out the same version.
pub async fn versions_from_two_stores_never_match(h: &dyn Harness) {
    let a = open(h).await;
    let b = open(h).await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..300u32 {
        for t in [&a, &b] {
            let key = new_key("task");
            let m = t
                .store
                .create(&key, &rec(&i.to_be_bytes(), HOUR_MS))
                .await
                .unwrap();
            let m2 = t.store.save(&key, &rec(b"again", HOUR_MS)).await.unwrap();
            assert!(
                seen.insert(m.version) && seen.insert(m2.version),
                "a version repeated"
            );
        }
    }
}

// ---------------------------------------------------------------- rotate

/// `rotate` moves value and metadata to the new id; the old id is gone.
pub async fn rotate_moves_the_session(h: &dyn Harness) {
    let t = open(h).await;
    let s = typed(&t.store, CodecKind::Json);
    let old = s.create(TestSession::sample(7)).await.unwrap().id;
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
    assert_eq!(after.meta.version, before.meta.version);
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

/// After `rotate`, late writes to the old id (`update`, `save_if` with the
/// version read before) are `NotFound` and do not resurrect it.
pub async fn update_of_rotated_id_is_not_found(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"a", HOUR_MS)).await.unwrap();
    let new_id = SessionId::generate().unwrap();
    t.store.rotate(&key, &new_id).await.unwrap();
    let e = t.store.update(&key, &rec(b"late", HOUR_MS)).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let e = t
        .store
        .save_if(&key, m.version, &rec(b"late", HOUR_MS))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(t.store.load(&key).await.unwrap().is_none());
    // Rotating the old id again: it is gone.
    let e = t.store.rotate(&key, &new_id).await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let moved = SessionKey::new(ns("task"), new_id);
    assert_eq!(
        payload_of(&t.store, &moved).await.unwrap(),
        Bytes::from_static(b"a")
    );
}

/// `load_many` answers every key it is given, in order: a key given twice gets its session
/// twice.
pub async fn load_many_answers_a_repeated_key_each_time(h: &dyn Harness) {
    let t = open(h).await;
    let (a, b) = (new_key("task"), new_key("task"));
    t.store.save(&a, &rec(b"a", HOUR_MS)).await.unwrap();
    let got = t
        .store
        .load_many(&[a.clone(), b.clone(), a.clone()])
        .await
        .unwrap();
    let payloads: Vec<Option<Bytes>> = got.into_iter().map(|r| r.unwrap().map(|r| r.payload)).collect();
    assert_eq!(
        payloads,
        vec![
            Some(Bytes::from_static(b"a")),
            None,
            Some(Bytes::from_static(b"a"))
        ]
    );
}

/// `rotate` to the session's own id moves nothing and loses nothing: it answers the session's
/// metadata, and the session is still there.
pub async fn rotate_to_its_own_id_changes_nothing(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let m = t.store.create(&key, &rec(b"stay", HOUR_MS)).await.unwrap();
    let again = t.store.rotate(&key, &key.id).await.unwrap();
    assert_eq!(again.version, m.version);
    assert_eq!(
        payload_of(&t.store, &key).await.unwrap(),
        Bytes::from_static(b"stay")
    );
    let missing = new_key("task");
    assert!(matches!(
        t.store.rotate(&missing, &missing.id).await,
        Err(Error::NotFound { .. })
    ));
}

/// A move interrupted after the new id got its copy (as a timed-out rotate
/// may leave it) is finished by calling `rotate` again with the same ids.
pub async fn rotate_finishes_an_interrupted_move(h: &dyn Harness) {
    let t = open(h).await;
    let key = new_key("task");
    let r = rec(b"moving", HOUR_MS);
    t.store.create(&key, &r).await.unwrap();
    let stored = t.store.load(&key).await.unwrap().unwrap();
    let new_key_ = SessionKey::new(ns("task"), SessionId::generate().unwrap());
    t.raw.put_raw(&new_key_, stored.encode(), HOUR_MS).await.unwrap();
    let m = t.store.rotate(&key, &new_key_.id).await.unwrap();
    assert_eq!(m.version, stored.meta.version);
    assert!(t.store.load(&key).await.unwrap().is_none());
    assert_eq!(
        payload_of(&t.store, &new_key_).await.unwrap(),
        Bytes::from_static(b"moving")
    );
}

// ---------------------------------------------------------------- expiry

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

// ---------------------------------------------------------------- codecs

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

/// `partition` of a key is stable while nothing changes, and the probe of a working store's
/// partitions answers up: the key's own, and [`Partition::WHOLE`](crate::backend::Partition::WHOLE)
/// (the store as a whole, as `health`). A store of one partition answers `WHOLE` for every key.
pub async fn partitions_answer_when_healthy(h: &dyn Harness) {
    let t = open(h).await;
    for _ in 0..8 {
        let k = new_key("task");
        let p = t.store.partition(&k);
        assert_eq!(t.store.partition(&k), p, "no change, no new partition");
        let probe = t.store.partition_health(p).await;
        assert!(matches!(probe.status, HealthStatus::Up), "{p}: {probe:?}");
    }
    let whole = t.store.partition_health(crate::backend::Partition::WHOLE).await;
    assert_eq!(whole.status, t.store.health().await.status, "{whole:?}");
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
            load_missing_is_none, save_creates_when_absent, save_overwrites, every_write_stores_a_new_version,
            a_records_own_version_is_kept, envelopes_from_before_tokens_still_work,
            created_at_is_carried_by_the_writer, delete_removes,
            delete_missing_is_false, create_assigns_a_version, create_on_existing_fails,
            concurrent_create_has_one_winner,
            update_existing_writes, update_missing_is_not_found, update_after_delete_leaves_nothing,
            save_if_matching_version_writes, save_if_stale_version_conflicts, save_if_missing_is_not_found,
            save_if_after_delete_is_not_found, concurrent_cas_increments_lose_nothing,
            no_aba_after_delete_and_recreate, versions_from_two_stores_never_match,
            rotate_moves_the_session, rotate_missing_is_not_found, rotate_onto_existing_id_fails_and_keeps_both,
            update_of_rotated_id_is_not_found, rotate_finishes_an_interrupted_move,
            rotate_to_its_own_id_changes_nothing, load_many_answers_a_repeated_key_each_time,
            absolute_expiry, save_resets_absolute_deadline, expired_is_missing_in_load_many,
            write_with_past_deadline_is_not_visible, past_deadline_write_over_a_live_session_removes_it,
            sliding_expiry_extends_on_load,
            sliding_expiry_stops_at_max_lifetime, touch_extends_the_deadline, touch_missing_is_false,
            deadline_never_passes_max_lifetime,
            namespaces_are_isolated, key_prefixes_are_isolated, nested_key_prefixes_are_isolated,
            invalid_ids_are_rejected_before_io, too_large_is_rejected_by_every_write,
            record_at_the_limit_is_accepted, typed_handle_enforces_its_limit,
            corrupt_plain_text, corrupt_truncated_envelope, corrupt_unknown_format_version, corrupt_unknown_codec,
            corrupt_value_in_load_many_is_per_key, corrupt_value_can_be_overwritten_and_deleted,
            cross_codec_reads, wrong_type_is_a_miss_or_a_codec_error,
            default_codec_is_json, added_field_keeps_old_sessions_loadable, untagged_enum_round_trips,
            internally_tagged_enum_round_trips, flattened_fields_round_trip, map_of_json_values_round_trips,
            bincode_sessions_load_under_the_default_codec, undecodable_session_is_a_counted_miss,
            load_many_keeps_order, empty_batches, save_many_then_load_many, typed_batches,
            count_counts_live_sessions, stats_report, health_is_up, partitions_answer_when_healthy,
            delete_leaves_a_tombstone_live_calls_see_as_absent, load_entry_tells_a_tombstone_from_nothing,
            delete_of_an_unknown_session_leaves_a_bounded_tombstone, save_replaces_a_tombstone,
            reconcile_applies_on_its_base, reconcile_delete_wins_over_a_newer_write,
            reconcile_writes_converge_in_either_order, reconcile_is_idempotent,
            reconcile_skips_an_expired_write, reconcile_refuses_bad_input,
            reconcile_expire_removes_only_its_base,
            delete_leaving_names_its_tombstone, a_delete_over_a_tombstone_replaces_it,
            rotate_leaves_a_tombstone_under_the_old_id,
            scan_lists_every_live_session_once, scan_of_an_empty_store_ends,
            revoke_all_ends_every_session_of_a_principal, a_binding_survives_writes_and_moves_with_rotate,
            a_login_after_a_revoke_survives_it, a_principal_index_is_one_key_that_scans_list,
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
