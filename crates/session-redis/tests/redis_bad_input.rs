//! Bad data, hostile ids and wrong configuration against real Redis.
//!
//! The data tests run against the topology under test (`SESSION_TEST_TOPOLOGY`, see
//! `testkit_redis::env`). The configuration tests need no server (bad URL, closed port) or
//! start their own plaintext server through testkit-redis when none is configured.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

mod common;

use std::time::{Duration, Instant};

use common::{config_for, RawRedis};
use session_core::backend::{now_ms, CodecId, Record, FORMAT_VERSION};
use session_core::{
    Bytes, Error, KeyPrefix, Namespace, ScanCursor, SessionId, SessionKey, SessionStore, StoreOptions,
    Version,
};
use session_redis::fred::interfaces::ClientLike;
use session_redis::fred::types::{CustomCommand, Value};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::{can_start_servers, topology_url, Standalone, TestTarget, TlsCerts, Topology};

const HOUR_MS: u64 = 3_600_000;

/// The target of the topology under test, if any.
fn current_target() -> Option<TestTarget> {
    Topology::ALL.into_iter().find_map(topology_url)
}

/// A store on the topology under test with a random key prefix, and raw access to it.
async fn open() -> Option<(RedisStore, RawRedis, KeyPrefix)> {
    let target = current_target()?;
    let config = config_for(&target);
    let prefix = session_core::testing::random_prefix();
    let store = connect_with_prefix(config.clone(), prefix.clone())
        .await
        .expect("store connects");
    let raw = RawRedis::connect(&config).await;
    Some((store, raw, prefix))
}

async fn connect_with_prefix(config: RedisConfig, prefix: KeyPrefix) -> session_core::Result<RedisStore> {
    RedisStore::builder(config)
        .options(StoreOptions::new(prefix))
        .connect()
        .await
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::RAW, payload.to_vec(), now_ms() + HOUR_MS)
}

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn new_key(namespace: &str) -> SessionKey {
    SessionKey::new(ns(namespace), SessionId::generate().unwrap())
}

fn full_key(prefix: &KeyPrefix, key: &SessionKey) -> String {
    prefix.render(key)
}

