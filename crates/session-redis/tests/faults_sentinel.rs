//! Redis Sentinel under failover, with concurrent load and every outcome recorded — the
//! sentinel counterpart of `faults_cluster.rs`: the master killed (`kill -9`) and its replica
//! promoted, a graceful `SENTINEL FAILOVER` (with Redis's defaults, and with
//! `min-replicas-to-write 1`), and the killed master restarted under load until it is a replica
//! of the new master.
//!
//! Each of 16 tasks owns its sessions and runs a mix of `create`, `save`, `update`, `save_if`,
//! `load`, `delete` and `rotate` on them, recording every call: acknowledged, refused with an
//! answer (`NotFound`, `Conflict`), or failed (`Unavailable`, `Timeout`, …: an unknown
//! outcome, either state allowed). A session's payload names its lineage (the session
//! through its rotations) and a counter, so a reply that belongs to another key is seen.
//! Afterwards every key is read **directly from the master the sentinels name**, with a plain
//! RESP connection (not through the store), and compared with the history. Each scenario
//! prints a `FIGURES sentinel-…` line:
//!
//! * `lost`: keys whose last acknowledged write is missing or replaced by an older value;
//!   `resurrected`: keys whose last acknowledged operation was a delete (or a rotate away)
//!   and that are live afterwards; each split by when that operation was acknowledged, i.e.
//!   by which master — `*_by_replication`: the old master, up to the replica's promotion
//!   (what it had not yet sent to the replica: Redis replicates asynchronously),
//!   `*_split_brain`: the old master after the promotion, until it was killed or the sentinels
//!   made it a replica (its resync discards what it took), `*_after_switch`: the master in
//!   charge (the store's responsibility). Each boundary is the event as a thread polling `ROLE`
//!   saw it, plus a margin in favour of the earlier class ([`PROMOTION_EDGE`], [`EDGE`]);
//! * `wrong`: replies that belong to another key or command (another lineage's payload, a
//!   counter never sent, a `Corrupt` or `Backend` error);
//! * `stale_reads`: answers the load tasks saw that contradict the history (a missing or
//!   older session, a `NotFound` or `Conflict` where the last acknowledged write says
//!   otherwise): the callers' view of a loss, even when a later write hid it;
//! * `errors`: calls by error kind (`not_found` and `conflict` are answers, the others
//!   failures); `loads_failed_ms` / `writes_failed_ms`: the first and last failure after the
//!   fault; `failover_ms`: from the fault until every sentinel names the new master and it says
//!   it is one; `served_again_ms`: from the fault until a write acknowledged by the store is
//!   found on that master.
//!
//! Pass: 0 wrong, 0 lost and 0 resurrected after the switch, in every scenario; for a graceful
//! `SENTINEL FAILOVER` (with Redis's defaults and with `min-replicas-to-write 1`) 0 lost and 0
//! resurrected at all: the store pauses writes at the first failover event of its master
//! (before the replica is told `SLAVEOF NO ONE`) and resumes them on the new master (see the
//! crate's README, *Sentinel*); and writes the store refuses of its own accord ("writes are
//! paused …") come back within [`RESUME_SLACK`] of the loads (or of the promotion). What a
//! `kill -9` loses by replication lag is reported, not asserted: see docs/operations.md,
//! *Redis Sentinel: a failover*. Run only with `SESSION_TEST_FAULTS=1` (the `faults` cell of
//! `cargo xtask test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "tests: a failed expectation is a failed test, and the figures are the output"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::backend::{now_ms, CodecId, Record};
use session_core::{Bytes, Error, Namespace, SessionId, SessionKey, SessionStore, Version};
use session_redis::{RedisConfig, RedisStore};
use testkit_redis::resp::{Connection, Reply};
use testkit_redis::{faults_enabled, Role, Sentinel, TopologyOptions};

/// Per-command timeout: five servers and the load share two cores.
const TIMEOUT_MS: u64 = 1_000;
const TASKS: usize = 16;
/// Sessions each task keeps alive at once (a deleted one is replaced by a new one).
const SLOTS: usize = 16;
const SIZE: usize = 256;
const HOUR_MS: u64 = 3_600_000;
const NS: &str = "sentinel";
/// The longest any one wait of a scenario may take.
const LIMIT: Duration = Duration::from_secs(30);
/// How long a task retries an interrupted `rotate` with the same new id before it gives the
/// session up (its two keys are then checked as "one of the two holds it").
const ROTATE_RETRY: Duration = Duration::from_secs(3);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(url: String) -> RedisConfig {
    let mut c = RedisConfig::new(url);
    c.timeout_ms = TIMEOUT_MS;
    c.connect_timeout_ms = 5_000;
    c.unresponsive_timeout_ms = 5_000;
    c
}

fn random_prefix() -> String {
    let id = SessionId::generate().unwrap();
    let short: String = id
        .as_str()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("s{short}:")
}

