//! Collecting the rounds, the ratios against the anchors, and the console and Markdown reports.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cases::{Case, Group, RedisMemory, CLUSTER_RAW_GET, CLUSTER_RAW_SET, CLUSTER_SUBJECT};
use crate::codec::CodecCell;
use crate::commandstats::{CmdStat, PROBES, PROBE_RATIOS};
use crate::footprint::Footprint;
use crate::harness::{median, Cell};
use crate::scale::{ScaleReport, FLAT};
use crate::sql::{
    FlushCell, FLUSH_SESSIONS, LITE_OURS, LITE_TOWER, PG_OURS, PG_TOWER, SQL_POOL, WRITE_BEHIND,
};

/// One case's figures, one per round.
struct Entry {
    id: String,
    subject: String,
    op: String,
    tasks: usize,
    items: u32,
    group: &'static str,
    rounds: Vec<Cell>,
}

/// Everything measured, in the order first seen.
#[derive(Default)]
pub(crate) struct Results {
    entries: Vec<Entry>,
    codecs: Vec<(String, Vec<CodecCell>)>,
    /// Per probe label, per round: the command's statistics and the cell's failed operations.
    server: Vec<(String, Vec<(CmdStat, u64)>)>,
    /// Per target ratio's label, per round: the ratio from alternating slices (see [`paired_defs`]).
    paired: Vec<(&'static str, Vec<f64>)>,
    /// Per write-behind backup, per round: its throughput (`sql.rs`).
    flushes: Vec<(&'static str, Vec<FlushCell>)>,
}

impl Results {
    /// Adds a round's cell of a case.
    pub(crate) fn record(&mut self, case: &Case, cell: Cell) {
        let group = match case.group {
            Group::Memory => "memory",
            Group::Redis => "redis",
            Group::Sql => "sql",
        };
        self.push(
            case.id(),
            case.subject,
            case.op,
            case.tasks,
            case.items,
            group,
            cell,
        );
    }

    /// Adds a round's cell of something that is not a [`Case`] (redis-benchmark).
    pub(crate) fn record_named(&mut self, name: &str, subject: &str, tasks: usize, items: u32, cell: Cell) {
        let (label, op) = name.rsplit_once(' ').unwrap_or((name, ""));
        let subject = format!("{subject} {label}");
        self.push(
            format!("{subject} {op}"),
            &subject,
            op,
            tasks,
            items,
            "redis",
            cell,
        );
    }

    #[allow(clippy::too_many_arguments, reason = "private helper")]
    fn push(
        &mut self,
        id: String,
        subject: &str,
        op: &str,
        tasks: usize,
        items: u32,
        group: &'static str,
        cell: Cell,
    ) {
        match self.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => e.rounds.push(cell),
            None => self.entries.push(Entry {
                id,
                subject: subject.to_owned(),
                op: op.to_owned(),
                tasks,
                items,
                group,
                rounds: vec![cell],
            }),
        }
    }

    /// Adds a round's codec figures.
    pub(crate) fn record_codec(&mut self, name: &str, cell: CodecCell) {
        match self.codecs.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => v.push(cell),
            None => self.codecs.push((name.to_owned(), vec![cell])),
        }
    }

    /// Adds a round's `INFO commandstats` figure of a probe cell.
    pub(crate) fn record_server(&mut self, label: &str, stat: CmdStat, errors: u64) {
        match self.server.iter_mut().find(|(n, _)| n == label) {
            Some((_, v)) => v.push((stat, errors)),
            None => self.server.push((label.to_owned(), vec![(stat, errors)])),
        }
    }

    /// A probe's µs per call, per round.
    fn server_usec(&self, label: &str) -> Vec<f64> {
        self.server
            .iter()
            .find(|(n, _)| n == label)
            .map(|(_, v)| v.iter().map(|(s, _)| s.usec_per_call).collect())
            .unwrap_or_default()
    }

    /// Adds a round's paired ratio of a target (both sides measured in alternating slices).
    pub(crate) fn record_paired(&mut self, label: &'static str, ratio: f64) {
        match self.paired.iter_mut().find(|(n, _)| *n == label) {
            Some((_, v)) => v.push(ratio),
            None => self.paired.push((label, vec![ratio])),
        }
    }

    /// Adds a round's write-behind throughput into one backup.
    pub(crate) fn record_flush(&mut self, label: &'static str, cell: FlushCell) {
        match self.flushes.iter_mut().find(|(n, _)| *n == label) {
            Some((_, v)) => v.push(cell),
            None => self.flushes.push((label, vec![cell])),
        }
    }

    fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// A target's paired ratio per round, and their median.
    fn paired_ratio(&self, label: &str) -> Option<(f64, Vec<f64>)> {
        let (_, rounds) = self.paired.iter().find(|(n, _)| *n == label)?;
        Some((median(rounds), rounds.clone()))
    }

    /// Items per second of `num` over items per second of `den`, per round, then the median.
    fn ratio(&self, num: &str, den: &str) -> Option<(f64, Vec<f64>)> {
        let (n, d) = (self.get(num)?, self.get(den)?);
        let per_round: Vec<f64> = n
            .rounds
            .iter()
            .zip(&d.rounds)
            .map(|(a, b)| a.ops_per_sec * f64::from(n.items) / (b.ops_per_sec * f64::from(d.items)))
            .collect();
        Some((median(&per_round), per_round))
    }
}

/// The targets whose two sides are both cases: `(label, numerator case id, denominator case id)`.
/// Each round measures them once more in alternating slices (A B B A …), so that both sides
/// see the same state of a noisy machine; the report takes their ratio from those slices.
pub(crate) fn paired_defs() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    RATIOS
        .iter()
        .filter(|d| d.target.is_some())
        .map(|d| (d.label, d.num, d.den))
}

/// A ratio the report shows; a target when the issue sets one.
struct RatioDef {
    label: &'static str,
    num: &'static str,
    den: &'static str,
    target: Option<f64>,
}

const fn target(label: &'static str, num: &'static str, den: &'static str, t: f64) -> RatioDef {
    RatioDef {
        label,
        num,
        den,
        target: Some(t),
    }
}

const fn info(label: &'static str, num: &'static str, den: &'static str) -> RatioDef {
    RatioDef {
        label,
        num,
        den,
        target: None,
    }
}

