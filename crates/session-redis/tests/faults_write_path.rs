//! The write path under partitions, not only hangs: each scenario puts the store behind a
//! [`FaultProxy`] that holds a connection's bytes and delivers them later, then reads the server
//! directly (a raw socket, not the store) and compares with what the callers were told.
//!
//! * a held write delivered after a newer write, and after a delete: the newer state stays;
//! * `rotate` while Redis stalls (`CLIENT PAUSE … WRITE`): the session is under exactly one id;
//! * a held connection while health probes run: replaced, and how fast;
//! * Redis at `maxmemory`: writes are `Refused`, reads still served;
//! * plain writes are one native command each (`INFO commandstats`), and with tombstones on
//!   `update` and `delete` one script each, an `update` after the delete writing nothing;
//! * one clock: a key Redis holds is live whatever its header says.
//!
//! Only with `SESSION_TEST_FAULTS=1` (the `faults` cell of `cargo xtask test`). Each prints one
//! `FIGURES …` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Error, Namespace, SessionId, SessionKey, SessionStore, Version};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::{info_field, Reply};
use testkit_redis::{faults_enabled, Direction, FaultProxy, Mode, RedisServer};

const TIMEOUT_MS: u64 = 250;
const HOUR_MS: u64 = 3_600_000;

/// The scenarios measure timing: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = TIMEOUT_MS;
    c.unresponsive_timeout_ms = 2_000;
    c.reconnect.min_delay_ms = 20;
    c.reconnect.max_delay_ms = 200;
    c
}

/// Connects a store whose keys start with `w:`.
async fn connect(config: RedisConfig) -> session_core::Result<RedisStore> {
    let options = session_core::StoreOptions::new(session_core::KeyPrefix::new("w:").unwrap());
    RedisStore::builder(config).options(options).connect().await
}

fn record(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR_MS)
}

fn new_key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

fn full(key: &SessionKey) -> String {
    format!("w:task:{}", key.id.as_str())
}

/// The payload Redis holds under `key`, read on a raw socket.
fn payload_in_redis(server: &RedisServer, key: &SessionKey) -> Option<Vec<u8>> {
    match server.cmd(&["GET", &full(key)]).unwrap() {
        Reply::Bulk(Some(bytes)) => Some(
            Record::decode(&bytes.into(), "task")
                .expect("an envelope")
                .payload
                .to_vec(),
        ),
        Reply::Bulk(None) => None,
        other => panic!("GET answered {other:?}"),
    }
}

async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// A store behind its own proxy, and the server.
async fn behind_proxy() -> (RedisServer, FaultProxy, RedisStore) {
    let server = RedisServer::start().expect("redis-server starts");
    let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into()).expect("proxy starts");
    let store = connect(config(proxy.url())).await.expect("store connects");
    (server, proxy, store)
}

/// The store's write on `key` is sent while every connection it has is held (a partition), so
/// it times out; the store may not write again until the old connection is confirmed closed.
/// Returns how long that took.
async fn write_into_a_partition(
    proxy: &FaultProxy,
    store: &RedisStore,
    key: &SessionKey,
) -> (Error, Duration) {
    proxy.set_all(Mode::Hold(Direction::Both));
    let started = Instant::now();
    let err = store.save(key, &record(b"held")).await.unwrap_err();
    assert!(err.is_temporary(), "{err}");
    // The control connection was held too: the store reconnects it (new connections pass) and
    // kills the held data connection before it writes again.
    eventually("writes resume", Duration::from_secs(10), || {
        !store.writes_fenced_off()
    })
    .await;
    (err, started.elapsed())
}

