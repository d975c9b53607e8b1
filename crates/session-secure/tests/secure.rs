//! `SecureStore` over `MemoryStore`: what a backend holds, and each change of configuration —
//! turning hashing or encryption on, rotating the hashing secret or the encryption keys —
//! without logging anyone out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;

mod secrets;

use secrets::{both, KEY_1, KEY_2, NEW_SECRET, SECRET};
use serde::{Deserialize, Serialize};
use session_core::backend::{decode_entry, CodecId, Entry};
use session_core::testing::RawAccess;
use session_core::{
    Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, Sessions, StoreOptions,
};
use session_memory::{MemoryConfig, MemoryStore};
use session_secure::{Secret, SecureConfig, SecureStore, HASHED_ID_LEN, SEAL_OVERHEAD};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Login {
    user: String,
    token: String,
}

fn login(n: usize) -> Login {
    Login {
        user: format!("user-{n}@example.com"),
        token: format!("tok-{n}-d41d8cd98f00b204"),
    }
}

/// One backend (memory), shared by every configuration a test goes through.
fn backend() -> Arc<MemoryStore> {
    let options = StoreOptions::new(KeyPrefix::default())
        .with_max_session_bytes(session_core::DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD)
        .unwrap();
    Arc::new(MemoryStore::with_options(MemoryConfig::default(), options).unwrap())
}

fn through(backend: &Arc<MemoryStore>, config: &SecureConfig) -> Sessions<Login> {
    let inner: Arc<dyn SessionStore> = backend.clone();
    let store: Arc<dyn SessionStore> = Arc::new(SecureStore::new(inner, config).unwrap());
    Sessions::new(store, Namespace::new("login").unwrap())
}

fn key(id: &SessionId) -> SessionKey {
    SessionKey::new(Namespace::new("login").unwrap(), id.clone())
}