fn assert_corrupt<T: std::fmt::Debug>(r: session_core::Result<T>, what: &str, key: &SessionKey) {
    match r {
        Err(e @ Error::Corrupt { .. }) => {
            assert!(
                !e.to_string().contains(key.id.as_str()),
                "{what}: error holds the id"
            );
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// Values planted by another program: every store operation reports `Corrupt` (or replaces the
/// value, for the plain writes `save` and `update`), leaves the planted bytes and their TTL alone, and the store keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_values_are_corrupt_and_left_alone() {
    let Some((store, raw, prefix)) = open().await else {
        return;
    };
    let envelope = rec(b"0123456789").encode();
    let mut other_version = envelope.to_vec();
    other_version[4] = FORMAT_VERSION + 1;
    let cases: Vec<(&str, Bytes)> = vec![
        ("plain text", Bytes::from_static(b"hello, I am not a session")),
        (
            "json",
            Bytes::from_static(br#"{"taskId":"t1","state":"running","messages":[]}"#),
        ),
        ("truncated envelope", envelope.slice(..envelope.len() - 3)),
        ("header only, cut", envelope.slice(..30)),
        ("other format version", Bytes::from(other_version)),
        ("empty string", Bytes::new()),
    ];
    for (what, bytes) in cases {
        let key = new_key("task");
        let full = full_key(&prefix, &key);
        raw.set(&full, bytes.clone(), HOUR_MS).await;
        assert_corrupt(store.load(&key).await, what, &key);
        let many = store.load_many(std::slice::from_ref(&key)).await.unwrap();
        assert_corrupt(many.into_iter().next().unwrap(), what, &key);
        if !bytes.is_empty() {
            // An empty string is indistinguishable from a missing key for the header check.
            // (`update` is a plain `SET XX`: like `save`, it replaces whatever the key holds.)
            assert_corrupt(
                store.save_if(&key, Version::generate(), &rec(b"c")).await,
                what,
                &key,
            );
            assert_corrupt(store.touch(&key, now_ms() + HOUR_MS).await, what, &key);
            assert_corrupt(
                store.rotate(&key, &SessionId::generate().unwrap()).await,
                what,
                &key,
            );
            assert_eq!(raw.get(&full).await, Some(bytes.clone()), "{what}: value changed");
            let ttl = raw.pttl(&full).await;
            assert!(ttl > 0 && ttl <= HOUR_MS as i64, "{what}: TTL changed to {ttl}");
        }
        // The store keeps serving other keys.
        let ok = new_key("task");
        store.save(&ok, &rec(b"fine")).await.unwrap();
        assert_eq!(&store.load(&ok).await.unwrap().unwrap().payload[..], b"fine");
        // A plain save replaces the foreign value; delete removes it.
        let m = store.save(&key, &rec(b"fresh")).await.unwrap();
        assert_eq!(
            store.load(&key).await.unwrap().unwrap().meta.version,
            m.version,
            "{what}"
        );
        assert_eq!(&store.load(&key).await.unwrap().unwrap().payload[..], b"fresh");
        assert!(store.delete(&key).await.unwrap());
    }
}

/// An envelope with a codec this build does not know: load is `Corrupt`; `rotate` puts the
/// value back under the old id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codec_is_corrupt_and_rotate_puts_it_back() {
    let Some((store, raw, prefix)) = open().await else {
        return;
    };
    let mut v = rec(b"x").encode().to_vec();
    v[5] = 0xee;
    let bytes = Bytes::from(v);
    let key = new_key("task");
    let full = full_key(&prefix, &key);
    raw.set(&full, bytes.clone(), HOUR_MS).await;
    assert_corrupt(store.load(&key).await, "unknown codec", &key);
    let new_id = SessionId::generate().unwrap();
    assert_corrupt(store.rotate(&key, &new_id).await, "unknown codec rotate", &key);
    assert_eq!(raw.get(&full).await, Some(bytes));
    assert!(raw.pttl(&full).await > 0);
    assert!(store
        .load(&SessionKey::new(ns("task"), new_id))
        .await
        .unwrap()
        .is_none());
}

/// A key of another Redis type (a hash) under a session key is `Corrupt`, not a crash or a
/// temporary error; delete removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_redis_type_is_corrupt() {
    let Some((store, _raw, prefix)) = open().await else {
        return;
    };
    let key = new_key("task");
    let full = full_key(&prefix, &key);
    let client = store.clients().remove(0);
    let _: Value = client
        .custom(
            CustomCommand::new_static("HSET", None::<u16>, false),
            vec![full.clone(), "field".into(), "value".into()],
        )
        .await
        .unwrap();
    assert_corrupt(store.load(&key).await, "hash: load", &key);
    assert_corrupt(store.touch(&key, now_ms() + HOUR_MS).await, "hash: touch", &key);
    assert_corrupt(
        store.save_if(&key, Version::generate(), &rec(b"c")).await,
        "hash: save_if",
        &key,
    );
    // Plain writes are one native SET: like any SET, they replace a key of another type.
    store.update(&key, &rec(b"u")).await.unwrap();
    assert_eq!(&store.load(&key).await.unwrap().unwrap().payload[..], b"u");
    assert!(store.delete(&key).await.unwrap());
    assert!(store.load(&key).await.unwrap().is_none());
}

/// Ids with glob, separator and hash-tag characters never become keys, so no id can widen a
/// `SCAN MATCH` or reach another namespace; and `count` reads exactly `{prefix}{namespace}:*`,
/// not a sibling namespace, a longer prefix or keys planted next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_cannot_inject_and_count_is_not_fooled() {
    let Some((store, raw, prefix)) = open().await else {
        return;
    };
    for bad in [
        "*",
        "aaaaaaaaaaaaaaa*",
        "aaaaaaaaaaaaaa?a",
        "aaaaaaaaaaaaa[a-z]",
        "orchestrator:aaaaaaaaaaaaaaaa",
        "aaaaaaaa aaaaaaaa",
        "aaaaaa{tag}aaaaaaa",
        "aaaaaaaa\r\nDEL x\r\n",
    ] {
        assert!(
            matches!(SessionId::parse(bad), Err(Error::InvalidId { .. })),
            "{bad:?} accepted"
        );
    }
    let prefix = prefix.as_str().to_owned();
    for _ in 0..3 {
        store.save(&new_key("task"), &rec(b"t")).await.unwrap();
    }
    // Keys a careless pattern would also match.
    let id = SessionId::generate().unwrap();
    let planted = [
        format!("{prefix}tasks:{}", id.as_str()),
        format!("{prefix}task-x:{}", id.as_str()),
        format!("{prefix}task"),
        format!("{prefix}TASK:{}", id.as_str()),
        format!("{}X{prefix}task:{}", &prefix[..1], id.as_str()),
        format!("{}task:{}", &prefix[..prefix.len() - 1], id.as_str()),
        format!("{prefix}orchestrator:{}", id.as_str()),
    ];
    for k in &planted {
        raw.set(k, Bytes::from_static(b"decoy"), 60_000).await;
    }
    assert_eq!(store.count(&ns("task")).await.unwrap(), 3);
    assert_eq!(store.count(&ns("tasks")).await.unwrap(), 1);
    assert_eq!(store.count(&ns("orchestrator")).await.unwrap(), 1);
    // Prefixes and namespaces with glob characters are refused before any key exists.
    for bad_prefix in ["t*:", "t?:", "t[ab]:", "{t}:", "a b:"] {
        let e = KeyPrefix::new(bad_prefix).unwrap_err();
        assert!(matches!(e, Error::InvalidKeyPrefix { .. }), "{e}");
    }
    for bad_ns in ["task*", "ta?k", "task:x", "Task"] {
        assert!(Namespace::new(bad_ns).is_err(), "{bad_ns:?} accepted");
    }
}