/// A held `save` delivered after a newer `save` from the same store: the newer value stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_write_delivered_after_a_newer_write() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (server, proxy, store) = behind_proxy().await;
    let key = new_key();
    store.save(&key, &record(b"v1")).await.unwrap();
    let (err, fenced_after) = write_into_a_partition(&proxy, &store, &key).await;
    // A newer write (a retry, or the next request) is acknowledged ...
    let newer = Instant::now();
    let mut attempts = 0;
    while store.save(&key, &record(b"v3")).await.is_err() {
        attempts += 1;
        assert!(
            newer.elapsed() < Duration::from_secs(10),
            "no write succeeded after the fence"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and only then the network delivers the old bytes.
    proxy.release_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = payload_in_redis(&server, &key);
    println!(
        "FIGURES held-write-after-newer: first_error={} fenced_after_ms={} retries_before_ok={attempts} \
         fenced_connections={} final={:?}",
        err.kind().as_str(),
        fenced_after.as_millis(),
        store.fenced_connections(),
        found.as_deref().map(String::from_utf8_lossy),
    );
    assert_eq!(
        found.as_deref(),
        Some(&b"v3"[..]),
        "the held write landed over the newer one"
    );
}

/// A held `save` delivered after the session was deleted (a logout): it stays deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_write_delivered_after_a_delete() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (server, proxy, store) = behind_proxy().await;
    let key = new_key();
    store.save(&key, &record(b"v1")).await.unwrap();
    let (err, fenced_after) = write_into_a_partition(&proxy, &store, &key).await;
    let mut deleted = false;
    let started = Instant::now();
    while !deleted {
        match store.delete(&key).await {
            Ok(_) => deleted = true,
            Err(e) => {
                assert!(e.is_temporary(), "{e}");
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "delete never went through"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    proxy.release_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let found = payload_in_redis(&server, &key);
    println!(
        "FIGURES held-write-after-delete: first_error={} fenced_after_ms={} resurrected={}",
        err.kind().as_str(),
        fenced_after.as_millis(),
        u8::from(found.is_some()),
    );
    assert!(found.is_none(), "the held write brought the deleted session back");
}

/// One connection held (the others, and new ones, pass): the write times out, the store kills
/// that connection at once through its control connection and reports only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_held_connection_is_fenced_before_the_error() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (server, proxy, store) = behind_proxy().await;
    let key = new_key();
    store.save(&key, &record(b"v1")).await.unwrap();
    // The data connection is the one with traffic; the control connection has sent less.
    let conns = proxy.connections();
    let data = conns
        .iter()
        .max_by_key(|c| c.to_server.forwarded)
        .map(|c| c.id)
        .unwrap();
    proxy.set_mode(data, Mode::Hold(Direction::Both)).unwrap();
    let started = Instant::now();
    let err = store.save(&key, &record(b"held")).await.unwrap_err();
    let reported = started.elapsed();
    // Fenced before the error: no pause for later writes.
    assert!(
        !store.writes_fenced_off(),
        "the store could not fence through its control connection"
    );
    proxy.release_all();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_release = payload_in_redis(&server, &key);
    // The pool reconnects by itself.
    let recovered = Instant::now();
    while store.save(&key, &record(b"v3")).await.is_err() {
        assert!(
            recovered.elapsed() < Duration::from_secs(10),
            "the store did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "FIGURES held-connection-fenced: error={} reported_ms={} landed_after_release={} \
         reconnect_ms={}",
        err.kind().as_str(),
        reported.as_millis(),
        u8::from(after_release.as_deref() == Some(&b"held"[..])),
        recovered.elapsed().as_millis(),
    );
    assert_eq!(
        after_release.as_deref(),
        Some(&b"v1"[..]),
        "the timed-out write landed"
    );
}

/// `rotate` while Redis stalls writes for 700 ms (a fork or fsync stall): the call times out,
/// and afterwards the session is under exactly one of the two ids; `rotate` again with the same
/// new id settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotate_under_client_pause_keeps_the_session() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let store = connect(config(server.url())).await.unwrap();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let key = new_key();
        store.create(&key, &record(b"user")).await.unwrap();
        let new_key_ = SessionKey::new(key.namespace.clone(), SessionId::generate().unwrap());
        server.cmd(&["CLIENT", "PAUSE", "700", "WRITE"]).unwrap();
        let outcome = store.rotate(&key, &new_key_.id).await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        let (old, new) = (
            payload_in_redis(&server, &key),
            payload_in_redis(&server, &new_key_),
        );
        let places = usize::from(old.is_some()) + usize::from(new.is_some());
        assert_eq!(places, 1, "after {outcome:?}: old={old:?} new={new:?}");
        // Retrying with the same new id finishes the move, or says the first call did.
        let retry = store.rotate(&key, &new_key_.id).await;
        match &retry {
            Ok(_) => {}
            Err(Error::NotFound { .. }) => assert!(new.is_some()),
            Err(e) => panic!("retry: {e}"),
        }
        assert!(payload_in_redis(&server, &key).is_none());
        assert_eq!(
            payload_in_redis(&server, &new_key_).as_deref(),
            Some(&b"user"[..])
        );
        runs.push((outcome.map(drop).map_err(|e| e.kind()), old.is_some()));
    }
    let timed_out = runs.iter().filter(|(o, _)| o.is_err()).count();
    let stayed_old = runs.iter().filter(|(_, old)| *old).count();
    println!(
        "FIGURES rotate-client-pause: runs={} timed_out={timed_out} under_old_id={stayed_old} \
         under_new_id={} lost=0 duplicated=0",
        runs.len(),
        runs.len() - stayed_old,
    );
    assert!(
        timed_out > 0,
        "the pause did not stall rotate: the scenario tested nothing"
    );
}

/// A connection whose bytes are held while health probes keep writing PINGs to it: the probe
/// times out, the connection is fenced and replaced, and calls succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_connection_is_replaced_while_probed() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let (_server, proxy, store) = behind_proxy().await;
    let key = new_key();
    store.save(&key, &record(b"v1")).await.unwrap();
    // Hold what exists now; connections made later pass.
    proxy.set_all(Mode::Hold(Direction::Both));
    let started = Instant::now();
    let mut probes = 0u32;
    loop {
        // A probe every 100 ms, as a fallback's would (well below unresponsive_timeout_ms).
        let health = store.health().await;
        probes += 1;
        if health.is_up() && store.load(&key).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never recovered: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = started.elapsed();
    println!(
        "FIGURES held-connection-probed: recovery_ms={} probes={probes} fenced_connections={} \
         unresponsive_timeout_ms=2000",
        recovery.as_millis(),
        store.fenced_connections()
    );
    assert!(recovery < Duration::from_secs(5), "took {recovery:?}");
    proxy.release_all();
}

/// Redis at maxmemory (noeviction): every write is `Refused` (OOM, not temporary), every read of
/// an existing session is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oom_refuses_writes_and_serves_reads() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let store = connect(config(server.url())).await.unwrap();
    let keys: Vec<SessionKey> = (0..200).map(|_| new_key()).collect();
    for k in &keys {
        store.save(k, &record(&[7u8; 1000])).await.unwrap();
    }
    let used: u64 = info_field(&server.cli(&["INFO", "memory"]).unwrap(), "used_memory")
        .unwrap()
        .parse()
        .unwrap();
    server
        .cmd(&["CONFIG", "SET", "maxmemory", &used.to_string()])
        .unwrap();
    server
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .unwrap();
    let (mut refused, mut other, mut reads_ok) = (0, 0, 0);
    for (i, k) in keys.iter().enumerate() {
        match store.save(&new_key(), &record(&[1u8; 4000])).await {
            Err(Error::Refused { code: "OOM", .. }) => refused += 1,
            Ok(_) => {}
            Err(e) => {
                other += 1;
                eprintln!("write {i}: {e}");
            }
        }
        if store.load(k).await.unwrap().is_some() {
            reads_ok += 1;
        }
    }
    println!(
        "FIGURES oom: writes={} refused_oom={refused} other_errors={other} reads={} reads_served={reads_ok}",
        keys.len(),
        keys.len()
    );
    assert!(refused > 0, "maxmemory never refused a write");
    assert_eq!(other, 0);
    assert_eq!(reads_ok, keys.len());
}

