//! `BackupStore`, copies and snapshots: what reaches the backup, what a backup that is down
//! costs the primary, overflow, read-through, bulk restore, resync, and snapshot files.
//! A memory primary; the backup a SQLite file (a real database) or a memory store behind a
//! fault double.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use session_backup::{
    copy_sessions, read_snapshot, write_snapshot, BackupConfig, BackupStore, CopyMode, CopyOptions,
};
use session_core::backend::{now_ms, Change, CodecId, Reconciled, Record, Tombstone};
use session_core::testing::{random_prefix, FaultMode, FaultyStore};
use session_core::{
    Error, Health, Meta, Namespace, SessionId, SessionKey, SessionStore, StoreOptions, StoreStats, Version,
};
use session_memory::{MemoryConfig, MemoryStore};
use session_sql::{SqlConfig, SqlStore};

const HOUR_MS: u64 = 3_600_000;
/// A generous bound that only a call blocked on the backup would reach.
const STUCK: Duration = Duration::from_secs(10);

fn memory(options: &StoreOptions) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::with_options(MemoryConfig::default(), options.clone()).unwrap())
}

/// A memory store fit to be a backup: it rejects instead of evicting at its bound.
fn memory_backup(options: &StoreOptions) -> Arc<MemoryStore> {
    let config = MemoryConfig::default().with_at_capacity(session_memory::AtCapacity::Reject);
    Arc::new(MemoryStore::with_options(config, options.clone()).unwrap())
}

async fn sqlite(options: &StoreOptions, name: &str) -> Arc<SqlStore> {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("backup-{name}-{}.db", std::process::id()));
    Arc::new(
        SqlStore::connect(
            SqlConfig::new(format!("sqlite://{}", path.display())),
            options.clone(),
        )
        .await
        .unwrap(),
    )
}

fn key() -> SessionKey {
    SessionKey::new(Namespace::new("task").unwrap(), SessionId::generate().unwrap())
}

fn rec(payload: &[u8]) -> Record {
    Record::new(CodecId::JSON, payload.to_vec(), now_ms() + HOUR_MS)
}

fn fast() -> BackupConfig {
    BackupConfig::default()
        .with_flush_interval(Duration::from_millis(10))
        .with_write_timeout(Duration::from_millis(300))
}