/// Every page of a scan from `cursor` on (`limit` per page), store by store in turn: the
/// sessions listed, the keys passed over, and each page's cursor.
async fn scan_pages(
    stores: &[&RedisStore],
    mut cursor: Option<ScanCursor>,
    limit: usize,
) -> (Vec<SessionKey>, u64, Vec<ScanCursor>) {
    let (mut listed, mut skipped, mut cursors) = (Vec::new(), 0, Vec::new());
    for page in 0..10_000 {
        let store = stores[page % stores.len()];
        let got = store.scan(cursor.as_ref(), limit).await.unwrap();
        listed.extend(got.sessions.into_iter().map(|(k, _)| k));
        skipped += got.skipped;
        match got.next {
            Some(next) => {
                cursors.push(next.clone());
                cursor = Some(next);
            }
            None => return (listed, skipped, cursors),
        }
    }
    panic!("the scan did not end");
}

/// `scan` lists the sessions only: tombstones are left out silently; foreign values, keys of
/// another Redis type and keys under the prefix that are not `{namespace}:{id}` (a longer
/// prefix's, planted ones) are counted in `skipped`. A page's cursor resumes in another store
/// of the same prefix (another process, as far as Redis can tell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_lists_sessions_and_counts_what_it_passes_over() {
    let Some((store, raw, prefix)) = open().await else {
        return;
    };
    let target = current_target().unwrap();
    let mut tomb_config = config_for(&target);
    tomb_config.tombstone_ttl_ms = HOUR_MS;
    let tombstoning = connect_with_prefix(tomb_config, prefix.clone()).await.unwrap();
    let other = connect_with_prefix(config_for(&target), prefix.clone())
        .await
        .unwrap();
    let mut live = Vec::new();
    for i in 0..5u8 {
        let key = new_key(if i % 2 == 0 { "task" } else { "orchestrator" });
        store.save(&key, &rec(&[i; 8])).await.unwrap();
        live.push(key);
    }
    let gone = new_key("task");
    store.save(&gone, &rec(b"gone")).await.unwrap();
    assert!(tombstoning.delete(&gone).await.unwrap());
    assert!(
        raw.get(&full_key(&prefix, &gone)).await.is_some(),
        "a tombstone is left"
    );
    let p = prefix.as_str();
    let id = SessionId::generate().unwrap();
    let foreign = [
        full_key(&prefix, &new_key("task")),
        format!("{p}task"),
        format!("{p}TASK:{}", id.as_str()),
        format!("{p}task:task:{}", id.as_str()),
        format!("{p}task:short"),
    ];
    for k in &foreign {
        raw.set(k, Bytes::from_static(b"not an envelope"), 60_000).await;
    }
    let hash = full_key(&prefix, &new_key("task"));
    let client = store.clients().remove(0);
    let _: Value = client
        .custom(
            CustomCommand::new_static("HSET", None::<u16>, false),
            vec![hash.clone(), "field".into(), "value".into()],
        )
        .await
        .unwrap();
    // Not under the prefix: never seen.
    raw.set(
        &format!("{}X{}", &p[..1], &p[1..]),
        Bytes::from_static(b"x"),
        60_000,
    )
    .await;

    for limit in [1, 3, 1000] {
        let (mut listed, skipped, _) = scan_pages(&[&store, &other], None, limit).await;
        listed.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let mut want = live.clone();
        want.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        assert_eq!(listed, want, "page size {limit}");
        assert_eq!(skipped, foreign.len() as u64 + 1, "page size {limit}");
    }
}