/// A field (`calls`, `failed_calls`) of `cmd` in `INFO commandstats` (commands run inside
/// scripts count too).
fn stat(stats: &str, cmd: &str, field: &str) -> u64 {
    info_field(stats, &format!("cmdstat_{cmd}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|c| c.strip_prefix(field).and_then(|c| c.strip_prefix('=')))
                .map(str::to_owned)
        })
        .map_or(0, |c| c.parse().unwrap())
}

fn calls(stats: &str, cmd: &str) -> u64 {
    stat(stats, cmd, "calls")
}

/// Scripts run: `EVALSHA`s that did not fail (a first use answers `NOSCRIPT`), and `EVAL`s.
fn scripts_run(stats: &str) -> u64 {
    calls(stats, "evalsha") - stat(stats, "evalsha", "failed_calls") + calls(stats, "eval")
}

/// Plain writes are one native command each (`delete` one `DEL`); no script runs. With
/// tombstones on, `update` and `delete` are one script each, and an `update` after the delete
/// finds the tombstone and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plain_writes_are_one_native_command() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let store = connect(config(server.url())).await.unwrap();
    assert!(!store.keeps_tombstones());
    server.cmd(&["CONFIG", "RESETSTAT"]).unwrap();
    let n = 100;
    for _ in 0..n {
        let key = new_key();
        store.create(&key, &record(b"a")).await.unwrap();
        store.save(&key, &record(b"b")).await.unwrap();
        store.update(&key, &record(b"c")).await.unwrap();
        assert!(store.delete(&key).await.unwrap());
    }
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    let (set, del, evalsha, eval) = (
        calls(&stats, "set"),
        calls(&stats, "del"),
        calls(&stats, "evalsha"),
        calls(&stats, "eval"),
    );
    println!(
        "FIGURES native-writes: writes={} set_calls={set} del_calls={del} evalsha_calls={evalsha} eval_calls={eval}",
        4 * n
    );
    assert_eq!(set, 3 * n);
    assert_eq!(del, n);
    assert_eq!(evalsha + eval, 0);

    let mut c = config(server.url());
    c.tombstone_ttl_ms = 60_000;
    let tombstoned = connect(c).await.unwrap();
    assert!(tombstoned.keeps_tombstones());
    server.cmd(&["CONFIG", "RESETSTAT"]).unwrap();
    let mut late_updates = 0u64;
    for _ in 0..n {
        let key = new_key();
        tombstoned.create(&key, &record(b"a")).await.unwrap();
        tombstoned.update(&key, &record(b"c")).await.unwrap();
        assert!(tombstoned.delete(&key).await.unwrap());
        match tombstoned.update(&key, &record(b"late")).await {
            Err(Error::NotFound { .. }) => {}
            other => {
                late_updates += 1;
                eprintln!("update after delete: {other:?}");
            }
        }
        assert!(payload_in_redis_or_tombstone(&server, &key));
    }
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    let (set, del, scripts) = (calls(&stats, "set"), calls(&stats, "del"), scripts_run(&stats));
    println!(
        "FIGURES tombstone-writes: creates={n} updates={n} deletes={n} updates_after_delete={n} \
         script_calls={scripts} set_calls={set} del_calls={del} revived={late_updates}"
    );
    // create: one SET NX; update, delete and the late update: one script each. SETs inside
    // scripts count too: the update's and the delete's (the late update writes nothing).
    assert_eq!(scripts, 3 * n);
    assert_eq!(set, 3 * n);
    assert_eq!(del, 0);
    assert_eq!(late_updates, 0);
}

