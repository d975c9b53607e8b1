//! `SecureStore` in the middle of a transition, over one `MemoryStore` shared by instances in
//! different steps: the paths only a session stored under an older layout takes (the
//! conformance suite stores everything under the written one), and what a writer to the
//! backend can and cannot do to a sealed value.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

mod secrets;

use std::sync::Arc;

use secrets::{KEY_1, NEW_SECRET, SECRET};
use session_core::backend::{decode_entry, now_ms, Change, CodecId, Entry, Record};
use session_core::testing::RawAccess;
use session_core::{
    Error, KeyPrefix, Namespace, Principal, SessionId, SessionKey, SessionStore, Sessions, StoreOptions,
    Version,
};
use session_memory::{MemoryConfig, MemoryStore};
use session_secure::{Secret, SecureConfig, SecureStore, SEAL_OVERHEAD};

const HOUR: u64 = 3_600_000;

fn backend() -> Arc<MemoryStore> {
    let options = StoreOptions::new(KeyPrefix::default())
        .with_max_session_bytes(session_core::DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD)
        .unwrap();
    Arc::new(
        MemoryStore::with_options(
            MemoryConfig::default().with_tombstones(std::time::Duration::from_secs(60)),
            options,
        )
        .unwrap(),
    )
}

fn store(backend: &Arc<MemoryStore>, config: &SecureConfig) -> SecureStore<Arc<MemoryStore>> {
    SecureStore::new(Arc::clone(backend), config).unwrap()
}

fn key() -> SessionKey {
    SessionKey::new(Namespace::new("login").unwrap(), SessionId::generate().unwrap())
}

fn rec(payload: &'static [u8]) -> Record {
    Record::new(CodecId::RAW, payload, now_ms() + HOUR)
}

/// Step 1 of turning hashing on: plain written, hashed read.
fn step1() -> SecureConfig {
    let mut c = SecureConfig::new().with_hashed_ids(SECRET);
    c.hashed_ids.write_plain_ids = true;
    c
}

/// Step 2: hashed written, plain read.
fn step2() -> SecureConfig {
    let mut c = SecureConfig::new().with_hashed_ids(SECRET);
    c.hashed_ids.read_plain_ids = true;
    c
}

async fn payload(s: &impl SessionStore, k: &SessionKey) -> Option<Vec<u8>> {
    s.load(k).await.unwrap().map(|r| r.payload.to_vec())
}

#[tokio::test]
async fn a_new_hashing_secret_in_two_steps_never_hides_a_session() {
    let backend = backend();
    let old = store(&backend, &SecureConfig::new().with_hashed_ids(SECRET));
    // Step A: every instance learns NEW_SECRET (read only).
    let mut a = SecureConfig::new().with_hashed_ids(SECRET);
    a.hashed_ids.previous_secrets = vec![Secret::new(NEW_SECRET)];
    let a = store(&backend, &a);
    // Step B: NEW_SECRET written, SECRET read.
    let mut b = SecureConfig::new().with_hashed_ids(NEW_SECRET);
    b.hashed_ids.previous_secrets = vec![Secret::new(SECRET)];
    let b = store(&backend, &b);
    let (k1, k2) = (key(), key());
    old.create(&k1, &rec(b"one")).await.unwrap();
    b.create(&k2, &rec(b"two")).await.unwrap();
    // An instance still in step A meets a session written by one in step B, and the reverse.
    assert_eq!(payload(&a, &k2).await.as_deref(), Some(&b"two"[..]));
    assert_eq!(payload(&b, &k1).await.as_deref(), Some(&b"one"[..]));
    // A logout on either ends it for both.
    assert!(a.delete(&k2).await.unwrap());
    assert_eq!(payload(&b, &k2).await, None);
    assert!(b.delete(&k1).await.unwrap());
    assert_eq!(payload(&a, &k1).await, None);
}

#[tokio::test]
async fn rotate_ends_every_copy_of_the_old_id() {
    let backend = backend();
    let (one, two) = (store(&backend, &step1()), store(&backend, &step2()));
    let k = key();
    // Two instances in different steps each created the same caller-chosen id.
    one.create(&k, &rec(b"plain copy")).await.unwrap();
    backend
        .create(&two.stored_key(&k), &rec(b"hashed copy"))
        .await
        .unwrap();
    let new = SessionId::generate().unwrap();
    two.rotate(&k, &new).await.unwrap();
    assert_eq!(payload(&one, &k).await, None, "the old id is dead for step 1");
    assert_eq!(payload(&two, &k).await, None, "and for step 2");
    let moved = SessionKey::new(k.namespace.clone(), new);
    assert!(payload(&two, &moved).await.is_some());
}