/// A cursor that is not one of this store's is `Error::Backend` (never a panic, never a scan
/// from somewhere else): text that is not a cursor, a cursor of another key prefix, one whose
/// server is not the one Redis runs now (as after a restart or a failover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_refuses_cursors_that_are_not_its_own() {
    let Some((store, _raw, prefix)) = open().await else {
        return;
    };
    for i in 0..40u8 {
        store.save(&new_key("task"), &rec(&[i])).await.unwrap();
    }
    let (_, _, cursors) = scan_pages(&[&store], None, 1).await;
    let a_cursor = cursors.first().expect("40 sessions take several pages").clone();
    let target = current_target().unwrap();
    let elsewhere = connect_with_prefix(config_for(&target), session_core::testing::random_prefix())
        .await
        .unwrap();
    let backend = |r: session_core::Result<session_core::ScanPage>, what: &str| match r {
        Err(e @ Error::Backend { .. }) => {
            assert!(e.to_string().contains("start the scan again"), "{what}: {e}")
        }
        other => panic!("{what}: expected Backend, got {other:?}"),
    };
    backend(elsewhere.scan(Some(&a_cursor), 10).await, "another prefix");
    for bad in [
        "",
        "0",
        "garbage",
        "r1.....",
        "r1.x.y.z.-.0",
        "m:3/32",
        &format!("k:{}task:aaaaaaaaaaaaaaaa", prefix.as_str()),
        &"9".repeat(10_000),
    ] {
        backend(store.scan(Some(&ScanCursor::new(bad)), 10).await, bad);
    }
    // The cursor's fields: r1, prefix, layout, node, server, Redis's cursor.
    let fields = |c: &ScanCursor| c.as_str().split('.').map(str::to_owned).collect::<Vec<_>>();
    let mut far = fields(&a_cursor);
    far[3] = "99".to_owned();
    backend(
        store.scan(Some(&ScanCursor::new(far.join("."))), 10).await,
        "no such node",
    );
    if let Some(inside) = cursors.iter().find(|c| fields(c)[4] != "-") {
        let mut restarted = fields(inside);
        restarted[4] = if restarted[4] == "0123456789abcdef" {
            "fedcba9876543210"
        } else {
            "0123456789abcdef"
        }
        .to_owned();
        let e = store.scan(Some(&ScanCursor::new(restarted.join("."))), 10).await;
        backend(e, "another server");
    }
}

