//! The fallback over Redis behind a [`FaultProxy`] that holds a connection's bytes and delivers
//! them later (a partition, not a hang):
//!
//! * a write the primary timed out on is acknowledged from the secondary; newer writes and a
//!   delete follow, the journal is replayed, and only then does the network deliver the old
//!   bytes — the replayed state must stay;
//! * Redis at maxmemory: writes are refused (not failed over), reads keep coming from Redis and
//!   the circuit never opens.
//!
//! Only with `SESSION_TEST_FAULTS=1`. Each prints one `FIGURES …` line; Redis is read on a raw
//! socket afterwards and compared with what the callers were told.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_fallback::{CircuitState, FallbackConfig, FallbackStore};
use session_memory::{AtCapacity, MemoryConfig, MemoryStore};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::{info_field, Reply};
use testkit_redis::{faults_enabled, Direction, FaultProxy, Mode, RedisServer};

const PREFIX: &str = "p:";
const HOUR_MS: u64 = 3_600_000;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn redis_config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = 250;
    c.tombstone_ttl_ms = 600_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c
}

async fn fallback(url: String) -> FallbackStore<RedisStore, MemoryStore> {
    let redis = RedisStore::builder(redis_config(url))
        .options(StoreOptions::new(KeyPrefix::new(PREFIX).unwrap()))
        .connect()
        .await
        .expect("redis connects");
    let memory = MemoryStore::with_options(
        MemoryConfig::default().with_at_capacity(AtCapacity::Reject),
        StoreOptions::new(KeyPrefix::new(PREFIX).unwrap()),
    )
    .unwrap();
    let config = FallbackConfig::default()
        .with_primary_timeout(Duration::from_millis(300))
        .with_probe_backoff(Duration::from_millis(50), Duration::from_millis(400));
    FallbackStore::new(redis, memory, config).await.unwrap()
}

fn record(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR_MS)
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

/// The payload Redis holds under `key`, read on a raw socket.
fn in_redis(server: &RedisServer, key: &SessionKey) -> Option<Vec<u8>> {
    match server
        .cmd(&["GET", &format!("{PREFIX}task:{}", key.id.as_str())])
        .unwrap()
    {
        Reply::Bulk(Some(bytes)) => match session_core::backend::decode_entry(&bytes.into(), "task").unwrap()
        {
            // A logout's tombstone: the session is gone.
            session_core::backend::Entry::Tombstone(_) => None,
            session_core::backend::Entry::Live(r) => Some(r.payload.to_vec()),
        },
        Reply::Bulk(None) => None,
        other => panic!("GET answered {other:?}"),
    }
}

/// A held write delivered after the fallback replayed newer state: the replayed state stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_write_delivered_after_replay() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let store = fallback(proxy.url()).await;
    let (k, gone) = (new_key(), new_key());
    store.save(&k, &record(b"v1")).await.unwrap();
    store.save(&gone, &record(b"to be deleted")).await.unwrap();
    assert_eq!(store.state(), CircuitState::Closed);

    // Every connection the store has now is held; connections made later pass.
    proxy.set_all(Mode::Hold(Direction::Both));
    let cut = Instant::now();
    // The primary times out; the caller is answered from the secondary.
    store.save(&k, &record(b"v2 (held)")).await.unwrap();
    let failed_over_ms = cut.elapsed().as_millis();
    store.save(&k, &record(b"v3")).await.unwrap();
    // (The answer is `false`: the secondary never held it. The delete is journaled all the same.)
    store.delete(&gone).await.unwrap();
    // Recovery: the store reconnects (new connections pass), fences the held one, replays.
    let limit = Instant::now() + Duration::from_secs(20);
    while !(store.state() == CircuitState::Closed && store.journal_len() == 0) {
        assert!(Instant::now() < limit, "no recovery: {:?}", store.state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered_ms = cut.elapsed().as_millis();
    // Only now does the network deliver the held bytes.
    proxy.release_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (found, resurrected) = (in_redis(&server, &k), in_redis(&server, &gone));
    let c = store.counters();
    println!(
        "FIGURES held-write-after-replay: failed_over_ms={failed_over_ms} recovered_ms={recovered_ms} \
         replayed={} fenced_connections={} final={:?} resurrected={}",
        c.replayed,
        store.primary().fenced_connections(),
        found.as_deref().map(String::from_utf8_lossy),
        u8::from(resurrected.is_some()),
    );
    assert_eq!(
        found.as_deref(),
        Some(&b"v3"[..]),
        "the held write overwrote the replayed value"
    );
    assert!(resurrected.is_none(), "a replayed delete was undone");
}

/// Redis at maxmemory: the fallback does not fail over on `OOM`; reads of every existing session
/// keep coming from Redis and the circuit stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oom_does_not_open_the_circuit() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let store = fallback(server.url()).await;
    let keys: Vec<SessionKey> = (0..100).map(|_| new_key()).collect();
    for k in &keys {
        store.save(k, &record(&[7u8; 1000])).await.unwrap();
    }
    let used = info_field(&server.cli(&["INFO", "memory"]).unwrap(), "used_memory").unwrap();
    server.cmd(&["CONFIG", "SET", "maxmemory", &used]).unwrap();
    server
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    let (mut refused, mut reads) = (0, 0);
    for k in &keys {
        match store.save(&new_key(), &record(&[1u8; 4000])).await {
            Err(Error::Refused { code: "OOM", .. }) => refused += 1,
            Ok(_) => {}
            Err(e) => panic!("write: {e}"),
        }
        if store.load(k).await.unwrap().is_some() {
            reads += 1;
        }
    }
    let c = store.counters();
    println!(
        "FIGURES fallback-oom: writes={} refused_oom={refused} reads_served={reads} failovers={} opened={}",
        keys.len(),
        c.failovers,
        c.opened
    );
    assert!(refused > 0);
    assert_eq!(reads, keys.len());
    assert_eq!((c.failovers, c.opened), (0, 0));
    assert_eq!(store.state(), CircuitState::Closed);
}
