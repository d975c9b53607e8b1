//! PostgreSQL fencing under partitions, on a real server: two stores, one behind a fault proxy
//! that holds its connection's bytes and delivers them later.
//!
//! * A write held in the network times out; the store terminates its server process before
//!   answering; another instance deletes the session; the held bytes are delivered late — and
//!   change nothing.
//! * When even a new connection cannot reach the server, the timed-out write stays pending:
//!   the store's later writes fail fast until the termination is confirmed, then go on; nothing
//!   the store wrote afterwards is overwritten by the old write.
//!
//! Only with `SESSION_TEST_FAULTS=1` (the `faults` cell). Prints one `FIGURES sql-fence` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::testing::random_prefix;
use session_core::{Error, Namespace, SessionId, SessionKey, SessionStore, StoreOptions};
use session_sql::{SqlConfig, SqlStore};
use testkit_redis::{faults_enabled, Direction, FaultProxy, Mode, Postgres};

const TIMEOUT: Duration = Duration::from_millis(300);

fn key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::JSON, payload.to_vec(), now_ms() + 3_600_000)
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, proxy: &FaultProxy) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, tail) = rest.split_once('@').unwrap();
    let path = &tail[tail.find('/').unwrap()..];
    format!("{scheme}://{userinfo}@{}{path}", proxy.addr())
}

async fn store(url: String, options: &StoreOptions, pool: u32) -> SqlStore {
    SqlStore::connect(
        SqlConfig::new(url).with_pool_size(pool).with_timeout(TIMEOUT),
        options.clone(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_delivered_late_changes_nothing() {
    if !faults_enabled() {
        return;
    }
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", pg.port()).parse().unwrap();
    let proxy = FaultProxy::start(upstream).unwrap();
    let options = StoreOptions::new(random_prefix());
    let cut = store(through(&pg.url(), &proxy), &options, 1).await;
    let other = store(pg.url(), &options, 2).await;

    // 1. Only the write's connection is held; a new one (the fence's) passes.
    let k = key();
    cut.save(&k, &rec(b"v0")).await.unwrap();
    proxy.set_all(Mode::Hold(Direction::ToServer));
    let started = Instant::now();
    let held = cut.save(&k, &rec(b"v1, held")).await;
    let answered_after = started.elapsed();
    assert!(matches!(held, Err(Error::Timeout { .. })), "{held:?}");
    assert!(!cut.health().await.detail.unwrap_or_default().contains("paused"));
    assert!(
        other.delete(&k).await.unwrap(),
        "the other instance logs the user out"
    );
    proxy.release_all();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resurrected = other.load(&k).await.unwrap().is_some();
    assert!(
        !resurrected,
        "the held write, delivered late, brought the session back"
    );
    cut.save(&key(), &rec(b"after")).await.unwrap();

    // 2. Nothing reaches the server, not even a new connection: the write stays pending.
    let k2 = key();
    cut.save(&k2, &rec(b"v0")).await.unwrap();
    proxy.set_all_and_default(Mode::Hold(Direction::ToServer));
    let held = cut.save(&k2, &rec(b"v1, held")).await;
    assert!(held.is_err(), "{held:?}");
    let paused = cut.delete(&k2).await;
    assert!(
        matches!(
            paused,
            Err(Error::Unavailable { .. }) | Err(Error::Timeout { .. })
        ),
        "a later write of this store waits for the fence: {paused:?}"
    );
    let read_while_paused = other.load(&k2).await.unwrap().is_some();
    proxy.heal();
    let started = Instant::now();
    let mut deleted = false;
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(done) = cut.delete(&k2).await {
            deleted = done || other.load(&k2).await.unwrap().is_none();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed_after = started.elapsed();
    assert!(
        deleted,
        "writes resume once the old connection is confirmed closed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let overwritten = other.load(&k2).await.unwrap().is_some();
    println!(
        "FIGURES sql-fence: held_write_answered_ms={} resurrected={} overwritten_after_fence={} \
         read_served_while_paused={read_while_paused} writes_resumed_ms={}",
        answered_after.as_millis(),
        u8::from(resurrected),
        u8::from(overwritten),
        resumed_after.as_millis()
    );
    assert!(
        !overwritten,
        "the old write landed after this store's later delete"
    );
}
