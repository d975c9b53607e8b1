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
use session_core::{Namespace, Principal, Session, SessionKey, SessionStore, Sessions};
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

/// One instance: a fallback over the shared primary through its own switch.
async fn instance(primary: &Shared) -> (Switch, Instance, Sessions<String>) {
    let switch = FaultyStore::new(Arc::clone(primary));
    let secondary = MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(150))
        .with_probe_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_startup_wait(Duration::from_millis(100));
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
/// included: the delete wins), while a login bound through B after the revocation survives
/// A's replay.
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
        let revoked = a.revoke_all(&alice).await.unwrap();
        assert!(revoked.pending && revoked.ended == 4, "{revoked:?}");
        for session in &bound {
            assert!(!loads(&a, session).await, "A serves a session it revoked");
        }
        // B cannot know yet: it serves its copies until the revocation reaches the primary.
        assert!(loads(&b, &bound[1]).await);

        let mut later = None;
        if a_heals_first {
            heal(&switch_a, &store_a).await;
            heal(&switch_b, &store_b).await;
        } else {
            heal(&switch_b, &store_b).await;
            // A login after the revocation, bound through B before A has replayed it.
            let mut session = b.create("a login after the revoke".to_owned()).await.unwrap();
            b.bind(&mut session, &alice).await.unwrap();
            later = Some(session);
            heal(&switch_a, &store_a).await;
        }

        for session in &bound {
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
