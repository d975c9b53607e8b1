//! The report of a run: what it holds, and the files that collect the rounds, compute the
//! ratios against the anchors and write the console and Markdown reports.

mod console;
mod figures;
mod format;
mod machine;
mod markdown;
mod ratio_table;
mod ratios;
mod results;
mod side_by_side;

use std::time::Duration;

use crate::cases::{RedisMemory, CLUSTER_SUBJECT};
use crate::footprint::Footprint;
use crate::harness::median;
use crate::scale::ScaleReport;
use crate::sql::WRITE_BEHIND;

pub(crate) use format::fmt_ops;
pub(crate) use ratios::paired_defs;
pub(crate) use results::Results;

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

    /// Whether any SQL case or write-behind throughput ran.
    fn has_sql(&self) -> bool {
        !self.results.flushes.is_empty()
            || self
                .results
                .entries
                .iter()
                .any(|e| e.group == "sql" || e.subject == WRITE_BEHIND)
    }
}
