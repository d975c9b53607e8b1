//! Cargo commands in the project root, and the step that runs one and judges it by its exit
//! status.

use std::path::Path;
use std::process::Command;

use testkit_redis::{Topology, PG_BINDIR_ENV};

use super::output::conformance_note;
use super::report::{error_report, Failure, Report};
use crate::exec::{self, Counts};
use crate::project_root;

/// Lines of output shown when a step fails.
const TAIL_LINES: usize = 60;

/// Runs a cargo command to completion and judges it by its exit status.
pub(super) fn cargo_step(mut command: Command, log: &Path, tests: bool, on_line: impl FnMut(&str)) -> Report {
    match exec::run_logged(&mut command, log, on_line) {
        Ok(outcome) => {
            let ok = outcome.status.success();
            Report {
                ok,
                counts: tests.then(|| Counts::parse(&outcome.lines)),
                note: if tests {
                    conformance_note(&outcome.lines)
                } else {
                    String::new()
                },
                failure: (!ok).then(|| Failure {
                    command: Some(exec::display(&command)),
                    log: log.to_path_buf(),
                    tail: outcome.lines[outcome.lines.len().saturating_sub(TAIL_LINES)..].to_vec(),
                }),
            }
        }
        Err(e) => error_report(e.to_string(), log),
    }
}

/// libtest arguments that skip the per-topology test modules of every
/// topology but `keep`.
pub(super) fn skip_topologies(keep: Option<Topology>) -> Vec<String> {
    Topology::ALL
        .into_iter()
        .filter(|t| Some(*t) != keep)
        .flat_map(|t| ["--skip".to_owned(), format!("{}::", t.name())])
        .collect()
}

/// `cargo <args>` in the project root.
pub(super) fn cargo(args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).current_dir(project_root());
    // A CI machine builds once: incremental caches would only take disk (about a third of a
    // fresh matrix build). Locally they stay, for the next edit.
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

/// A `cargo test` command whose environment has no `SESSION_*` variable
/// (neither server URLs nor store configuration) unless the step sets it — but
/// for `SESSION_TEST_PG_BINDIR`, which says where this machine's PostgreSQL is.
pub(super) fn test_command(args: &[&str]) -> Command {
    let mut command = cargo(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SESSION_") && key != PG_BINDIR_ENV {
            command.env_remove(key);
        }
    }
    command
}