/// Whether Redis holds a tombstone under `key` (read on a raw socket).
fn payload_in_redis_or_tombstone(server: &RedisServer, key: &SessionKey) -> bool {
    match server.cmd(&["GET", &full(key)]).unwrap() {
        Reply::Bulk(Some(bytes)) => matches!(
            session_core::backend::decode_entry(&bytes.into(), "task"),
            Ok(session_core::backend::Entry::Tombstone(_))
        ),
        _ => false,
    }
}

/// One clock: a key whose header deadline has passed but which Redis still holds (a host whose
/// clock runs ahead wrote it, or read it) is a live session for `load`, `update` and
/// `save_if` alike — the backends never disagree about whether it exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_clock_alone_decides_expiry() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let store = connect(config(server.url())).await.unwrap();
    let key = new_key();
    // Header deadline 2 s ago by this host's clock; Redis's own expiry 60 s from now.
    let mut r = record(b"skewed");
    r.meta.version = Version::generate();
    r.meta.expires_at = now_ms() - 2_000;
    let envelope = r.encode();
    let _: Reply = {
        let mut c = testkit_redis::resp::Connection::connect(server.port()).unwrap();
        c.command(&[
            b"SET".as_slice(),
            full(&key).as_bytes(),
            &envelope,
            b"PX",
            b"60000",
        ])
        .unwrap()
    };
    let loaded = store.load(&key).await.unwrap();
    let updated = store.save_if(&key, r.meta.version, &record(b"next")).await;
    println!(
        "FIGURES one-clock: header_expired_ms_ago=2000 redis_ttl_ms=60000 load_found={} save_if={}",
        u8::from(loaded.is_some()),
        updated.as_ref().map_or_else(|e| e.kind().as_str(), |_| "ok"),
    );
    assert!(loaded.is_some(), "load judged expiry by the application's clock");
    assert!(updated.is_ok(), "{updated:?}");
}
