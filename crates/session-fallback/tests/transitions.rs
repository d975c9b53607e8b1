//! Every state transition of the fallback, driven by `FaultyStore` over
//! memory stores: failover, open, probe with backoff, replay, tombstones,
//! conflicts, expiry, the journal bound, start-up with the primary down,
//! permanent errors, timeouts with unknown outcome and hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::testing::{FaultMode, FaultyStore, RawAccess};
use session_core::{
    Bytes, Error, HealthStatus, Meta, Namespace, SessionId, SessionKey, SessionStore, Version,
};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};

type Primary = Arc<FaultyStore<MemoryStore>>;
type Secondary = Arc<MemoryStore>;
type Store = FallbackStore<Primary, Secondary>;

const HOUR: u64 = 3_600_000;

fn memory() -> MemoryStore {
    MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::Reject)).unwrap()
}

/// A primary: keeps tombstones, as a fallback requires.
fn primary_memory() -> MemoryStore {
    MemoryStore::new(
        MemoryConfig::default()
            .with_at_capacity(AtCapacity::Reject)
            .with_tombstones(Duration::from_secs(3600)),
    )
    .unwrap()
}

/// Short timeouts and fast probes, so tests finish quickly.
fn fast() -> FallbackConfig {
    FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(150))
        .with_probe_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_startup_wait(Duration::from_millis(STARTUP_WAIT_MS))
}

/// How long construction waits for a primary's first answer in these tests.
const STARTUP_WAIT_MS: u64 = 100;

async fn setup(config: FallbackConfig) -> (Primary, Secondary, Store) {
    let primary = FaultyStore::new(primary_memory());
    let secondary = Arc::new(memory());
    let store = FallbackStore::new(Arc::clone(&primary), Arc::clone(&secondary), config)
        .await
        .unwrap();
    (primary, secondary, store)
}

fn key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

fn rec_at(payload: &[u8], updated_at: u64, ttl_ms: u64) -> Record {
    Record {
        meta: Meta {
            version: Version::NONE,
            created_at: updated_at,
            updated_at,
            expires_at: updated_at + ttl_ms,
            max_expires_at: 0,
        },
        codec: CodecId::RAW,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn rec(payload: &[u8]) -> Record {
    rec_at(payload, now_ms(), HOUR)
}

/// What the primary's own store holds, bypassing the fault injection.
async fn in_primary(p: &Primary, k: &SessionKey) -> Option<Bytes> {
    p.inner().load(k).await.unwrap().map(|r| r.payload)
}

async fn in_secondary(s: &Secondary, k: &SessionKey) -> Option<Bytes> {
    s.load(k).await.unwrap().map(|r| r.payload)
}

/// The version token the primary's own store holds, bypassing the fault injection.
async fn version_in_primary(p: &Primary, k: &SessionKey) -> Option<Version> {
    p.inner().load(k).await.unwrap().map(|r| r.meta.version)
}

async fn version_in_secondary(s: &Secondary, k: &SessionKey) -> Option<Version> {
    s.load(k).await.unwrap().map(|r| r.meta.version)
}

async fn payload<P: SessionStore, S: SessionStore>(
    store: &FallbackStore<P, S>,
    k: &SessionKey,
) -> Option<Bytes> {
    store.load(k).await.unwrap().map(|r| r.payload)
}

async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_closed<P: SessionStore, S: SessionStore>(store: &FallbackStore<P, S>) {
    wait_for(
        "the circuit to close with an empty journal",
        Duration::from_secs(10),
        || store.state() == CircuitState::Closed && store.journal_len() == 0,
    )
    .await;
}

fn b(s: &'static [u8]) -> Option<Bytes> {
    Some(Bytes::from_static(s))
}

#[tokio::test]
async fn closed_store_serves_from_the_primary() {
    let (p, s, store) = setup(fast()).await;
    let k = key();
    store.create(&k, &rec(b"a")).await.unwrap();
    assert_eq!(in_primary(&p, &k).await, b(b"a"));
    assert_eq!(in_secondary(&s, &k).await, None);
    assert_eq!(store.state(), CircuitState::Closed);
    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Up);
    assert_eq!(h.components.len(), 2);
}

#[tokio::test]
async fn the_failing_call_itself_fails_over_and_opens_the_circuit() {
    let (p, s, store) =
        setup(fast().with_probe_backoff(Duration::from_secs(5), Duration::from_secs(5))).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    let m = store
        .save(&k, &rec(b"outage"))
        .await
        .expect("the caller sees success");
    assert!(!m.version.is_none(), "the store stored a fresh token");
    assert_eq!(
        version_in_secondary(&s, &k).await,
        Some(m.version),
        "the caller got the token the secondary stored"
    );
    assert_eq!(store.state(), CircuitState::Open);
    assert_eq!(store.journal_len(), 1);
    assert_eq!(in_secondary(&s, &k).await, b(b"outage"));
    assert_eq!(
        payload(&store, &k).await,
        b(b"outage"),
        "read-your-writes while open"
    );
    let c = store.counters();
    assert_eq!((c.failovers, c.opened, c.transitions), (1, 1, 1));
    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Degraded);
    assert!(h.extra.contains(&("journal", 1)));
    assert!(h.extra.contains(&("state", CircuitState::Open.code() as u64)));
}

#[tokio::test]
async fn an_open_circuit_makes_no_primary_calls() {
    let (p, _s, store) =
        setup(fast().with_probe_backoff(Duration::from_secs(5), Duration::from_secs(5))).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    store.save(&k, &rec(b"1")).await.unwrap();
    assert_eq!(store.state(), CircuitState::Open);
    let (passed, refused) = (p.passed(), p.refused());
    for i in 0..20u8 {
        let k2 = key();
        store.create(&k2, &rec(&[i])).await.unwrap();
        store.load(&k2).await.unwrap();
        store.update(&k, &rec(&[i])).await.unwrap();
        store.delete(&k2).await.unwrap();
        store.count(&k.namespace).await.unwrap();
    }
    assert_eq!(
        (p.passed(), p.refused()),
        (passed, refused),
        "no call reached the primary"
    );
    assert_eq!(store.counters().failovers, 1);
    assert!(store.counters().secondary_calls >= 100);
}