/// A plaintext server for the configuration tests: the configured standalone server, else one
/// started here (skip when redis-server is not installed).
fn plain_server() -> Option<(String, Option<Standalone>)> {
    if let Some(t) = topology_url(Topology::Standalone) {
        return Some((t.url, None));
    }
    if !can_start_servers() {
        return None;
    }
    let server = Standalone::start().expect("redis-server starts");
    Some((server.url(), Some(server)))
}

fn config_key(e: &Error) -> Option<&str> {
    match e {
        Error::Config { key, .. } => Some(key),
        _ => None,
    }
}

#[tokio::test]
async fn bad_urls_are_config_errors_before_io() {
    for url in [
        "",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:70000",
        "redis-sentinel://127.0.0.1:26379",
        "localhost:6379,nonsense",
        "redis+unix:///tmp/redis.sock",
    ] {
        let started = Instant::now();
        let e = RedisStore::connect(RedisConfig::new(url)).await.unwrap_err();
        assert_eq!(config_key(&e), Some("redis.url"), "{url:?}: {e}");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{url:?} touched the network"
        );
        let lazy = RedisStore::connect_lazy(RedisConfig::new(url)).unwrap_err();
        assert_eq!(config_key(&lazy), Some("redis.url"), "{url:?}: {lazy}");
    }
    let e = RedisStore::connect(RedisConfig::new("redis://app:hunter2@127.0.0.1:notaport"))
        .await
        .unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[tokio::test]
async fn closed_port_fails_within_the_connect_timeout() {
    let port = testkit_redis::find_free_port().unwrap();
    let mut config = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    config.connect_timeout_ms = 1_000;
    let started = Instant::now();
    let e = RedisStore::connect(config).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.is_temporary());
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    println!("closed port: {e} (after {took:?})");
}

#[tokio::test]
async fn wrong_settings_against_a_plain_server_say_what_is_wrong() {
    let Some((url, _guard)) = plain_server() else {
        return;
    };
    // A user the server does not have (the default user of a server without a password
    // accepts any password, so only a user name can be wrong here).
    let mut c = RedisConfig::new(url.clone());
    c.username = Some("nobody".into());
    c.password = Some("hunter2".into());
    let e = RedisStore::connect(c).await.unwrap_err();
    assert_eq!(config_key(&e), Some("redis.password"), "{e}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // A database the server does not have.
    let mut c = RedisConfig::new(url.clone());
    c.database = Some(200);
    let e = RedisStore::connect(c).await.unwrap_err();
    assert_eq!(config_key(&e), Some("redis.database"), "{e}");
    // A cluster URL against a standalone server.
    let cluster_url = url.replacen("redis://", "redis-cluster://", 1);
    let e = RedisStore::connect(RedisConfig::new(cluster_url))
        .await
        .unwrap_err();
    assert_eq!(config_key(&e), Some("redis.url"), "{e}");
    // A TLS client on a plaintext port hangs in the handshake: the connect timeout ends it.
    let dir = std::env::temp_dir().join(format!("session-redis-ca-{}", std::process::id()));
    let certs = TlsCerts::generate(&dir).expect("openssl makes a CA");
    let mut c = RedisConfig::new(url.replacen("redis://", "rediss://", 1));
    c.tls.ca_file = Some(certs.ca_cert.clone());
    c.connect_timeout_ms = 800;
    let started = Instant::now();
    let e = RedisStore::connect(c).await.unwrap_err();
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.to_string().contains("is the server TLS?"), "{e}");
    assert!(took < Duration::from_millis(800 * 4), "took {took:?}");
    println!("TLS on a plaintext port: {e} (after {took:?})");
}

