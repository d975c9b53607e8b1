//! `cargo xtask test`: the whole matrix, one line per step, then a summary.
//!
//! Steps, in order: `fmt`, `clippy`, `doc` and `msrv` (cell `lint`), `unit`
//! (`cargo test --workspace` without Redis), `features` (every feature
//! combination of each published crate, alone), `package` (`cargo package`
//! of the published crates), one cell per topology (`standalone`, `cluster`,
//! `sentinel`, `tls`), `sql`, `browser` and `faults`.
//!
//! `msrv` fails when a dependency in `Cargo.lock` that a workspace member
//! builds (its normal, build and dev dependencies, for the platforms in
//! [`metadata::PLATFORMS`](crate::metadata::PLATFORMS)) declares a newer `rust-version` than the member.
//!
//! `features` takes every library crate that is published (no `publish =
//! false`) and, for `--no-default-features`, each feature alone on top of it,
//! and the default features: `cargo clippy --lib` (what a user builds: no
//! dev-dependency adds features), `cargo clippy --all-targets` (tests and
//! examples under the same features), both `-D warnings`, then `cargo test
//! --lib` and `cargo test --doc`. No Redis is needed. It goes through every
//! combination and lists each that failed.
//!
//! `package` runs `cargo package` for the published crates in one command,
//! so crates that depend on each other are verified against each other's
//! packaged sources (cargo puts them in a temporary local registry) before
//! any is on crates.io.
//!
//! A topology cell starts that topology, then runs every test target named
//! `redis*` (`crates/*/tests/redis*.rs`) with the topology's variables,
//! `SESSION_TEST_TOPOLOGY` and `SESSION_TEST_REQUIRE_REDIS=1` set (see
//! `testkit_redis::env`). The `sql` cell starts one PostgreSQL
//! (`testkit_redis::Postgres`), then runs every test target named `sql*`
//! (`crates/*/tests/sql*.rs`) with `SESSION_TEST_POSTGRES_URL` and
//! `SESSION_TEST_REQUIRE_POSTGRES=1` set. The `faults` cell runs every
//! `faults*` target with `SESSION_TEST_FAULTS=1`,
//! `SESSION_TEST_REQUIRE_REDIS=1` and `SESSION_TEST_REQUIRE_POSTGRES=1` (the
//! scenarios start their own servers), one test at a time and `--nocapture`,
//! and forwards the lines those tests print starting with `SCENARIO` or
//! `FIGURES`. Before the cells that need them, missing `redis-server` (and
//! friends) and PostgreSQL are installed with apt-get as root, or named with
//! the command to run. The `browser` cell checks that Debian's `chromium` and
//! `chromium-driver` are installed (`/usr/bin/chromium`, `/usr/bin/chromedriver`,
//! or `SESSION_TEST_CHROMIUM` / `SESSION_TEST_CHROMEDRIVER`), then runs
//! session-axum's `browser` test with `SESSION_TEST_BROWSER=1`: the example app
//! in headless Chromium through chromedriver, on the fallback over a Redis the test
//! kills and restarts; its `FIGURES browser:` line is forwarded. With `CI` set, cargo builds without incremental caches
//! (`CARGO_INCREMENTAL=0`, unless set otherwise). Full output goes to `target/xtask-logs/<step>.log`; on a
//! failure the command and the last 60 lines are shown.

mod browser;
mod cargo;
mod cells;
mod dispatch;
mod features;
mod msrv;
mod output;
mod package;
mod report;
mod step;
mod targets;
#[cfg(test)]
mod tests;

use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use crate::exec::{self, Counts};
use crate::{target_dir, tools};

use dispatch::run_step;
use report::{print_report, print_summary};
use step::parse;

/// The benchmark crate: built only by `cargo xtask bench`, never by a test step, so its anchors
/// (tower-sessions, dashmap) are never compiled here.
const BENCH_PACKAGE: &str = "session-bench";

pub(crate) fn run(args: &[String]) -> crate::Result<ExitCode> {
    let options = parse(args)?;
    if options.steps.iter().any(|s| s.needs_redis()) {
        tools::ensure_redis_tools()?;
    }
    if options.steps.iter().any(|s| s.needs_postgres()) {
        tools::ensure_postgres()?;
    }
    exec::install_interrupt_handler();
    let logs = target_dir().join("xtask-logs");
    fs::create_dir_all(&logs)?;

    println!(
        "xtask test: {} steps. Each prints one line: step, ok or FAILED, seconds, tests passed / failed / \
         skipped (#[ignore]d), notes. FIGURES and SCENARIO lines are measurements the fault tests print \
         (lost, resurrected, wrong: must be 0) and the browser test's. Logs: {}",
        options.steps.len(),
        logs.display()
    );
    let began = Instant::now();
    let mut total = Counts::default();
    let mut failed = Vec::new();
    let mut ran = 0;
    for &step in &options.steps {
        let started = Instant::now();
        let log = logs.join(format!("{}.log", step.name()));
        let _ = fs::remove_file(&log);
        let report = run_step(step, &log);
        ran += 1;
        print_report(step, &report, started.elapsed());
        if let Some(counts) = report.counts {
            total.add(counts);
        }
        if !report.ok {
            failed.push(step.name());
            if !options.keep_going {
                println!("stopping at the first failure (--keep-going runs the rest)");
                break;
            }
        }
    }

    print_summary(ran, &failed, total, began.elapsed(), &logs);
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
