//! The report for the terminal.

use std::fmt::Write as _;

use super::markdown::scale_title;
use super::Run;
use crate::sql::SQL_POOL;

impl Run {
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
}