/// Every key's state in `store`: its payload and metadata, or nothing.
async fn states(store: &dyn SessionStore, keys: &[SessionKey]) -> Vec<Option<Record>> {
    store
        .load_many(keys)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_and_delete_reaches_the_backup_latest_state_winning() {
    let options = StoreOptions::new(random_prefix());
    let backup = sqlite(&options, "writes").await;
    let store = BackupStore::new(memory(&options), Arc::clone(&backup), fast()).unwrap();
    let keys: Vec<SessionKey> = (0..60).map(|_| key()).collect();
    // Many changes per key, of every kind, interleaved.
    for round in 0..5u8 {
        for (i, k) in keys.iter().enumerate() {
            match (i + usize::from(round)) % 6 {
                0 | 1 => {
                    store.save(k, &rec(&[round, 1])).await.unwrap();
                }
                2 => {
                    let _ = store.create(k, &rec(&[round, 2])).await;
                }
                3 => {
                    let _ = store.update(k, &rec(&[round, 3])).await;
                }
                4 => {
                    let _ = store.touch(k, now_ms() + 2 * HOUR_MS).await;
                }
                _ => {
                    store.delete(k).await.unwrap();
                }
            }
        }
    }
    let moved = SessionId::generate().unwrap();
    store.save(&keys[0], &rec(b"rotated")).await.unwrap();
    store.rotate(&keys[0], &moved).await.unwrap();
    let mut all = keys.clone();
    all.push(SessionKey::new(keys[0].namespace.clone(), moved));
    store.flush().await.unwrap();
    let primary = states(store.primary().as_ref(), &all).await;
    let copied = states(backup.as_ref(), &all).await;
    assert_eq!(
        primary, copied,
        "the backup holds the primary's state of every key"
    );
    let stats = store.backup_stats();
    assert_eq!(stats.pending, 0);
    assert!(stats.written > 0 && stats.deleted > 0, "{stats:?}");
    assert_eq!((stats.dropped_writes, stats.dropped_deletes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_that_hangs_never_holds_up_the_primary_and_catches_up_after() {
    let options = StoreOptions::new(random_prefix());
    let backup = FaultyStore::new(memory_backup(&options));
    backup.set_mode(FaultMode::Hang);
    let store = BackupStore::new(memory(&options), Arc::clone(&backup), fast().with_batch_size(8)).unwrap();
    let keys: Vec<SessionKey> = (0..100).map(|_| key()).collect();
    for k in &keys {
        tokio::time::timeout(STUCK, store.save(k, &rec(b"x")))
            .await
            .expect("a save waited for the backup")
            .unwrap();
    }
    tokio::time::timeout(STUCK, store.delete(&keys[0]))
        .await
        .expect("a delete waited for the backup")
        .unwrap();
    assert!(store.backup_stats().pending >= 90, "{:?}", store.backup_stats());
    // The backup answers again; the batch the flusher has in flight on the hung call comes
    // back to the queue at its write timeout, and `flush` waits for that.
    backup.set_mode(FaultMode::Pass);
    store.flush().await.unwrap();
    assert_eq!(
        states(store.primary().as_ref(), &keys).await,
        states(backup.as_ref(), &keys).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_counted_marks_the_backup_incomplete_and_resync_repairs_it() {
    let options = StoreOptions::new(random_prefix());
    let backup = FaultyStore::new(memory_backup(&options));
    let config = fast().with_max_pending(10).with_batch_size(100);
    let store = BackupStore::new(memory(&options), Arc::clone(&backup), config).unwrap();
    // In the backup before the outage: these will be deleted while it is down.
    let doomed: Vec<SessionKey> = (0..25).map(|_| key()).collect();
    for k in &doomed {
        store.save(k, &rec(b"old")).await.unwrap();
    }
    store.flush().await.unwrap();
    backup.set_mode(FaultMode::Fail);
    let keys: Vec<SessionKey> = (0..30).map(|_| key()).collect();
    for k in &keys {
        store.save(k, &rec(b"new")).await.unwrap();
    }
    for k in &doomed {
        store.delete(k).await.unwrap();
    }
    let stats = store.backup_stats();
    assert!(stats.incomplete);
    assert!(stats.dropped_writes > 0, "{stats:?}");
    assert!(stats.dropped_deletes > 0, "{stats:?}");
    // Read-through is off while incomplete: a dropped delete must not come back from the backup.
    backup.set_mode(FaultMode::Pass);
    for k in &doomed {
        assert_eq!(
            store.load(k).await.unwrap(),
            None,
            "a deleted session read through"
        );
    }
    store.flush().await.unwrap();
    store.resync().await.unwrap();
    assert!(!store.backup_stats().incomplete);
    let all: Vec<SessionKey> = keys.iter().chain(&doomed).cloned().collect();
    assert_eq!(
        states(store.primary().as_ref(), &all).await,
        states(backup.as_ref(), &all).await,
        "resync copies what was dropped and deletes what the primary no longer holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_reads_through_and_restores_with_its_own_deadline_but_never_a_pending_delete() {
    let options = StoreOptions::new(random_prefix());
    let backup = sqlite(&options, "read-through").await;
    let k = key();
    let mut saved = rec(b"from the backup");
    saved.meta.version = session_core::Version::generate();
    saved.meta.expires_at = now_ms() + 90_000;
    backup.save(&k, &saved).await.unwrap();
    let primary = memory(&options);
    let store = BackupStore::new(Arc::clone(&primary), Arc::clone(&backup), fast()).unwrap();
    let found = store.load(&k).await.unwrap().expect("read through");
    assert_eq!(found.payload, saved.payload);
    assert_eq!(found.meta.version, saved.meta.version);
    let restored = primary
        .load(&k)
        .await
        .unwrap()
        .expect("restored into the primary");
    assert_eq!(
        restored.meta.deadline(),
        saved.meta.deadline(),
        "its own deadline"
    );
    assert_eq!(store.backup_stats().read_through, 1);

    // Deleted through the store: not read through while the delete is on its way, nor after.
    let backup_hung = FaultyStore::new(Arc::clone(&backup));
    let store = BackupStore::new(memory(&options), Arc::clone(&backup_hung), fast()).unwrap();
    backup_hung.set_mode(FaultMode::Fail);
    assert!(!store.delete(&k).await.unwrap(), "not in this primary");
    backup_hung.set_mode(FaultMode::Pass);
    assert_eq!(
        store.load(&k).await.unwrap(),
        None,
        "a pending delete blocks read-through"
    );
    store.flush().await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(backup.load(&k).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_all_brings_back_every_session_after_the_primary_lost_its_data() {
    let options = StoreOptions::new(random_prefix());
    let backup = sqlite(&options, "restore").await;
    let keys: Vec<SessionKey> = (0..300).map(|_| key()).collect();
    {
        let store = BackupStore::new(memory(&options), Arc::clone(&backup), fast()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            store.save(k, &rec(&i.to_be_bytes())).await.unwrap();
        }
        store.flush().await.unwrap();
    }
    // A new, empty primary (Redis restarted without persistence), one session already newer.
    let store = BackupStore::new(
        memory(&options),
        Arc::clone(&backup),
        fast().with_read_through(false),
    )
    .unwrap();
    let newer = store.save(&keys[0], &rec(b"newer")).await.unwrap();
    let mut pages = 0;
    let progress = store.restore_all(|_| pages += 1).await.unwrap();
    assert_eq!(progress.copied + progress.kept, 300, "{progress:?}");
    assert!(pages >= 1);
    let restored = states(store.primary().as_ref(), &keys).await;
    let copies = states(backup.as_ref(), &keys[1..]).await;
    assert_eq!(&restored[1..], &copies[..], "sessions and deadlines as backed up");
    assert_eq!(
        restored[0].as_ref().map(|r| r.meta.version),
        Some(newer.version),
        "the newer one stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_resume_and_snapshots_round_trip() {
    let options = StoreOptions::new(random_prefix());
    let source = memory(&options);
    let keys: Vec<SessionKey> = (0..2_000).map(|_| key()).collect();
    let items: Vec<(SessionKey, Record)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), rec(&(i as u32).to_be_bytes())))
        .collect();
    source.save_many(&items).await.unwrap();

    // Memory → SQLite, stopped after the first page and resumed from its cursor.
    let target = sqlite(&options, "copy").await;
    let options_page = CopyOptions::default().with_page_size(500);
    let mut first_cursor = None;
    let partial = copy_sessions(source.as_ref(), target.as_ref(), &options_page, |p| {
        if first_cursor.is_none() {
            first_cursor = p.cursor.clone();
        }
    })
    .await
    .unwrap();
    assert_eq!(partial.copied, 2_000);
    let resumed = copy_sessions(
        source.as_ref(),
        target.as_ref(),
        &options_page.clone().resuming(first_cursor),
        |_| {},
    )
    .await
    .unwrap();
    assert!(
        resumed.copied < 2_000,
        "a resumed copy starts after its cursor: {resumed:?}"
    );
    assert_eq!(
        states(source.as_ref(), &keys).await,
        states(target.as_ref(), &keys).await
    );

    // SQLite → snapshot file → a new memory store.
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("snapshot-{}.bin", std::process::id()));
    let report = write_snapshot(target.as_ref(), &path).await.unwrap();
    assert_eq!(report.sessions, 2_000);
    let fresh = memory(&options);
    let read = read_snapshot(&path, fresh.as_ref(), CopyMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(read.copied, 2_000);
    let expected: HashMap<SessionKey, Option<Record>> = keys
        .iter()
        .cloned()
        .zip(states(source.as_ref(), &keys).await)
        .collect();
    let got: HashMap<SessionKey, Option<Record>> = keys
        .iter()
        .cloned()
        .zip(states(fresh.as_ref(), &keys).await)
        .collect();
    assert_eq!(expected, got, "every session, with its deadline and version");

    // A damaged file is refused, never half read.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let other = memory(&options);
    match read_snapshot(&path, other.as_ref(), CopyMode::Overwrite).await {
        Err(Error::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(&path, b"not a snapshot").unwrap();
    assert!(matches!(
        read_snapshot(&path, other.as_ref(), CopyMode::Overwrite).await,
        Err(Error::Corrupt { .. })
    ));
    let _ = std::fs::remove_file(&path);
}

/// Backing up a fallback: what it acknowledged during an outage of its primary (served by its
/// secondary, journaled) is backed up like any write, its deletes too; after the replay the
/// backup still holds exactly the primary's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallbacks_outage_writes_and_deletes_are_backed_up() {
    use session_fallback::{FallbackConfig, FallbackStore};

    let options = StoreOptions::new(random_prefix());
    let redis_like = FaultyStore::new(Arc::new(
        MemoryStore::with_options(
            MemoryConfig::default().with_tombstones(Duration::from_secs(600)),
            options.clone(),
        )
        .unwrap(),
    ));
    let secondary = memory_backup(&options);
    let config =
        FallbackConfig::default().with_probe_backoff(Duration::from_millis(20), Duration::from_millis(100));
    let fallback = FallbackStore::new(Arc::clone(&redis_like), secondary, config)
        .await
        .unwrap();
    let backup = sqlite(&options, "fallback").await;
    let store = BackupStore::new(fallback, Arc::clone(&backup), fast()).unwrap();

    let before: Vec<SessionKey> = (0..20).map(|_| key()).collect();
    for k in &before {
        store.save(k, &rec(b"before")).await.unwrap();
    }
    redis_like.set_mode(FaultMode::Fail);
    let during: Vec<SessionKey> = (0..20).map(|_| key()).collect();
    for k in &during {
        store.save(k, &rec(b"during the outage")).await.unwrap();
    }
    for k in &before[..10] {
        store.delete(k).await.unwrap();
    }
    store.flush().await.unwrap();
    for k in &during {
        assert!(
            backup.load(k).await.unwrap().is_some(),
            "an outage write is backed up"
        );
    }
    for k in &before[..10] {
        assert_eq!(
            backup.load(k).await.unwrap(),
            None,
            "an outage delete is backed up"
        );
    }
    redis_like.set_mode(FaultMode::Pass);
    let all: Vec<SessionKey> = before.iter().chain(&during).cloned().collect();
    let mut replayed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if states(redis_like.inner().as_ref(), &all).await == states(backup.as_ref(), &all).await {
            replayed = true;
            break;
        }
    }
    assert!(replayed, "after the replay the primary and the backup agree");
}

/// Two instances, each a backup over a fallback, share the primary and the backup database.
/// A revokes a principal while cut off from the primary: its own copies end at once (and leave
/// the backup), and when its replay applies the revocation the sessions B bound (which A
/// never held) leave the primary and the backup too: no revoked session stays where a
/// read-through or a bulk restore would bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_kept_during_an_outage_reaches_the_backup() {
    use session_core::{Principal, Sessions};
    use session_fallback::{CircuitState, FallbackConfig, FallbackStore};

    let options = StoreOptions::new(random_prefix());
    let primary = Arc::new(
        MemoryStore::with_options(
            MemoryConfig::default().with_tombstones(Duration::from_secs(600)),
            options.clone(),
        )
        .unwrap(),
    );
    let backup = sqlite(&options, "revoke").await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let switch = FaultyStore::new(Arc::clone(&primary));
        let config = FallbackConfig::default()
            .with_primary_timeout(Duration::from_millis(150))
            .with_probe_backoff(Duration::from_millis(20), Duration::from_millis(100));
        let fallback = FallbackStore::new(Arc::clone(&switch), memory_backup(&options), config)
            .await
            .unwrap();
        let store = Arc::new(BackupStore::new(fallback, Arc::clone(&backup), fast()).unwrap());
        let sessions: Sessions<String> = Sessions::new(
            Arc::clone(&store) as Arc<dyn SessionStore>,
            Namespace::new("task").unwrap(),
        );
        instances.push((switch, store, sessions));
    }
    let ((switch_a, store_a, a), (_, store_b, b)) = (&instances[0], &instances[1]);
    let alice = Principal::new("alice").unwrap();
    let mut keys = Vec::new();
    for (n, through) in [a, a, a, b, b].into_iter().enumerate() {
        let mut session = through.create(format!("device {n}")).await.unwrap();
        through.bind(&mut session, &alice).await.unwrap();
        keys.push(SessionKey::new(Namespace::new("task").unwrap(), session.id));
    }
    store_a.flush().await.unwrap();
    store_b.flush().await.unwrap();
    for k in &keys {
        assert!(backup.load(k).await.unwrap().is_some(), "backed up");
    }

    switch_a.set_mode(FaultMode::Fail);
    while store_a.primary().state() != CircuitState::Open {
        let _ = a.load(&keys[0].id).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revoked = a.revoke_all(&alice).await.unwrap();
    assert!(revoked.pending && revoked.ended == 3, "{revoked:?}");
    store_a.flush().await.unwrap();
    for k in &keys[..3] {
        assert_eq!(
            backup.load(k).await.unwrap(),
            None,
            "A's own copies leave the backup at once"
        );
    }

    switch_a.set_mode(FaultMode::Pass);
    for _ in 0..200 {
        if store_a.primary().state() == CircuitState::Closed && store_a.primary().journal_len() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store_a.primary().journal_len(), 0, "replayed");
    store_a.flush().await.unwrap();
    for k in &keys {
        assert_eq!(primary.load(k).await.unwrap(), None, "revoked in the primary");
        assert_eq!(backup.load(k).await.unwrap(), None, "revoked in the backup");
    }
}

/// A session deleted through the store is never read back from the backup: not while its
/// delete waits in the queue, not while the delete is being written (in flight), not after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_its_way_to_the_backup_blocks_read_through() {
    let options = StoreOptions::new(random_prefix());
    let backup = FaultyStore::new(memory_backup(&options));
    let k = key();
    backup.save(&k, &rec(b"logged out soon")).await.unwrap();
    backup.set_mode(FaultMode::Delay(Duration::from_millis(400)));
    let store = BackupStore::new(memory(&options), Arc::clone(&backup), fast()).unwrap();
    assert!(!store.delete(&k).await.unwrap(), "not in this primary");
    for _ in 0..10 {
        // Queued, then in flight on the slow backup: never restored.
        assert_eq!(
            store.load(&k).await.unwrap(),
            None,
            "a deleted session was read through"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    backup.set_mode(FaultMode::Pass);
    store.flush().await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), None);
    assert_eq!(backup.load(&k).await.unwrap(), None, "{:?}", store.backup_stats());
}

/// A primary write that fails with an unknown outcome (it may have landed) leaves the key to
/// be read from the primary at the next flush: the backup ends up with what the primary holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_an_unknown_outcome_is_backed_up_from_the_primarys_state() {
    let options = StoreOptions::new(random_prefix());
    let primary = FaultyStore::new(memory(&options));
    let backup = memory_backup(&options);
    let store = BackupStore::new(Arc::clone(&primary), Arc::clone(&backup), fast()).unwrap();
    let k = key();
    store.save(&k, &rec(b"v0")).await.unwrap();
    store.flush().await.unwrap();
    primary.set_mode(FaultMode::TimeoutAfterWrite(Duration::from_millis(10)));
    assert!(store
        .save(&k, &rec(b"v1 landed, reported as a timeout"))
        .await
        .is_err());
    primary.set_mode(FaultMode::Pass);
    store.flush().await.unwrap();
    assert_eq!(
        backup.load(&k).await.unwrap().map(|r| r.payload),
        primary.inner().load(&k).await.unwrap().map(|r| r.payload),
        "the backup holds the primary's state"
    );
}

/// Two instances on one primary (tombstones on, as the facade sets for Redis) and one backup:
/// a logout on the first, whose delete has not reached the backup yet, is not undone by a
/// read-through on the second — the primary's tombstone wins over the backup's copy. Without
/// tombstones the same read-through brings the session back (the window the docs name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_not_undone_by_another_instances_read_through() {
    for tombstones in [true, false] {
        let options = StoreOptions::new(random_prefix());
        let mut config = MemoryConfig::default();
        if tombstones {
            config = config.with_tombstones(Duration::from_secs(600));
        }
        let shared = Arc::new(MemoryStore::with_options(config, options.clone()).unwrap());
        let backup = sqlite(&options, "two-instances").await;
        // The first instance flushes only when told (a long interval): its delete waits.
        let slow = BackupConfig::default().with_flush_interval(Duration::from_secs(600));
        let a = BackupStore::new(Arc::clone(&shared), Arc::clone(&backup), slow).unwrap();
        let b = BackupStore::new(Arc::clone(&shared), Arc::clone(&backup), fast()).unwrap();
        let k = key();
        a.save(&k, &rec(b"logged in")).await.unwrap();
        a.flush().await.unwrap();
        assert!(a.delete(&k).await.unwrap());
        assert!(
            backup.load(&k).await.unwrap().is_some(),
            "the delete has not reached the backup"
        );
        let seen = b.load(&k).await.unwrap();
        if tombstones {
            assert_eq!(seen, None, "another instance's read-through undid a logout");
            assert_eq!(shared.load(&k).await.unwrap(), None);
        } else {
            assert!(
                seen.is_some(),
                "without tombstones the window exists (documented)"
            );
        }
    }
}

/// Two instances on one primary and one backup, each with its own queue, flushing in the worst
/// order: the one holding the older state last. Whatever the order, the backup ends as the
/// primary holds each key — a logout stays a logout (also through a later restore), a newer
/// write stays, a late deadline change does not outlive the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_flushing_in_any_order_leave_the_backup_as_the_primary_holds_it() {
    let options = StoreOptions::new(random_prefix());
    let config = MemoryConfig::default().with_tombstones(Duration::from_secs(600));
    let primary = Arc::new(MemoryStore::with_options(config, options.clone()).unwrap());
    let backup = sqlite(&options, "any-order").await;
    // Both flush only when told.
    let manual = BackupConfig::default().with_flush_interval(Duration::from_secs(600));
    let a = BackupStore::new(Arc::clone(&primary), Arc::clone(&backup), manual.clone()).unwrap();
    let b = BackupStore::new(Arc::clone(&primary), Arc::clone(&backup), manual).unwrap();
    let (logout, newer, retimed) = (key(), key(), key());

    // A logout on B while A's write of the same session waits in A's queue.
    a.save(&logout, &rec(b"logged in")).await.unwrap();
    assert!(b.delete(&logout).await.unwrap());
    // B's newer write while A's older one waits.
    a.save(&newer, &rec(b"v1")).await.unwrap();
    let v2 = b.save(&newer, &rec(b"v2")).await.unwrap();
    // A deadline moved far on A, then the session written again on B with a nearer one.
    a.save(&retimed, &rec(b"r1")).await.unwrap();
    a.flush().await.unwrap();
    assert!(a.touch(&retimed, now_ms() + 20 * HOUR_MS).await.unwrap());
    let r2 = b.save(&retimed, &rec(b"r2")).await.unwrap();

    b.flush().await.unwrap();
    a.flush().await.unwrap();

    assert_eq!(
        backup.load(&logout).await.unwrap(),
        None,
        "a logout undone by a late flush"
    );
    assert_eq!(
        backup.load(&newer).await.unwrap().map(|r| r.meta),
        Some(v2),
        "an older write over a newer one"
    );
    let held = backup.load(&retimed).await.unwrap().map(|r| r.meta);
    assert_eq!(held, Some(r2), "a late deadline change kept over a newer write");
    assert!(a.backup_stats().reread >= 3, "{:?}", a.backup_stats());

    // Redis loses everything; a restore from this backup brings back no logged-out session.
    let empty = Arc::new(MemoryStore::with_options(MemoryConfig::default(), options.clone()).unwrap());
    let restorer =
        BackupStore::new(Arc::clone(&empty), Arc::clone(&backup), BackupConfig::default()).unwrap();
    restorer.restore_all(|_| {}).await.unwrap();
    assert_eq!(
        empty.load(&logout).await.unwrap(),
        None,
        "a restore brought a logout back"
    );
    assert_eq!(
        empty.load(&newer).await.unwrap().map(|r| r.meta.version),
        Some(v2.version)
    );
}

/// A primary that lost its data (here: every key of it gone without a tombstone) never empties
/// the backup, even for keys whose state the flusher reads from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_lost_its_data_does_not_empty_the_backup() {
    let options = StoreOptions::new(random_prefix());
    let config = MemoryConfig::default().with_tombstones(Duration::from_secs(600));
    let before = Arc::new(MemoryStore::with_options(config.clone(), options.clone()).unwrap());
    let backup = sqlite(&options, "lost-data").await;
    let manual = BackupConfig::default().with_flush_interval(Duration::from_secs(600));
    let store = BackupStore::new(Arc::clone(&before), Arc::clone(&backup), manual.clone()).unwrap();
    let k = key();
    store.save(&k, &rec(b"v1")).await.unwrap();
    store.flush().await.unwrap();
    // Two changes queued: read from the primary at flush time.
    let v2 = store.save(&k, &rec(b"v2")).await.unwrap();
    assert!(store.touch(&k, now_ms() + 2 * HOUR_MS).await.unwrap());
    store.flush().await.unwrap();
    assert_eq!(
        backup.load(&k).await.unwrap().map(|r| r.meta.version),
        Some(v2.version)
    );

    // The same two changes, then the primary's data is lost before the flush: the flusher's
    // primary (a wrapper over the memory store) is emptied by a "restart".
    let lost = Arc::new(LosesData::new(config, options.clone()));
    let store = BackupStore::new(Arc::clone(&lost), Arc::clone(&backup), manual.clone()).unwrap();
    store.save(&k, &rec(b"v3")).await.unwrap();
    let v4 = store.save(&k, &rec(b"v4")).await.unwrap();
    lost.lose_everything();
    store.flush().await.unwrap();
    assert_eq!(
        backup.load(&k).await.unwrap().map(|r| r.meta.version),
        Some(v4.version),
        "the last acknowledged write, which the primary lost"
    );

    // Without tombstones in the primary, the same.
    let lost = Arc::new(LosesData::new(MemoryConfig::default(), options.clone()));
    let store = BackupStore::new(Arc::clone(&lost), Arc::clone(&backup), manual).unwrap();
    store.save(&k, &rec(b"v5")).await.unwrap();
    let v6 = store.save(&k, &rec(b"v6")).await.unwrap();
    lost.lose_everything();
    store.flush().await.unwrap();
    assert_eq!(
        backup.load(&k).await.unwrap().map(|r| r.meta.version),
        Some(v6.version)
    );
    // A delete after them is still a delete.
    store.save(&k, &rec(b"v7")).await.unwrap();
    assert!(store.delete(&k).await.unwrap());
    store.flush().await.unwrap();
    assert_eq!(backup.load(&k).await.unwrap(), None);
}

/// A memory store that can lose everything at once, as a Redis restarted without persistence.
struct LosesData {
    config: MemoryConfig,
    options: StoreOptions,
    now: std::sync::RwLock<Arc<MemoryStore>>,
}

impl LosesData {
    fn new(config: MemoryConfig, options: StoreOptions) -> Self {
        let now = Arc::new(MemoryStore::with_options(config.clone(), options.clone()).unwrap());
        LosesData {
            config,
            options,
            now: std::sync::RwLock::new(now),
        }
    }

    fn lose_everything(&self) {
        *self.now.write().unwrap() =
            Arc::new(MemoryStore::with_options(self.config.clone(), self.options.clone()).unwrap());
    }

    fn store(&self) -> Arc<MemoryStore> {
        Arc::clone(&self.now.read().unwrap())
    }
}

#[session_core::async_trait]
impl SessionStore for LosesData {
    fn backend(&self) -> &'static str {
        "memory"
    }
    async fn load(&self, key: &SessionKey) -> session_core::Result<Option<Record>> {
        self.store().load(key).await
    }
    async fn load_entry(
        &self,
        key: &SessionKey,
    ) -> session_core::Result<Option<session_core::backend::Entry>> {
        self.store().load_entry(key).await
    }
    async fn save(&self, key: &SessionKey, record: &Record) -> session_core::Result<Meta> {
        self.store().save(key, record).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> session_core::Result<Meta> {
        self.store().create(key, record).await
    }
    async fn update(&self, key: &SessionKey, record: &Record) -> session_core::Result<Meta> {
        self.store().update(key, record).await
    }
    async fn save_if(
        &self,
        key: &SessionKey,
        expected: Version,
        record: &Record,
    ) -> session_core::Result<Meta> {
        self.store().save_if(key, expected, record).await
    }
    async fn delete(&self, key: &SessionKey) -> session_core::Result<bool> {
        self.store().delete(key).await
    }
    async fn delete_leaving(&self, key: &SessionKey, tombstone: Tombstone) -> session_core::Result<bool> {
        self.store().delete_leaving(key, tombstone).await
    }
    async fn touch(&self, key: &SessionKey, expires_at: u64) -> session_core::Result<bool> {
        self.store().touch(key, expires_at).await
    }
    async fn rotate(&self, key: &SessionKey, new_id: &SessionId) -> session_core::Result<Meta> {
        self.store().rotate(key, new_id).await
    }
    async fn load_many(
        &self,
        keys: &[SessionKey],
    ) -> session_core::Result<Vec<session_core::Result<Option<Record>>>> {
        self.store().load_many(keys).await
    }
    async fn save_many(&self, items: &[(SessionKey, Record)]) -> session_core::Result<Vec<Meta>> {
        self.store().save_many(items).await
    }
    async fn count(&self, namespace: &Namespace) -> session_core::Result<u64> {
        self.store().count(namespace).await
    }
    async fn stats(&self) -> session_core::Result<StoreStats> {
        self.store().stats().await
    }
    async fn health(&self) -> Health {
        self.store().health().await
    }
    async fn reconcile(
        &self,
        key: &SessionKey,
        base: Version,
        change: Change<'_>,
    ) -> session_core::Result<Reconciled> {
        self.store().reconcile(key, base, change).await
    }
    fn keeps_tombstones(&self) -> bool {
        self.config.keeps_tombstones()
    }
}

/// No clock decides between the primary and the backup: a host whose clock runs 5 s ahead
/// wrote the backup's copy, yet `restore_all` keeps the session the primary holds and `resync`
/// copies the primary's state over the backup's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_and_resync_follow_the_primary_whatever_the_clocks() {
    let options = StoreOptions::new(random_prefix());
    let backup = sqlite(&options, "skew").await;
    let ahead = |payload: &[u8]| {
        let mut r = rec(payload);
        r.meta.updated_at = now_ms() + 5_000;
        r
    };
    let (k, j) = (key(), key());
    backup
        .save(&k, &ahead(b"backed up by a fast clock"))
        .await
        .unwrap();
    backup
        .save(&j, &ahead(b"backed up by a fast clock"))
        .await
        .unwrap();

    // Restore into a primary that already holds `k` again (written after it lost its data).
    let store = BackupStore::new(
        memory(&options),
        Arc::clone(&backup),
        fast().with_read_through(false),
    )
    .unwrap();
    let now = store.primary().save(&k, &rec(b"written since")).await.unwrap();
    let progress = store.restore_all(|_| {}).await.unwrap();
    assert_eq!((progress.copied, progress.kept), (1, 1), "{progress:?}");
    assert_eq!(store.primary().load(&k).await.unwrap().map(|r| r.meta), Some(now));
    assert!(
        store.primary().load(&j).await.unwrap().is_some(),
        "a gap is filled"
    );

    // The primary's `k` into the backup by a resync (its write was dropped, say).
    store.resync().await.unwrap();
    assert_eq!(
        backup.load(&k).await.unwrap().map(|r| r.meta.version),
        Some(now.version)
    );
}