const RATIOS: &[RatioDef] = &[
    target(
        "RedisStore load / raw fred GET (pool 2, 64 tasks)",
        "RedisStore (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
        0.9,
    ),
    target(
        "RedisStore save / raw fred SET PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
        0.9,
    ),
    target(
        "RedisStore save / tower-sessions-redis-store save (pool 2, 64 tasks)",
        "RedisStore (pool 2) save @64",
        "tower-sessions-redis-store (pool 2) save @64",
        1.2,
    ),
    target(
        "RedisStore update / raw fred SET XX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) update @64",
        "raw fred SET XX PXAT (pool 2) update @64",
        0.9,
    ),
    target(
        "RedisStore create / raw fred SET NX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) create @64",
        "raw fred SET NX PXAT (pool 2) create @64",
        0.9,
    ),
    target(
        "RedisStore load_many(16) keys/s / redis-benchmark -c 50 -P 16 GET",
        "RedisStore (pool 2) load_many(16) @64",
        "redis-benchmark -c 50 -P 16 GET",
        0.7,
    ),
    target(
        "FallbackStore load / RedisStore load (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> load @64",
        "RedisStore (pool 2) load @64",
        0.95,
    ),
    target(
        "FallbackStore save / RedisStore save (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    target(
        "FallbackStore create / RedisStore create (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> create @64",
        "RedisStore (pool 2) create @64",
        0.95,
    ),
    target(
        "FallbackStore update / RedisStore update, both keeping tombstones (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> update @64",
        "RedisStore (pool 2, tombstones) update @64",
        0.95,
    ),
    target(
        "FallbackStore save_if / RedisStore save_if (64 tasks)",
        "FallbackStore<RedisStore (pool 2), MemoryStore> save_if @64",
        "RedisStore (pool 2) save_if @64",
        0.95,
    ),
    target(
        "RedisStore save with write-behind into PostgreSQL / RedisStore save (pool 2, 64 tasks)",
        "BackupStore<RedisStore (pool 2), SqlStore PostgreSQL> save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    target(
        "RedisStore cluster load / standalone load (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load @64",
        "RedisStore (pool 2) load @64",
        0.8,
    ),
    target(
        "RedisStore cluster save / standalone save (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save @64",
        "RedisStore (pool 2) save @64",
        0.8,
    ),
    target(
        "RedisStore cluster save_if / standalone save_if (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save_if @64",
        "RedisStore (pool 2) save_if @64",
        0.8,
    ),
    target(
        "RedisStore cluster save_many(16) / standalone save_many(16) (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save_many(16) @64",
        "RedisStore (pool 2) save_many(16) @64",
        0.8,
    ),
    target(
        "RedisStore near cache load, cached / raw fred GET (pool 2, 64 tasks)",
        "RedisStore near cache (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
        5.0,
    ),
    target(
        "RedisStore near cache load, every load a miss / RedisStore load (pool 2, 64 tasks; a miss costs at most 1.1×)",
        "RedisStore near cache, every load a miss (pool 2) load @64",
        "RedisStore (pool 2) load @64",
        0.91,
    ),
    target(
        "RedisStore near cache save / RedisStore save (pool 2, 64 tasks)",
        "RedisStore near cache (pool 2) save @64",
        "RedisStore (pool 2) save @64",
        0.95,
    ),
    info(
        "RedisStore near cache load, cached / MemoryStore load (64 tasks; goal: within 2×)",
        "RedisStore near cache (pool 2) load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (hashed ids) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (hashed ids) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (hashed ids) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (hashed ids) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (hashed ids) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (hashed ids) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SecureStore (encryption) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (encryption) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (encryption) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (encryption) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (encryption) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (encryption) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (encryption) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (encryption) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) load / RedisStore load (pool 2, 64 tasks)",
        "SecureStore (hashed ids + encryption) on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) on MemoryStore load / MemoryStore load (64 tasks)",
        "SecureStore (hashed ids + encryption) on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) save / RedisStore save (pool 2, 64 tasks)",
        "SecureStore (hashed ids + encryption) on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "SecureStore (hashed ids + encryption) on MemoryStore save / MemoryStore save (64 tasks)",
        "SecureStore (hashed ids + encryption) on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "MemoryStore: create + bind / create (64 tasks)",
        "Sessions<T> on MemoryStore create + bind @64",
        "Sessions<T> on MemoryStore create @64",
    ),
    info(
        "MemoryStore: 4 × (create + bind) + revoke_all / 4 × (create + bind) + 4 × delete (64 tasks)",
        "Sessions<T> on MemoryStore 4 × (create + bind) + revoke_all @64",
        "Sessions<T> on MemoryStore 4 × (create + bind) + 4 × delete @64",
    ),
    info(
        "RedisStore: create + bind / create (64 tasks)",
        "Sessions<T> on RedisStore (pool 2) create + bind @64",
        "Sessions<T> on RedisStore (pool 2) create @64",
    ),
    info(
        "RedisStore: 4 × (create + bind) + revoke_all / 4 × (create + bind) + 4 × delete (64 tasks)",
        "Sessions<T> on RedisStore (pool 2) 4 × (create + bind) + revoke_all @64",
        "Sessions<T> on RedisStore (pool 2) 4 × (create + bind) + 4 × delete @64",
    ),
    info(
        "near cache mixed 90/10, two instances / tower-sessions CachingSessionStore (moka), two instances (64 tasks)",
        "2 × RedisStore near cache (pool 2) mixed 90/10 @64",
        "2 × tower-sessions CachingSessionStore<moka, redis-store> (pool 2) mixed 90/10 @64",
    ),
    info(
        "near cache mixed 90/10, two instances / RedisStore without it, two instances (64 tasks)",
        "2 × RedisStore near cache (pool 2) mixed 90/10 @64",
        "2 × RedisStore (pool 2) mixed 90/10 @64",
    ),
    target(
        "MemoryStore load / DashMap get (64 tasks)",
        "MemoryStore load @64",
        "DashMap<String, Bytes> load @64",
        0.7,
    ),
    target(
        "MemoryStore save / DashMap upsert, a fresh buffer each (64 tasks)",
        "MemoryStore save @64",
        "DashMap<String, Bytes>, fresh buffer save @64",
        0.7,
    ),
    target(
        "SessionLayer request / tower-sessions SessionManagerLayer request (same MemoryStore, 64 tasks)",
        "web: SessionLayer, MemoryStore request @64",
        "web: tower-sessions SessionManagerLayer, MemoryStore request @64",
        1.0,
    ),
    info(
        "RedisStore load / raw fred GET (1 connection, 64 tasks)",
        "RedisStore (1 connection) load @64",
        "raw fred GET (1 connection) load @64",
    ),
    info(
        "RedisStore save / raw fred SET PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) save @64",
        "raw fred SET PXAT (1 connection) save @64",
    ),
    info(
        "RedisStore update / raw fred SET XX PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) update @64",
        "raw fred SET XX PXAT (1 connection) update @64",
    ),
    info(
        "RedisStore update keeping tombstones (a script) / raw fred SET XX PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2, tombstones) update @64",
        "raw fred SET XX PXAT (pool 2) update @64",
    ),
    info(
        "RedisStore save_if / raw fred SET PXAT (pool 2, 64 tasks)",
        "RedisStore (pool 2) save_if @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore create / raw fred SET NX PXAT (1 connection, 64 tasks)",
        "RedisStore (1 connection) create @64",
        "raw fred SET NX PXAT (1 connection) create @64",
    ),
    info(
        "RedisStore load / raw fred GET (pool 2, 1 task)",
        "RedisStore (pool 2) load @1",
        "raw fred GET (pool 2) load @1",
    ),
    info(
        "RedisStore save / raw fred SET PXAT (pool 2, 1 task)",
        "RedisStore (pool 2) save @1",
        "raw fred SET PXAT (pool 2) save @1",
    ),
    info(
        "RedisStore cluster load / raw fred cluster GET (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load @64",
        "raw fred cluster GET (pool 2) load @64",
    ),
    info(
        "RedisStore cluster save / raw fred cluster SET PXAT (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) save @64",
        "raw fred cluster SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore cluster load / raw fred cluster GET (pool 2, 1 task)",
        "RedisStore cluster (pool 2) load @1",
        "raw fred cluster GET (pool 2) load @1",
    ),
    info(
        "raw fred cluster GET / raw fred GET, standalone (pool 2, 64 tasks)",
        "raw fred cluster GET (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
    ),
    info(
        "raw fred cluster SET PXAT / raw fred SET PXAT, standalone (pool 2, 64 tasks)",
        "raw fred cluster SET PXAT (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "RedisStore cluster load / standalone load (pool 2, 1 task)",
        "RedisStore cluster (pool 2) load @1",
        "RedisStore (pool 2) load @1",
    ),
    info(
        "RedisStore cluster save / standalone save (pool 2, 1 task)",
        "RedisStore cluster (pool 2) save @1",
        "RedisStore (pool 2) save @1",
    ),
    info(
        "RedisStore cluster load_many(16) / standalone load_many(16) (pool 2, 64 tasks)",
        "RedisStore cluster (pool 2) load_many(16) @64",
        "RedisStore (pool 2) load_many(16) @64",
    ),
    info(
        "tower-sessions-redis-store load / raw fred GET (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) load @64",
        "raw fred GET (pool 2) load @64",
    ),
    info(
        "tower-sessions-redis-store save / raw fred SET PXAT (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) save @64",
        "raw fred SET PXAT (pool 2) save @64",
    ),
    info(
        "tower-sessions-redis-store create / raw fred SET NX PXAT (pool 2, 64 tasks)",
        "tower-sessions-redis-store (pool 2) create @64",
        "raw fred SET NX PXAT (pool 2) create @64",
    ),
    info(
        "SqlStore load / tower-sessions-sqlx-store PostgresStore load (PostgreSQL, pool 8, 64 tasks)",
        "SqlStore PostgreSQL (pool 8) load @64",
        "tower-sessions-sqlx-store PostgresStore (pool 8) load @64",
    ),
    info(
        "SqlStore save / tower-sessions-sqlx-store PostgresStore save (PostgreSQL, pool 8, 64 tasks)",
        "SqlStore PostgreSQL (pool 8) save @64",
        "tower-sessions-sqlx-store PostgresStore (pool 8) save @64",
    ),
    info(
        "SqlStore load / tower-sessions-sqlx-store SqliteStore load (SQLite, pool 8, 64 tasks)",
        "SqlStore SQLite (pool 8) load @64",
        "tower-sessions-sqlx-store SqliteStore (pool 8) load @64",
    ),
    info(
        "SqlStore save / tower-sessions-sqlx-store SqliteStore save (SQLite, pool 8, 64 tasks)",
        "SqlStore SQLite (pool 8) save @64",
        "tower-sessions-sqlx-store SqliteStore (pool 8) save @64",
    ),
    info(
        "RedisStore save with write-behind into PostgreSQL / RedisStore save (pool 2, 1 task)",
        "BackupStore<RedisStore (pool 2), SqlStore PostgreSQL> save @1",
        "RedisStore (pool 2) save @1",
    ),
    info(
        "raw fred GET (pool 2, 64 tasks) / redis-benchmark -c 50 GET",
        "raw fred GET (pool 2) load @64",
        "redis-benchmark -c 50 GET",
    ),
    info(
        "raw fred SET PXAT (pool 2, 64 tasks) / redis-benchmark -c 50 SET",
        "raw fred SET PXAT (pool 2) save @64",
        "redis-benchmark -c 50 SET",
    ),
    info(
        "Sessions<T> load / RedisStore load (pool 2, 64 tasks)",
        "Sessions<T> on RedisStore (pool 2) load @64",
        "RedisStore (pool 2) load @64",
    ),
    info(
        "Sessions<T> save / RedisStore save (pool 2, 64 tasks)",
        "Sessions<T> on RedisStore (pool 2) save @64",
        "RedisStore (pool 2) save @64",
    ),
    info(
        "MemoryStore save / DashMap upsert of one shared buffer (64 tasks)",
        "MemoryStore save @64",
        "DashMap<String, Bytes>, shared buffer save @64",
    ),
    info(
        "MemoryStore load / DashMap get (1 task)",
        "MemoryStore load @1",
        "DashMap<String, Bytes> load @1",
    ),
    info(
        "MemoryStore save / DashMap upsert, a fresh buffer each (1 task)",
        "MemoryStore save @1",
        "DashMap<String, Bytes>, fresh buffer save @1",
    ),
    info(
        "tower-sessions MemoryStore load / DashMap get (64 tasks)",
        "tower-sessions MemoryStore load @64",
        "DashMap<String, Bytes> load @64",
    ),
    info(
        "tower-sessions MemoryStore save / DashMap upsert, a fresh buffer each (64 tasks)",
        "tower-sessions MemoryStore save @64",
        "DashMap<String, Bytes>, fresh buffer save @64",
    ),
    info(
        "Sessions<T> load / MemoryStore load (64 tasks)",
        "Sessions<T> on MemoryStore load @64",
        "MemoryStore load @64",
    ),
    info(
        "Sessions<T> save / MemoryStore save (64 tasks)",
        "Sessions<T> on MemoryStore save @64",
        "MemoryStore save @64",
    ),
    info(
        "SessionLayer read request / tower-sessions SessionManagerLayer read request (same MemoryStore, 64 tasks)",
        "web: SessionLayer, MemoryStore read request @64",
        "web: tower-sessions SessionManagerLayer, MemoryStore read request @64",
    ),
    info(
        "SessionLayer request / tower-sessions SessionManagerLayer request (same MemoryStore, 1 task)",
        "web: SessionLayer, MemoryStore request @1",
        "web: tower-sessions SessionManagerLayer, MemoryStore request @1",
    ),
    info(
        "SessionLayer read request / tower-sessions SessionManagerLayer read request (same MemoryStore, 1 task)",
        "web: SessionLayer, MemoryStore read request @1",
        "web: tower-sessions SessionManagerLayer, MemoryStore read request @1",
    ),
    info(
        "Instrumented<MemoryStore> load, no recorder / bare (1 task)",
        "Instrumented<MemoryStore>, no recorder load @1",
        "MemoryStore load @1",
    ),
    info(
        "Instrumented<MemoryStore> load, Prometheus / bare (1 task)",
        "Instrumented<MemoryStore>, Prometheus load @1",
        "MemoryStore load @1",
    ),
    info(
        "Instrumented<MemoryStore> load, no recorder / bare (64 tasks)",
        "Instrumented<MemoryStore>, no recorder load @64",
        "MemoryStore load @64",
    ),
    info(
        "Instrumented<MemoryStore> load, Prometheus / bare (64 tasks)",
        "Instrumented<MemoryStore>, Prometheus load @64",
        "MemoryStore load @64",
    ),
];

