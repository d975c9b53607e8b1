//! A copy of 100 000 sessions memory → Redis → PostgreSQL and back, through `sessionctl` and
//! snapshot files, on real servers: every session arrives equal (payload, version, deadline).
//!
//! Only with `SESSION_TEST_FAULTS=1` (the `faults` cell: it starts its own Redis and
//! PostgreSQL). Prints one `FIGURES copy-round-trip` line.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_backup::{read_snapshot, write_snapshot, CopyMode};
use session_core::backend::{now_ms, CodecId, Record};
use session_core::{KeyPrefix, Namespace, SessionId, SessionKey, SessionStore, StoreOptions, Version};
use session_memory::{MemoryConfig, MemoryStore};
use testkit_redis::{faults_enabled, Postgres, Standalone};

const SESSIONS: usize = 100_000;
const PREFIX: &str = "copy:";

fn memory() -> Arc<MemoryStore> {
    let options = StoreOptions::new(KeyPrefix::new(PREFIX).unwrap());
    Arc::new(MemoryStore::with_options(MemoryConfig::default(), options).unwrap())
}

/// Runs `sessionctl copy` and returns how long it took.
fn sessionctl(args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sessionctl"))
        .arg("copy")
        .args(args)
        .args(["--key-prefix", PREFIX])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sessionctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn scratch(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()))
}

async fn all(store: &dyn SessionStore, keys: &[SessionKey]) -> Vec<Option<Record>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        out.extend(
            store
                .load_many(chunk)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_sessions_go_round_and_arrive_equal() {
    if !faults_enabled() {
        return;
    }
    let redis = Standalone::start().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .unwrap();

    // The sessions: deadlines spread over the next two hours, payloads of their own.
    let source = memory();
    let keys: Vec<SessionKey> = (0..SESSIONS)
        .map(|_| SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap()))
        .collect();
    let now = now_ms();
    for (n, chunk) in keys.chunks(1000).enumerate() {
        let items: Vec<(SessionKey, Record)> = chunk
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let nth = (n * 1000 + i) as u64;
                let mut r = Record::new(
                    CodecId::JSON,
                    format!("{{\"n\":{nth}}}").into_bytes(),
                    now + 600_000 + nth * 60,
                );
                r.meta.version = Version::generate();
                (k.clone(), r)
            })
            .collect();
        source.save_many(&items).await.unwrap();
    }
    let original = all(source.as_ref(), &keys).await;

    let first = scratch("copy-a.snap");
    let last = scratch("copy-b.snap");
    let resume = scratch("copy.resume");
    let started = Instant::now();
    write_snapshot(source.as_ref(), &first).await.unwrap();
    let to_file = started.elapsed();
    let to_redis = sessionctl(&[
        "--from",
        &format!("snapshot:{}", first.display()),
        "--to",
        &redis.url(),
    ]);
    let to_pg = sessionctl(&[
        "--from",
        &redis.url(),
        "--to",
        &pg.url(),
        "--page-size",
        "2000",
        "--resume-file",
        resume.to_str().unwrap(),
    ]);
    assert!(
        !resume.exists(),
        "the resume file is removed once the copy is complete"
    );
    let from_pg = sessionctl(&[
        "--from",
        &pg.url(),
        "--to",
        &format!("snapshot:{}", last.display()),
    ]);
    let back = memory();
    let started = Instant::now();
    let read = read_snapshot(&last, back.as_ref(), CopyMode::Overwrite)
        .await
        .unwrap();
    let from_file = started.elapsed();
    assert_eq!(read.copied as usize, SESSIONS);

    let returned = all(back.as_ref(), &keys).await;
    let equal = original
        .iter()
        .zip(&returned)
        .filter(|(a, b)| a == b && a.is_some())
        .count();
    println!(
        "FIGURES copy-round-trip: sessions={SESSIONS} equal={equal} memory_to_file_ms={} file_to_redis_ms={} \
         redis_to_postgres_ms={} postgres_to_file_ms={} file_to_memory_ms={}",
        to_file.as_millis(),
        to_redis.as_millis(),
        to_pg.as_millis(),
        from_pg.as_millis(),
        from_file.as_millis()
    );
    assert_eq!(equal, SESSIONS, "every session equal: payload, version, deadline");
    let _ = std::fs::remove_file(&first);
    let _ = std::fs::remove_file(&last);
}