#[tokio::test]
async fn probes_back_off_then_recovery_replays_and_closes() {
    let (p, s, store) =
        setup(fast().with_probe_backoff(Duration::from_millis(20), Duration::from_millis(80))).await;
    let old = key();
    store.create(&old, &rec(b"before")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    let keys: Vec<SessionKey> = (0..30).map(|_| key()).collect();
    let mut outage_versions = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let created = store.create(k, &rec(format!("v{i}").as_bytes())).await.unwrap();
        let saved = store.save(k, &rec(format!("w{i}").as_bytes())).await.unwrap();
        assert_ne!(saved.version, created.version, "every write stores a new token");
        outage_versions.push(saved.version);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = store.counters();
    assert!(store.state().is_open());
    assert!(c.probes >= 3 && c.probe_failures == c.probes, "{c:?}");
    // Backoff: 20, 40, 80, 80, ... ms (with jitter down to half): at most ~14 probes in 400 ms.
    assert!(c.probes <= 14, "probes are backed off: {c:?}");
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(in_primary(&p, k).await, Some(Bytes::from(format!("w{i}"))));
        assert_eq!(
            in_secondary(&s, k).await,
            None,
            "replayed keys leave the secondary"
        );
        let r = store.load(k).await.unwrap().unwrap();
        assert_eq!(
            r.meta.version, outage_versions[i],
            "replay keeps the token of the outage write"
        );
    }
    assert_eq!(
        in_primary(&p, &old).await,
        b(b"before"),
        "untouched sessions stay"
    );
    let c = store.counters();
    assert_eq!(c.replayed, 30);
    assert_eq!(c.conflicts, 0);
    assert_eq!(c.transitions, 3, "closed -> open -> replaying -> closed");
    assert_eq!(store.health().await.status, HealthStatus::Up);
}

#[tokio::test]
async fn a_delete_during_the_outage_is_not_undone() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    store.create(&k, &rec(b"logged in")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    // The session lives in the primary: the logout is journaled and applied on recovery,
    // so it answers that the session is gone.
    assert!(store.delete(&k).await.unwrap());
    assert_eq!(store.journal_len(), 1);
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(in_primary(&p, &k).await, b(b"logged in"));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(
        in_primary(&p, &k).await,
        None,
        "a logged-out session does not come back"
    );
    assert_eq!(store.load(&k).await.unwrap(), None);
}

/// A session deleted through the healthy primary and created again under the same id during
/// an outage (a login after a logout, with an id the application chooses) is the session after
/// recovery: the outage write is based on this instance's own tombstone, so replay stores it.
/// Meanwhile the deleted session reads as a miss, not as "can't tell".
#[tokio::test]
async fn a_session_created_again_after_its_own_logout_survives_the_outage() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    store.create(&k, &rec(b"first login")).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    p.set_mode(FaultMode::Fail);
    // Known gone here: a miss, not an unavailable answer.
    assert!(
        !store.touch(&k, now_ms() + HOUR).await.unwrap(),
        "deleted here: nothing to touch"
    );
    assert_eq!(store.load(&k).await.unwrap(), None, "deleted here: a miss");
    assert!(matches!(
        store.update(&k, &rec(b"late")).await,
        Err(Error::NotFound { .. })
    ));
    store.create(&k, &rec(b"second login")).await.unwrap();
    assert_eq!(payload(&store, &k).await, b(b"second login"));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(
        in_primary(&p, &k).await,
        b(b"second login"),
        "the acknowledged create is kept"
    );
    assert_eq!(payload(&store, &k).await, b(b"second login"));
}

/// The other side of that rule: a session deleted by another instance is still not brought
/// back by this one's outage write, which could not have seen the delete.
#[tokio::test]
async fn an_outage_write_that_did_not_see_the_delete_stays_deleted() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    store.create(&k, &rec(b"logged in")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    store.save(&k, &rec(b"written while cut off")).await.unwrap();
    // Another instance logs the user out meanwhile.
    assert!(p.inner().delete(&k).await.unwrap());
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &k).await, None, "the logout wins");
}

#[tokio::test]
async fn create_then_delete_during_the_outage_leaves_nothing() {
    let (p, _s, store) = setup(fast()).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    store.create(&k, &rec(b"x")).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    assert!(matches!(
        store.update(&k, &rec(b"late")).await,
        Err(Error::NotFound { .. })
    ));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &k).await, None);
}

#[tokio::test]
async fn a_newer_primary_value_wins_and_is_counted() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    let t0 = now_ms();
    store.create(&k, &rec_at(b"v0", t0, HOUR)).await.unwrap();
    p.set_mode(FaultMode::Fail);
    store.save(&k, &rec_at(b"outage", t0 + 10, HOUR)).await.unwrap();
    // Another instance writes the primary later than our outage write.
    p.inner()
        .save(&k, &rec_at(b"elsewhere", t0 + 20, HOUR))
        .await
        .unwrap();
    // A logout made here wins over a write it could not have seen, whatever its clock says.
    let d = key();
    p.inner().create(&d, &rec_at(b"d0", t0, HOUR)).await.unwrap();
    store.delete(&d).await.unwrap();
    p.inner()
        .save(&d, &rec_at(b"d-newer", now_ms() + 1000, HOUR))
        .await
        .unwrap();
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &k).await, b(b"elsewhere"));
    assert_eq!(in_primary(&p, &d).await, None, "the delete wins");
    assert_eq!(store.counters().conflicts, 2);
}