/// The in-memory overhead target: bytes per entry beyond key and payload.
const MEMORY_TARGET: f64 = 100.0;

/// A finished run, ready to report.
pub(crate) struct Run {
    pub(crate) results: Results,
    pub(crate) rounds: usize,
    pub(crate) quick: bool,
    pub(crate) keyspace: usize,
    pub(crate) payload_len: usize,
    pub(crate) envelope_len: usize,
    pub(crate) memory_footprint: Footprint,
    pub(crate) dashmap_footprint: Footprint,
    pub(crate) redis_memory: RedisMemory,
    pub(crate) command: String,
    pub(crate) elapsed: Duration,
    /// Slices per side of a paired target ratio, and each slice's length.
    pub(crate) slices: (usize, Duration),
    /// What the cluster's nodes said after the rounds, when the run had a cluster.
    pub(crate) cluster: Option<ClusterCheck>,
    /// The scale curve, or why it could not be taken; `None` when it was not asked for.
    pub(crate) scale: Option<Result<ScaleReport, String>>,
    /// The near cache's figures beside its ratios (memory per session, hit ratios); empty
    /// without Redis.
    pub(crate) near: Vec<String>,
    /// What the write-behind did during its save cells; empty without them.
    pub(crate) sql: Vec<String>,
    /// The PostgreSQL server's version, when the run had one.
    pub(crate) postgres_version: Option<String>,
    /// The built-in SQLite's version, when a SQLite subject ran.
    pub(crate) sqlite_version: Option<String>,
}

/// The 3+3 cluster's nodes after the rounds: keys per master and the redirections answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClusterCheck {
    /// Each master's address and `DBSIZE`.
    pub(crate) masters: Vec<(String, u64)>,
    /// Nodes that are replicas.
    pub(crate) replicas: usize,
    /// `MOVED` and `ASK` errors answered by all nodes since they started (`INFO errorstats`).
    pub(crate) moved: u64,
    pub(crate) ask: u64,
}

