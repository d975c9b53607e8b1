//! Two subjects side by side, with their ratio: the Redis Cluster beside standalone, and the SQL
//! stores and the write-behind beside what they are compared with.

use std::fmt::Write as _;

use super::format::{fmt_ops, fmt_us, verdict};
use super::ratios::RATIOS;
use super::Run;
use crate::cases::{CLUSTER_RAW_GET, CLUSTER_RAW_SET, CLUSTER_SUBJECT};
use crate::harness::median;
use crate::sql::{LITE_OURS, LITE_TOWER, PG_OURS, PG_TOWER, WRITE_BEHIND};

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

impl Run {
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

    /// `SqlStore` beside tower-sessions' sqlx stores, and `RedisStore` saves with and without
    /// write-behind.
    pub(super) fn sql_table(&self, markdown: bool) -> String {
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

    /// The cluster subjects beside the standalone one: ops/s, p99 and their ratio per row.
    pub(super) fn cluster_table(&self, markdown: bool) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::{SQL_ROWS, WRITE_BEHIND_ROWS};
    use crate::report::ratios::{paired_defs, RATIOS};
    use crate::sql::{LITE_OURS, LITE_TOWER, PG_OURS, PG_TOWER, WRITE_BEHIND};

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
}
