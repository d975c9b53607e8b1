//! The `browser` cell: session-axum's example app in headless Chromium, through chromedriver.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::cargo::{cargo_step, test_command};
use super::output::figure_line;
use super::report::{error_report, Failure, Report};
use crate::tools;

/// The variable that turns the browser test on.
const BROWSER_ENV: &str = "SESSION_TEST_BROWSER";
/// The browser test's name (skipped by the `unit` step, where it could only skip itself).
pub(super) const BROWSER_TEST: &str = "the_example_app_in_chromium";
/// What the browser test prints when it ran to the end.
const BROWSER_FIGURES: &str = "FIGURES browser:";

/// session-axum's `browser` test: the example app in headless Chromium, driven through
/// chromedriver, on the fallback over a Redis the test kills and restarts.
pub(super) fn browser_step(log: &Path) -> Report {
    let programs = match tools::browser_programs() {
        Ok(programs) => programs,
        Err(e) => {
            let _ = fs::write(log, format!("{e}\n"));
            return error_report(e.to_string(), log);
        }
    };
    let mut command = test_command(&["test", "-p", "session-axum", "--test", "browser"]);
    command.args(["--", "--nocapture"]);
    command
        .env(BROWSER_ENV, "1")
        .envs(programs.iter().map(|(var, path)| (*var, path)));
    let mut figures = 0;
    let mut report = cargo_step(command, log, true, |line| {
        if let Some(text) = figure_line(line) {
            figures += usize::from(text.starts_with(BROWSER_FIGURES));
            println!("{text}");
        }
    });
    let chromium = programs.first().map(|(_, path)| path.as_path());
    report.note = chromium.and_then(browser_version).unwrap_or_default();
    if report.ok && figures == 0 {
        // Passed without its summary line: the test returned early (gated off) or changed.
        report.ok = false;
        report.failure = Some(Failure {
            command: None,
            log: log.to_path_buf(),
            tail: vec![format!(
                "the browser test passed without printing its `{BROWSER_FIGURES}` line: it did not run"
            )],
        });
    }
    report
}

/// `Chromium 1.2.3.4`, from `chromium --version`.
fn browser_version(chromium: &Path) -> Option<String> {
    let output = Command::new(chromium)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut words = text.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}