/// The cluster table's rows: `(what, standalone subject, cluster subject, op, tasks)`.
const CLUSTER_ROWS: &[(&str, &str, &str, &str, usize)] = &[
    ("RedisStore", "RedisStore (pool 2)", CLUSTER_SUBJECT, "load", 1),
    ("RedisStore", "RedisStore (pool 2)", CLUSTER_SUBJECT, "load", 64),
    ("RedisStore", "RedisStore (pool 2)", CLUSTER_SUBJECT, "save", 1),
    ("RedisStore", "RedisStore (pool 2)", CLUSTER_SUBJECT, "save", 64),
    (
        "RedisStore",
        "RedisStore (pool 2)",
        CLUSTER_SUBJECT,
        "save_if",
        64,
    ),
    (
        "RedisStore",
        "RedisStore (pool 2)",
        CLUSTER_SUBJECT,
        "save_many(16)",
        64,
    ),
    (
        "RedisStore",
        "RedisStore (pool 2)",
        CLUSTER_SUBJECT,
        "load_many(16)",
        64,
    ),
    (
        "raw fred GET",
        "raw fred GET (pool 2)",
        CLUSTER_RAW_GET,
        "load",
        1,
    ),
    (
        "raw fred GET",
        "raw fred GET (pool 2)",
        CLUSTER_RAW_GET,
        "load",
        64,
    ),
    (
        "raw fred SET PXAT",
        "raw fred SET PXAT (pool 2)",
        CLUSTER_RAW_SET,
        "save",
        1,
    ),
    (
        "raw fred SET PXAT",
        "raw fred SET PXAT (pool 2)",
        CLUSTER_RAW_SET,
        "save",
        64,
    ),
];

/// The SQL table's rows: `(database, tower-sessions anchor, SqlStore, op, tasks)`.
const SQL_ROWS: &[(&str, &str, &str, &str, usize)] = &[
    ("PostgreSQL", PG_TOWER, PG_OURS, "load", 1),
    ("PostgreSQL", PG_TOWER, PG_OURS, "load", 64),
    ("PostgreSQL", PG_TOWER, PG_OURS, "save", 1),
    ("PostgreSQL", PG_TOWER, PG_OURS, "save", 64),
    ("SQLite", LITE_TOWER, LITE_OURS, "load", 1),
    ("SQLite", LITE_TOWER, LITE_OURS, "load", 64),
    ("SQLite", LITE_TOWER, LITE_OURS, "save", 1),
    ("SQLite", LITE_TOWER, LITE_OURS, "save", 64),
];

/// `RedisStore` (pool 2) save without and with write-behind into PostgreSQL.
const WRITE_BEHIND_ROWS: &[(&str, &str, &str, &str, usize)] = &[
    (
        "RedisStore (pool 2)",
        "RedisStore (pool 2)",
        WRITE_BEHIND,
        "save",
        1,
    ),
    (
        "RedisStore (pool 2)",
        "RedisStore (pool 2)",
        WRITE_BEHIND,
        "save",
        64,
    ),
];

fn verdict(value: f64, target: f64, higher_is_better: bool) -> String {
    if !value.is_finite() {
        return "not measured".to_owned();
    }
    let met = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    if met {
        "met".to_owned()
    } else {
        let short = if higher_is_better {
            (target - value) / target
        } else {
            (value - target) / target
        };
        format!("**missed** by {:.0} %", short * 100.0)
    }
}

pub(crate) fn fmt_ops(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_owned();
    }
    let v = v.round() as u64;
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        "–".to_owned()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

impl Run {
    /// Whether any cluster case ran.
    fn has_cluster_cases(&self) -> bool {
        self.results.entries.iter().any(|e| e.subject == CLUSTER_SUBJECT)
    }

    /// Instrumentation overhead in nanoseconds per load at one task (from ops/s).
    fn instrument_ns(&self, subject: &str) -> f64 {
        let ops = |id: &str| {
            self.results
                .get(id)
                .map(|e| median(&e.rounds.iter().map(|c| c.ops_per_sec).collect::<Vec<_>>()))
                .unwrap_or(f64::NAN)
        };
        1e9 / ops(&format!("{subject} load @1")) - 1e9 / ops("MemoryStore load @1")
    }

