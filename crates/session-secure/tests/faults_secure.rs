//! Secrets at rest on a real redis-server, with three instances (each its own `RedisStore`
//! through its own TCP proxy, as three processes would be):
//!
//! * after a workload (sessions created, bound to their users, written, rotated, deleted), a
//!   dump of Redis (`SCAN` + `GET` of every key) holds no session id, no user and no byte
//!   string of any payload;
//! * hashing and encryption turned on, then the encryption key rotated and the old key
//!   dropped, instance by instance, each change in the documented steps, while every
//!   instance loads and writes: no load fails and nothing is lost; and, as the control, the
//!   same change made in one step fails loads.
//!
//! Run by `cargo xtask test` (step `faults`), or by hand:
//! `SESSION_TEST_FAULTS=1 cargo test -p session-secure --test faults_secure -- --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "fault scenarios: a failed expectation is a failed test, and the figures are the output"
)]

mod secrets;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use secrets::{KEY_1, KEY_2, SECRET};
use serde::{Deserialize, Serialize};
use session_core::backend::{decode_entry, CodecId, Entry};
use session_core::{Error, KeyPrefix, Namespace, SessionId, SessionStore, Sessions, StoreOptions};
use session_redis::{RedisConfig, RedisStore};
use session_secure::{SecureConfig, SecureStore, SEAL_OVERHEAD};
use testkit_redis::resp::Reply;
use testkit_redis::{faults_enabled, FaultProxy, RedisServer};

const INSTANCES: usize = 3;
const TASKS_PER_INSTANCE: usize = 4;
const SESSIONS: usize = 200;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Login {
    user: String,
    token: String,
    n: u64,
}

fn login(i: usize, n: u64) -> Login {
    Login {
        user: format!("person-{i}@mail.example"),
        token: format!("bearer-{i}-5f4dcc3b5aa765d61d8327deb882cf99"),
        n,
    }
}

/// One instance: its connection (through its own proxy), and the store it serves with now
/// (replaced when its configuration changes, as a restart would).
struct Instance {
    redis: RedisStore,
    current: RwLock<Sessions<Login>>,
    _proxy: FaultProxy,
}

impl Instance {
    fn sessions(&self) -> Sessions<Login> {
        self.current.read().unwrap().clone()
    }

    fn configure(&self, config: &SecureConfig) {
        *self.current.write().unwrap() = handle(&self.redis, config);
    }
}

fn handle(redis: &RedisStore, config: &SecureConfig) -> Sessions<Login> {
    let store: Arc<dyn SessionStore> = Arc::new(SecureStore::new(redis.clone(), config).unwrap());
    Sessions::new(store, Namespace::new("login").unwrap())
}

async fn instances(server: &RedisServer, prefix: &KeyPrefix, config: &SecureConfig) -> Vec<Arc<Instance>> {
    let mut out = Vec::new();
    for _ in 0..INSTANCES {
        let proxy = FaultProxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
        let mut redis_config = RedisConfig::new(proxy.url());
        redis_config.timeout_ms = 2_000;
        let limit = session_core::DEFAULT_MAX_SESSION_BYTES + SEAL_OVERHEAD;
        let options = StoreOptions::new(prefix.clone())
            .with_max_session_bytes(limit)
            .unwrap();
        let redis = RedisStore::builder(redis_config)
            .options(options)
            .connect()
            .await
            .expect("connects");
        let current = RwLock::new(handle(&redis, config));
        out.push(Arc::new(Instance {
            redis,
            current,
            _proxy: proxy,
        }));
    }
    out
}

fn prefix() -> KeyPrefix {
    KeyPrefix::new(&format!("sec{}:", SessionId::generate().unwrap().short_hash())).unwrap()
}