#[tokio::test]
async fn wrong_settings_against_the_tls_server_say_what_is_wrong() {
    let Some(target) = topology_url(Topology::Tls) else {
        return;
    };
    let good = config_for(&target);
    RedisStore::connect(good.clone())
        .await
        .expect("the right settings connect");
    // A wrong password for the ACL user.
    let mut c = good.clone();
    c.password = Some("not-the-password".into());
    let e = RedisStore::connect(c).await.unwrap_err();
    assert_eq!(config_key(&e), Some("redis.password"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    // No credentials: the default user is disabled.
    let mut c = good.clone();
    c.url = format!("rediss://{}", good.url.rsplit('@').next().unwrap());
    let e = RedisStore::connect(c).await.unwrap_err();
    assert_eq!(config_key(&e), Some("redis.password"), "{e}");
    // A CA that did not sign the server's certificate.
    let dir = std::env::temp_dir().join(format!("session-redis-other-ca-{}", std::process::id()));
    let other = TlsCerts::generate(&dir).expect("openssl makes a CA");
    let mut c = good.clone();
    c.tls.ca_file = Some(other.ca_cert.clone());
    let e = RedisStore::connect(c).await.unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(config_key(&e), Some("redis.tls"), "{e}");
    // A plaintext client on the TLS port fails at once.
    let mut c = good.clone();
    c.url = good.url.replacen("rediss://", "redis://", 1);
    c.tls = Default::default();
    let started = Instant::now();
    let e = RedisStore::connect(c).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(good.connect_timeout_ms),
        "{e}"
    );
    let password = good
        .url
        .split('@')
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(!e.to_string().contains(&password), "{e}");
    println!("plaintext on the TLS port: {e}");
}

/// Batches far larger than the client's command queue are sent in parts, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_batches_fit_a_small_command_queue() {
    let Some(target) = current_target() else {
        return;
    };
    let mut config = config_for(&target);
    config.max_pending_commands = 16;
    let store = connect_with_prefix(config, session_core::testing::random_prefix())
        .await
        .unwrap();
    let items: Vec<(SessionKey, Record)> = (0..600u32)
        .map(|i| (new_key("task"), rec(&i.to_be_bytes())))
        .collect();
    let metas = store.save_many(&items).await.unwrap();
    assert_eq!(metas.len(), 600);
    let keys: Vec<SessionKey> = items.iter().map(|(k, _)| k.clone()).collect();
    let got = store.load_many(&keys).await.unwrap();
    for ((_, r), g) in items.iter().zip(got) {
        assert_eq!(g.unwrap().unwrap().payload, r.payload);
    }
    assert_eq!(store.count(&ns("task")).await.unwrap(), 600);
}

/// An ACL user that may not run `CLIENT ID`: `connect` names the permission; a lazily
/// connected store refuses writes (they could not be fenced) and still serves reads.
#[tokio::test]
async fn a_user_without_client_id_gets_no_unfenceable_writes() {
    let Some(target) = topology_url(Topology::Standalone) else {
        return;
    };
    let admin = config_for(&target);
    let raw = RedisStore::connect(admin.clone()).await.expect("admin connects");
    let client = raw.clients().remove(0);
    let user = format!("noid{}", std::process::id());
    let acl = |args: Vec<&str>| {
        let client = client.clone();
        let args: Vec<Value> = args.into_iter().map(|a| Value::from(a.to_owned())).collect();
        async move {
            let r: Value = client
                .custom(CustomCommand::new_static("ACL", None, false), args)
                .await
                .expect("ACL");
            r
        }
    };
    acl(vec![
        "SETUSER",
        &user,
        "on",
        ">pw-noid",
        "~*",
        "&*",
        "+@all",
        "-client|id",
    ])
    .await;
    let mut c = admin.clone();
    c.url = format!(
        "redis://{user}:pw-noid@{}",
        admin.url.trim_start_matches("redis://")
    );

    let e = RedisStore::connect(c.clone()).await.unwrap_err();
    assert_eq!(config_key(&e), Some("redis.username"), "{e}");
    assert!(e.to_string().contains("client|id"), "{e}");

    let lazy = RedisStore::connect_lazy(c).expect("lazy store");
    assert!(
        lazy.wait_connected(Duration::from_secs(5)).await,
        "lazy store connects"
    );
    let key = new_key("noid");
    let e = lazy.save(&key, &rec(b"x")).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("CLIENT ID"), "{e}");
    assert_eq!(lazy.load(&key).await.unwrap(), None, "reads are served");
    acl(vec!["DELUSER", &user]).await;
}
