//! The `msrv` step: no locked dependency a member builds needs a newer Rust than the member.

use std::fs;
use std::path::Path;

use super::report::{error_report, Failure, Report};
use crate::metadata::{self, Metadata};

/// Every locked dependency a member builds needs at most the member's `rust-version`.
pub(super) fn msrv_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let metadata::MsrvCheck {
        mut lines,
        too_new,
        highest,
    } = metadata.msrv_check();
    lines.extend(too_new.iter().map(|line| format!("TOO NEW: {line}")));
    let _ = fs::write(log, lines.join("\n") + "\n");
    let note = highest.map_or_else(String::new, |(v, chain)| format!("highest need {v}: {chain}"));
    if too_new.is_empty() {
        Report {
            ok: true,
            counts: None,
            note,
            failure: None,
        }
    } else {
        let mut tail = too_new;
        tail.push(
            "raise `rust-version` in the root Cargo.toml, or pin the dependency to an older version \
             (`cargo update -p <name> --precise <version>`)"
                .to_owned(),
        );
        Report {
            ok: false,
            counts: None,
            note,
            failure: Some(Failure {
                command: None,
                log: log.to_path_buf(),
                tail,
            }),
        }
    }
}