    fn ratio_table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str("| ratio (median of per-round ratios) | value | rounds | target | status |\n");
            out.push_str("|---|---:|---|---:|---|\n");
        }
        for def in RATIOS {
            let (value, rounds) = self
                .results
                .paired_ratio(def.label)
                .or_else(|| self.results.ratio(def.num, def.den))
                .unwrap_or((f64::NAN, Vec::new()));
            let rounds: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
            let (target, status) = match def.target {
                Some(t) => (format!("≥ {t:.2}"), verdict(value, t, true)),
                None => (String::new(), String::new()),
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {value:.2} | {} | {target} | {status} |",
                    def.label,
                    rounds.join(" "),
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:<76} {value:>6.2}  [{}] {target} {}",
                    def.label,
                    rounds.join(" "),
                    status.replace("**", "")
                );
            }
        }
        let overhead = self.memory_footprint.overhead();
        if markdown {
            let _ = writeln!(
                out,
                "| MemoryStore bytes per entry beyond key and payload ({} entries) | {overhead:.0} | | ≤ {MEMORY_TARGET:.0} | {} |",
                fmt_ops(self.memory_footprint.entries as f64),
                verdict(overhead, MEMORY_TARGET, false)
            );
        } else {
            let _ = writeln!(
                out,
                "  {:<76} {overhead:>6.0}  ≤ {MEMORY_TARGET:.0} {}",
                format!(
                    "MemoryStore bytes/entry beyond key+payload ({} entries)",
                    self.memory_footprint.entries
                ),
                verdict(overhead, MEMORY_TARGET, false).replace("**", "")
            );
        }
        if let Some(Ok(scale)) = &self.scale {
            let (worst, _) = scale.verdict();
            let sizes: Vec<String> = scale.points.iter().map(|p| fmt_ops(p.sessions as f64)).collect();
            let label = format!(
                "Cluster scale curve ({} sessions): worst smallest/largest of ops/s, p99, bytes per session",
                sizes.join(" / ")
            );
            if markdown {
                let _ = writeln!(
                    out,
                    "| {label} | {worst:.2} | | ≥ {FLAT:.2} | {} |",
                    verdict(worst, FLAT, true)
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {label:<76} {worst:>6.2}  ≥ {FLAT:.2} {}",
                    verdict(worst, FLAT, true).replace("**", "")
                );
            }
        }
        out
    }

    /// A ratio by its two case ids: paired when it is a target, else from the rounds' cells.
    fn ratio_of(&self, num: &str, den: &str) -> Option<(f64, Vec<f64>, Option<f64>)> {
        match RATIOS.iter().find(|d| d.num == num && d.den == den) {
            Some(def) => {
                let (v, r) = self
                    .results
                    .paired_ratio(def.label)
                    .or_else(|| self.results.ratio(num, den))?;
                Some((v, r, def.target))
            }
            None => self.results.ratio(num, den).map(|(v, r)| (v, r, None)),
        }
    }

    /// Rows of two subjects side by side: `(what, left subject, right subject, op, tasks)`, each
    /// with both sides' ops/s and p99 and the ratio right / left (paired when it is a target).
    /// `names`: the first column's title, then the left and right sides' names.
    fn side_by_side(
        &self,
        rows: &[(&str, &str, &str, &str, usize)],
        (what_title, left, right): (&str, &str, &str),
        markdown: bool,
    ) -> String {
        let mut out = String::new();
        let figures = |id: &str| {
            self.results.get(id).map(|e| {
                let ops = median(&e.rounds.iter().map(|c| c.ops_per_sec).collect::<Vec<_>>());
                let p99 = median(&e.rounds.iter().map(|c| c.p99_us).collect::<Vec<_>>());
                let errors: u64 = e.rounds.iter().map(|c| c.errors).sum();
                (ops, p99, errors)
            })
        };
        for &(what, left_subject, right_subject, op, tasks) in rows {
            let left_id = format!("{left_subject} {op} @{tasks}");
            let right_id = format!("{right_subject} {op} @{tasks}");
            let (Some(s), Some(c)) = (figures(&left_id), figures(&right_id)) else {
                continue;
            };
            let (value, rounds, target) =
                self.ratio_of(&right_id, &left_id)
                    .unwrap_or((f64::NAN, Vec::new(), None));
            let rounds: Vec<String> = rounds.iter().map(|r| format!("{r:.2}")).collect();
            let (target, status) = match target {
                Some(t) => (format!("≥ {t:.2}"), verdict(value, t, true)),
                None => (String::new(), String::new()),
            };
            let errors = |e: u64| {
                if e > 0 {
                    format!(" ({e} errors)")
                } else {
                    String::new()
                }
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {what} | {op} | {tasks} | {}{} | {} | {}{} | {} | {value:.2} | {} | {target} | {status} |",
                    fmt_ops(s.0),
                    errors(s.2),
                    fmt_us(s.1),
                    fmt_ops(c.0),
                    errors(c.2),
                    fmt_us(c.1),
                    rounds.join(" ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {what:<17} {op:<13} {tasks:>3}  {left} {:>8}{} p99 {:>6} µs  {right} {:>8}{} p99 {:>6} µs  {value:>5.2}  [{}] {target} {}",
                    fmt_ops(s.0),
                    errors(s.2),
                    fmt_us(s.1),
                    fmt_ops(c.0),
                    errors(c.2),
                    fmt_us(c.1),
                    rounds.join(" "),
                    status.replace("**", "")
                );
            }
        }
        if markdown && !out.is_empty() {
            out.insert_str(
                0,
                &format!(
                    "| {what_title} | op | tasks | {left} ops/s | {left} p99 µs | {right} ops/s | {right} p99 µs | {right} / {left} | rounds | target | status |\n\
                     |---|---|---:|---:|---:|---:|---:|---:|---|---:|---|\n"
                ),
            );
        }
        out
    }

    /// Whether any SQL case or write-behind throughput ran.
    fn has_sql(&self) -> bool {
        !self.results.flushes.is_empty()
            || self
                .results
                .entries
                .iter()
                .any(|e| e.group == "sql" || e.subject == WRITE_BEHIND)
    }

    /// `SqlStore` beside tower-sessions' sqlx stores, and `RedisStore` saves with and without
    /// write-behind.
    fn sql_table(&self, markdown: bool) -> String {
        let mut out = self.side_by_side(
            SQL_ROWS,
            ("database", "tower-sessions-sqlx-store", "SqlStore"),
            markdown,
        );
        if markdown && !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&self.side_by_side(
            WRITE_BEHIND_ROWS,
            ("subject", "without write-behind", "with write-behind"),
            markdown,
        ));
        out
    }

    /// The write-behind's throughput into each backup: sessions per second, per round.
    fn flush_table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if self.results.flushes.is_empty() {
            return out;
        }
        if markdown {
            out.push_str(
                "| write-behind (`BackupStore` over a `MemoryStore`, default `BackupConfig`) | sessions queued | batch size | sessions/s (median) | rounds | failed flushes |\n",
            );
            out.push_str("|---|---:|---:|---:|---|---:|\n");
        }
        for (label, cells) in &self.results.flushes {
            let rates: Vec<f64> = cells.iter().map(|c| c.sessions_per_sec).collect();
            let per_round: Vec<String> = rates.iter().map(|r| fmt_ops(*r)).collect();
            let sessions = cells.first().map_or(FLUSH_SESSIONS, |c| c.sessions);
            let batch = cells.first().map_or(0, |c| c.batch_size);
            let failed: u64 = cells.iter().map(|c| c.failed_flushes).sum();
            let value = fmt_ops(median(&rates));
            if markdown {
                let _ = writeln!(
                    out,
                    "| {label} | {} | {batch} | {value} | {} | {failed} |",
                    fmt_ops(sessions as f64),
                    per_round.join(" ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {label:<52} {value:>8} sessions/s  [{}]  {} sessions queued, batch {batch}{}",
                    per_round.join(" "),
                    fmt_ops(sessions as f64),
                    if failed > 0 {
                        format!(", {failed} failed flushes")
                    } else {
                        String::new()
                    }
                );
            }
        }
        out
    }

    /// The cluster subjects beside the standalone one: ops/s, p99 and their ratio per row.
    fn cluster_table(&self, markdown: bool) -> String {
        let mut out = self.side_by_side(CLUSTER_ROWS, ("subject", "standalone", "cluster"), markdown);
        if let Some(check) = &self.cluster {
            let keys: Vec<String> = check.masters.iter().map(|(_, n)| fmt_ops(*n as f64)).collect();
            let _ = writeln!(
                out,
                "{}Redirections answered by the cluster's nodes over the whole run (`INFO errorstats`): MOVED {}, ASK {}. \
                 Keys per master (`DBSIZE`): {}; {} replicas.",
                if markdown { "\n" } else { "  " },
                check.moved,
                check.ask,
                keys.join(" / "),
                check.replicas
            );
        }
        out
    }

    fn case_table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str(
                "| subject | op | tasks | ops/s (median) | min–max over rounds | p50 µs | p99 µs |\n",
            );
            out.push_str("|---|---|---:|---:|---|---:|---:|\n");
        }
        let mut entries: Vec<&Entry> = self.results.entries.iter().collect();
        let op_rank = |op: &str| match op {
            "load" | "GET" => 0,
            "load_many(16)" => 1,
            "save" | "SET" => 2,
            "save_many(16)" => 3,
            "update" => 4,
            "save_if" => 5,
            "create" => 6,
            _ => 7,
        };
        entries.sort_by_key(|e| (e.group, e.tasks, op_rank(&e.op)));
        for e in entries {
            let ops: Vec<f64> = e.rounds.iter().map(|c| c.ops_per_sec).collect();
            let min = ops.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ops.iter().copied().fold(0.0, f64::max);
            let p50 = median(&e.rounds.iter().map(|c| c.p50_us).collect::<Vec<_>>());
            let p99 = median(&e.rounds.iter().map(|c| c.p99_us).collect::<Vec<_>>());
            let errors: u64 = e.rounds.iter().map(|c| c.errors).sum();
            let mut ops_text = fmt_ops(median(&ops));
            if e.items > 1 {
                ops_text = format!(
                    "{ops_text} ({} keys/s)",
                    fmt_ops(median(&ops) * f64::from(e.items))
                );
            }
            let errors = if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {ops_text}{errors} | {}–{} | {} | {} |",
                    e.subject,
                    e.op,
                    e.tasks,
                    fmt_ops(min),
                    fmt_ops(max),
                    fmt_us(p50),
                    fmt_us(p99)
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:<52} {:<13} {:>3} {:>28}{errors}  p50 {:>7} µs  p99 {:>7} µs",
                    e.subject,
                    e.op,
                    e.tasks,
                    ops_text,
                    fmt_us(p50),
                    fmt_us(p99)
                );
            }
        }
        out
    }

    /// µs of server time per call (`INFO commandstats`) of the probe cells, and their ratios.
    fn server_table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str(
                "| command (cell at 64 tasks) | µs per call (median) | rounds | calls per cell (median) |\n",
            );
            out.push_str("|---|---:|---|---:|\n");
        }
        for probe in PROBES {
            let rounds: &[(CmdStat, u64)] = self
                .results
                .server
                .iter()
                .find(|(n, _)| n == probe.label)
                .map_or(&[], |(_, v)| v.as_slice());
            let usec: Vec<f64> = rounds.iter().map(|(s, _)| s.usec_per_call).collect();
            let calls: Vec<f64> = rounds.iter().map(|(s, _)| s.calls as f64).collect();
            let errors: u64 = rounds.iter().map(|(_, e)| e).sum();
            let per_round: Vec<String> = usec.iter().map(|u| fmt_us(*u)).collect();
            let value = fmt_us(median(&usec));
            let calls = fmt_ops(median(&calls));
            let errors = if errors > 0 {
                format!(" ({errors} failed ops)")
            } else {
                String::new()
            };
            if markdown {
                let _ = writeln!(
                    out,
                    "| {} — `{}` | {value}{errors} | {} | {calls} |",
                    probe.label,
                    probe.case,
                    per_round.join(" ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:<40} {value:>7} µs/call  [{}]  {calls} calls/cell{errors}",
                    probe.label,
                    per_round.join(" ")
                );
            }
        }
        for (label, num, den) in PROBE_RATIOS {
            let per_round: Vec<f64> = self
                .results
                .server_usec(num)
                .iter()
                .zip(self.results.server_usec(den))
                .map(|(n, d)| n / d)
                .collect();
            let value = median(&per_round);
            let rounds: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
            if markdown {
                let _ = writeln!(out, "| **{label}** | {value:.2} × | {} | |", rounds.join(" "));
            } else {
                let _ = writeln!(out, "  {label:<40} {value:>7.2} ×        [{}]", rounds.join(" "));
            }
        }
        out
    }

    fn codec_table(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str("| codec | size (bytes) | encode ns | decode ns | encode + decode ns |\n");
            out.push_str("|---|---:|---:|---:|---:|\n");
        }
        for (name, cells) in &self.results.codecs {
            let enc = median(&cells.iter().map(|c| c.encode_ns).collect::<Vec<_>>());
            let dec = median(&cells.iter().map(|c| c.decode_ns).collect::<Vec<_>>());
            let size = cells.first().map_or(0, |c| c.size);
            if markdown {
                let _ = writeln!(
                    out,
                    "| {name} | {size} | {enc:.0} | {dec:.0} | {:.0} |",
                    enc + dec
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {name:<8} {size:>5} bytes  encode {enc:>6.0} ns  decode {dec:>6.0} ns"
                );
            }
        }
        out
    }

    fn memory_table(&self, markdown: bool) -> String {
        let m = &self.memory_footprint;
        let d = &self.dashmap_footprint;
        let r = &self.redis_memory;
        let redis_overhead = r.usage_per_key - (r.key_len + r.payload_len) as f64;
        if markdown {
            let mut out = String::new();
            out.push_str("| store | entries | resident or used bytes per entry | key + payload | beyond key and payload |\n");
            out.push_str("|---|---:|---:|---:|---:|\n");
            let _ = writeln!(
                out,
                "| MemoryStore (RSS growth) | {} | {:.0} | {} + {} | {:.0} |",
                fmt_ops(m.entries as f64),
                m.per_entry,
                m.key_len,
                m.payload_len,
                m.overhead()
            );
            let _ = writeln!(
                out,
                "| DashMap<String, Bytes> (RSS growth) | {} | {:.0} | {} + {} | {:.0} |",
                fmt_ops(d.entries as f64),
                d.per_entry,
                d.key_len,
                d.payload_len,
                d.overhead()
            );
            let _ = writeln!(
                out,
                "| Redis, `MEMORY USAGE` of a key | {} | {:.0} | {} + {} | {:.0} (of which the 52-byte envelope header) |",
                fmt_ops(self.keyspace as f64),
                r.usage_per_key,
                r.key_len,
                r.payload_len,
                redis_overhead
            );
            let _ = writeln!(
                out,
                "| Redis, `used_memory` growth over the pre-fill | {} | {:.0} | {} + {} | {:.0} |",
                fmt_ops(self.keyspace as f64),
                r.used_memory_per_key,
                r.key_len,
                r.payload_len,
                r.used_memory_per_key - (r.key_len + r.payload_len) as f64
            );
            let _ = writeln!(
                out,
                "| Redis, `MEMORY USAGE` of a logout's tombstone (tombstones on) | 200 | {:.0} | {} + 0 | {:.0} (of which the 52-byte header) |",
                r.tombstone_per_key,
                r.tombstone_key_len,
                r.tombstone_per_key - r.tombstone_key_len as f64
            );
            out
        } else {
            format!(
                "  MemoryStore {:.0} bytes/entry ({:.0} beyond key {} + payload {}) at {} entries; \
                 DashMap {:.0} ({:.0} beyond)\n  Redis MEMORY USAGE {:.0} bytes/key ({:.0} beyond key {} + \
                 payload {}; value is the {}-byte envelope); used_memory growth {:.0} bytes/key\n  \
                 Redis MEMORY USAGE of a logout's tombstone {:.0} bytes/key (key {})\n",
                m.per_entry,
                m.overhead(),
                m.key_len,
                m.payload_len,
                m.entries,
                d.per_entry,
                d.overhead(),
                r.usage_per_key,
                redis_overhead,
                r.key_len,
                r.payload_len,
                r.value_len,
                r.used_memory_per_key,
                r.tombstone_per_key,
                r.tombstone_key_len
            )
        }
    }

    /// The report for the terminal.
    pub(crate) fn console(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nratios ({} round(s); [per round]):\n{}",
            self.rounds,
            self.ratio_table(false)
        );
        let _ = writeln!(
            out,
            "instrumentation overhead per load at 1 task: {:.0} ns without a recorder, {:.0} ns with Prometheus",
            self.instrument_ns("Instrumented<MemoryStore>, no recorder"),
            self.instrument_ns("Instrumented<MemoryStore>, Prometheus")
        );
        if self.has_cluster_cases() {
            let _ = writeln!(
                out,
                "\nRedis Cluster (RedisStore cluster vs standalone, pool 2; ratio [per round], paired for targets):\n{}",
                self.cluster_table(false)
            );
        }
        if self.has_sql() {
            let _ = writeln!(
                out,
                "\nSQL stores (SqlStore vs tower-sessions-sqlx-store, pool {SQL_POOL} each) and RedisStore save \
                 without / with write-behind into PostgreSQL (ratio [per round], paired for targets):\n{}",
                self.sql_table(false)
            );
            let flushes = self.flush_table(false);
            if !flushes.is_empty() {
                let _ = writeln!(
                    out,
                    "write-behind throughput (first save until the last is in the backup; [per round]):\n{flushes}"
                );
            }
            for line in &self.sql {
                let _ = writeln!(out, "  {line}");
            }
        }
        match &self.scale {
            Some(Ok(scale)) => {
                let _ = writeln!(out, "\n{}:\n{}", scale_title(scale), scale.table(false));
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "\nscale curve: not taken: {e}");
            }
            None => {}
        }
        let _ = writeln!(
            out,
            "\nServer-side cost per call (INFO commandstats; CONFIG RESETSTAT, the cell, INFO; [per round]):\n{}  \
             (redis-benchmark cannot send the binary envelope as the script's first argument: not run on it)",
            self.server_table(false)
        );
        let _ = writeln!(out, "\ncases (medians):\n{}", self.case_table(false));
        let _ = writeln!(out, "codecs:\n{}", self.codec_table(false));
        let _ = writeln!(out, "memory per session:\n{}", self.memory_table(false));
        let _ = writeln!(out, "run took {:.0}s", self.elapsed.as_secs_f64());
        out
    }

    /// The generated part of docs/benchmarks.md.
    fn generated(&self) -> String {
        let mut out = String::new();
        let m = machine();
        let _ = writeln!(
            out,
            "Generated by `{}` on {} ({} round(s){}, {:.0} s). Figures are medians over the rounds; a ratio is \
             the median of the per-round ratios. A target's per-round ratio comes from {} alternating slices \
             of each side (A B B A …, {} s each) run back to back; other ratios from the round's cells (both \
             sides measured a minute apart at most).\n",
            self.command,
            m.date,
            self.rounds,
            if self.quick { ", `--quick`" } else { "" },
            self.elapsed.as_secs_f64(),
            self.slices.0,
            self.slices.1.as_secs_f64(),
        );
        out.push_str("### Machine\n\n");
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| CPU | {} × {} |", m.cores, m.cpu);
        let _ = writeln!(out, "| memory | {} |", m.memory);
        let _ = writeln!(out, "| kernel | {} |", m.kernel);
        let _ = writeln!(out, "| rustc | {} |", m.rustc);
        let _ = writeln!(out, "| redis-server | {} |", m.redis);
        if let Some(version) = &self.postgres_version {
            let _ = writeln!(out, "| PostgreSQL | {version} |");
        }
        if let Some(version) = &self.sqlite_version {
            let _ = writeln!(
                out,
                "| SQLite | {version} (built in: sqlx's bundled libsqlite3-sys; files in a temporary directory) |"
            );
        }
        let _ = writeln!(
            out,
            "| payload | {} bytes (the session in bincode); envelope {} bytes; key space {} keys |",
            self.payload_len,
            self.envelope_len,
            fmt_ops(self.keyspace as f64)
        );
        out.push('\n');
        out.push_str("### Targets and ratios\n\n");
        out.push_str(&self.ratio_table(true));
        let _ = writeln!(
            out,
            "\nInstrumentation overhead (`Instrumented<MemoryStore>` load vs bare, 1 task): **{:.0} ns** per call \
             with no recorder, **{:.0} ns** with the Prometheus recorder installed (the demo's buckets) and a \
             `fmt` subscriber at `info`.\n",
            self.instrument_ns("Instrumented<MemoryStore>, no recorder"),
            self.instrument_ns("Instrumented<MemoryStore>, Prometheus")
        );
        if !self.near.is_empty() {
            out.push_str("### Near cache\n\n");
            for line in &self.near {
                let _ = writeln!(out, "{line}\n");
            }
        }
        if self.has_cluster_cases() {
            out.push_str("### Redis Cluster beside standalone\n\n");
            out.push_str(
                "`RedisStore` on a cluster of 3 masters and 3 replicas (its own router, a pool of 2 per \
                 master) against `RedisStore` (pool 2) on the standalone server, in the same run: the same \
                 keys, records and cells. Ops/s and p99 are medians over the rounds; a ratio with a target \
                 comes from the paired slices, the others from the rounds' cells. Six servers share the \
                 machine's cores with the client, so the ratio measures what routing costs, not how a \
                 cluster scales.\n\n",
            );
            out.push_str(&self.cluster_table(true));
            out.push('\n');
        }
        if self.has_sql() {
            out.push_str("### SQL stores and write-behind\n\n");
            let _ = writeln!(
                out,
                "`SqlStore` beside tower-sessions' sqlx stores (`tower-sessions-sqlx-store` 0.15, after its \
                 `migrate()`) on one PostgreSQL and on SQLite files: the same number of sessions pre-filled, \
                 the same payload (tower-sessions' record holds it as JSON in its data map and stores it as \
                 MessagePack), pools of {SQL_POOL} connections each, and on SQLite the journal settings \
                 `SqlStore` opens its file with (WAL, `synchronous = NORMAL`, a 1 s busy timeout). \
                 `SqlStore` keeps an index on the deadline (for its background reclaim); tower-sessions' \
                 table has none. Ratios are `SqlStore` over the anchor, from the rounds' cells. Then \
                 `RedisStore` (pool 2) `save` without and with write-behind into PostgreSQL \
                 (`BackupStore<RedisStore, SqlStore>`, default `BackupConfig`): the flusher and the \
                 database share the machine with the cell, and the queue is drained after each cell and \
                 slice, outside the measured time.\n"
            );
            out.push_str(&self.sql_table(true));
            let flushes = self.flush_table(true);
            if !flushes.is_empty() {
                let _ = writeln!(
                    out,
                    "\nWrite-behind throughput: {} saves of distinct sessions through a `BackupStore` over a \
                     `MemoryStore` (default `BackupConfig`: flushes of `batch_size` changes, one `save_many` of \
                     the backup each, one batch in flight at a time), timed from the first save until the \
                     backup's written count holds every one of them; into an emptied table each round (every \
                     write an insert). Sessions/s is the median over the rounds.\n",
                    fmt_ops(FLUSH_SESSIONS as f64)
                );
                out.push_str(&flushes);
            }
            for line in &self.sql {
                let _ = writeln!(out, "\n{line}");
            }
            out.push('\n');
        }
        match &self.scale {
            Some(Ok(scale)) => {
                let _ = writeln!(out, "### {}\n", scale_title(scale));
                out.push_str(&scale_prose(scale));
                out.push_str(&scale.table(true));
                out.push('\n');
            }
            Some(Err(e)) => {
                let _ = writeln!(out, "### Scale curve\n\nNot taken: {e}\n");
            }
            None => {}
        }
        out.push_str("### Server-side cost per call (INFO commandstats)\n\n");
        out.push_str(
            "`CONFIG RESETSTAT` before the cell, `INFO commandstats` after it, each round after the cases; server execution time only (no I/O, no parsing). A script's time includes the commands it calls (they are also counted under their own `cmdstat`, so the `save_if` cell is read under `evalsha` only). redis-benchmark is not run on the script: the envelope (binary, with NUL bytes) cannot go on its command line, and `-x` supplies only the last argument, while the envelope is the script's first of three.\n\n",
        );
        out.push_str(&self.server_table(true));
        out.push('\n');
        out.push_str("### Every case\n\n");
        out.push_str(
            "In-memory latencies are from every 16th operation (timing each would add two clock reads to a \
             sub-microsecond operation); Redis latencies from every operation; redis-benchmark's from its own report.\n\n",
        );
        out.push_str(&self.case_table(true));
        out.push_str("\n### Codec cost (one thread)\n\n");
        out.push_str(&self.codec_table(true));
        out.push_str("\n### Memory per session\n\n");
        out.push_str(&self.memory_table(true));
        out.push_str("\n### Commands\n\n```text\n");
        let _ = writeln!(out, "{}", self.command);
        let _ = writeln!(out, "{}", crate::redis_benchmark::Target::describe(1));
        let _ = writeln!(out, "{}", crate::redis_benchmark::Target::describe(16));
        out.push_str(
            "CONFIG RESETSTAT; <the cell, 64 tasks>; INFO commandstats   (cmdstat_set, cmdstat_evalsha: usec / calls)\n",
        );
        let _ = writeln!(
            out,
            "session-bench footprint memory|dashmap {} {}   (child process; RSS growth / entries)",
            self.memory_footprint.entries, self.payload_len
        );
        if self.has_cluster_cases() {
            out.push_str(
                "redis-cli --cluster create <6 nodes> --cluster-replicas 1   (cases; nodes: --cluster-node-timeout 15000 \
                 --client-output-buffer-limit replica 0 0 0)\n",
            );
        }
        if self.postgres_version.is_some() {
            out.push_str(
                "initdb --auth=trust --no-sync -E UTF8 --locale=C; postgres -c fsync=off -c full_page_writes=off \
                 -c max_connections=200   (testkit_redis::Postgres, a throw-away server on a free port)\n",
            );
        }
        if let Some(Ok(scale)) = &self.scale {
            let _ = writeln!(
                out,
                "redis-cli --cluster create <{} nodes> --cluster-replicas 0   (scale curve; nodes: --cluster-node-timeout 15000 \
                 --maxmemory {} --maxmemory-policy noeviction)",
                scale.masters, scale.maxmemory
            );
        }
        out.push_str("```\n");
        out
    }

    /// Writes docs/benchmarks.md: replaces what lies between the markers, keeping the prose
    /// around them; a file without the markers gets a short header and the generated part.
    pub(crate) fn write_doc(&self, path: &Path) -> Result<(), String> {
        const BEGIN: &str =
            "<!-- bench:begin (generated by cargo xtask bench; edits here are overwritten) -->";
        const END: &str = "<!-- bench:end -->";
        let generated = self.generated();
        let old = std::fs::read_to_string(path).unwrap_or_default();
        let text = match (old.find("<!-- bench:begin"), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{BEGIN}\n{generated}{END}{}", &old[..b], &old[e + END.len()..])
            }
            _ => format!(
                "# Benchmarks\n\n`cargo xtask bench` writes the part between the markers below.\n\n\
                 {BEGIN}\n{generated}{END}\n"
            ),
        };
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

