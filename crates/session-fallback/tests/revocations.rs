//! `revoke_all` while the primary is down: the revocation is journaled and applied by replay
//! (every session bound before it ends in the primary, whichever instance replays first, and
//! a login bound after it survives), and the instance that revoked stops serving its own
//! copies of the principal's sessions at once. Two fallback instances share one primary, each
//! through its own fault switch.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::testing::{FaultMode, FaultyStore};
use session_core::{Clock, Namespace, Principal, Session, SessionKey, SessionStore, Sessions};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};

type Shared = Arc<MemoryStore>;
type Switch = Arc<FaultyStore<Shared>>;
type Instance = Arc<FallbackStore<Switch, MemoryStore>>;

fn ns() -> Namespace {
    Namespace::new("web").unwrap()
}

/// The primary both instances share (it keeps tombstones, as a fallback's primary must).
fn shared_primary() -> Shared {
    Arc::new(
        MemoryStore::new(
            MemoryConfig::default()
                .with_at_capacity(AtCapacity::Reject)
                .with_tombstones(Duration::from_secs(3600)),
        )
        .unwrap(),
    )
}

/// Short timeouts and fast probes, so the tests finish quickly.
fn fast() -> FallbackConfig {
    FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(150))
        .with_probe_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_startup_wait(Duration::from_millis(100))
}

/// A secondary, refusing at its bound as a fallback's must.
fn secondary() -> MemoryStore {
    MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap()
}

/// One instance: a fallback over the shared primary through its own switch.
async fn instance(primary: &Shared) -> (Switch, Instance, Sessions<String>) {
    let switch = FaultyStore::new(Arc::clone(primary));
    let secondary = secondary();
    let config = fast();
    let store = Arc::new(
        FallbackStore::new(Arc::clone(&switch), secondary, config)
            .await
            .unwrap(),
    );
    let sessions = Sessions::new(Arc::clone(&store) as Arc<dyn SessionStore>, ns());
    (switch, store, sessions)
}