fn ns() -> Namespace {
    Namespace::new(NS).unwrap()
}

/// A payload: its lineage, its counter, padding to [`SIZE`] bytes.
fn payload(lineage: u64, counter: u64) -> Vec<u8> {
    let mut p = format!("{lineage}:{counter}:").into_bytes();
    p.resize(SIZE.max(p.len()), b'.');
    p
}

fn parse(payload: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(payload.get(..payload.len().min(40))?).ok()?;
    let mut parts = text.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn record(lineage: u64, counter: u64) -> Record {
    Record::new(CodecId::RAW, payload(lineage, counter), now_ms() + HOUR_MS)
}

/// What a key holds: `None` nothing, `Some(c)` its lineage's write number `c`.
type State = Option<u64>;

/// One key's history, reduced to what it may hold now.
struct KeyModel {
    key: SessionKey,
    /// Index of its lineage in the task's log.
    lineage: usize,
    /// The states the history allows: the last acknowledged one, plus every state an operation
    /// with an unknown outcome after it may have left.
    possible: BTreeSet<State>,
    /// When the operation that last fixed `possible` to one answer was acknowledged.
    settled_at: Option<Instant>,
}

/// One session through its rotations.
struct Lineage {
    /// Global id, written into every payload.
    id: u64,
    /// The highest counter written.
    sent: u64,
    keys: Vec<usize>,
    /// An acknowledged write happened and no delete was tried: one of its keys must hold it.
    must_exist: bool,
    settled_at: Option<Instant>,
}

/// A task's live session: its lineage, current key and stored version if known.
struct Slot {
    lineage: usize,
    key: usize,
    version: Option<Version>,
}

#[derive(Default)]
struct TaskLog {
    keys: Vec<KeyModel>,
    lineages: Vec<Lineage>,
    calls: usize,
    acked_writes: usize,
    acked_deletes: usize,
    uncertain: usize,
    errors: BTreeMap<&'static str, usize>,
    /// The first and the last failed call (an error other than an answer), loads and writes.
    failing: [Option<(Instant, Instant)>; 2],
    wrong: Vec<String>,
    stale: Vec<String>,
    /// Per failure message (the operation and the error): how many, first and last seen.
    messages: BTreeMap<String, (usize, Instant, Instant)>,
}

impl TaskLog {
    fn new_lineage(&mut self, task: usize) -> usize {
        let id = (task as u64) * 1_000_000 + self.lineages.len() as u64;
        self.lineages.push(Lineage {
            id,
            sent: 0,
            keys: Vec::new(),
            must_exist: false,
            settled_at: None,
        });
        self.lineages.len() - 1
    }

    fn new_key(&mut self, lineage: usize) -> usize {
        self.keys.push(KeyModel {
            key: SessionKey::new(ns(), SessionId::generate().unwrap()),
            lineage,
            possible: BTreeSet::from([None]),
            settled_at: None,
        });
        let k = self.keys.len() - 1;
        self.lineages[lineage].keys.push(k);
        k
    }

    /// An acknowledged operation: the key holds exactly one of `states` now.
    fn settle(&mut self, key: usize, states: BTreeSet<State>) {
        let now = Instant::now();
        let m = &mut self.keys[key];
        m.possible = states;
        m.settled_at = Some(now);
        self.lineages[m.lineage].settled_at = Some(now);
    }

    /// An operation with an unknown outcome: the key may hold `state` too.
    fn maybe(&mut self, key: usize, state: State) {
        self.keys[key].possible.insert(state);
    }

    /// An answer that says the key holds `seen`: a stale read when the history disallows it.
    fn observe(&mut self, key: usize, seen: State, what: &str) {
        let m = &self.keys[key];
        if !m.possible.contains(&seen) {
            self.stale.push(format!(
                "{what}: lineage {} saw {seen:?}, history allows {:?}",
                self.lineages[m.lineage].id, m.possible
            ));
        }
    }

    /// A call failed: counted by kind; a write's outcome is then unknown.
    fn failed(&mut self, e: &Error, what: &str) {
        *self.errors.entry(e.kind().as_str()).or_default() += 1;
        let write = !what.starts_with("load");
        self.uncertain += usize::from(write);
        let now = Instant::now();
        let span = &mut self.failing[usize::from(write)];
        *span = Some(span.map_or((now, now), |(first, _)| (first, now)));
        let seen = self
            .messages
            .entry(format!("{}: {e}", if write { "write" } else { "load" }))
            .or_insert((0, now, now));
        seen.0 += 1;
        seen.2 = now;
        if matches!(e, Error::Corrupt { .. } | Error::Backend { .. }) {
            self.wrong.push(format!("{what}: {e}"));
        }
    }
}

async fn run_task(t: usize, store: &RedisStore, stop: &AtomicBool) -> TaskLog {
    let mut log = TaskLog::default();
    let mut slots: Vec<Option<Slot>> = (0..SLOTS).map(|_| None).collect();
    let mut rng = testkit_redis::stats::Rng::new(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let s = n % SLOTS;
        n += 1;
        let failed = match slots[s].take() {
            None => {
                let (slot, failed) = create(t, store, &mut log).await;
                slots[s] = slot;
                failed
            }
            Some(slot) => {
                let (slot, failed) = step(store, &mut log, slot, rng.below(10)).await;
                slots[s] = slot;
                failed
            }
        };
        log.calls += 1;
        if failed {
            // Calls fail at once while the store has no master: don't spin the two cores.
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else if n.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    log
}

/// A new session under a fresh id. Returns the slot (`None` when it certainly does not exist)
/// and whether the call failed.
async fn create(t: usize, store: &RedisStore, log: &mut TaskLog) -> (Option<Slot>, bool) {
    let lineage = log.new_lineage(t);
    let key = log.new_key(lineage);
    log.lineages[lineage].sent = 1;
    let rec = record(log.lineages[lineage].id, 1);
    match store.create(&log.keys[key].key, &rec).await {
        Ok(meta) => {
            log.acked_writes += 1;
            log.settle(key, BTreeSet::from([Some(1)]));
            log.lineages[lineage].must_exist = true;
            let slot = Slot {
                lineage,
                key,
                version: Some(meta.version),
            };
            (Some(slot), false)
        }
        Err(e) => {
            log.failed(&e, "create");
            if matches!(e, Error::AlreadyExists { .. }) {
                log.wrong.push("create of a fresh id: AlreadyExists".to_owned());
                return (None, true);
            }
            log.maybe(key, Some(1));
            // Maybe created: go on with it (a later answer tells).
            let slot = Slot {
                lineage,
                key,
                version: None,
            };
            (Some(slot), true)
        }
    }
}

/// One operation on a live session. Returns the slot (`None`: the session is gone, a new one
/// takes its place) and whether the call failed.
async fn step(store: &RedisStore, log: &mut TaskLog, mut slot: Slot, dice: u64) -> (Option<Slot>, bool) {
    let key = log.keys[slot.key].key.clone();
    let lineage_id = log.lineages[slot.lineage].id;
    match dice {
        // Writes: save, update, save_if.
        0..=3 => {
            let op = match dice {
                0 | 1 => "save",
                2 => "update",
                _ if slot.version.is_some() => "save_if",
                // No version known (an earlier write's outcome is unknown): read it first.
                _ => return load(store, log, slot, &key, lineage_id).await,
            };
            let counter = log.lineages[slot.lineage].sent + 1;
            log.lineages[slot.lineage].sent = counter;
            let rec = record(lineage_id, counter);
            let result = match op {
                "save" => store.save(&key, &rec).await,
                "update" => store.update(&key, &rec).await,
                _ => store.save_if(&key, slot.version.unwrap(), &rec).await,
            };
            match result {
                Ok(meta) => {
                    log.acked_writes += 1;
                    log.settle(slot.key, BTreeSet::from([Some(counter)]));
                    log.lineages[slot.lineage].must_exist = true;
                    slot.version = Some(meta.version);
                    (Some(slot), false)
                }
                Err(Error::NotFound { .. }) => {
                    *log.errors.entry("not_found").or_default() += 1;
                    log.observe(slot.key, None, op);
                    (None, false)
                }
                Err(Error::Conflict { actual, .. }) => {
                    *log.errors.entry("conflict").or_default() += 1;
                    // The version is the last acknowledged write's: another version there
                    // means that write is not what the key holds.
                    let stale = format!(
                        "save_if of lineage {lineage_id}: Conflict though the last acknowledged write is the \
                         stored one"
                    );
                    log.stale.push(stale);
                    slot.version = Some(actual);
                    (Some(slot), false)
                }
                Err(e) => {
                    log.failed(&e, op);
                    log.maybe(slot.key, Some(counter));
                    slot.version = None;
                    (Some(slot), true)
                }
            }
        }
        4 => {
            let result = store.delete(&key).await;
            log.lineages[slot.lineage].must_exist = false;
            match result {
                Ok(existed) => {
                    log.acked_deletes += 1;
                    let m = &log.keys[slot.key];
                    let allowed = if existed {
                        m.possible.iter().any(Option::is_some)
                    } else {
                        m.possible.contains(&None)
                    };
                    if !allowed {
                        let stale = format!(
                            "delete of lineage {lineage_id} answered existed={existed}, history allows {:?}",
                            m.possible
                        );
                        log.stale.push(stale);
                    }
                    log.settle(slot.key, BTreeSet::from([None]));
                    (None, false)
                }
                Err(e) => {
                    log.failed(&e, "delete");
                    log.maybe(slot.key, None);
                    (None, true)
                }
            }
        }
        5 => rotate(store, log, slot, &key).await,
        _ => load(store, log, slot, &key, lineage_id).await,
    }
}

async fn load(
    store: &RedisStore,
    log: &mut TaskLog,
    mut slot: Slot,
    key: &SessionKey,
    lineage_id: u64,
) -> (Option<Slot>, bool) {
    match store.load(key).await {
        Ok(Some(found)) => {
            let sent = log.lineages[slot.lineage].sent;
            match parse(&found.payload) {
                Some((l, c)) if l == lineage_id && c <= sent => {
                    log.observe(slot.key, Some(c), "load");
                    slot.version = Some(found.meta.version);
                    (Some(slot), false)
                }
                other => {
                    log.wrong.push(format!(
                        "load of lineage {lineage_id} answered {other:?} (sent up to {sent})"
                    ));
                    (Some(slot), false)
                }
            }
        }
        Ok(None) => {
            log.observe(slot.key, None, "load");
            (None, false)
        }
        Err(e) => {
            log.failed(&e, "load");
            (Some(slot), true)
        }
    }
}

/// `rotate` to a fresh id; after an unknown outcome it is called again with the same new id
/// (the contract: that finishes the move, or answers `NotFound` when the first call did it).
async fn rotate(
    store: &RedisStore,
    log: &mut TaskLog,
    mut slot: Slot,
    key: &SessionKey,
) -> (Option<Slot>, bool) {
    let new = log.new_key(slot.lineage);
    let new_key = log.keys[new].key.clone();
    let moved: BTreeSet<State> = log.keys[slot.key]
        .possible
        .iter()
        .copied()
        .filter(Option::is_some)
        .collect();
    if moved.is_empty() {
        let stale = format!(
            "rotate of lineage {}: the history says the session is gone",
            log.lineages[slot.lineage].id
        );
        log.stale.push(stale);
    }
    let started = Instant::now();
    let mut interrupted = false;
    let mut any_failed = false;
    loop {
        let result = store.rotate(key, &new_key.id).await;
        if interrupted {
            log.calls += 1;
        }
        match result {
            Ok(_) => {
                log.acked_writes += 1;
                log.settle(new, moved);
                log.settle(slot.key, BTreeSet::from([None]));
                slot.key = new;
                return (Some(slot), any_failed);
            }
            Err(Error::NotFound { .. }) if interrupted => {
                // The interrupted call may have moved it: the new id tells.
                match store.load(&new_key).await {
                    Ok(Some(_)) => {
                        log.settle(new, moved);
                        log.settle(slot.key, BTreeSet::from([None]));
                        slot.key = new;
                        return (Some(slot), any_failed);
                    }
                    Ok(None) => {
                        log.observe(slot.key, None, "rotate retried");
                        return (None, any_failed);
                    }
                    Err(e) => {
                        log.failed(&e, "load after rotate");
                        return (None, true);
                    }
                }
            }
            Err(Error::NotFound { .. }) => {
                *log.errors.entry("not_found").or_default() += 1;
                log.observe(slot.key, None, "rotate");
                return (None, any_failed);
            }
            Err(e) => {
                any_failed = true;
                log.failed(&e, "rotate");
                if matches!(e, Error::AlreadyExists { .. }) {
                    log.wrong.push("rotate onto a fresh id: AlreadyExists".to_owned());
                    return (None, true);
                }
                for &state in &moved {
                    log.maybe(new, state);
                }
                log.maybe(slot.key, None);
                interrupted = true;
                if started.elapsed() > ROTATE_RETRY {
                    // Given up: under the old id or the new one (checked as a lineage).
                    return (None, true);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Loads one key every 10 ms and remembers its last failure: when loads work again.
struct LoadProbe {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Option<Instant>>,
}

impl LoadProbe {
    fn start(store: &RedisStore) -> LoadProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let (store, flag) = (store.clone(), Arc::clone(&stop));
        let key = SessionKey::new(
            Namespace::new("loadprobe").unwrap(),
            SessionId::generate().unwrap(),
        );
        let handle = tokio::spawn(async move {
            let mut last = None;
            while !flag.load(Ordering::Relaxed) {
                if store.load(&key).await.is_err() {
                    last = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            last
        });
        LoadProbe { stop, handle }
    }

    async fn stop(self) -> Option<Instant> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap()
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<TaskLog>>,
}

impl Load {
    fn start(store: &RedisStore) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..TASKS)
            .map(|t| {
                let (store, stop) = (store.clone(), Arc::clone(&stop));
                tokio::spawn(async move { run_task(t, &store, &stop).await })
            })
            .collect();
        Load { stop, handles }
    }

    async fn stop(self) -> Vec<TaskLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for h in self.handles {
            logs.push(h.await.unwrap());
        }
        logs
    }
}

/// Watches the roles of the two data nodes (`ROLE` every 2 ms on a connection of its own to
/// each, from a thread): when the replica first says it is master, and when the old master
/// first says it is a replica.
struct RoleWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Option<Instant>, Option<Instant>)>,
}

/// The first word of `ROLE` on `port`, over `conn` (opened again after an error: the
/// sentinels close every client connection of a server they reconfigure).
fn role_of(conn: &mut Option<Connection>, port: u16) -> Option<String> {
    if conn.is_none() {
        *conn = Connection::connect_with(port, Duration::from_millis(100), Duration::from_millis(500)).ok();
    }
    match conn.as_mut()?.command(&["ROLE"]) {
        Ok(reply) => reply.items().first()?.text(),
        Err(_) => {
            *conn = None;
            None
        }
    }
}

impl RoleWatch {
    fn start(old: u16, new: u16) -> RoleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut promoted, mut demoted) = (None, None);
            let (mut to_new, mut to_old) = (None, None);
            while !flag.load(Ordering::Relaxed) && (promoted.is_none() || demoted.is_none()) {
                if promoted.is_none() && role_of(&mut to_new, new).as_deref() == Some("master") {
                    promoted = Some(Instant::now());
                }
                if demoted.is_none() && role_of(&mut to_old, old).as_deref() == Some("slave") {
                    demoted = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (promoted, demoted)
        });
        RoleWatch { stop, handle }
    }

    fn stop(self) -> (Option<Instant>, Option<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// `GET` of every key from the server on `port`, bypassing the store.
fn read_directly(port: u16, keys: &[String]) -> Vec<Result<Option<Record>, String>> {
    let mut c = Connection::connect(port).expect("connect to the master");
    keys.iter()
        .map(|key| match c.command(&["GET", key.as_str()]) {
            Ok(Reply::Bulk(None)) => Ok(None),
            Ok(Reply::Bulk(Some(bytes))) => Record::decode(&Bytes::from(bytes), NS)
                .map(Some)
                .map_err(|e| e.to_string()),
            other => Err(format!("{other:?}")),
        })
        .collect()
}

/// Until a write acknowledged by the store is found on the master the sentinels name (read
/// directly): the store serves again, on the right server. Time since `since`.
async fn served_again(
    store: &RedisStore,
    sentinel: &Sentinel,
    prefix: &str,
    since: Instant,
) -> Option<Duration> {
    let key = SessionKey::new(Namespace::new("probe").unwrap(), SessionId::generate().unwrap());
    let full = format!("{prefix}probe:{}", key.id.as_str());
    let mut n = 0;
    while since.elapsed() < LIMIT {
        n += 1;
        if store.save(&key, &record(0, n)).await.is_ok() {
            if let Ok(master) = sentinel.current_master() {
                let found = read_directly(master, std::slice::from_ref(&full));
                if let Some(Ok(Some(rec))) = found.first() {
                    if parse(&rec.payload) == Some((0, n)) {
                        return Some(since.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// A reply the old master sent before it was killed or made a replica may reach its task
/// after that was seen (replies in flight, two busy cores): an acknowledgement within this
/// margin after the event counts as the old master's. It only ever moves a loss out of
/// `*_after_switch`, the class asserted to be empty.
const EDGE: Duration = Duration::from_millis(250);
/// The same margin after the replica's promotion was seen, between `*_by_replication` and
/// `*_split_brain` (reported only). Kept short, yet the split is rough: the promotion is seen
/// up to tens of milliseconds late (the sentinels close the watcher's connection as they
/// promote; two busy cores), and this load deletes or rotates a good part of the sessions
/// alive at the promotion within that time, so with Redis's defaults `*_by_replication`
/// holds split-brain losses too. With `min-replicas-to-write 1` there is no split brain, and
/// it counts only what the replica had not received.
const PROMOTION_EDGE: Duration = Duration::from_millis(20);

/// When the old master could last acknowledge a write, for telling who lost what (each
/// instant is the event as seen plus its margin).
struct Epochs {
    /// Before this the replica was not yet promoted.
    promoted: Instant,
    /// After this the old master acknowledged nothing (killed, or a replica).
    old_master_until: Instant,
}

#[derive(Default)]
struct Verdict {
    calls: usize,
    keys: usize,
    acked_writes: usize,
    acked_deletes: usize,
    uncertain: usize,
    errors: BTreeMap<&'static str, usize>,
    /// `[by replication, split brain, after the switch]`
    lost: [usize; 3],
    resurrected: [usize; 3],
    wrong: Vec<String>,
    stale: Vec<String>,
    examples: Vec<String>,
    /// Failure messages: how many, first and last after the fault (ms), the text.
    messages: Vec<String>,
    /// After the fault: the last failed load of a probe that loads one key every 10 ms (the
    /// load tasks may all be busy retrying an interrupted `rotate`), the last failed write,
    /// and the last write the
    /// store itself refused ("writes are paused …": a failover, or an unconfirmed fence).
    last_load_failure: Option<Duration>,
    last_write_failure: Option<Duration>,
    last_write_paused: Option<Duration>,
    failover: Duration,
}

impl Verdict {
    fn lost(&self) -> usize {
        self.lost.iter().sum()
    }

    fn resurrected(&self) -> usize {
        self.resurrected.iter().sum()
    }
}

fn epoch(at: Option<Instant>, epochs: &Epochs) -> usize {
    match at {
        Some(t) if t <= epochs.promoted => 0,
        Some(t) if t <= epochs.old_master_until => 1,
        _ => 2,
    }
}

/// Reads every key of every log from the master on `master` and compares with the history.
fn verdict(master: u16, prefix: &str, logs: Vec<TaskLog>, epochs: &Epochs) -> Verdict {
    let mut v = Verdict::default();
    for log in logs {
        v.calls += log.calls;
        v.keys += log.keys.len();
        v.acked_writes += log.acked_writes;
        v.acked_deletes += log.acked_deletes;
        v.uncertain += log.uncertain;
        v.wrong.extend(log.wrong);
        v.stale.extend(log.stale);
        for (kind, n) in log.errors {
            *v.errors.entry(kind).or_default() += n;
        }
        let full: Vec<String> = log
            .keys
            .iter()
            .map(|m| format!("{prefix}{NS}:{}", m.key.id.as_str()))
            .collect();
        let found = read_directly(master, &full);
        let mut flagged = vec![false; log.lineages.len()];
        let mut live = vec![false; log.lineages.len()];
        for (m, found) in log.keys.iter().zip(found) {
            let lineage = &log.lineages[m.lineage];
            let state = match found {
                Err(e) => {
                    v.wrong.push(format!("lineage {}: {e}", lineage.id));
                    continue;
                }
                Ok(None) => None,
                Ok(Some(rec)) => match parse(&rec.payload) {
                    Some((l, c)) if l == lineage.id && c <= lineage.sent => Some(c),
                    other => {
                        v.wrong.push(format!(
                            "a key of lineage {} holds {other:?} (sent up to {})",
                            lineage.id, lineage.sent
                        ));
                        continue;
                    }
                },
            };
            live[m.lineage] |= state.is_some();
            if m.possible.contains(&state) {
                continue;
            }
            flagged[m.lineage] = true;
            let e = epoch(m.settled_at, epochs);
            let what = if m.possible.iter().all(Option::is_none) {
                v.resurrected[e] += 1;
                "resurrected"
            } else {
                v.lost[e] += 1;
                "lost"
            };
            if v.examples.len() < 8 {
                v.examples.push(format!(
                    "{what} (epoch {e}): lineage {} holds {state:?}, history allows {:?}",
                    lineage.id, m.possible
                ));
            }
        }
        // A session given up after an interrupted rotate: one of its keys must hold it.
        for (i, lineage) in log.lineages.iter().enumerate() {
            if lineage.must_exist && !flagged[i] && !live[i] {
                v.lost[epoch(lineage.settled_at, epochs)] += 1;
                if v.examples.len() < 8 {
                    v.examples
                        .push(format!("lost: lineage {} under none of its keys", lineage.id));
                }
            }
        }
    }
    v
}

/// The first and the last failed call of all tasks: loads (`write` false) or writes.
fn failing(logs: &[TaskLog], write: bool) -> Option<(Instant, Instant)> {
    logs.iter()
        .filter_map(|l| l.failing[usize::from(write)])
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
}

fn errors_text(errors: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = errors.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| d.as_millis().to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// `kill -9` of the master; it stays down.
    Kill,
    /// `SENTINEL FAILOVER`.
    Graceful,
    /// `kill -9` of the master, then it is restarted (empty, no persistence) under load
    /// until the sentinels have made it a replica of the new master.
    KillAndRestart,
}

/// Runs one scenario and prints its figures; returns them for the assertions.
async fn scenario(name: &str, fault: Fault, options: TopologyOptions) -> Verdict {
    let began = Instant::now();
    let mut sentinel = Sentinel::start_with(&options).expect("sentinel topology starts");
    let prefix = random_prefix();
    let store = RedisStore::builder(config(sentinel.url()))
        .options(session_core::StoreOptions::new(
            session_core::KeyPrefix::new(&prefix).unwrap(),
        ))
        .connect()
        .await
        .expect("connects");
    let load = Load::start(&store);
    let probe = LoadProbe::start(&store);
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    let old = sentinel.current_master().expect("a master");
    let new = sentinel.other_data_node(old).expect("a replica");
    let watch = RoleWatch::start(old, new);
    let fault_at = Instant::now();
    let mut killed_at = None;
    let promoted = match fault {
        Fault::Kill | Fault::KillAndRestart => {
            assert_eq!(sentinel.kill_master().expect("kill -9"), old);
            killed_at = Some(Instant::now());
            sentinel.wait_for_failover(old, LIMIT)
        }
        Fault::Graceful => sentinel.failover(LIMIT),
    }
    .expect("the sentinels fail over");
    assert_eq!(promoted, new, "the replica is promoted");
    let failover = fault_at.elapsed();
    let served = served_again(&store, &sentinel, &prefix, fault_at).await;

    let mut extra = String::new();
    match fault {
        Fault::Kill => {}
        Fault::Graceful => {
            // Redis leaves the old master a writable master until the sentinels reconfigure it.
            sentinel
                .wait_replica_of(old, new, LIMIT)
                .expect("the old master becomes a replica");
        }
        Fault::KillAndRestart => {
            let restarted_at = Instant::now();
            sentinel.restart_data_node(old).expect("old master restarts");
            sentinel
                .wait_replica_of(old, new, LIMIT)
                .expect("the old master rejoins as a replica of the new one");
            let _ = write!(extra, " rejoined_ms={}", restarted_at.elapsed().as_millis());
        }
    }
    if fault != Fault::Kill {
        assert_eq!(
            sentinel.role(old).expect("ROLE of the old master"),
            (Role::Replica, Some(new)),
            "the old master replicates the new one"
        );
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let logs = load.stop().await;
    let loads_back = probe.stop().await.map(|t| t.saturating_duration_since(fault_at));
    let (promoted_seen, demoted_seen) = watch.stop();

    let epochs = match killed_at {
        Some(killed) => Epochs {
            promoted: killed + EDGE,
            old_master_until: killed + EDGE,
        },
        None => Epochs {
            promoted: promoted_seen.unwrap_or(fault_at) + PROMOTION_EDGE,
            old_master_until: demoted_seen.unwrap_or_else(Instant::now) + EDGE,
        },
    };
    if fault == Fault::Graceful {
        let _ = write!(
            extra,
            " old_master_writable_after_promotion_ms={}",
            (epochs.old_master_until - EDGE)
                .saturating_duration_since(epochs.promoted - PROMOTION_EDGE)
                .as_millis()
        );
    }
    for (what, write) in [("loads", false), ("writes", true)] {
        if let Some((first, last)) = failing(&logs, write) {
            let since = |t: Instant| t.saturating_duration_since(fault_at).as_millis();
            let _ = write!(extra, " {what}_failed_ms={}..{}", since(first), since(last));
        }
    }
    let mut messages: BTreeMap<&str, (usize, Instant, Instant)> = BTreeMap::new();
    for (text, &(n, first, last)) in logs.iter().flat_map(|l| &l.messages) {
        let m = messages.entry(text.as_str()).or_insert((0, first, last));
        *m = (m.0 + n, m.1.min(first), m.2.max(last));
    }
    let since = |t: Instant| t.saturating_duration_since(fault_at).as_millis();
    let last_write_paused = messages
        .iter()
        .filter(|(text, _)| text.starts_with("write:") && text.contains("writes are paused"))
        .map(|(_, &(_, _, last))| last.saturating_duration_since(fault_at))
        .max();
    if let Some(paused) = last_write_paused {
        let _ = write!(extra, " writes_paused_until_ms={}", paused.as_millis());
    }
    let messages: Vec<String> = messages
        .into_iter()
        .map(|(text, (n, first, last))| format!("{n}× {}..{} ms: {text}", since(first), since(last)))
        .collect();
    let master = sentinel.current_master().expect("the master after the scenario");
    assert_eq!(master, new, "the sentinels still name the promoted replica");
    let last_write_failure = failing(&logs, true).map(|(_, last)| last.saturating_duration_since(fault_at));
    if let Some(back) = loads_back {
        let _ = write!(extra, " probe_loads_failed_until_ms={}", back.as_millis());
    }
    let mut v = verdict(master, &prefix, logs, &epochs);
    v.messages = messages;
    v.last_load_failure = loads_back;
    v.last_write_failure = last_write_failure;
    v.last_write_paused = last_write_paused;
    v.failover = failover;
    println!(
        "FIGURES sentinel-{name}: calls={} lost={} resurrected={} wrong={} errors={} failover_ms={} \
         served_again_ms={} lost_by_replication={} lost_split_brain={} lost_after_switch={} \
         resurrected_by_replication={} resurrected_split_brain={} resurrected_after_switch={} stale_reads={} \
         keys={} acked_writes={} acked_deletes={} unknown_outcomes={}{extra} wall_ms={}",
        v.calls,
        v.lost(),
        v.resurrected(),
        v.wrong.len(),
        errors_text(&v.errors),
        failover.as_millis(),
        ms(served),
        v.lost[0],
        v.lost[1],
        v.lost[2],
        v.resurrected[0],
        v.resurrected[1],
        v.resurrected[2],
        v.stale.len(),
        v.keys,
        v.acked_writes,
        v.acked_deletes,
        v.uncertain,
        began.elapsed().as_millis(),
    );
    for w in v.wrong.iter().take(5) {
        println!("  wrong: {w}");
    }
    for e in &v.examples {
        println!("  {e}");
    }
    for s in v.stale.iter().take(3) {
        println!("  stale: {s}");
    }
    for m in v.messages.iter().take(12) {
        println!("  failed: {m}");
    }
    assert!(served.is_some(), "the store serves again from the new master");
    assert!(
        v.wrong.is_empty(),
        "no reply crossed keys or commands: {:?}",
        v.wrong
    );
    assert_eq!(v.lost[2], 0, "no write acknowledged after the switch is lost");
    assert_eq!(
        v.resurrected[2], 0,
        "no delete acknowledged after the switch is undone"
    );
    // Writes come back with the loads: the store refuses writes of its own accord ("writes are
    // paused": a failover in progress, or a fence kill not confirmed) only until it is on the
    // new master, not until a kill on the old one is confirmed.
    let back = v.last_load_failure.unwrap_or(v.failover).max(v.failover);
    if let Some(paused) = v.last_write_paused {
        assert!(
            paused <= back + RESUME_SLACK,
            "writes were paused until {} ms after the fault, loads were back at {} ms",
            paused.as_millis(),
            back.as_millis()
        );
    }
    v
}

/// How much later than the loads (or the promotion) writes may come back on the new master.
const RESUME_SLACK: Duration = Duration::from_millis(750);

/// (a) The master is killed (`kill -9`) under load; the sentinels promote the replica and the
/// store follows it. A dead master cannot split the brain: everything lost is what it had
/// acknowledged before its replica received it (reported; Redis replicates asynchronously).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_master_is_replaced() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let v = scenario("kill-master", Fault::Kill, TopologyOptions::new()).await;
    // The fence's kills of connections on the dead master are settled by the switch: writes
    // do not stay paused after loads work again on the new master.
    if let (Some(loads), Some(writes)) = (v.last_load_failure, v.last_write_failure) {
        assert!(
            writes <= loads + RESUME_SLACK,
            "writes failed until {} ms after the kill, loads until {} ms",
            writes.as_millis(),
            loads.as_millis()
        );
    }
}

/// (b) A graceful `SENTINEL FAILOVER` under load, with Redis's defaults. The sentinels promote
/// the replica at once, without waiting for it to catch up, and reconfigure the old master
/// as a replica only ≈ 11 s later; until then the old master is a writable master whose
/// writes its resync will discard. The store follows the sentinels' events: it pauses writes
/// at the leader's first failover event (a sentinel timer tick or more before `SLAVEOF NO
/// ONE`, so the writes in flight are answered and replicated first), switches on
/// `+switch-master`, and resumes writes on the new master: nothing acknowledged is lost.
///
/// What stays possible without `min-replicas-to-write`: a write sent to the old master before
/// the pause began and answered by it only after the promotion (delayed longer than the gap
/// between the first event and `SLAVEOF NO ONE`, ≥ 100 ms; at most one per task in this
/// load). None was seen in the runs here; if that assertion ever fails, `lost_split_brain`
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_failover() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let v = scenario("graceful-failover", Fault::Graceful, TopologyOptions::new()).await;
    assert_eq!(
        (v.lost(), v.resurrected()),
        (0, 0),
        "no acknowledged write lost and no acknowledged delete undone by a graceful failover"
    );
    assert!(
        v.messages
            .iter()
            .any(|m| m.contains("a sentinel failover of the master is in progress")),
        "writes were paused during the failover"
    );
}

/// (b′) The same with `min-replicas-to-write 1` on both data nodes: the old master could not
/// acknowledge a write once its replica has left anyway (`NOREPLICAS`), and the new master,
/// whose only replica is the old master, refuses writes (`NOREPLICAS`, an `unavailable`
/// error) until the sentinels have made the old master its replica (≈ 11 s): with one replica
/// this setting trades those seconds of writes for the guarantee. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_failover_with_min_replicas() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let options = TopologyOptions::new()
        .arg("--min-replicas-to-write")
        .arg("1")
        .arg("--min-replicas-max-lag")
        .arg("10");
    let v = scenario("graceful-failover-min-replicas", Fault::Graceful, options).await;
    assert!(
        v.messages.iter().any(|m| m.contains("NOREPLICAS")),
        "a master without its replica refused writes"
    );
    assert_eq!(
        (v.lost(), v.resurrected()),
        (0, 0),
        "no acknowledged write lost and no acknowledged delete undone"
    );
}

/// (c) The master is killed, the replica promoted, and the old master restarted (empty: no
/// persistence) while the load goes on; the sentinels turn it into a replica of the new
/// master (`ROLE` checked), and nothing the store acknowledged after the switch is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_master_returns_as_a_replica() {
    if !faults_enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    scenario(
        "old-master-returns",
        Fault::KillAndRestart,
        TopologyOptions::new(),
    )
    .await;
}