#[tokio::test]
async fn an_older_primary_value_is_overwritten() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    let t0 = now_ms();
    let m0 = store.create(&k, &rec_at(b"v0", t0, HOUR)).await.unwrap();
    p.set_mode(FaultMode::Fail);
    // The writer carries created_at over from the session it loaded (as `Sessions` does).
    let mut outage = rec_at(b"outage", t0 + 10, HOUR);
    outage.meta.created_at = m0.created_at;
    let m1 = store.save(&k, &outage).await.unwrap();
    assert_ne!(m1.version, m0.version);
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    let r = p.inner().load(&k).await.unwrap().unwrap();
    assert_eq!(r.payload, Bytes::from_static(b"outage"));
    assert_eq!(
        r.meta.created_at, m0.created_at,
        "replay keeps the record's created_at"
    );
    assert_eq!(
        r.meta.version, m1.version,
        "replay keeps the token of the outage write"
    );
    assert_eq!(
        r.meta.expires_at,
        t0 + 10 + HOUR,
        "the record's own absolute deadline"
    );
}

#[tokio::test]
async fn expired_outage_writes_are_not_replayed() {
    let (p, _s, store) =
        setup(fast().with_probe_backoff(Duration::from_secs(5), Duration::from_secs(5))).await;
    let existing = key();
    let t0 = now_ms();
    store.create(&existing, &rec_at(b"long", t0, HOUR)).await.unwrap();
    p.set_mode(FaultMode::Fail);
    let fresh = key();
    store
        .create(&fresh, &rec_at(b"short", now_ms(), 200))
        .await
        .unwrap();
    store
        .save(&existing, &rec_at(b"short too", now_ms(), 200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.load(&fresh).await.unwrap(), None);
    p.set_mode(FaultMode::Pass);
    // Probes are 5 s apart here: drive recovery by waiting.
    wait_for("recovery", Duration::from_secs(15), || {
        store.state() == CircuitState::Closed && store.journal_len() == 0
    })
    .await;
    assert_eq!(
        in_primary(&p, &fresh).await,
        None,
        "an expired session is not replayed"
    );
    assert_eq!(
        in_primary(&p, &existing).await,
        None,
        "the last acknowledged write expired: the older primary value does not come back"
    );
}

#[tokio::test]
async fn the_journal_bound_refuses_new_keys_and_counts() {
    let (p, _s, store) = setup(fast().with_max_journal_keys(3)).await;
    p.set_mode(FaultMode::Fail);
    let keys: Vec<SessionKey> = (0..3).map(|_| key()).collect();
    for k in &keys {
        store.create(k, &rec(b"in")).await.unwrap();
    }
    let extra = key();
    let e = store.create(&extra, &rec(b"refused")).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.is_temporary());
    assert!(e.to_string().contains("fallback journal full"), "{e}");
    assert!(!e.to_string().contains(extra.id.as_str()));
    assert!(matches!(
        store.delete(&key()).await,
        Err(Error::Unavailable { .. })
    ));
    assert!(
        store.load(&extra).await.unwrap_err().is_temporary(),
        "nothing was stored (and the primary, unreachable, cannot say)"
    );
    // Keys already journaled keep being accepted.
    store.save(&keys[0], &rec(b"again")).await.unwrap();
    assert!(store.delete(&keys[1]).await.unwrap());
    assert_eq!(store.counters().journal_rejected, 2);
    assert_eq!(store.journal_len(), 3);
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &keys[0]).await, b(b"again"));
    assert_eq!(in_primary(&p, &keys[1]).await, None);
    assert_eq!(in_primary(&p, &keys[2]).await, b(b"in"));
    assert_eq!(in_primary(&p, &extra).await, None);
}

#[tokio::test]
async fn starts_open_when_the_primary_is_down_and_recovers() {
    let primary = FaultyStore::new(primary_memory());
    primary.set_mode(FaultMode::Fail);
    let secondary = Arc::new(memory());
    let started = Instant::now();
    let store = FallbackStore::new(Arc::clone(&primary), Arc::clone(&secondary), fast())
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(STARTUP_WAIT_MS) && took < Duration::from_millis(STARTUP_WAIT_MS + 150),
        "start-up waits startup_wait_ms for a first answer, no longer: {took:?}"
    );
    assert!(store.state().is_open());
    let refused = primary.refused();
    let k = key();
    store.create(&k, &rec(b"during")).await.unwrap();
    assert_eq!(primary.refused(), refused, "no primary call while open");
    assert_eq!(store.counters().failovers, 0);
    primary.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&primary, &k).await, b(b"during"));
}

/// A primary that answers a few ms after construction began (a lazy connection) is not an
/// outage: the store starts closed and the first call is served by the primary.
#[tokio::test]
async fn a_primary_that_answers_during_the_startup_wait_starts_closed() {
    let primary = FaultyStore::new(primary_memory());
    primary.set_mode(FaultMode::Fail);
    let later = Arc::clone(&primary);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        later.set_mode(FaultMode::Pass);
    });
    let store = FallbackStore::new(Arc::clone(&primary), Arc::new(memory()), fast())
        .await
        .unwrap();
    assert_eq!(store.state(), CircuitState::Closed);
    assert_eq!(store.counters().opened, 0, "no false outage at start-up");
    let k = key();
    store.create(&k, &rec(b"first")).await.unwrap();
    assert_eq!(in_primary(&primary, &k).await, b(b"first"));
    assert_eq!(store.counters().failovers, 0);
}