/// Every stored key and value of the backend, as bytes.
async fn dump(backend: &Arc<MemoryStore>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = backend.scan(cursor.as_ref(), 100).await.unwrap();
        for (k, _) in page.sessions {
            let bytes = backend.get_raw(&k).await.unwrap().unwrap();
            out.push((format!("{}:{}", k.ns(), k.id.as_str()), bytes.to_vec()));
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_backend_holds_no_id_and_no_payload_in_the_clear() {
    let backend = backend();
    let s = through(&backend, &both());
    let mut ids = Vec::new();
    for n in 0..50 {
        let mut session = s.create(login(n)).await.unwrap();
        if n % 5 == 0 {
            let new = s.rotate(&session.id).await.unwrap();
            session.id = new;
        }
        session.value.token.push_str("-renewed");
        s.save_if(&mut session).await.unwrap();
        ids.push(session.id);
    }
    let stored = dump(&backend).await;
    assert_eq!(stored.len(), 50);
    for (k, v) in &stored {
        assert_eq!(k.len(), "login:".len() + HASHED_ID_LEN, "{k}");
        assert!(
            matches!(decode_entry(&v.clone().into(), "login").unwrap(), Entry::Live(r) if r.codec == CodecId::SEALED)
        );
        for id in &ids {
            assert!(!k.contains(id.as_str()) && !contains(v, id.as_str().as_bytes()));
        }
        for needle in [&b"user-"[..], b"example.com", b"tok-", b"renewed"] {
            assert!(!contains(v, needle), "plaintext in a stored value");
        }
    }
    for (n, id) in ids.iter().enumerate() {
        let loaded = s.load(id).await.unwrap().expect("loads through the store");
        assert_eq!(loaded.value.user, login(n).user);
    }
}

#[tokio::test]
async fn a_value_copied_under_another_key_does_not_open() {
    let backend = backend();
    let store = SecureStore::new(backend.clone(), &both()).unwrap();
    let s = through(&backend, &both());
    let victim = s.create(login(1)).await.unwrap();
    let attacker = s.create(login(2)).await.unwrap();
    let victim_bytes = backend
        .get_raw(&store.stored_key(&key(&victim.id)))
        .await
        .unwrap()
        .unwrap();
    backend
        .put_raw(&store.stored_key(&key(&attacker.id)), victim_bytes, 60_000)
        .await
        .unwrap();
    let e = store.load(&key(&attacker.id)).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert_eq!(s.load(&victim.id).await.unwrap().unwrap().value, login(1));
}

#[tokio::test]
async fn a_hash_read_from_a_dump_is_not_a_session_id() {
    let backend = backend();
    let mut config = SecureConfig::new().with_hashed_ids(SECRET);
    config.hashed_ids.read_plain_ids = true;
    let s = through(&backend, &config);
    let victim = s.create(login(1)).await.unwrap();
    let (stored, _) = dump(&backend).await.remove(0);
    let hash = SessionId::parse(stored.trim_start_matches("login:")).unwrap();
    assert!(s.load(&hash).await.unwrap().is_none(), "with plain ids read");
    // The first step of turning hashing on: ids are written plain; a hash is refused.
    config.hashed_ids.write_plain_ids = true;
    let first_step = through(&backend, &config);
    let e = first_step.load(&hash).await.unwrap_err();
    assert!(matches!(e, Error::InvalidId { .. }), "{e}");
    assert!(first_step.load(&victim.id).await.unwrap().is_some());
}

#[tokio::test]
async fn turning_hashing_on_in_two_steps_logs_no_one_out() {
    let backend = backend();
    let before = through(&backend, &SecureConfig::new());
    let mut old = Vec::new();
    for n in 0..10 {
        old.push(before.create(login(n)).await.unwrap());
    }
    // Step 1, instance by instance: plain written, hashed read.
    let mut step1 = SecureConfig::new().with_hashed_ids(SECRET);
    step1.hashed_ids.write_plain_ids = true;
    let a = through(&backend, &step1);
    let made_in_step1 = a.create(login(100)).await.unwrap();
    assert!(
        before.load(&made_in_step1.id).await.unwrap().is_some(),
        "an instance not yet changed reads it"
    );
    // Step 2: hashed written, plain read.
    let mut step2 = SecureConfig::new().with_hashed_ids(SECRET);
    step2.hashed_ids.read_plain_ids = true;
    let b = through(&backend, &step2);
    let made_in_step2 = b.create(login(200)).await.unwrap();
    assert!(
        a.load(&made_in_step2.id).await.unwrap().is_some(),
        "a step-1 instance reads it"
    );
    for (n, session) in old.iter_mut().enumerate() {
        assert_eq!(b.load(&session.id).await.unwrap().unwrap().value, login(n));
        match n % 4 {
            0 => {
                session.value.token = "updated".into();
                b.update(session).await.unwrap();
                assert_eq!(a.load(&session.id).await.unwrap().unwrap().value.token, "updated");
            }
            1 => {
                assert!(b.delete(&session.id).await.unwrap());
                assert!(a.load(&session.id).await.unwrap().is_none(), "deleted everywhere");
                assert!(
                    before.load(&session.id).await.unwrap().is_none(),
                    "deleted everywhere"
                );
            }
            2 => {
                let new = b.rotate(&session.id).await.unwrap();
                assert!(b.load(&session.id).await.unwrap().is_none());
                assert_eq!(b.load(&new).await.unwrap().unwrap().value, login(n));
                session.id = new;
            }
            _ => {
                assert!(b.touch(&session.id).await.unwrap());
            }
        }
    }
    // Step 3, a lifetime later: plain ids are no longer read. What was rotated moved to the
    // hashed layout; what was only touched or updated in place is not read any more.
    let after = through(&backend, &SecureConfig::new().with_hashed_ids(SECRET));
    assert!(after.load(&made_in_step2.id).await.unwrap().is_some());
    for (n, session) in old.iter().enumerate() {
        let found = after.load(&session.id).await.unwrap().is_some();
        assert_eq!(found, n % 4 == 2, "session {n}");
    }
}

#[tokio::test]
async fn a_new_hashing_secret_with_the_old_one_kept_logs_no_one_out() {
    let backend = backend();
    let old = through(&backend, &SecureConfig::new().with_hashed_ids(SECRET));
    let kept = old.create(login(1)).await.unwrap();
    let gone = old.create(login(2)).await.unwrap();
    let rotated = old.create(login(3)).await.unwrap();
    let mut config = SecureConfig::new().with_hashed_ids(NEW_SECRET);
    config.hashed_ids.previous_secrets = vec![Secret::new(SECRET)];
    let new = through(&backend, &config);
    assert_eq!(new.load(&kept.id).await.unwrap().unwrap().value, login(1));
    assert!(new.delete(&gone.id).await.unwrap());
    assert!(old.load(&gone.id).await.unwrap().is_none());
    let moved = new.rotate(&rotated.id).await.unwrap();
    let only_new = through(&backend, &SecureConfig::new().with_hashed_ids(NEW_SECRET));
    assert_eq!(
        only_new.load(&moved).await.unwrap().unwrap().value,
        login(3),
        "moved under the new secret"
    );
    assert!(
        only_new.load(&kept.id).await.unwrap().is_none(),
        "not read once the old secret is dropped"
    );
}

#[tokio::test]
async fn rotating_encryption_keys_in_two_steps_logs_no_one_out() {
    let backend = backend();
    let ring1 = SecureConfig::new().with_encryption([(1, KEY_1)]);
    let old = through(&backend, &ring1);
    let first = old.create(login(1)).await.unwrap();
    // Step 1: key 2 known everywhere, key 1 still sealing.
    let mut step1 = SecureConfig::new().with_encryption([(1, KEY_1), (2, KEY_2)]);
    step1.encryption.current = Some(1);
    let a = through(&backend, &step1);
    let second = a.create(login(2)).await.unwrap();
    assert!(
        old.load(&second.id).await.unwrap().is_some(),
        "sealed by key 1: the old ring opens it"
    );
    // Step 2: key 2 seals.
    let step2 = SecureConfig::new().with_encryption([(1, KEY_1), (2, KEY_2)]);
    let b = through(&backend, &step2);
    let mut third = b.create(login(3)).await.unwrap();
    assert_eq!(
        a.load(&third.id).await.unwrap().unwrap().value,
        login(3),
        "step 1 opens key 2"
    );
    assert_eq!(
        b.load(&first.id).await.unwrap().unwrap().value,
        login(1),
        "key 1 still opens"
    );
    third.value.token = "new".into();
    b.save_if(&mut third).await.unwrap();
    let raw = backend.get_raw(&key(&third.id)).await.unwrap().unwrap();
    let Entry::Live(record) = decode_entry(&raw, "login").unwrap() else {
        panic!("a session")
    };
    assert_eq!(
        u16::from_be_bytes([record.payload[1], record.payload[2]]),
        2,
        "key 2 sealed it"
    );
    // Key 1 dropped too early: its values are Corrupt, for a typed handle too.
    let ring2 = SecureConfig::new().with_encryption([(2, KEY_2)]);
    let store = SecureStore::new(backend.clone(), &ring2).unwrap();
    let e = store.load(&key(&first.id)).await.unwrap_err();
    assert!(e.to_string().contains("key id 1"), "{e}");
    let e = through(&backend, &ring2).load(&first.id).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

#[tokio::test]
async fn turning_encryption_on_in_two_steps_logs_no_one_out() {
    let backend = backend();
    let before = through(&backend, &SecureConfig::new());
    let old = before.create(login(1)).await.unwrap();
    let mut step1 = SecureConfig::new().with_encryption([(1, KEY_1)]);
    step1.encryption.write_plaintext = true;
    let a = through(&backend, &step1);
    let made_in_step1 = a.create(login(2)).await.unwrap();
    assert!(
        before.load(&made_in_step1.id).await.unwrap().is_some(),
        "still plain"
    );
    let mut step2 = SecureConfig::new().with_encryption([(1, KEY_1)]);
    step2.encryption.accept_plaintext = true;
    let b = through(&backend, &step2);
    let made_in_step2 = b.create(login(3)).await.unwrap();
    assert_eq!(a.load(&made_in_step2.id).await.unwrap().unwrap().value, login(3));
    assert_eq!(b.load(&old.id).await.unwrap().unwrap().value, login(1));
    // Step 3: plaintext refused (a planted value would be).
    let strict = SecureConfig::new().with_encryption([(1, KEY_1)]);
    let store = SecureStore::new(backend.clone(), &strict).unwrap();
    let e = store.load(&key(&old.id)).await.unwrap_err();
    assert!(e.to_string().contains("accept_plaintext"), "{e}");
    assert!(store.load(&key(&made_in_step2.id)).await.unwrap().is_some());
}

#[tokio::test]
async fn secrets_never_reach_debug_output_or_errors() {
    let store = SecureStore::new(backend(), &both()).unwrap();
    let debug = format!("{store:?} {:?}", both());
    for secret in [SECRET, KEY_1, &SECRET[..12], &KEY_1[..12]] {
        assert!(!debug.contains(secret), "{debug}");
    }
    let mut short = both();
    short.encryption.keys[0].key = Secret::new("dG9vLXNob3J0LWtleS1tYXRlcmlhbA==");
    let e = SecureStore::new(backend(), &short).unwrap_err();
    assert!(
        matches!(e, Error::Config { .. }) && !e.to_string().contains("dG9v"),
        "{e}"
    );
    let mut missing = both();
    missing.hashed_ids.secret = Secret::default();
    let e = SecureStore::new(backend(), &missing).unwrap_err();
    assert!(e.to_string().contains("hashed_ids.secret"), "{e}");
}

/// Hashed ids and sealed values over a fallback whose primary is down: `revoke_all` is kept
/// by the fallback, which tells the principal's sessions among its copies by opening them
/// (ending them at once), and applies it through the same settings on recovery: the sessions
/// it held and those another instance bound leave the primary under their hashed keys.
#[tokio::test]
async fn a_revocation_during_an_outage_goes_through_the_hashing_and_the_seal() {
    use session_core::testing::{FaultMode, FaultyStore};
    use session_core::Principal;
    use session_fallback::{CircuitState, FallbackConfig, FallbackStore};

    let options = StoreOptions::new(KeyPrefix::default())
        .with_max_session_bytes(session_core::DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD)
        .unwrap();
    let primary = Arc::new(
        MemoryStore::with_options(
            MemoryConfig::default().with_tombstones(std::time::Duration::from_secs(600)),
            options.clone(),
        )
        .unwrap(),
    );
    let switch = FaultyStore::new(Arc::clone(&primary));
    let secondary = MemoryStore::with_options(
        MemoryConfig::default().with_at_capacity(session_memory::AtCapacity::Reject),
        options,
    )
    .unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(std::time::Duration::from_millis(150))
        .with_probe_backoff(
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(40),
        );
    let fallback = Arc::new(
        FallbackStore::new(Arc::clone(&switch), secondary, config)
            .await
            .unwrap(),
    );
    let secure = SecureStore::new(Arc::clone(&fallback), &both()).unwrap();
    let stored: Vec<SessionKey>;
    let s: Sessions<Login> = Sessions::new(Arc::new(secure), Namespace::new("login").unwrap());
    let alice = Principal::new("alice@example.com").unwrap();
    let mut bound = Vec::new();
    for n in 0..3 {
        let mut session = s.create(login(n)).await.unwrap();
        s.bind(&mut session, &alice).await.unwrap();
        bound.push(session);
    }
    // Two more through another instance that reaches the primary directly: this one never
    // holds them, so only the replayed revocation can end them.
    let direct: Sessions<Login> = Sessions::new(
        Arc::new(SecureStore::new(Arc::clone(&primary), &both()).unwrap()),
        Namespace::new("login").unwrap(),
    );
    let mut elsewhere = Vec::new();
    for n in 3..5 {
        let mut session = direct.create(login(n)).await.unwrap();
        direct.bind(&mut session, &alice).await.unwrap();
        elsewhere.push(session);
    }
    let other = s.create(login(9)).await.unwrap();
    {
        let view = SecureStore::new(Arc::clone(&primary), &both()).unwrap();
        stored = bound
            .iter()
            .chain(&elsewhere)
            .map(|b| view.stored_key(&key(&b.id)))
            .collect();
    }
    for k in &stored {
        assert!(
            primary.load(k).await.unwrap().is_some(),
            "stored under the hashed key"
        );
    }

    switch.set_mode(FaultMode::Fail);
    while fallback.state() != CircuitState::Open {
        let _ = s.load(&other.id).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let revoked = s.revoke_all(&alice).await.unwrap();
    assert!(revoked.pending && revoked.ended == 3, "{revoked:?}");
    for session in &bound {
        assert!(s.load(&session.id).await.unwrap().is_none());
    }
    assert!(s.load(&other.id).await.unwrap().is_some());

    switch.set_mode(FaultMode::Pass);
    for _ in 0..500 {
        if fallback.state() == CircuitState::Closed && fallback.journal_len() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(fallback.journal_len(), 0, "replayed");
    for k in &stored {
        assert!(primary.load(k).await.unwrap().is_none(), "revoked in the primary");
    }
    assert!(s.list(&alice).await.unwrap().is_empty());
    assert!(direct.list(&alice).await.unwrap().is_empty());
    assert!(s.load(&other.id).await.unwrap().is_some());
}