#[tokio::test]
async fn rotate_onto_an_id_stored_the_old_way_is_refused() {
    let backend = backend();
    let (one, two) = (store(&backend, &step1()), store(&backend, &step2()));
    let (k, victim) = (key(), key());
    one.create(&victim, &rec(b"victim")).await.unwrap();
    two.create(&k, &rec(b"mine")).await.unwrap();
    let e = two.rotate(&k, &victim.id).await.unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");
    assert_eq!(payload(&two, &victim).await.as_deref(), Some(&b"victim"[..]));
    assert_eq!(payload(&two, &k).await.as_deref(), Some(&b"mine"[..]));
}

#[tokio::test]
async fn legacy_paths_answer_per_key_and_by_the_layout_that_holds_the_key() {
    let backend = backend();
    let (one, two) = (store(&backend, &step1()), store(&backend, &step2()));
    let (good, bad) = (key(), key());
    one.create(&good, &rec(b"good")).await.unwrap();
    backend
        .put_raw(&bad, bytes::Bytes::from_static(b"garbage"), HOUR)
        .await
        .unwrap();
    let got = two.load_many(&[good.clone(), bad.clone()]).await.unwrap();
    assert_eq!(
        got[0].as_ref().unwrap().as_ref().map(|r| &r.payload[..]),
        Some(&b"good"[..])
    );
    assert!(matches!(got[1], Err(Error::Corrupt { .. })), "{:?}", got[1]);
    // reconcile(Expire) of a session stored plain removes it, as on a plain store.
    let base = backend.load(&good).await.unwrap().unwrap().meta.version;
    let done = two.reconcile(&good, base, Change::Expire).await.unwrap();
    assert_eq!(done, session_core::backend::Reconciled::Applied);
    assert_eq!(payload(&two, &good).await, None);
    // A live copy under one layout wins over a tombstone under another (what a move between
    // layouts leaves), for `load` and `load_entry` alike.
    let k = key();
    one.create(&k, &rec(b"plain")).await.unwrap();
    backend
        .delete_leaving(
            &two.stored_key(&k),
            session_core::backend::Tombstone::new(now_ms(), now_ms() + HOUR),
        )
        .await
        .unwrap();
    assert!(matches!(two.load_entry(&k).await.unwrap(), Some(Entry::Live(_))));
    assert_eq!(payload(&two, &k).await.as_deref(), Some(&b"plain"[..]));
    // A delete through the store ends every layout's copy: then a tombstone answers.
    assert!(two.delete(&k).await.unwrap());
    assert_eq!(payload(&two, &k).await, None);
}

#[tokio::test]
async fn transition_settings_of_a_part_that_is_off_are_refused() {
    let backend = backend();
    let mut c = SecureConfig::new();
    c.hashed_ids.read_plain_ids = true;
    let e = SecureStore::new(Arc::clone(&backend), &c).unwrap_err();
    assert!(
        matches!(&e, Error::Config { key, .. } if key == "hashed_ids.read_plain_ids"),
        "{e}"
    );
    let mut c = SecureConfig::new();
    c.hashed_ids.previous_secrets = vec![Secret::new(SECRET)];
    assert!(SecureStore::new(Arc::clone(&backend), &c).is_err());
    let mut c = SecureConfig::new();
    c.encryption.write_plaintext = true;
    let e = SecureStore::new(Arc::clone(&backend), &c).unwrap_err();
    assert!(
        matches!(&e, Error::Config { key, .. } if key == "encryption.write_plaintext"),
        "{e}"
    );
    let mut c = SecureConfig::new().with_encryption([(u16::MAX, KEY_1)]);
    c.encryption.current = None;
    assert!(SecureStore::new(backend, &c).is_err(), "the reserved key id");
}

#[tokio::test]
async fn a_sealed_value_whose_header_is_rewritten_does_not_open() {
    let backend = backend();
    let s = store(
        &backend,
        &SecureConfig::new()
            .with_hashed_ids(SECRET)
            .with_encryption([(1, KEY_1)]),
    );
    let k = key();
    let mut r = rec(b"capped");
    r.meta.max_expires_at = now_ms() + 60_000;
    s.create(&k, &r).await.unwrap();
    let stored_key = s.stored_key(&k);
    let bytes = backend.get_raw(&stored_key).await.unwrap().unwrap();
    let Entry::Live(sealed) = decode_entry(&bytes, "login").unwrap() else {
        panic!("a session")
    };
    for change in 0..3 {
        let mut forged = sealed.clone();
        match change {
            0 => forged.meta.max_expires_at = 0,
            1 => forged.meta.version = Version::from_u64(42),
            _ => forged.meta.created_at += 1,
        }
        backend.put_raw(&stored_key, forged.encode(), HOUR).await.unwrap();
        let e = s.load(&k).await.unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "change {change}: {e}");
    }
    // The deadline is not bound (touch moves it), but never past the bound cap.
    let mut later = sealed.clone();
    later.meta.expires_at += 1_000;
    backend.put_raw(&stored_key, later.encode(), HOUR).await.unwrap();
    assert!(s.load(&k).await.unwrap().is_some());
    assert!(s.touch(&k, now_ms() + 30_000).await.unwrap());
    assert!(s.load(&k).await.unwrap().is_some());
}

