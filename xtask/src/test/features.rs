//! The `features` step: clippy, unit and doc tests of every published library crate under each
//! feature set.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Instant;

use super::cargo::{cargo_step, test_command};
use super::report::{error_report, Failure, Report};
use crate::exec::Counts;
use crate::metadata::{self, Metadata};

/// `--no-default-features`, then each feature alone on top of it, then the defaults; a set that
/// turns on the same as an earlier one (say `default = ["tls"]` and `tls`) is left out.
pub(super) fn feature_sets(package: &metadata::Package) -> Vec<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut sets = Vec::new();
    let no_default = "--no-default-features".to_owned();
    if seen.insert(package.enabled(&[], false)) {
        sets.push(vec![no_default.clone()]);
    }
    for feature in &package.features {
        if seen.insert(package.enabled(std::slice::from_ref(feature), false)) {
            sets.push(vec![no_default.clone(), "--features".to_owned(), feature.clone()]);
        }
    }
    if package.has_default && seen.insert(package.enabled(&[], true)) {
        sets.push(Vec::new());
    }
    sets
}

/// Clippy and the unit and doc tests of every published library crate, under every feature set.
pub(super) fn features_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let mut counts = Counts::default();
    let mut combinations = 0;
    let mut failed: Vec<String> = Vec::new();
    let mut first_failure: Option<Failure> = None;
    let mut timings = Vec::new();
    for package in metadata.members().filter(|p| p.publishable && p.has_lib) {
        for set in feature_sets(package) {
            combinations += 1;
            let label = if set.is_empty() {
                format!("{} (default)", package.name)
            } else {
                format!("{} {}", package.name, set.join(" "))
            };
            let select = |args: &[&str]| {
                let mut command = test_command(args);
                command.args(["-p", &package.name]).args(&set);
                command
            };
            for what in ["clippy --lib", "clippy --all-targets", "test --lib", "test --doc"] {
                let args: Vec<&str> = what.split(' ').collect();
                let mut command = select(&args);
                let tests = args[0] == "test";
                if !tests {
                    command.args(["--", "-D", "warnings"]);
                }
                let started = Instant::now();
                let report = cargo_step(command, log, tests, |_| {});
                timings.push(format!(
                    "{:>7.1}s  {:<6}  {label}: {what}",
                    started.elapsed().as_secs_f64(),
                    if report.ok { "ok" } else { "FAILED" }
                ));
                if let Some(c) = report.counts {
                    counts.add(c);
                }
                if !report.ok {
                    failed.push(format!("{label}: {what}"));
                    if first_failure.is_none() {
                        first_failure = report.failure;
                    }
                }
            }
        }
    }
    append_lines(log, "# time per command", &timings);
    let note = format!("{combinations} feature sets");
    match first_failure {
        None => Report {
            ok: true,
            counts: Some(counts),
            note,
            failure: None,
        },
        Some(mut failure) => {
            failure.tail.push(format!("{} command(s) failed:", failed.len()));
            failure.tail.extend(failed.into_iter().map(|f| format!("  {f}")));
            Report {
                ok: false,
                counts: Some(counts),
                note,
                failure: Some(failure),
            }
        }
    }
}

/// Appends a `heading` line and `lines` to the log.
fn append_lines(log: &Path, heading: &str, lines: &[String]) {
    use std::io::Write as _;
    if let Ok(mut file) = fs::File::options().create(true).append(true).open(log) {
        let _ = writeln!(file, "{heading}");
        for line in lines {
            let _ = writeln!(file, "{line}");
        }
    }
}
