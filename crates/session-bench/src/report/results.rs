//! Collecting the rounds: every case's cells and the other figures, in the order first seen,
//! and the ratios taken from them.

use crate::cases::{Case, Group};
use crate::codec::CodecCell;
use crate::commandstats::CmdStat;
use crate::harness::{median, Cell};
use crate::sql::FlushCell;

/// One case's figures, one per round.
pub(super) struct Entry {
    id: String,
    pub(super) subject: String,
    pub(super) op: String,
    pub(super) tasks: usize,
    pub(super) items: u32,
    pub(super) group: &'static str,
    pub(super) rounds: Vec<Cell>,
}

/// Everything measured, in the order first seen.
#[derive(Default)]
pub(crate) struct Results {
    pub(super) entries: Vec<Entry>,
    pub(super) codecs: Vec<(String, Vec<CodecCell>)>,
    /// Per probe label, per round: the command's statistics and the cell's failed operations.
    pub(super) server: Vec<(String, Vec<(CmdStat, u64)>)>,
    /// Per target ratio's label, per round: the ratio from alternating slices (see
    /// [`paired_defs`](super::paired_defs)).
    paired: Vec<(&'static str, Vec<f64>)>,
    /// Per write-behind backup, per round: its throughput (`sql.rs`).
    pub(super) flushes: Vec<(&'static str, Vec<FlushCell>)>,
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
    pub(super) fn push(
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
    pub(super) fn server_usec(&self, label: &str) -> Vec<f64> {
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

    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// A target's paired ratio per round, and their median.
    pub(super) fn paired_ratio(&self, label: &str) -> Option<(f64, Vec<f64>)> {
        let (_, rounds) = self.paired.iter().find(|(n, _)| *n == label)?;
        Some((median(rounds), rounds.clone()))
    }

    /// Items per second of `num` over items per second of `den`, per round, then the median.
    pub(super) fn ratio(&self, num: &str, den: &str) -> Option<(f64, Vec<f64>)> {
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