#[tokio::test]
async fn rotate_of_a_value_that_does_not_open_moves_nothing() {
    let backend = backend();
    let s = store(&backend, &SecureConfig::new().with_encryption([(1, KEY_1)]));
    let k = key();
    backend.create(&k, &rec(b"not sealed")).await.unwrap();
    let new = SessionId::generate().unwrap();
    let e = s.rotate(&k, &new).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        backend.load(&k).await.unwrap().is_some(),
        "still under the old id"
    );
    assert!(backend
        .load(&SessionKey::new(k.namespace.clone(), new))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn with_hashed_ids_alone_a_principal_index_names_no_session() {
    let backend = backend();
    let secure: Arc<dyn SessionStore> =
        Arc::new(store(&backend, &SecureConfig::new().with_hashed_ids(SECRET)));
    let s: Sessions<String> = Sessions::new(secure, Namespace::new("login").unwrap());
    let alice = Principal::new("alice@example.com").unwrap();
    let mut ids = Vec::new();
    for n in 0..4 {
        let mut session = s.create(format!("value {n}")).await.unwrap();
        s.bind(&mut session, &alice).await.unwrap();
        ids.push(session.id);
    }
    assert_eq!(s.list(&alice).await.unwrap().len(), 4);
    let page = backend.scan(None, 1000).await.unwrap();
    assert_eq!(page.sessions.len(), 5, "four sessions and alice's index");
    for (k, record) in &page.sessions {
        let raw = backend.get_raw(k).await.unwrap().unwrap();
        for id in &ids {
            assert!(!k.id.as_str().contains(id.as_str()));
            assert!(
                !raw.windows(id.as_str().len())
                    .any(|w| w == id.as_str().as_bytes()),
                "an id in a value"
            );
        }
        assert!(!k.id.as_str().contains("YWxpY2"), "the principal in a key");
        // Session values are in the clear with hashed ids alone (that is what encryption is
        // for); the index, which lists ids, is sealed.
        if session_core::backend::is_principal_index(k) {
            assert_eq!(record.codec, CodecId::SEALED, "the index is sealed");
            assert!(
                !raw.windows(5).any(|w| w == b"alice"),
                "the principal in the index"
            );
        }
    }
    assert_eq!(s.count().await.unwrap(), 4);
    assert_eq!(s.revoke_all(&alice).await.unwrap().ended, 4);
}

#[tokio::test]
async fn a_principal_index_stays_readable_through_the_steps_and_moves_to_the_hashed_key() {
    let backend = backend();
    let typed = |config: &SecureConfig| {
        let store: Arc<dyn SessionStore> = Arc::new(store(&backend, config));
        Sessions::<String>::new(store, Namespace::new("login").unwrap())
    };
    let (before, one, two) = (typed(&SecureConfig::new()), typed(&step1()), typed(&step2()));
    let alice = Principal::new("alice").unwrap();
    for (n, s) in [&before, &one, &two].into_iter().enumerate() {
        let mut session = s.create(format!("device {n}")).await.unwrap();
        s.bind(&mut session, &alice).await.unwrap();
        // An instance one step behind reads the index (step 2 starts only once every
        // instance runs step 1).
        if n < 2 {
            assert_eq!(
                before.list(&alice).await.unwrap().len(),
                n + 1,
                "step 0 after bind {n}"
            );
        }
        assert_eq!(
            one.list(&alice).await.unwrap().len(),
            n + 1,
            "step 1 after bind {n}"
        );
    }
    // Step 2's bind moved the index to its hashed key (sealed); the plain one is gone.
    let indexes: Vec<String> = backend
        .scan(None, 1000)
        .await
        .unwrap()
        .sessions
        .into_iter()
        .filter(|(k, _)| session_core::backend::is_principal_index(k))
        .map(|(k, r)| format!("{}:{}", &k.id.as_str()[..3], r.codec.name()))
        .collect();
    assert_eq!(indexes, ["p..:sealed"]);
    assert_eq!(two.list(&alice).await.unwrap().len(), 3);
    assert_eq!(one.revoke_all(&alice).await.unwrap().ended, 3);
    assert!(two.list(&alice).await.unwrap().is_empty());
}