/// The scale section's title.
fn scale_title(scale: &ScaleReport) -> String {
    let sizes: Vec<String> = scale.points.iter().map(|p| fmt_ops(p.sessions as f64)).collect();
    format!(
        "Scale curve: RedisStore on a cluster of {} masters without replicas, {} sessions",
        scale.masters,
        sizes.join(" / ")
    )
}

/// What the scale table's columns are.
fn scale_prose(scale: &ScaleReport) -> String {
    let control = match &scale.control {
        Some((load, save)) => format!(
            " Each slice is paired with one of a control, `{load}` / `{save}` on the 3+3 cluster's fixed \
             key space (A B B A …); \"÷ control\" is the ratio of their summed rates, which a slow \
             moment of the shared machine moves less than the raw figures."
        ),
        None => String::new(),
    };
    format!(
        "The cluster grows in steps (filled to a size, measured, filled on). `load` and `save` at 64 \
         tasks on keys drawn from all the sessions held; ops/s and p99 are medians of {} slices of {:.1} s \
         each.{control} Bytes per session: each master's `used_memory` growth since it was empty over its \
         `DBSIZE`; the mean, then each master. Flat: for each figure, its smallest over its largest \
         value across the sizes is at least {FLAT:.2} (for p99, the largest is then at most 11 % above \
         the smallest). Masters' `maxmemory`: {}.\n\n",
        scale.slices,
        scale.slice.as_secs_f64(),
        if scale.maxmemory > 0 {
            format!("{:.1} GiB each", scale.maxmemory as f64 / f64::from(1u32 << 30))
        } else {
            "none".to_owned()
        }
    )
}

