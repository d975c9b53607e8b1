//! Runs one step: the cargo command of `fmt`, `clippy`, `doc` and `unit`, the function of each
//! other step.

use std::path::Path;

use testkit_redis::REQUIRE_REDIS_ENV;

use super::browser::{browser_step, BROWSER_TEST};
use super::cargo::{cargo, cargo_step, skip_topologies, test_command};
use super::cells::{faults_step, redis_step, sql_step};
use super::features::features_step;
use super::msrv::msrv_step;
use super::package::package_step;
use super::report::Report;
use super::step::Step;
use super::BENCH_PACKAGE;

pub(super) fn run_step(step: Step, log: &Path) -> Report {
    match step {
        Step::Fmt => cargo_step(cargo(&["fmt", "--all", "--", "--check"]), log, false, |_| {}),
        Step::Clippy => cargo_step(
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                BENCH_PACKAGE,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            log,
            false,
            |_| {},
        ),
        Step::Doc => {
            let mut command = cargo(&["doc", "--workspace", "--exclude", BENCH_PACKAGE, "--no-deps"]);
            command.env("RUSTDOCFLAGS", "-D warnings");
            cargo_step(command, log, false, |_| {})
        }
        Step::Msrv => msrv_step(log),
        Step::Unit => {
            let mut command = test_command(&["test", "--workspace", "--exclude", BENCH_PACKAGE]);
            command.env(REQUIRE_REDIS_ENV, "1");
            // The per-topology suites (modules `standalone::`, `cluster::`, …) and the browser
            // test run in their cells.
            command
                .arg("--")
                .args(skip_topologies(None))
                .args(["--skip", BROWSER_TEST]);
            cargo_step(command, log, true, |_| {})
        }
        Step::Features => features_step(log),
        Step::Package => package_step(log),
        Step::Redis(topology) => redis_step(topology, log),
        Step::Sql => sql_step(log),
        Step::Browser => browser_step(log),
        Step::Faults => faults_step(log),
    }
}
