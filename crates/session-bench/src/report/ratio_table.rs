//! The table of ratios against the anchors and of targets, with each target's verdict.

use std::fmt::Write as _;

use super::format::{fmt_ops, verdict};
use super::ratios::RATIOS;
use super::Run;
use crate::scale::FLAT;

/// The in-memory overhead target: bytes per entry beyond key and payload.
const MEMORY_TARGET: f64 = 100.0;

impl Run {
    pub(super) fn ratio_table(&self, markdown: bool) -> String {
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
}