/// What the report says about the machine.
struct Machine {
    cores: usize,
    cpu: String,
    memory: String,
    kernel: String,
    rustc: String,
    redis: String,
    date: String,
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".to_owned()),
        memory: format!("{:.1} GiB", mem_kb as f64 / (1024.0 * 1024.0)),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        rustc: command_line(&rustc, &["-V"]),
        redis: command_line("redis-server", &["--version"]),
        date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    }
}

#[cfg(test)]
mod tests {
    use super::{paired_defs, RATIOS, SQL_ROWS, WRITE_BEHIND_ROWS};
    use crate::sql::{LITE_OURS, LITE_TOWER, PG_OURS, PG_TOWER, WRITE_BEHIND};
    use crate::web::{OURS, READ, TOWER, UPDATE};

    #[test]
    fn the_report_shows_the_sql_section() {
        use super::{Results, Run};
        use crate::harness::Cell;
        use crate::sql::{FlushCell, FLUSH_PG};
        let mut results = Results::default();
        let cell = |ops: f64| Cell {
            ops_per_sec: ops,
            p50_us: 100.0,
            p99_us: 900.0,
            errors: 0,
        };
        for (subject, ops) in [(PG_OURS, 20_000.0), (PG_TOWER, 10_000.0)] {
            for op in ["load", "save"] {
                results.push(
                    format!("{subject} {op} @64"),
                    subject,
                    op,
                    64,
                    1,
                    "sql",
                    cell(ops),
                );
            }
        }
        for (subject, ops) in [(WRITE_BEHIND, 60_000.0), ("RedisStore (pool 2)", 80_000.0)] {
            results.push(
                format!("{subject} save @64"),
                subject,
                "save",
                64,
                1,
                "redis",
                cell(ops),
            );
        }
        results.record_paired(
            "RedisStore save with write-behind into PostgreSQL / RedisStore save (pool 2, 64 tasks)",
            0.75,
        );
        results.record_flush(
            FLUSH_PG,
            FlushCell {
                sessions_per_sec: 40_000.0,
                sessions: 20_000,
                batch_size: 500,
                failed_flushes: 0,
            },
        );
        let run = Run {
            results,
            rounds: 1,
            quick: false,
            keyspace: 100_000,
            payload_len: 1038,
            envelope_len: 1090,
            memory_footprint: Default::default(),
            dashmap_footprint: Default::default(),
            redis_memory: Default::default(),
            command: "test".to_owned(),
            elapsed: std::time::Duration::from_secs(1),
            slices: (8, std::time::Duration::from_millis(250)),
            cluster: None,
            scale: None,
            near: Vec::new(),
            sql: vec!["write-behind figures".to_owned()],
            postgres_version: Some("15.18".to_owned()),
            sqlite_version: Some("3.46.0".to_owned()),
        };
        let doc = run.generated();
        for expected in [
            "### SQL stores and write-behind",
            "| PostgreSQL | load | 64 | 10,000 | 900 | 20,000 | 900 | 2.00 |",
            "| RedisStore (pool 2) | save | 64 | 80,000 | 900 | 60,000 | 900 | 0.75 | 0.75 | ≥ 0.95 | **missed** by 21 % |",
            "| SqlStore save / tower-sessions-sqlx-store PostgresStore save (PostgreSQL, pool 8, 64 tasks) | 2.00 |",
            "| write-behind into SqlStore PostgreSQL (pool 8) | 20,000 | 500 | 40,000 | 40,000 | 0 |",
            "| PostgreSQL | 15.18 |",
            "write-behind figures",
        ] {
            assert!(doc.contains(expected), "{expected}\n---\n{doc}");
        }
        let console = run.console();
        assert!(
            console.contains("write-behind into SqlStore PostgreSQL (pool 8)"),
            "{console}"
        );
        assert!(
            !doc.contains("SQLite | load"),
            "no SQLite rows without SQLite cases"
        );
    }

