//! The server cells: each Redis topology and `sql` run their test targets against a server
//! started here; `faults` runs the fault scenarios, which start their own.

use std::fs;
use std::path::Path;
use std::process::Command;

use testkit_redis::{
    Postgres, Topology, TopologyOptions, FAULTS_ENV, POSTGRES_URL_ENV, REQUIRE_POSTGRES_ENV,
    REQUIRE_REDIS_ENV,
};

use super::cargo::{cargo_step, skip_topologies, test_command};
use super::output::figure_line;
use super::report::{error_report, Report};
use super::targets::{add_targets, test_targets};

pub(super) fn redis_step(topology: Topology, log: &Path) -> Report {
    let server = match testkit_redis::start(topology, &TopologyOptions::new()) {
        Ok(server) => server,
        Err(e) => {
            let _ = fs::write(log, format!("starting {topology} failed: {e}\n"));
            return error_report(format!("starting {topology} failed: {e}"), log);
        }
    };
    let ready = format!("ready in {:.1}s", server.ready_after().as_secs_f64());
    targets_against_server("redis", ready, log, |command| {
        command.envs(server.env()).env(REQUIRE_REDIS_ENV, "1");
        // Only this topology's suites, so the counts are of tests that ran against it.
        command.arg("--").args(skip_topologies(Some(topology)));
    })
}

/// Runs every test target named `{prefix}*` with `configure`'s environment (a server started
/// by the caller, which stops it afterwards); `ready` opens the step's note.
fn targets_against_server(
    prefix: &str,
    ready: String,
    log: &Path,
    configure: impl FnOnce(&mut Command),
) -> Report {
    let targets = match test_targets(prefix) {
        Ok(targets) => targets,
        Err(e) => return error_report(format!("cannot list test targets: {e}"), log),
    };
    if targets.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: format!("{ready}; no {prefix}* test targets yet"),
            failure: None,
        };
    }
    let mut command = test_command(&["test"]);
    add_targets(&mut command, &targets);
    configure(&mut command);
    let mut report = cargo_step(command, log, true, |_| {});
    report.note = if report.note.is_empty() {
        ready
    } else {
        format!("{ready}; {}", report.note)
    };
    report
}

/// One PostgreSQL, then every `sql*` test target against it.
pub(super) fn sql_step(log: &Path) -> Report {
    let server = match Postgres::start() {
        Ok(server) => server,
        Err(e) => {
            let _ = fs::write(log, format!("starting PostgreSQL failed: {e}\n"));
            return error_report(format!("starting PostgreSQL failed: {e}"), log);
        }
    };
    let version = postgres_version(server.bindir())
        .map(|v| format!("{v}, "))
        .unwrap_or_default();
    let ready = format!("{version}ready in {:.1}s", server.ready_after().as_secs_f64());
    targets_against_server("sql", ready, log, |command| {
        command
            .env(POSTGRES_URL_ENV, server.url())
            .env(REQUIRE_POSTGRES_ENV, "1");
    })
}

pub(super) fn faults_step(log: &Path) -> Report {
    let targets = match test_targets("faults") {
        Ok(targets) => targets,
        Err(e) => return error_report(format!("cannot list test targets: {e}"), log),
    };
    if targets.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: "no faults* test targets yet".to_owned(),
            failure: None,
        };
    }
    let mut command = test_command(&["test"]);
    add_targets(&mut command, &targets);
    command.args(["--", "--test-threads=1", "--nocapture"]);
    command
        .env(FAULTS_ENV, "1")
        .env(REQUIRE_REDIS_ENV, "1")
        .env(REQUIRE_POSTGRES_ENV, "1");
    cargo_step(command, log, true, |line| {
        if let Some(figures) = figure_line(line) {
            println!("{figures}");
        }
    })
}

/// `PostgreSQL 15.18`, from `postgres --version` (`postgres (PostgreSQL) 15.18 (Debian …)`).
fn postgres_version(bindir: &Path) -> Option<String> {
    let output = Command::new(bindir.join("postgres"))
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split_whitespace().nth(2)?;
    Some(format!("PostgreSQL {version}"))
}