/// A secondary that evicts at its bound would drop acknowledged outage writes: refused.
#[tokio::test]
async fn an_evicting_secondary_is_refused() {
    let evicting =
        MemoryStore::new(MemoryConfig::default().with_at_capacity(AtCapacity::EvictSoonestExpiring)).unwrap();
    let e = FallbackStore::new(FaultyStore::new(primary_memory()), evicting, fast())
        .await
        .unwrap_err();
    match &e {
        Error::Config { key, message, .. } => {
            assert_eq!(key, "fallback.secondary");
            assert!(message.contains("reject"), "{message}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn starts_open_when_the_primary_hangs() {
    let primary = FaultyStore::new(primary_memory());
    primary.set_mode(FaultMode::Hang);
    let started = Instant::now();
    let store = FallbackStore::new(Arc::clone(&primary), Arc::new(memory()), fast())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "start-up waits at most the primary timeout"
    );
    assert!(store.state().is_open());
}

#[tokio::test]
async fn permanent_errors_do_not_fail_over() {
    let (p, s, store) = setup(fast()).await;
    let k = key();
    p.set_mode(FaultMode::FailPermanent);
    let e = store.save(&k, &rec(b"x")).await.unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e}");
    assert_eq!(store.state(), CircuitState::Closed);
    assert_eq!(in_secondary(&s, &k).await, None);
    p.set_mode(FaultMode::Pass);
    // Corrupt data in the primary is an error for the caller, not a failover.
    p.inner()
        .put_raw(&k, Bytes::from_static(b"not an envelope"), HOUR)
        .await
        .unwrap();
    let e = store.load(&k).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // Nor are the answers of the contract.
    let c = key();
    store.create(&c, &rec(b"1")).await.unwrap();
    assert!(matches!(
        store.create(&c, &rec(b"2")).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        store.save_if(&c, Version::generate(), &rec(b"2")).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        store.update(&key(), &rec(b"2")).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(store.state(), CircuitState::Closed);
    let c = store.counters();
    assert_eq!((c.failovers, c.opened), (0, 0));
}

#[tokio::test]
async fn a_timed_out_write_that_landed_ends_in_the_acknowledged_state() {
    let (p, _s, store) = setup(fast()).await;
    let saved = key();
    let deleted = key();
    let updated = key();
    store.create(&deleted, &rec(b"to delete")).await.unwrap();
    store.create(&updated, &rec(b"u0")).await.unwrap();
    // Writes reach the primary, then report a timeout.
    p.set_mode(FaultMode::TimeoutAfterWrite(Duration::from_millis(20)));
    store.save(&saved, &rec(b"landed")).await.expect("failed over");
    assert!(store.state().is_open());
    assert_eq!(in_primary(&p, &saved).await, b(b"landed"), "the write did land");
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &saved).await, b(b"landed"));

    p.set_mode(FaultMode::TimeoutAfterWrite(Duration::from_millis(20)));
    store.delete(&deleted).await.expect("failed over");
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &deleted).await, None);

    // An update of a session known from healthy traffic is served from the warm copy
    // (journaled against its version); the primary got the same update.
    p.set_mode(FaultMode::TimeoutAfterWrite(Duration::from_millis(20)));
    store
        .update(&updated, &rec(b"u1"))
        .await
        .expect("served from the warm copy");
    // One the instance holds no copy of reports the primary's timeout: unknown, not NotFound.
    let unknown = key();
    p.inner().create(&unknown, &rec(b"elsewhere")).await.unwrap();
    let e = store.update(&unknown, &rec(b"u1")).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(
        in_primary(&p, &updated).await,
        b(b"u1"),
        "it landed; nothing undid it"
    );
}

#[tokio::test]
async fn a_hung_primary_fails_over_after_the_timeout_and_later_calls_do_not_wait() {
    let (p, _s, store) = setup(
        fast()
            .with_primary_timeout(Duration::from_millis(100))
            .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(100)),
    )
    .await;
    p.set_mode(FaultMode::Hang);
    let k = key();
    let t = Instant::now();
    store.save(&k, &rec(b"x")).await.unwrap();
    let first = t.elapsed();
    assert!(
        first >= Duration::from_millis(100) && first < Duration::from_millis(400),
        "{first:?}"
    );
    assert!(store.state().is_open());
    let mut slowest = Duration::ZERO;
    for i in 0..50u8 {
        let t = Instant::now();
        store.save(&key(), &rec(&[i])).await.unwrap();
        store.load(&k).await.unwrap();
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(60),
        "calls while open waited {slowest:?}"
    );
    // A hanging probe does not close the circuit.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.state().is_open());
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(store.counters().replayed, 51);
}

#[tokio::test]
async fn live_writes_during_replay_are_never_overwritten_by_older_replays() {
    let (p, _s, store) = setup(fast().with_replay_concurrency(1)).await;
    p.set_mode(FaultMode::Fail);
    let keys: Vec<SessionKey> = (0..40).map(|_| key()).collect();
    for k in &keys {
        store.create(k, &rec(b"outage")).await.unwrap();
    }
    // A slow primary makes the replay take ~40 x 2 x 5 ms.
    p.set_mode(FaultMode::Delay(Duration::from_millis(5)));
    wait_for("replay to start", Duration::from_secs(5), || {
        store.state() == CircuitState::Replaying
    })
    .await;
    // Live writes to every key while the replay runs: pending keys are served
    // by the secondary (and re-journaled), replayed ones by the primary.
    for k in keys.iter().rev() {
        store.save(k, &rec(b"live")).await.unwrap();
    }
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    for k in &keys {
        assert_eq!(in_primary(&p, k).await, b(b"live"));
    }
}

#[tokio::test]
async fn a_replay_interrupted_by_another_outage_resumes_idempotently() {
    let (p, _s, store) = setup(fast().with_replay_concurrency(2)).await;
    let pre: Vec<SessionKey> = (0..20).map(|_| key()).collect();
    for k in &pre {
        store.create(k, &rec(b"pre")).await.unwrap();
    }
    p.set_mode(FaultMode::Fail);
    for k in &pre {
        store.save(k, &rec(b"outage")).await.unwrap();
    }
    for k in pre.iter().step_by(2) {
        store.delete(k).await.unwrap();
    }
    // Flap: up slowly, down again mid-replay, up again.
    p.set_mode(FaultMode::Delay(Duration::from_millis(10)));
    wait_for("replay to start", Duration::from_secs(5), || {
        store.state() == CircuitState::Replaying
    })
    .await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    p.set_mode(FaultMode::TimeoutAfterWrite(Duration::from_millis(10)));
    wait_for("the circuit to reopen", Duration::from_secs(5), || {
        store.state().is_open()
    })
    .await;
    assert!(store.journal_len() > 0);
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    for (i, k) in pre.iter().enumerate() {
        let want = if i % 2 == 0 { None } else { b(b"outage") };
        assert_eq!(in_primary(&p, k).await, want, "key {i}");
    }
    assert!(store.counters().opened >= 2);
}