    #[test]
    fn the_sql_ratios_name_the_sql_cases() {
        let mut ids = Vec::new();
        for rows in [SQL_ROWS, WRITE_BEHIND_ROWS] {
            for &(_, left, right, op, tasks) in rows {
                ids.push(format!("{left} {op} @{tasks}"));
                ids.push(format!("{right} {op} @{tasks}"));
            }
        }
        let subjects = [PG_OURS, PG_TOWER, LITE_OURS, LITE_TOWER, WRITE_BEHIND];
        let sql: Vec<_> = RATIOS
            .iter()
            .filter(|d| subjects.iter().any(|s| d.num.starts_with(s)))
            .collect();
        assert_eq!(sql.len(), 6);
        for def in sql {
            assert!(ids.iter().any(|id| id == def.num), "{}", def.num);
            assert!(ids.iter().any(|id| id == def.den), "{}", def.den);
        }
        // The write-behind's 64-task ratio is a target, measured in paired slices.
        assert!(paired_defs().any(|(_, num, _)| num == format!("{WRITE_BEHIND} save @64")));
    }

    #[test]
    fn the_web_ratios_name_the_web_cases() {
        let mut ids = Vec::new();
        for subject in [OURS, TOWER] {
            for op in [UPDATE, READ] {
                for tasks in [1, 64] {
                    ids.push(format!("{subject} {op} @{tasks}"));
                }
            }
        }
        let web: Vec<_> = RATIOS.iter().filter(|d| d.num.starts_with("web: ")).collect();
        assert_eq!(web.len(), 4);
        for def in web {
            assert!(ids.iter().any(|id| id == def.num), "{}", def.num);
            assert!(ids.iter().any(|id| id == def.den), "{}", def.den);
        }
    }
}