/// Every key of the server and its value (`SCAN` then `GET`).
fn dump(server: &RedisServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let Reply::Array(Some(parts)) = server.cmd(&["SCAN", &cursor, "COUNT", "1000"]).unwrap() else {
            panic!("SCAN reply")
        };
        let [Reply::Bulk(Some(next)), Reply::Array(Some(keys))] = parts.as_slice() else {
            panic!("SCAN reply shape")
        };
        for key in keys {
            let Reply::Bulk(Some(key)) = key else { continue };
            let name = String::from_utf8_lossy(key).into_owned();
            if let Reply::Bulk(Some(value)) = server.cmd(&["GET", &name]).unwrap() {
                out.push((key.clone(), value));
            }
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            return out;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_redis_holds_no_id_and_no_payload() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let config = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1)]);
    let all = instances(&server, &prefix(), &config).await;
    // Every id ever handed out (rotated and deleted ones too), and the last value of each
    // live one.
    let ids = Arc::new(std::sync::Mutex::new(Vec::<SessionId>::new()));
    let live = Arc::new(std::sync::Mutex::new(HashMap::<SessionId, Login>::new()));
    let mut tasks = Vec::new();
    for (i, instance) in all.iter().enumerate() {
        for t in 0..TASKS_PER_INSTANCE {
            let (instance, ids, live) = (Arc::clone(instance), Arc::clone(&ids), Arc::clone(&live));
            tasks.push(tokio::spawn(async move {
                let s = instance.sessions();
                for round in 0..60u64 {
                    let n = i * 1000 + t * 100 + round as usize;
                    let mut session = s.create(login(n, 0)).await.unwrap();
                    ids.lock().unwrap().push(session.id.clone());
                    // Bound to its user: the principal's index is in the dump too.
                    let user = session_core::Principal::new(&login(n, 0).user).unwrap();
                    s.bind(&mut session, &user).await.unwrap();
                    session.value.n = 1;
                    s.save_if(&mut session).await.unwrap();
                    match round % 4 {
                        0 => {
                            let new = s.rotate(&session.id).await.unwrap();
                            ids.lock().unwrap().push(new.clone());
                            session.id = new;
                            live.lock().unwrap().insert(session.id.clone(), session.value);
                        }
                        1 => {
                            assert!(s.delete(&session.id).await.unwrap());
                        }
                        _ => {
                            live.lock().unwrap().insert(session.id.clone(), session.value);
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stored = dump(&server);
    let ids = ids.lock().unwrap().clone();
    let live = live.lock().unwrap().clone();
    let mut plaintext = HashSet::new();
    for value in live.values() {
        plaintext.insert(value.user.clone());
        plaintext.insert(value.token.clone());
    }
    plaintext.insert("mail.example".to_owned());
    plaintext.insert("bearer-".to_owned());
    let (mut ids_found, mut plaintext_found, mut unsealed) = (0, 0, 0);
    for (key, value) in &stored {
        for id in &ids {
            let id = id.as_str().as_bytes();
            if contains(key, id) || contains(value, id) {
                ids_found += 1;
            }
        }
        for text in &plaintext {
            if contains(key, text.as_bytes()) || contains(value, text.as_bytes()) {
                plaintext_found += 1;
            }
        }
        if let Ok(Entry::Live(record)) = decode_entry(&value.clone().into(), "login") {
            if record.codec != CodecId::SEALED {
                unsealed += 1;
            }
        }
    }
    // Through any instance, every live session reads back as last written.
    let reader = all[2].sessions();
    let mut mismatched = 0;
    for (id, value) in &live {
        if reader.load(id).await.unwrap().map(|s| s.value).as_ref() != Some(value) {
            mismatched += 1;
        }
    }
    println!(
        "FIGURES secure-dump: instances={INSTANCES} ids_handed_out={} live={} keys={} ids_found={ids_found} \
         plaintext_found={plaintext_found} unsealed={unsealed} loads_mismatched={mismatched}",
        ids.len(),
        live.len(),
        stored.len()
    );
    assert!(stored.len() >= live.len(), "the dump holds every live session");
    assert_eq!(ids_found, 0, "a session id in a key or value");
    assert_eq!(plaintext_found, 0, "payload bytes in the clear");
    assert_eq!(unsealed, 0);
    assert_eq!(mismatched, 0);
}

/// The configurations instances go through, each applied instance by instance.
fn rollout() -> Vec<(&'static str, SecureConfig)> {
    let mut step1 = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1)]);
    step1.hashed_ids.write_plain_ids = true;
    step1.encryption.write_plaintext = true;
    let mut step2 = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(1, KEY_1)]);
    step2.hashed_ids.read_plain_ids = true;
    step2.encryption.accept_plaintext = true;
    let mut add_key = step2.clone();
    add_key.encryption = SecureConfig::new()
        .with_encryption([(1, KEY_1), (2, KEY_2)])
        .encryption;
    add_key.encryption.accept_plaintext = true;
    add_key.encryption.current = Some(1);
    let mut new_key = add_key.clone();
    new_key.encryption.current = Some(2);
    // Key 1 dropped, plaintext no longer accepted; plain ids are still read (sessions from
    // before hashing, updated in place, keep their plain key until they end or rotate).
    let mut strict = SecureConfig::new()
        .with_hashed_ids(SECRET)
        .with_encryption([(2, KEY_2)]);
    strict.hashed_ids.read_plain_ids = true;
    vec![
        ("read-hashed-and-sealed", step1),
        ("write-hashed-and-sealed", step2),
        ("add-key-2", add_key),
        ("seal-with-key-2", new_key),
        // After a session lifetime (here: every session rewritten, which seals it with key
        // 2), key 1 goes.
        ("drop-key-1", strict),
    ]
}

#[derive(Default)]
struct Counts {
    loads: AtomicU64,
    failed_loads: AtomicU64,
    saves: AtomicU64,
    conflicts: AtomicU64,
    failed_saves: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_it_on_and_rotating_keys_under_load_fails_no_load() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let r = roll_out("secure-rollout", rollout()).await;
    assert_eq!(r.failed_loads, 0, "a load failed");
    assert_eq!(r.failed_saves, 0, "a save failed");
    assert_eq!(r.lost, 0);
    assert!(r.loads > 1000, "the load ran");
    assert!(r.sealed_by_key_2 >= SESSIONS);
}

/// The control: hashing and encryption turned on in one step (no instance learns to read the
/// new form first) fails loads on the instances not yet changed — what the first step is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_it_on_in_one_step_fails_loads() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let one_step: Vec<_> = rollout().into_iter().skip(1).collect();
    let r = roll_out("secure-rollout-one-step", one_step).await;
    assert!(
        r.failed_loads > 0,
        "instances not yet changed read every new value"
    );
    assert_eq!(r.lost, 0);
}

/// What a rollout under load saw.
struct Rollout {
    loads: u64,
    failed_loads: u64,
    failed_saves: u64,
    lost: usize,
    sealed_by_key_2: usize,
}

/// Three instances loading and writing 200 sessions (made before any change) while each
/// configuration of `phases` is applied instance by instance; a `FIGURES {name}` line.
async fn roll_out(name: &str, phases: Vec<(&'static str, SecureConfig)>) -> Rollout {
    let server = RedisServer::start().expect("redis-server starts");
    let all = instances(&server, &prefix(), &SecureConfig::new()).await;
    let mut ids = Vec::new();
    for i in 0..SESSIONS {
        ids.push(
            all[i % INSTANCES]
                .sessions()
                .create(login(i, 0))
                .await
                .unwrap()
                .id,
        );
    }
    let ids = Arc::new(ids);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, instance) in all.iter().enumerate() {
        for t in 0..TASKS_PER_INSTANCE {
            let (instance, ids, counts, stop) = (
                Arc::clone(instance),
                Arc::clone(&ids),
                Arc::clone(&counts),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                let mut k = i * 7 + t * 13;
                while !stop.load(Ordering::Relaxed) {
                    k = (k * 31 + 17) % SESSIONS;
                    let s = instance.sessions();
                    counts.loads.fetch_add(1, Ordering::Relaxed);
                    let mut session = match s.load(&ids[k]).await {
                        Ok(Some(session)) => session,
                        other => {
                            counts.failed_loads.fetch_add(1, Ordering::Relaxed);
                            if counts.failed_loads.load(Ordering::Relaxed) < 3 {
                                eprintln!("load failed on instance {i}: {:?}", other.map(|o| o.is_some()));
                            }
                            continue;
                        }
                    };
                    if k % 3 == 0 {
                        session.value.n += 1;
                        match s.save_if(&mut session).await {
                            Ok(()) => counts.saves.fetch_add(1, Ordering::Relaxed),
                            Err(Error::Conflict { .. }) => counts.conflicts.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                eprintln!("save failed on instance {i}: {e}");
                                counts.failed_saves.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                }
            }));
        }
    }
    let mut applied = Vec::new();
    for (phase, config) in phases {
        if phase == "drop-key-1" {
            // A session lifetime, compressed: every session written once more, by an
            // instance that seals with key 2 and writes hashed ids.
            let s = all[0].sessions();
            for id in ids.iter() {
                let mut session = s.load(id).await.unwrap().expect("a live session");
                session.value.n += 1;
                s.save(&mut session).await.expect("rewritten");
            }
        }
        for instance in &all {
            tokio::time::sleep(Duration::from_millis(300)).await;
            instance.configure(&config);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        applied.push(phase);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    // Afterwards: every session is sealed by key 2, and loads.
    let (mut sealed_by_key_2, mut other_values) = (0, 0);
    for (_, value) in dump(&server) {
        match decode_entry(&value.into(), "login") {
            Ok(Entry::Live(r)) if r.codec == CodecId::SEALED && r.payload.get(1..3) == Some(&[0, 2][..]) => {
                sealed_by_key_2 += 1;
            }
            _ => other_values += 1,
        }
    }
    let mut lost = 0;
    for id in ids.iter() {
        if all[1].sessions().load(id).await.unwrap().is_none() {
            lost += 1;
        }
    }
    let c = &counts;
    let r = Rollout {
        loads: c.loads.load(Ordering::Relaxed),
        failed_loads: c.failed_loads.load(Ordering::Relaxed),
        failed_saves: c.failed_saves.load(Ordering::Relaxed),
        lost,
        sealed_by_key_2,
    };
    println!(
        "FIGURES {name}: instances={INSTANCES} sessions={SESSIONS} phases={} loads={} failed_loads={} \
         saves={} conflicts={} failed_saves={} lost={lost} sealed_by_key_2={sealed_by_key_2} \
         left_from_before={other_values}",
        applied.join(","),
        r.loads,
        r.failed_loads,
        c.saves.load(Ordering::Relaxed),
        c.conflicts.load(Ordering::Relaxed),
        r.failed_saves,
    );
    r
}
