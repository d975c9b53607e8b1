//! The tables of figures: every case, the server-side cost per call, the codecs, memory per
//! session and the write-behind's throughput.

use std::fmt::Write as _;

use super::format::{fmt_ops, fmt_us};
use super::results::Entry;
use super::Run;
use crate::commandstats::{CmdStat, PROBES, PROBE_RATIOS};
use crate::harness::median;
use crate::sql::FLUSH_SESSIONS;

impl Run {
    /// The write-behind's throughput into each backup: sessions per second, per round.
    pub(super) fn flush_table(&self, markdown: bool) -> String {
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

    pub(super) fn case_table(&self, markdown: bool) -> String {
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
    pub(super) fn server_table(&self, markdown: bool) -> String {
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

    pub(super) fn codec_table(&self, markdown: bool) -> String {
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

    pub(super) fn memory_table(&self, markdown: bool) -> String {
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
}