#[tokio::test]
async fn versions_across_the_switch_never_overwrite_silently() {
    let (p, s, store) = setup(fast()).await;
    let k = key();
    // Written by another instance a second ago: this one holds no copy. (Replay resolves it
    // against the outage write by updated-at; in the same millisecond, by token.)
    let pre = p
        .inner()
        .create(&k, &rec_at(b"v1", now_ms() - 1_000, HOUR))
        .await
        .unwrap();
    assert!(!pre.version.is_none());
    p.set_mode(FaultMode::Fail);
    // A pre-outage token on a session the fallback cannot see: the failing
    // call itself gets the primary's error (its outcome is unknown), later
    // ones a temporary "cannot tell". Nothing is written anywhere.
    let e = store.save_if(&k, pre.version, &rec(b"x")).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let e = store.save_if(&k, pre.version, &rec(b"x")).await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    assert_eq!(in_secondary(&s, &k).await, None);
    assert_eq!(in_primary(&p, &k).await, b(b"v1"));
    // Written during the outage: fresh tokens, and compare-and-set works on them.
    let a = store.save(&k, &rec(b"a")).await.unwrap();
    assert_ne!(a.version, pre.version);
    let b2 = store.save_if(&k, a.version, &rec(b"b")).await.unwrap();
    assert_ne!(b2.version, a.version);
    assert_ne!(b2.version, pre.version);
    // A stale outage token conflicts.
    match store.save_if(&k, a.version, &rec(b"c")).await {
        Err(Error::Conflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (a.version, b2.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // A token the secondary never stored (read from the primary before the
    // outage) matches nothing there: Conflict, never an overwrite.
    match store.save_if(&k, pre.version, &rec(b"c")).await {
        Err(Error::Conflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (pre.version, b2.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(payload(&store, &k).await, b(b"b"));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    let after = store.load(&k).await.unwrap().unwrap();
    assert_eq!(after.payload, Bytes::from_static(b"b"));
    assert_eq!(
        after.meta.version, b2.version,
        "replay copies the outage write with its token"
    );
    assert_eq!(version_in_primary(&p, &k).await, Some(b2.version));
    // Neither the pre-outage token nor a stale outage token overwrites it.
    for stale in [pre.version, a.version] {
        match store.save_if(&k, stale, &rec(b"d")).await {
            Err(Error::Conflict { expected, actual, .. }) => {
                assert_eq!((expected, actual), (stale, b2.version));
            }
            other => panic!("expected Conflict, got {other:?}"),
        }
    }
    assert_eq!(in_primary(&p, &k).await, b(b"b"));
    // The token read during the outage goes on working after recovery.
    let d = store.save_if(&k, b2.version, &rec(b"d")).await.unwrap();
    assert_ne!(d.version, b2.version);
    assert_eq!(in_primary(&p, &k).await, b(b"d"));
    assert_eq!(version_in_primary(&p, &k).await, Some(d.version));
}

#[tokio::test]
async fn a_pre_outage_token_of_an_untouched_session_still_works_after_recovery() {
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    let pre = store.create(&k, &rec(b"v1")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    // Open the circuit with another session; this one is not touched.
    store.save(&key(), &rec(b"other")).await.unwrap();
    assert!(store.state().is_open());
    // The session is in the warm copy: its token works during the outage.
    let during = store.save_if(&k, pre.version, &rec(b"x")).await.unwrap();
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    // The primary still held the write the outage change was based on: applied, no conflict.
    assert_eq!(version_in_primary(&p, &k).await, Some(during.version));
    assert_eq!(store.counters().conflicts, 0);
    let m = store.save_if(&k, during.version, &rec(b"v2")).await.unwrap();
    assert_ne!(m.version, during.version);
    assert_eq!(in_primary(&p, &k).await, b(b"v2"));
}

#[tokio::test]
async fn an_outage_write_with_a_pre_outage_token_is_refused_across_replay() {
    // One client read the session before the outage; another overwrote it
    // during the outage. The first client's compare-and-set must fail both
    // while the circuit is open and after replay.
    let (p, _s, store) = setup(fast()).await;
    let k = key();
    let pre = store.create(&k, &rec(b"v1")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    let outage = store.save(&k, &rec(b"outage")).await.unwrap();
    assert!(matches!(
        store.save_if(&k, pre.version, &rec(b"lost update")).await,
        Err(Error::Conflict { .. })
    ));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(version_in_primary(&p, &k).await, Some(outage.version));
    match store.save_if(&k, pre.version, &rec(b"lost update")).await {
        Err(Error::Conflict { expected, actual, .. }) => {
            assert_eq!((expected, actual), (pre.version, outage.version));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(in_primary(&p, &k).await, b(b"outage"));
}

#[tokio::test]
async fn no_aba_across_delete_and_recreate_during_the_outage() {
    let (p, _s, store) = setup(fast()).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    let first = store.create(&k, &rec(b"first")).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    let second = store.create(&k, &rec(b"second")).await.unwrap();
    assert_ne!(first.version, second.version, "a new incarnation, a new token");
    assert!(matches!(
        store.save_if(&k, first.version, &rec(b"aba")).await,
        Err(Error::Conflict { .. })
    ));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(version_in_primary(&p, &k).await, Some(second.version));
    assert!(matches!(
        store.save_if(&k, first.version, &rec(b"aba")).await,
        Err(Error::Conflict { .. })
    ));
    store.save_if(&k, second.version, &rec(b"third")).await.unwrap();
    assert_eq!(in_primary(&p, &k).await, b(b"third"));
}

#[tokio::test]
async fn a_past_deadline_outage_write_over_a_primary_session_leaves_no_key() {
    let (p, s, store) = setup(fast()).await;
    let k = key();
    let t0 = now_ms();
    store.create(&k, &rec_at(b"live", t0, HOUR)).await.unwrap();
    p.set_mode(FaultMode::Fail);
    // Written now, with a deadline already passed: no session is left behind.
    let now = now_ms();
    let mut past = rec_at(b"gone", now, HOUR);
    past.meta.expires_at = now.saturating_sub(1_000);
    store.save(&k, &past).await.unwrap();
    assert_eq!(store.journal_len(), 1);
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(s.get_raw(&k).await.unwrap(), None, "no key in the secondary");
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(
        p.inner().get_raw(&k).await.unwrap(),
        None,
        "the older primary value is removed, not kept"
    );
    // No trace is left, so within the recovery grace this instance can't tell the session
    // from one another instance has yet to replay.
    assert!(matches!(store.load(&k).await, Err(Error::Unavailable { .. })));
    store
        .create(&k, &rec(b"again"))
        .await
        .expect("a later create succeeds");
}

#[tokio::test]
async fn rotate_while_open_journals_both_ids() {
    let (p, s, store) = setup(fast()).await;
    let pre = key();
    store.create(&pre, &rec(b"pre")).await.unwrap();
    let elsewhere = key();
    p.inner().create(&elsewhere, &rec(b"elsewhere")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    // A session known from healthy traffic (the warm copy) can be rotated during the outage.
    let pre_id = SessionId::generate().unwrap();
    store.rotate(&pre, &pre_id).await.unwrap();
    let pre_moved = SessionKey::new(pre.namespace.clone(), pre_id);
    // One this instance holds no copy of cannot: whether it exists is unknown.
    let e = store
        .rotate(&elsewhere, &SessionId::generate().unwrap())
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let k = key();
    let created = store.create(&k, &rec(b"mine")).await.unwrap();
    let new_id = SessionId::generate().unwrap();
    let m = store.rotate(&k, &new_id).await.unwrap();
    assert_eq!(m.version, created.version, "rotate keeps the session's token");
    let nk = SessionKey::new(k.namespace.clone(), new_id);
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(payload(&store, &nk).await, b(b"mine"));
    assert_eq!(store.journal_len(), 4);
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &k).await, None);
    assert_eq!(in_primary(&p, &nk).await, b(b"mine"));
    assert_eq!(
        version_in_primary(&p, &nk).await,
        Some(created.version),
        "replay keeps the token"
    );
    assert_eq!(in_primary(&p, &pre).await, None, "the old id is gone");
    assert_eq!(in_primary(&p, &pre_moved).await, b(b"pre"));
    assert_eq!(in_primary(&p, &elsewhere).await, b(b"elsewhere"));
    assert_eq!(in_secondary(&s, &nk).await, None);
}

#[tokio::test]
async fn batches_count_and_stats_while_open() {
    let (p, _s, store) = setup(fast()).await;
    let pre = key();
    store.create(&pre, &rec(b"pre")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    let items: Vec<(SessionKey, Record)> = (0..10u8).map(|i| (key(), rec(&[i]))).collect();
    let metas = store.save_many(&items).await.unwrap();
    let tokens: std::collections::HashSet<Version> = metas.iter().map(|m| m.version).collect();
    assert_eq!(tokens.len(), items.len(), "one fresh token per write");
    assert!(!tokens.contains(&Version::NONE));
    let mut keys: Vec<SessionKey> = items.iter().map(|(k, _)| k.clone()).collect();
    keys.push(pre.clone());
    let got = store.load_many(&keys).await.unwrap();
    assert!(got[..10].iter().all(|r| r.as_ref().unwrap().is_some()));
    assert!(
        got[10].as_ref().unwrap().is_some(),
        "a session served before the outage is read from the warm copy"
    );
    let unknown = [key()];
    let got_unknown = store.load_many(&unknown).await.unwrap();
    assert!(
        got_unknown[0].as_ref().unwrap_err().is_temporary(),
        "one this instance never saw is unknown, not a miss"
    );
    assert_eq!(
        store.count(&pre.namespace).await.unwrap(),
        10,
        "count while open is the secondary's"
    );
    let st = store.stats().await.unwrap();
    assert_eq!(st.backend, "fallback");
    assert!(st.extra.contains(&("journal", 10)));
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(store.count(&pre.namespace).await.unwrap(), 11);
    let got = store.load_many(&keys).await.unwrap();
    assert!(got.iter().all(|r| r.as_ref().unwrap().is_some()));
    for (r, m) in got.iter().zip(&metas) {
        assert_eq!(
            r.as_ref().unwrap().as_ref().unwrap().meta.version,
            m.version,
            "replay keeps each token"
        );
    }
}

#[tokio::test]
async fn a_failure_threshold_above_one_keeps_the_circuit_closed_until_reached() {
    let (p, s, store) = setup(fast().with_failure_threshold(3)).await;
    p.set_mode(FaultMode::Fail);
    let a = key();
    store.save(&a, &rec(b"a")).await.unwrap();
    store.save(&key(), &rec(b"b")).await.unwrap();
    assert_eq!(store.state(), CircuitState::Closed);
    assert_eq!(store.journal_len(), 2);
    assert_eq!(
        payload(&store, &a).await,
        b(b"a"),
        "a journaled key is read from the secondary"
    );
    assert_eq!(store.counters().failovers, 2);
    // The primary comes back before the threshold: the journal drains while closed.
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &a).await, b(b"a"));
    assert_eq!(in_secondary(&s, &a).await, None);
    assert_eq!(store.counters().opened, 0);
    p.set_mode(FaultMode::Fail);
    for _ in 0..3 {
        store.save(&key(), &rec(b"x")).await.unwrap();
    }
    assert!(store.state().is_open());
}

#[tokio::test]
async fn dropping_the_store_ends_the_probe_task() {
    let primary = FaultyStore::new(primary_memory());
    primary.set_mode(FaultMode::Fail);
    let store = FallbackStore::new(Arc::clone(&primary), Arc::new(memory()), fast())
        .await
        .unwrap();
    assert!(store.state().is_open());
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(store);
    wait_for(
        "the probe task to let go of the primary",
        Duration::from_secs(2),
        || Arc::strong_count(&primary) == 1,
    )
    .await;
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let e = FallbackStore::new(
        FaultyStore::new(primary_memory()),
        memory(),
        FallbackConfig::default().with_max_journal_keys(0),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Config { ref key, .. } if key == "fallback.max_journal_keys"),
        "{e}"
    );
}

#[tokio::test]
async fn below_the_threshold_a_down_primary_opens_the_circuit_without_hammering() {
    let (p, _s, store) = setup(fast().with_failure_threshold(3)).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    store.save(&k, &rec(b"x")).await.unwrap();
    // The background task tries to replay the journaled key; its failures
    // count toward the threshold, with backoff between attempts.
    wait_for("the circuit to open", Duration::from_secs(5), || {
        store.state().is_open()
    })
    .await;
    assert!(p.refused() <= 4, "primary calls: {}", p.refused());
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    assert_eq!(in_primary(&p, &k).await, b(b"x"));
}

#[tokio::test]
async fn a_leftover_in_the_secondary_is_never_served() {
    let (p, s, store) = setup(fast()).await;
    let k = key();
    // Not journaled: e.g. left by an earlier process sharing the secondary.
    let stale = s.save(&k, &rec(b"stale")).await.unwrap();
    p.set_mode(FaultMode::Fail);
    store.save(&key(), &rec(b"open it")).await.unwrap();
    assert!(store.state().is_open());
    // Not served: this instance holds no copy of the session, so it cannot tell.
    assert!(store.load(&k).await.unwrap_err().is_temporary());
    assert!(store.touch(&k, now_ms() + HOUR).await.unwrap_err().is_temporary());
    let m = store
        .create(&k, &rec(b"fresh"))
        .await
        .expect("the leftover does not block create");
    assert_ne!(m.version, stale.version);
    assert!(matches!(
        store.save_if(&k, stale.version, &rec(b"via the leftover")).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(payload(&store, &k).await, b(b"fresh"));
}

#[tokio::test]
async fn touch_while_open_is_replayed_with_the_new_deadline() {
    let (p, _s, store) = setup(fast()).await;
    p.set_mode(FaultMode::Fail);
    let k = key();
    store.create(&k, &rec_at(b"x", now_ms(), 60_000)).await.unwrap();
    let deadline = now_ms() + 2 * HOUR;
    assert!(store.touch(&k, deadline).await.unwrap());
    p.set_mode(FaultMode::Pass);
    wait_closed(&store).await;
    let r = p.inner().load(&k).await.unwrap().unwrap();
    assert_eq!(r.meta.deadline(), deadline);
}

#[tokio::test]
async fn wraps_trait_objects_and_is_one() {
    let primary: Arc<dyn SessionStore> = Arc::new(primary_memory());
    let secondary: Arc<dyn SessionStore> = Arc::new(memory());
    let store: Arc<dyn SessionStore> = Arc::new(
        FallbackStore::new(primary, secondary, FallbackConfig::default())
            .await
            .unwrap(),
    );
    assert_eq!(store.backend(), "fallback");
    let k = key();
    store.create(&k, &rec(b"dyn")).await.unwrap();
    assert_eq!(
        store.load(&k).await.unwrap().unwrap().payload,
        Bytes::from_static(b"dyn")
    );
}

/// Two instances that start during one outage, each with its own secondary, write the same
/// caller-chosen id: their versions differ, so a `save_if` with the version read from one never
/// succeeds on the other's different value.
#[tokio::test]
async fn two_instances_starting_in_an_outage_never_share_a_version() {
    let shared = FaultyStore::new(primary_memory());
    shared.set_mode(FaultMode::Fail);
    let one = FallbackStore::new(Arc::clone(&shared), Arc::new(memory()), fast())
        .await
        .unwrap();
    let two = FallbackStore::new(Arc::clone(&shared), Arc::new(memory()), fast())
        .await
        .unwrap();
    assert!(one.state().is_open() && two.state().is_open());
    let k = key();
    let va = one.create(&k, &rec(b"from a")).await.unwrap().version;
    let vb = two.create(&k, &rec(b"from b")).await.unwrap().version;
    assert_ne!(va, vb, "two instances handed out the same first version");
    let e = two.save_if(&k, va, &rec(b"a's client on b")).await.unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    assert_eq!(payload(&two, &k).await, b(b"from b"));
}

/// A batch gets one primary timeout per started `batch_keys_per_deadline` keys: a batch that a
/// slow but healthy primary answers within that is served by it, not failed over as misses.
#[tokio::test]
async fn batch_deadlines_scale_with_the_batch() {
    let mut config = fast();
    config.batch_keys_per_deadline = 10;
    let (p, _s, store) = setup(config).await;
    let keys: Vec<SessionKey> = (0..25).map(|_| key()).collect();
    for k in &keys {
        store.create(k, &rec(b"v")).await.unwrap();
    }
    // 200 ms per call: over one primary timeout (150 ms), under three (25 keys → 450 ms).
    p.set_mode(FaultMode::Delay(Duration::from_millis(200)));
    let found = store.load_many(&keys).await.unwrap();
    assert_eq!(found.iter().filter(|r| matches!(r, Ok(Some(_)))).count(), 25);
    assert_eq!(store.counters().failovers, 0, "the batch was not cut off");
    assert_eq!(store.state(), CircuitState::Closed);
    // A single call that slow is failed over.
    let _ = store.load(&keys[0]).await;
    assert_eq!(store.counters().failovers, 1);
}

/// Sessions two instances served before an outage stay readable and updatable on each during
/// it (their warm copies), and after recovery the primary holds the later of their last
/// updates — the same whichever replays first.
#[tokio::test]
async fn pre_outage_sessions_stay_usable_on_two_instances() {
    let shared = FaultyStore::new(primary_memory());
    let one = FallbackStore::new(Arc::clone(&shared), Arc::new(memory()), fast())
        .await
        .unwrap();
    let two = FallbackStore::new(Arc::clone(&shared), Arc::new(memory()), fast())
        .await
        .unwrap();
    let keys: Vec<SessionKey> = (0..20).map(|_| key()).collect();
    for k in &keys {
        one.create(k, &rec(b"before")).await.unwrap();
        // The other instance serves each session once too.
        assert!(two.load(k).await.unwrap().is_some());
    }
    shared.set_mode(FaultMode::Fail);
    let t0 = now_ms();
    let mut readable = 0;
    for (i, k) in keys.iter().enumerate() {
        if one.load(k).await.unwrap().is_some() && two.load(k).await.unwrap().is_some() {
            readable += 1;
        }
        // Ten updates each, interleaved; two's last one is later.
        for n in 0..10u64 {
            let at = t0 + 2 * n;
            one.update(k, &rec_at(format!("one {i} {n}").as_bytes(), at, HOUR))
                .await
                .unwrap();
            two.update(k, &rec_at(format!("two {i} {n}").as_bytes(), at + 1, HOUR))
                .await
                .unwrap();
        }
    }
    assert_eq!(
        readable,
        keys.len(),
        "every pre-outage session was readable on both"
    );
    shared.set_mode(FaultMode::Pass);
    wait_closed(&one).await;
    wait_closed(&two).await;
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            in_primary(&shared, k).await,
            Some(Bytes::from(format!("two {i} 9"))),
            "the later of the two last updates"
        );
    }
    println!(
        "FIGURES continuity: sessions={} readable_on_both={readable} updates_per_instance=10 kept_last=all conflicts={}",
        keys.len(),
        one.counters().conflicts + two.counters().conflicts
    );
}

/// After a full outage the instances recover one at a time. A session created on instance two
/// during the outage is only in its journal until it replays; meanwhile instance one, recovered,
/// answers "can't tell" for it (a miss would be taken for a logout), a logged-out session as a
/// miss (its tombstone is in the primary), and the session itself once two has replayed it.
#[tokio::test]
async fn after_a_recovery_a_session_another_instance_has_yet_to_replay_is_not_a_miss() {
    let shared = Arc::new(primary_memory());
    let (p_one, p_two) = (
        FaultyStore::new(Arc::clone(&shared)),
        FaultyStore::new(Arc::clone(&shared)),
    );
    let one = FallbackStore::new(Arc::clone(&p_one), Arc::new(memory()), fast())
        .await
        .unwrap();
    let two = FallbackStore::new(Arc::clone(&p_two), Arc::new(memory()), fast())
        .await
        .unwrap();
    let gone = key();
    one.create(&gone, &rec(b"logged in")).await.unwrap();
    assert!(one.delete(&gone).await.unwrap());
    p_one.set_mode(FaultMode::Fail);
    p_two.set_mode(FaultMode::Fail);
    let k = key();
    two.create(&k, &rec(b"created during the outage")).await.unwrap();
    // One meets the outage too: a session it holds no copy of can't be told.
    assert!(matches!(one.load(&key()).await, Err(Error::Unavailable { .. })));
    assert!(one.state().is_open());
    p_one.set_mode(FaultMode::Pass);
    wait_closed(&one).await;
    // One has recovered; two is still cut off, its journal holding K.
    let e = one.load(&k).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("recovery_grace_ms"), "{e}");
    assert_eq!(
        one.load(&gone).await.unwrap(),
        None,
        "a logged-out session is known gone"
    );
    let both = one.load_many(&[k.clone(), gone.clone()]).await.unwrap();
    assert!(matches!(both[0], Err(Error::Unavailable { .. })), "{:?}", both[0]);
    assert!(matches!(both[1], Ok(None)), "{:?}", both[1]);
    assert_eq!(one.counters().recovery_unknown, 2);
    p_two.set_mode(FaultMode::Pass);
    wait_closed(&two).await;
    assert_eq!(payload(&one, &k).await, b(b"created during the outage"));
}

/// The recovery grace lasts `recovery_grace_ms`: afterwards a session the primary holds no
/// trace of is a miss again. With the grace off, it is one right after the recovery.
#[tokio::test]
async fn the_recovery_grace_ends_and_can_be_turned_off() {
    for grace in [Duration::from_millis(300), Duration::ZERO] {
        let (p, _s, store) = setup(fast().with_recovery_grace(grace)).await;
        p.set_mode(FaultMode::Fail);
        assert!(store.load(&key()).await.is_err());
        p.set_mode(FaultMode::Pass);
        wait_closed(&store).await;
        let k = key();
        if !grace.is_zero() {
            assert!(matches!(store.load(&k).await, Err(Error::Unavailable { .. })));
            tokio::time::sleep(grace + Duration::from_millis(100)).await;
        }
        assert_eq!(store.load(&k).await.unwrap(), None, "grace {grace:?}");
        assert_eq!(
            store.load_many(std::slice::from_ref(&k)).await.unwrap()[0]
                .as_ref()
                .unwrap(),
            &None
        );
    }
}

/// The warm copy is bounded: beyond `warm_entries` the oldest go, counted.
#[tokio::test]
async fn the_warm_copy_is_bounded_and_counts_evictions() {
    let mut config = fast();
    config.warm_entries = 32;
    let (_p, _s, store) = setup(config).await;
    for _ in 0..500 {
        store.create(&key(), &rec(b"x")).await.unwrap();
    }
    let stats = store.stats().await.unwrap();
    let extra = |name: &str| stats.extra.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let held = extra("warm").unwrap();
    assert!(held <= 32 + 16, "held {held}");
    assert_eq!(extra("warm_evicted").unwrap() + held, 500);
}
