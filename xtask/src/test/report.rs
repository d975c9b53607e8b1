//! What a step did, and how it is printed: one line per step, then the summary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::step::Step;
use crate::exec::Counts;

/// What one step did.
pub(super) struct Report {
    pub(super) ok: bool,
    pub(super) counts: Option<Counts>,
    pub(super) note: String,
    pub(super) failure: Option<Failure>,
}

/// What to show when a step failed.
pub(super) struct Failure {
    pub(super) command: Option<String>,
    pub(super) log: PathBuf,
    pub(super) tail: Vec<String>,
}

pub(super) fn print_report(step: Step, report: &Report, elapsed: Duration) {
    let mut line = format!(
        "{:<11}{:<7}{:>7.1}s",
        step.name(),
        if report.ok { "ok" } else { "FAILED" },
        elapsed.as_secs_f64()
    );
    if let Some(c) = report.counts {
        let _ = write!(line, "  {} passed, {} failed", c.passed, c.failed);
        if c.ignored > 0 {
            let _ = write!(line, ", {} skipped", c.ignored);
        }
    }
    if !report.note.is_empty() {
        let _ = write!(line, "  ({})", report.note);
    }
    println!("{line}");
    if let Some(failure) = &report.failure {
        if let Some(command) = &failure.command {
            println!("  command: {command}");
        }
        println!("  log: {}", failure.log.display());
        for text in &failure.tail {
            println!("  | {text}");
        }
    }
}

/// The closing lines: how many steps ran and failed, the tests summed over them, then
/// `PASS` or `FAIL`.
pub(super) fn print_summary(ran: usize, failed: &[&str], total: Counts, elapsed: Duration, logs: &Path) {
    let elapsed = elapsed.as_secs_f64();
    if failed.is_empty() {
        println!("xtask test: {ran} steps ok in {elapsed:.1}s");
    } else {
        println!(
            "xtask test: {} of {ran} steps FAILED ({}) in {elapsed:.1}s; logs in {}",
            failed.len(),
            failed.join(", "),
            logs.display()
        );
    }
    let skipped = if total.ignored > 0 {
        format!(", {} skipped", total.ignored)
    } else {
        String::new()
    };
    println!("tests: {} passed, {} failed{skipped}", total.passed, total.failed);
    println!("{}", if failed.is_empty() { "PASS" } else { "FAIL" });
}

pub(super) fn error_report(message: String, log: &Path) -> Report {
    Report {
        ok: false,
        counts: None,
        note: String::new(),
        failure: Some(Failure {
            command: None,
            log: log.to_path_buf(),
            tail: message.lines().map(str::to_owned).collect(),
        }),
    }
}