/// Cuts an instance off and waits until its circuit is open.
async fn cut_off(switch: &Switch, store: &Instance, sessions: &Sessions<String>, probe: &Session<String>) {
    switch.set_mode(FaultMode::Fail);
    let limit = Instant::now() + Duration::from_secs(10);
    while store.state() != CircuitState::Open {
        assert!(Instant::now() < limit, "the circuit never opened");
        let _ = sessions.load(&probe.id).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Heals an instance and waits until it has replayed everything.
async fn heal(switch: &Switch, store: &Instance) {
    switch.set_mode(FaultMode::Pass);
    let limit = Instant::now() + Duration::from_secs(10);
    while store.state() != CircuitState::Closed || store.journal_len() != 0 {
        assert!(Instant::now() < limit, "the instance never recovered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn loads(sessions: &Sessions<String>, session: &Session<String>) -> bool {
    sessions.load(&session.id).await.unwrap().is_some()
}

fn raw_key(session: &Session<String>) -> SessionKey {
    SessionKey::new(ns(), session.id.clone())
}

/// Alice's sessions, bound through `a` and read by both instances (each keeps a warm copy).
async fn logged_in(
    a: &Sessions<String>,
    b: &Sessions<String>,
    alice: &Principal,
    n: usize,
) -> Vec<Session<String>> {
    let mut bound = Vec::new();
    for i in 0..n {
        let mut session = a.create(format!("device {i}")).await.unwrap();
        a.bind(&mut session, alice).await.unwrap();
        assert!(loads(a, &session).await && loads(b, &session).await);
        bound.push(session);
    }
    bound
}

/// One instance, the primary down: `revoke_all` is kept (pending), ends the instance's own
/// copies at once, and binding and listing still wait for the primary; once it answers, every
/// session bound before is gone from the primary, and an unbound one is kept.
#[tokio::test]
async fn a_revocation_during_an_outage_is_journaled_and_applied_on_recovery() {
    let primary = shared_primary();
    let (switch, store, s) = instance(&primary).await;
    let alice = Principal::new("alice").unwrap();
    let bound = logged_in(&s, &s, &alice, 3).await;
    let unbound = s.create("no one's".to_owned()).await.unwrap();

    cut_off(&switch, &store, &s, &unbound).await;
    let revoked = s.revoke_all(&alice).await.unwrap();
    assert!(revoked.pending, "kept for the primary");
    assert_eq!(revoked.ended, 3, "the warm copies ended at once");
    for session in &bound {
        assert!(
            !loads(&s, session).await,
            "a revoked session is served during the outage"
        );
    }
    assert!(
        loads(&s, &unbound).await,
        "another session is served from its warm copy"
    );
    assert!(s.list(&alice).await.unwrap_err().is_temporary());
    let mut during = s.create("during the outage".to_owned()).await.unwrap();
    assert!(s.bind(&mut during, &alice).await.unwrap_err().is_temporary());
    assert_eq!(
        during.principal(),
        None,
        "a failed bind leaves the session unbound"
    );
    assert!(
        primary.load(&raw_key(&bound[0])).await.unwrap().is_some(),
        "nothing reached the primary yet"
    );

    heal(&switch, &store).await;
    for session in &bound {
        assert!(
            primary.load(&raw_key(session)).await.unwrap().is_none(),
            "revoked in the primary"
        );
        assert!(!loads(&s, session).await);
    }
    assert!(loads(&s, &unbound).await && loads(&s, &during).await);
    assert!(s.list(&alice).await.unwrap().is_empty());
    assert_eq!(
        s.revoke_all(&alice).await.unwrap().ended,
        0,
        "nothing left to end"
    );
}

/// Two instances cut off together. B writes one of Alice's sessions during the outage; A
/// revokes Alice. Whichever heals first, after both have replayed no session of Alice's
/// bound before the revocation is served by either or held by the primary (B's outage write
/// included: the delete wins; a session B rotated or bound again after the revocation too),
/// while a login bound through B well after the revocation survives A's replay.
#[tokio::test]
async fn a_journaled_revocation_wins_whichever_instance_replays_first() {
    for a_heals_first in [false, true] {
        let primary = shared_primary();
        let (switch_a, store_a, a) = instance(&primary).await;
        let (switch_b, store_b, b) = instance(&primary).await;
        let alice = Principal::new("alice").unwrap();
        let bound = logged_in(&a, &b, &alice, 4).await;
        let probe = b.create("probe".to_owned()).await.unwrap();

        cut_off(&switch_a, &store_a, &a, &probe).await;
        cut_off(&switch_b, &store_b, &b, &probe).await;
        let mut written = b.load(&bound[1].id).await.unwrap().unwrap();
        written.value = "written on B during the outage".to_owned();
        b.save_if(&mut written).await.unwrap();
        let asked = session_core::backend::now_ms();
        let revoked = a.revoke_all(&alice).await.unwrap();
        assert!(revoked.pending && revoked.ended == 4, "{revoked:?}");
        for session in &bound {
            assert!(!loads(&a, session).await, "A serves a session it revoked");
        }
        // B cannot know yet: it serves its copies until the revocation reaches the primary.
        assert!(loads(&b, &bound[1]).await);

        let mut later = None;
        let mut ended_too = Vec::new();
        if a_heals_first {
            heal(&switch_a, &store_a).await;
            heal(&switch_b, &store_b).await;
        } else {
            heal(&switch_b, &store_b).await;
            // B's handle five seconds ahead: what it does happens well after the revocation.
            let b_later = b.clone().with_clock(Clock::offset(5_000));
            // Through B, before A has replayed: a revoked session rotated (the stolen cookie
            // refreshed) and one bound again keep their first binding time, so they end.
            let rotated = b_later.rotate(&bound[2].id).await.unwrap();
            ended_too.push(b.load(&rotated).await.unwrap().unwrap());
            let mut again = b.load(&bound[3].id).await.unwrap().unwrap();
            b_later.bind(&mut again, &alice).await.unwrap();
            // A login within `REVOKE_SKEW_MS` of the revocation ends too (clock skew): bound
            // half a second after the revocation was asked for, whatever the time now.
            let (at_half_second, _) = Clock::manual(asked + 500);
            let b_soon = b.clone().with_clock(at_half_second);
            let mut soon = b_soon
                .create("a login right after the revoke".to_owned())
                .await
                .unwrap();
            b_soon.bind(&mut soon, &alice).await.unwrap();
            ended_too.push(soon);
            // A login five seconds after the revocation, bound before A has replayed it: it
            // survives.
            let mut session = b_later
                .create("a login after the revoke".to_owned())
                .await
                .unwrap();
            b_later.bind(&mut session, &alice).await.unwrap();
            later = Some(session);
            heal(&switch_a, &store_a).await;
        }

        for session in bound.iter().chain(&ended_too) {
            assert!(
                primary.load(&raw_key(session)).await.unwrap().is_none(),
                "a_heals_first={a_heals_first}: a revoked session is in the primary"
            );
            assert!(!loads(&a, session).await && !loads(&b, session).await);
        }
        if let Some(later) = &later {
            assert!(
                loads(&a, later).await && loads(&b, later).await,
                "a login bound after the revocation was ended by its replay"
            );
            let listed: Vec<_> = a.list(&alice).await.unwrap().into_iter().map(|s| s.id).collect();
            assert_eq!(listed, vec![later.id.clone()]);
        }
        assert!(loads(&a, &probe).await);
    }
}

/// A primary of two parts (like two cluster nodes), both down while the revocation is kept.
/// When the part holding the principal's index answers and the other does not, replay
/// applies the revocation without waiting for the other part and without blaming the
/// index's part for it: the sessions on the down part are journaled as logouts and end in
/// the primary once that part answers.
#[tokio::test]
async fn a_revocation_replays_while_another_part_is_still_down() {
    use session_core::testing::PartitionedStore;

    let shared = shared_primary();
    let primary = PartitionedStore::new(Arc::clone(&shared), 2);
    let secondary = secondary();
    let config = fast();
    let store = Arc::new(
        FallbackStore::new(Arc::clone(&primary), secondary, config)
            .await
            .unwrap(),
    );
    let s: Sessions<String> = Sessions::new(Arc::clone(&store) as Arc<dyn SessionStore>, ns());
    // Another instance binds through the primary directly: this one never holds its sessions.
    let direct: Sessions<String> = Sessions::new(Arc::clone(&shared) as Arc<dyn SessionStore>, ns());
    let alice = Principal::new("alice").unwrap();
    let mut bound = Vec::new();
    while bound.len() < 8 || (0..2).any(|part| !bound.iter().any(|k| primary.index_of(k) == part)) {
        let mut session = direct.create("device".to_owned()).await.unwrap();
        direct.bind(&mut session, &alice).await.unwrap();
        bound.push(raw_key(&session));
    }
    let page = shared.scan(None, 1000).await.unwrap();
    let index = page
        .sessions
        .iter()
        .map(|(k, _)| k)
        .find(|k| session_core::backend::is_principal_index(k))
        .expect("the index is stored")
        .clone();
    let index_part = primary.index_of(&index);
    let other = 1 - index_part;

    primary.set_mode(0, FaultMode::Fail);
    primary.set_mode(1, FaultMode::Fail);
    let limit = Instant::now() + Duration::from_secs(10);
    while store.open_partitions() < 2 {
        assert!(Instant::now() < limit, "both circuits never opened");
        for k in &bound {
            let _ = store.load(k).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revoked = s.revoke_all(&alice).await.unwrap();
    assert!(revoked.pending && revoked.ended == 0, "{revoked:?}");

    primary.set_mode(index_part, FaultMode::Pass);
    let index_partition = PartitionedStore::<Shared>::partition_at(index_part);
    let limit = Instant::now() + Duration::from_secs(10);
    while store.partition_state(index_partition) != CircuitState::Closed {
        assert!(Instant::now() < limit, "the index's part never closed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // It stays closed: nothing of the other part is blamed on it.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(store.partition_state(index_partition), CircuitState::Closed);
    }
    for k in bound.iter().filter(|k| primary.index_of(k) == index_part) {
        assert!(
            shared.load(k).await.unwrap().is_none(),
            "ended on the part that answers"
        );
    }
    let on_other: Vec<&SessionKey> = bound.iter().filter(|k| primary.index_of(k) == other).collect();
    for k in &on_other {
        assert!(
            shared.load(k).await.unwrap().is_some(),
            "the down part was not written"
        );
        assert!(
            store.load(k).await.unwrap().is_none(),
            "journaled as a logout here"
        );
    }

    primary.set_mode(other, FaultMode::Pass);
    let limit = Instant::now() + Duration::from_secs(10);
    while store.state() != CircuitState::Closed || store.journal_len() != 0 {
        assert!(Instant::now() < limit, "never recovered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for k in &bound {
        assert!(shared.load(k).await.unwrap().is_none(), "revoked in the primary");
    }
}

/// A journal one key short of full: the revocation takes the last slot, and the principal's
/// warm copies still stop being served (ending them needs no slot of their own).
#[tokio::test]
async fn a_nearly_full_journal_still_ends_the_local_copies() {
    let primary = shared_primary();
    let switch = FaultyStore::new(Arc::clone(&primary));
    let secondary = secondary();
    let config = fast().with_max_journal_keys(4);
    let store = Arc::new(
        FallbackStore::new(Arc::clone(&switch), secondary, config)
            .await
            .unwrap(),
    );
    let s: Sessions<String> = Sessions::new(Arc::clone(&store) as Arc<dyn SessionStore>, ns());
    let alice = Principal::new("alice").unwrap();
    let bound = logged_in(&s, &s, &alice, 3).await;
    let probe = s.create("probe".to_owned()).await.unwrap();
    cut_off(&switch, &store, &s, &probe).await;
    for n in 0..3 {
        s.create(format!("outage write {n}")).await.unwrap();
    }
    assert_eq!(store.journal_len(), 3);
    let revoked = s.revoke_all(&alice).await.unwrap();
    assert_eq!((revoked.ended, revoked.pending), (3, true));
    assert_eq!(store.journal_len(), 4, "the revocation took the last slot");
    for session in &bound {
        assert!(
            !loads(&s, session).await,
            "a revoked session is served from its warm copy"
        );
    }
    heal(&switch, &store).await;
    for session in &bound {
        assert!(primary.load(&raw_key(session)).await.unwrap().is_none());
    }
}

/// A kept revocation the primary cannot apply for good (its index no longer parses) is
/// dropped after one try, logged and counted, so that the circuit closes and the
/// principal's calls on this instance do not wait on it forever; the session this instance
/// had ended locally is deleted in the primary as a logout.
#[tokio::test]
async fn a_revocation_that_cannot_apply_is_dropped_not_retried_forever() {
    use session_core::backend::{now_ms, CodecId, Record};

    let primary = shared_primary();
    let (switch, store, s) = instance(&primary).await;
    let alice = Principal::new("alice").unwrap();
    let bound = logged_in(&s, &s, &alice, 1).await;
    let page = primary.scan(None, 100).await.unwrap();
    let index = page
        .sessions
        .iter()
        .map(|(k, _)| k.clone())
        .find(session_core::backend::is_principal_index)
        .unwrap();
    cut_off(&switch, &store, &s, &bound[0]).await;
    assert!(s.revoke_all(&alice).await.unwrap().pending);
    // Meanwhile the index turns into something that is not an index.
    let garbage = Record::new(CodecId::JSON, b"{}".to_vec(), now_ms() + 3_600_000);
    primary.save(&index, &garbage).await.unwrap();
    heal(&switch, &store).await;
    assert!(store.counters().replay_errors >= 1, "counted");
    // What this instance had ended locally is deleted as a logout when the revocation drops.
    assert!(primary.load(&raw_key(&bound[0])).await.unwrap().is_none());
    assert!(!loads(&s, &bound[0]).await);
    assert!(s
        .list(&alice)
        .await
        .unwrap_err()
        .to_string()
        .contains("principal index"));
}
